"""usersd behind Apache httpd, lighttpd, Caddy and h2o, each with its shipped site
configuration (docs/web-servers/), started privately on loopback (support/webservers.py).

Per server, a representative part of the API suite: every route, the errors (the
server's own ones JSON too where it allows), a chunked body, a 2 MiB body, a large
streamed list, dot segments and /metrics from another address. Then what only these
servers showed: a web server whose pool of kept connections is larger than
--max-connections (raw FastCGI, then Apache itself).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import fcgi_fuzz as fz
import harness
import webservers
from apiclient import TIMEOUT, create_user, describe, expect_error, expect_json, post_json, raw_http
from conftest import unique_email

SEEDED = 20000
OUTSIDER = "127.0.0.2"  # a loopback address outside --metrics-allow 127.0.0.1/32 and the sites' rules


@pytest.fixture(scope="module", params=webservers.SERVERS)
def front(request):
    missing = webservers.missing_binaries()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/deps.sh test installs them)")
    stack = webservers.FrontStack(request.param, args=["--metrics-allow", "127.0.0.1/32"])
    try:
        stack.start()
        assert stack.service.stop() == 0  # the schema exists now
        harness.seed_users(stack.service.db, SEEDED, tag="front")
        stack.service.start()
    except BaseException:
        stack.close()
        raise
    yield stack
    stack.close()


def json_error(status: int, headers: dict, body: bytes, expected: int, what: str) -> dict:
    assert status == expected, (what, status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (what, headers, body[:300])
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str) and parsed["error"], (what, body)
    return parsed


# ---------------------------------------------------------------- the API through each server


def test_every_route(front):
    with requests.Session() as http:
        assert expect_json(http.get(front.url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
        user = create_user(http, front.url, "Front User", unique_email("front"))
        other = create_user(http, front.url, "Other User", unique_email("front"), path="/users")
        assert expect_json(http.get(front.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
        full = expect_json(http.get(front.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)
        assert {k: full[k] for k in ("id", "name", "email")} == user
        head = http.head(front.url(f"/user/{user['id']}"), timeout=TIMEOUT)
        assert head.status_code == 200 and head.content == b"", describe(head)
        renamed = expect_json(post_json(http, front.url(f"/users/{user['id']}"), {"name": "Renamed"}, "PATCH"), 200)
        assert renamed["name"] == "Renamed"
        page = expect_json(http.get(front.url("/users"), params={"limit": 2, "after_id": SEEDED}, timeout=TIMEOUT), 200)
        assert [u["id"] for u in page] == [user["id"], other["id"]]
        deleted = http.delete(front.url(f"/users/{other['id']}"), timeout=TIMEOUT)
        assert deleted.status_code == 204, describe(deleted)
        expect_error(http.get(front.url(f"/users/{other['id']}"), timeout=TIMEOUT), 404)

        started = http.get(front.url("/start-task"), timeout=TIMEOUT)
        assert started.status_code == 202, describe(started)
        task = post_json(http, front.url("/tasks"), {"kind": "sleep", "seconds": 30})
        assert task.status_code == 202, describe(task)
        task_id = task.json()["task"]["id"]
        assert task.headers["Location"] == f"/tasks/{task_id}"
        assert expect_json(http.get(front.url(f"/tasks/{task_id}"), timeout=TIMEOUT), 200)["id"] == task_id
        listed = expect_json(http.get(front.url("/tasks"), params={"limit": 1000}, timeout=TIMEOUT), 200)
        assert task_id in [t["id"] for t in listed]
        cancelled = http.delete(front.url(f"/tasks/{task_id}"), timeout=TIMEOUT)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", describe(cancelled)

        metrics = http.get(front.url("/metrics"), timeout=TIMEOUT)
        assert metrics.status_code == 200 and b"usersd_requests_total" in metrics.content, describe(metrics)


def test_errors_are_json(front):
    with requests.Session() as http:
        expect_error(http.get(front.url("/no/such/route"), timeout=TIMEOUT), 404)
        not_allowed = http.put(front.url("/users"), timeout=TIMEOUT)
        expect_error(not_allowed, 405)
        assert not_allowed.headers.get("Allow"), describe(not_allowed)
        expect_error(post_json(http, front.url("/add-user"), {"name": "", "email": "x"}), 422)
        malformed = http.post(front.url("/add-user"), data=b'{"name":', headers={"Content-Type": "application/json"},
                              timeout=TIMEOUT)
        expect_error(malformed, 400)
        expect_error(http.post(front.url("/add-user"), data=b"name=x", timeout=TIMEOUT), 415)
    port = front.nginx.port
    # A control character in the query reaches usersd's validation (lighttpd's
    # url-ctrls-reject would answer its own HTML 400).
    json_error(*raw_http(port, "GET", "/users?limit=%00"), 422, "limit=%00")
    # An 8 KB URL is usersd's to answer (Apache's SetHandler variant answers 403).
    json_error(*raw_http(port, "GET", "/users/" + "9" * 7500), 404, "long URL")
    # A bad %-escape: the server's own 400 (JSON) or usersd's 404; Go's HTTP server
    # under Caddy answers it before any handler, in plain text (documented).
    status, headers, body = raw_http(port, "GET", "/user/%zz")
    if front.kind == "caddy":
        assert status == 400, (status, body)
    else:
        json_error(status, headers, body, 400 if front.kind == "apache" else 404, "%zz")


def test_chunked_body_is_accepted(front):
    body = json.dumps({"name": "Chunked", "email": unique_email("chunked")}).encode()
    response = requests.post(front.url("/add-user"), data=iter([body[:10], body[10:]]),
                             headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert expect_json(response, 201)["user"]["name"] == "Chunked"


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_2_mib_body_is_refused_with_json_413(front, chunked):
    body = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'", "email": "big@example.com"}'
    data = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    response = requests.post(front.url("/add-user"), data=data, headers={"Content-Type": "application/json"},
                             timeout=TIMEOUT)
    assert response.status_code == 413, describe(response)
    assert response.headers.get("Content-Type", "").startswith("application/json"), describe(response)
    assert response.json()["error"]
    # The server is still fine afterwards.
    assert requests.get(front.url("/healthz"), timeout=TIMEOUT).status_code == 200


def test_a_large_list_streams_complete_and_in_order(front):
    response = requests.get(front.url("/users"), params={"limit": SEEDED}, timeout=60)
    users = expect_json(response, 200)
    seeded = [u for u in users if u["email"].startswith("front")]
    assert len(seeded) == SEEDED
    ids = [u["id"] for u in users]
    assert ids == sorted(ids)


def test_dot_segments_reach_their_route(front):
    """Apache, lighttpd, Caddy and h2o pass REQUEST_URI as the client wrote it; usersd
    resolves dot segments after percent-decoding, as nginx does for DOCUMENT_URI."""
    port = front.nginx.port
    for target in ("/users/../user/1", "/./user/1", "/users/%2e%2e/user/1", "/users/%2E%2E/user/1", "/user/./1"):
        status, headers, body = raw_http(port, "GET", target)
        assert status == 200 and json.loads(body)["id"] == 1, (target, status, body[:300])
    # Climbing above the root is a 400 (the server's own or usersd's), as in nginx.
    for target in ("/../user/1", "/users/../../user/1", "/%2e%2e/user/1"):
        status, headers, body = raw_http(port, "GET", target)
        if front.kind == "caddy" and status == 400 and not body:
            continue  # Go's HTTP server refuses some of these itself, with an empty body
        json_error(status, headers, body, 400, target)


@pytest.mark.parametrize("target", ["/metrics", "/metrics/", "//metrics", "/./metrics", "/users/../metrics",
                                    "/users/%2e%2e/metrics", "/x/..%2Fmetrics"])
def test_metrics_only_for_local_addresses_whatever_the_spelling(front, target):
    status, headers, body = raw_http(front.nginx.port, "GET", target, source=OUTSIDER)
    json_error(status, headers, body, 403, target)
    status, _, body = raw_http(front.nginx.port, "GET", target)
    assert status == 200 and b"usersd_requests_total" in body, (target, status, body[:200])


# ---------------------------------------------------------------- a pool larger than --max-connections


def fcgi_exchange(sock: socket.socket, uri: str, keep: bool, timeout: float) -> int:
    """One GET on a raw FastCGI connection; returns the HTTP status."""
    sock.settimeout(timeout)
    sock.sendall(fz.request_bytes(fz.http_params("GET", uri), flags=fz.KEEP_CONN if keep else 0))
    data = b""
    while fz.count_ends(data) < 1:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes")
        data += chunk
    records, _ = fz.records(data)
    stdout = b"".join(content for kind, _, content in records if kind == fz.STDOUT)
    return int(stdout.split(b"\r\n", 1)[0].split()[1])


def test_connections_beyond_the_cap_free_idle_kept_ones(tmp_path):
    """A web server that keeps more connections than --max-connections (Apache keeps
    every connection of its pool) must not leave the newest waiting for ever: while a
    connection waits in the backlog, usersd frees the kept connection idle longest."""
    cap = 4
    workdir = harness.make_workdir()
    service = harness.Service(workdir, args=["--max-connections", str(cap)])
    held: list[socket.socket] = []
    try:
        service.start()
        # `cap` kept connections, each answered once and then left idle: the pool is full.
        for _ in range(cap):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(service.socket))
            assert fcgi_exchange(sock, "/healthz", keep=True, timeout=10) == 200
            held.append(sock)
        # Twice as many newcomers, all at once, each kept open after its answer too.
        newcomers = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2 * cap)]
        for sock in newcomers:
            sock.connect(str(service.socket))
        held += newcomers
        started = time.monotonic()
        with ThreadPoolExecutor(len(newcomers)) as pool:
            statuses = list(pool.map(lambda s: fcgi_exchange(s, "/healthz", keep=True, timeout=20), newcomers))
        assert statuses == [200] * len(newcomers)
        assert time.monotonic() - started < 10
        # The first kept connections were freed for them: usersd closed them.
        for sock in held[:cap]:
            sock.settimeout(10)
            assert sock.recv(1) == b"", "a kept connection that was freed is closed"
        assert service.running()
    finally:
        for sock in held:
            sock.close()
        service.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_apache_with_a_pool_larger_than_max_connections_never_hangs():
    """Apache (enablereuse=on, max=16 per child) in front of usersd at
    --max-connections 4, with 16 clients at once. Before, the connections beyond the
    cap waited in the backlog until Apache's timeout (504 after 30 s here, 60 s by
    default) and went on failing that way. Now every request is answered within
    seconds. A request Apache sends on a connection at the very moment usersd ends
    it to make room gets Apache's 503 (JSON, from the site's ErrorDocument): a few
    in a thousand here, and none when the pool is sized within the cap (the rule in
    docs/web-servers/README.md)."""
    if webservers.missing_binaries():
        pytest.skip(f"not installed: {webservers.missing_binaries()}")
    stack = webservers.FrontStack("apache", args=["--max-connections", "4"])
    try:
        stack.start()
        url = stack.url("/healthz")

        def client(_):
            answers = []
            with requests.Session() as http:
                for _ in range(20):
                    started = time.monotonic()
                    response = http.get(url, timeout=25)
                    answers.append((response.status_code, time.monotonic() - started, response.headers.get(
                        "Content-Type", "")))
            return answers

        with ThreadPoolExecutor(16) as pool:
            answers = [a for batch in pool.map(client, range(16)) for a in batch]
        slowest = max(seconds for _, seconds, _ in answers)
        assert slowest < 10, f"a request took {slowest:.1f}s"
        failed = [(status, kind) for status, _, kind in answers if status != 200]
        assert all(status == 503 and kind.startswith("application/json") for status, kind in failed), failed
        assert len(failed) <= len(answers) // 50, f"{len(failed)} of {len(answers)} failed"
    finally:
        stack.close()


# ---------------------------------------------------------------- the API suite through each server

#: The API part of the suite, run whole through each server (the `api` fixture's
#: stack behind it: USERSD_E2E_FRONT, see harness.Stack).
API_FILES = ("test_routes.py", "test_create.py", "test_email_key.py")
#: Tests of what nginx's site does itself (its 413 carries nginx's request id).
NGINX_ONLY = "not test_413_from_nginx_carries_request_id"


@pytest.mark.parametrize("kind", webservers.SERVERS)
def test_the_api_suite_passes_through(kind):
    import os
    import subprocess
    import sys
    from pathlib import Path

    if webservers.missing_binaries():
        pytest.skip(f"not installed: {webservers.missing_binaries()}")
    here = Path(__file__).resolve().parent
    env = {**os.environ, "USERSD_E2E_FRONT": kind, "USERSD_BIN": harness.usersd_bin()}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", NGINX_ONLY, *API_FILES],
        cwd=here, env=env, capture_output=True, text=True, timeout=600,
    )
    summary = run.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert run.returncode == 0, f"{kind}: {summary[0]}\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert " passed" in summary[0] and "skipped" not in summary[0], summary[0]
