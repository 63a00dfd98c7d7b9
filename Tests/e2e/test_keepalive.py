"""Keep-alive can't starve usersd: the shipped site keeps FastCGI connections
open (keepalive + fastcgi_keep_conn); with usersd's default --max-connections,
far more simultaneous client connections than a small worker pool are all answered."""

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from apiclient import TIMEOUT, create_user, describe, expect_json
from conftest import unique_email

CLIENTS = 150
REQUESTS_EACH = 5


def test_many_keepalive_clients_all_answered(api, http):
    user = create_user(http, api.url, "keepalive", unique_email("ka"))
    paths = ["/healthz", f"/user/{user['id']}", "/users?limit=5", f"/users/{user['id']}"]
    connected = threading.Barrier(CLIENTS + 1, timeout=60)  # + the main thread
    finished = threading.Barrier(CLIENTS + 1, timeout=120)
    release = threading.Event()

    def client(i):
        responses = []
        with requests.Session() as session:
            responses.append(session.get(api.url(paths[0]), timeout=TIMEOUT))
            connected.wait()  # all clients hold an open keep-alive connection now
            for n in range(1, REQUESTS_EACH):
                responses.append(session.get(api.url(paths[n % len(paths)]), timeout=TIMEOUT))
            finished.wait()
            release.wait(120)  # keep the connection open while the main thread checks
        return responses

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(client, i) for i in range(CLIENTS)]
        try:
            connected.wait()
            during = [requests.get(api.url("/healthz"), timeout=TIMEOUT) for _ in range(3)]
            finished.wait()
            after = [requests.get(api.url(p), timeout=TIMEOUT) for p in paths]
        finally:
            release.set()
        done = [r for future in futures for r in future.result(timeout=120)]

    assert len(done) == CLIENTS * REQUESTS_EACH
    bad = [describe(r) for r in done if r.status_code != 200]
    assert not bad, f"{len(bad)} of {len(done)} not 200, e.g. {bad[:3]}"
    for response in during + after:
        expect_json(response, 200)


def test_one_worker_thread_serves_connection_after_connection(make_stack):
    """With one FastCGI thread (--max-connections 1) every connection is served by the
    same thread, whose task, executor and buffers carry over from one connection to the
    next: 90 connections in turn, plain, kept for two requests, with params that outgrow
    the peek buffer (20 KB) and with params answered 431 (70 KB), all get the right
    answer, and the thread stays the only one."""
    import json

    import fcgi_fuzz as fz
    import reliability as rel

    stack = make_stack(args=["--max-connections", "1"]).start()
    socket_path = str(stack.service.socket)
    threads_before = rel.thread_count(stack.service.pid)

    def exchange(*requests_bytes: bytes, statuses=(200,), kept=False) -> fz.Outcome:
        case = fz.Case("reuse", 0, list(requests_bytes), expect="response", statuses=statuses,
                       responses=len(requests_bytes), sequential=kept)
        outcome = fz.run_case(socket_path, case, timeout=10)
        assert not outcome.problems(), outcome.problems()
        return outcome

    def bodies(stdout: bytes) -> list[bytes]:
        """The bodies of the answers in one connection's stdout, by Content-Length."""
        found = []
        while stdout:
            head, _, rest = stdout.partition(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            found.append(rest[:length])
            stdout = rest[length:]
        return found

    body = b'{"name":"Reuse","email":"reuse@example.com"}'
    created = exchange(fz.request_bytes(fz.http_params("POST", "/add-user", body), body), statuses=(201,))
    user = json.loads(created.stdout.partition(b"\r\n\r\n")[2])["user"]
    get = fz.http_params("GET", f"/user/{user['id']}")
    for i in range(90):
        if i % 30 == 10:
            padded = dict(get, HTTP_X_PADDING="p" * 20_000)
            outcome = exchange(fz.request_bytes(padded))
        elif i % 30 == 20:
            huge = dict(get, HTTP_X_PADDING="p" * 70_000)
            exchange(fz.request_bytes(huge, params_chunk=32_768), statuses=(431,))
            continue
        elif i % 3 == 0:
            kept = fz.request_bytes(get, flags=1)  # FCGI_KEEP_CONN
            outcome = exchange(kept, kept, kept=True)
        else:
            outcome = exchange(fz.request_bytes(get))
        answers = bodies(outcome.stdout)
        assert len(answers) == (2 if i % 3 == 0 and i % 30 != 10 else 1), (i, outcome.stdout[:300])
        for answer in answers:
            assert json.loads(answer) == user, (i, outcome.stdout[:300])
    assert rel.thread_count(stack.service.pid) == threads_before
    assert stack.service.running()
