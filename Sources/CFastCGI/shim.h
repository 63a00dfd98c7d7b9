#include <fcgiapp.h>

/* accept4 is declared only under _GNU_SOURCE, which Swift's Glibc module does not
   define; declare it here (Linux ABI) instead of redefining the system headers. */
struct sockaddr;
extern int accept4(int fd, struct sockaddr *address, unsigned int *length, int flags);

/* Accepts a connection with close-on-exec set atomically, and the peer's address in
   `address` (room for `*length` bytes, a struct sockaddr_storage). */
static inline int usersd_accept_cloexec(int fd, void *address, unsigned int *length) {
    return accept4(fd, (struct sockaddr *)address, length, 02000000 /* SOCK_CLOEXEC */);
}
