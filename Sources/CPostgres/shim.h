#include <libpq-fe.h>
#include <poll.h>

/* A notice processor that drops notices: libpq's default prints each one on stderr
   (`NOTICE: relation ... already exists, skipping`), which is not usersd's log. */
static void usersd_pq_ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

static inline void usersd_pq_silence_notices(PGconn *connection) {
    PQsetNoticeProcessor(connection, usersd_pq_ignore_notice, NULL);
}

/* Whether the connection's socket has something to read right now (the server's
   goodbye, a notice, end of file) while no query is in flight. */
static inline int usersd_pq_socket_readable(PGconn *connection) {
    struct pollfd fd = {.fd = PQsocket(connection), .events = POLLIN, .revents = 0};
    if (fd.fd < 0) return 1;
    return poll(&fd, 1, 0) > 0;
}
