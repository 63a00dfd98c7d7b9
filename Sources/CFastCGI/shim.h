#include <fcgiapp.h>

/* accept4 is declared only under _GNU_SOURCE, which Swift's Glibc module does not
   define; declare it here (Linux ABI) instead of redefining the system headers. */
struct sockaddr;
extern int accept4(int fd, struct sockaddr *address, unsigned int *length, int flags);

static inline int usersd_accept_cloexec(int fd) {
    return accept4(fd, 0, 0, 02000000 /* SOCK_CLOEXEC */);
}
