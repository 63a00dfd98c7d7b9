/*
 * Copied verbatim (apart from this comment) from the shared benchmark harness,
 * ../shared/bench/c-hello/hello.c, so that bench/ runs from a fresh clone.
 * bench/run.sh builds it with: cc -O2 -Wall -pthread -o hello hello.c -lfcgi
 * and starts it with THREADS = CONNS + nproc * KEEPALIVE (see bench/README.md).
 */
/*
 * hello.c - minimal multi-threaded libfcgi responder: the "FastCGI floor".
 *
 * Every request gets a fixed JSON user object, except paths ending in
 * "/users" when a users file was given: then that file's bytes are served
 * (so GET /users can be compared byte-for-byte with the real peers).
 *
 * Usage: hello SOCKET_PATH [THREADS=4] [USERS_JSON_FILE]
 *   env HELLO_THREADS overrides THREADS when the argument is absent.
 *
 * Build: cc -O2 -pthread -o hello hello.c -lfcgi
 *
 * Note on nginx "fastcgi_keep_conn on": libfcgi keeps a kept-alive
 * connection pinned to the thread that accepted it until nginx closes it,
 * so a thread serves one nginx connection at a time. Connections beyond
 * THREADS wait in the listen backlog (see peers/README.md).
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int listen_fd = -1;
static const char *fixed_body =
    "{\"id\":1,\"name\":\"Alice Example\",\"email\":\"alice@example.com\"}";
static size_t fixed_len;
static char *users_body = NULL;
static size_t users_len = 0;

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls, lx;
    if (!s) return 0;
    ls = strlen(s);
    lx = strlen(suffix);
    return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

static void *worker(void *arg) {
    FCGX_Request req;
    char hdr[160];
    (void)arg;
    if (FCGX_InitRequest(&req, listen_fd, 0) != 0) return NULL;
    while (FCGX_Accept_r(&req) >= 0) {
        const char *uri = FCGX_GetParam("DOCUMENT_URI", req.envp);
        const char *body = fixed_body;
        size_t len = fixed_len;
        char buf[4096];
        /* drain any request body (POST /add-user) */
        while (FCGX_GetStr(buf, sizeof buf, req.in) > 0) {
        }
        if (users_body && ends_with(uri, "/users")) {
            body = users_body;
            len = users_len;
        }
        int n = snprintf(hdr, sizeof hdr,
                         "Status: 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         len);
        FCGX_PutStr(hdr, n, req.out);
        FCGX_PutStr(body, (int)len, req.out);
        FCGX_Finish_r(&req);
    }
    return NULL;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *p;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[n] = 0;
        *len = (size_t)n;
    }
    return p;
}

int main(int argc, char **argv) {
    int nthreads = 4, i;
    const char *env = getenv("HELLO_THREADS");
    pthread_t *tids;

    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH [THREADS] [USERS_JSON_FILE]\n", argv[0]);
        return 2;
    }
    if (argc >= 3) nthreads = atoi(argv[2]);
    else if (env) nthreads = atoi(env);
    if (nthreads < 1) nthreads = 1;
    if (argc >= 4 && argv[3][0]) {
        users_body = slurp(argv[3], &users_len);
        if (!users_body) {
            perror(argv[3]);
            return 1;
        }
    }
    fixed_len = strlen(fixed_body);
    signal(SIGPIPE, SIG_IGN);

    if (FCGX_Init() != 0) {
        fprintf(stderr, "FCGX_Init failed\n");
        return 1;
    }
    /* libfcgi's FCGX_Init installs its own SIGTERM handler that only flags
     * a shutdown, which threads blocked in accept() never see: exit now. */
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    unlink(argv[1]);
    listen_fd = FCGX_OpenSocket(argv[1], 1024);
    if (listen_fd < 0) {
        fprintf(stderr, "FCGX_OpenSocket(%s) failed\n", argv[1]);
        return 1;
    }
    tids = calloc((size_t)nthreads, sizeof *tids);
    for (i = 0; i < nthreads; i++) pthread_create(&tids[i], NULL, worker, NULL);
    fprintf(stderr, "hello: %d threads on %s%s\n", nthreads, argv[1],
            users_body ? " (+users file)" : "");
    for (i = 0; i < nthreads; i++) pthread_join(tids[i], NULL);
    return 0;
}
