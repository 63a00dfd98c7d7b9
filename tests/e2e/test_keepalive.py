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
