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

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

/* An edge-triggered watch for new bytes on `fd` (epoll_event is a packed struct on
   x86-64, which Swift does not import well: these two helpers hide it). */
static inline int usersd_watch_arrivals(int fd) {
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) return -1;
    struct epoll_event event = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data = { .fd = fd } };
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) {
        int saved = errno;
        close(epoll);
        errno = saved;
        return -1;
    }
    return epoll;
}

/* Waits up to `milliseconds` for the next event of the watch: its event mask, 0 on
   timeout, -1 with errno set on error. */
static inline int usersd_wait_arrival(int epoll, int milliseconds) {
    struct epoll_event event;
    int count = epoll_wait(epoll, &event, 1, milliseconds);
    return count > 0 ? (int)event.events : count;
}
