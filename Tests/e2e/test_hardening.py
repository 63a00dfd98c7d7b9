"""What an outside review found open, kept closed: /metrics only for allowed client
addresses whatever the path's spelling, HEAD never starts a task, rejections by the
FastCGI layer are logged and counted, one serving process per database, and threads
that come and go leave no memory behind."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import fcgi_fuzz as fz
import harness
from apiclient import TIMEOUT, describe, expect_error, expect_json, post_json, raw_http

OUTSIDER = "127.0.0.2"  # a loopback address that --metrics-allow 127.0.0.1/32 leaves out


def expect_forbidden(status: int, headers: dict, body: bytes, what: str) -> None:
    assert status == 403, f"{what}: {status} {body[:200]!r}"
    assert headers.get("content-type", "").startswith("application/json"), f"{what}: {headers}"
    assert "error" in json.loads(body), f"{what}: {body!r}"


SPELLINGS = ["/metrics", "/metrics/", "//metrics", "/metrics%2F", "/metrics?name=x", "/./metrics", "/users/../metrics"]


def test_metrics_answer_only_allowed_addresses_whatever_the_spelling(make_stack):
    """Behind a stock `location /` (no nginx rule for /metrics at all), usersd itself
    refuses every spelling of the path to an address outside --metrics-allow."""
    stack = make_stack(nginx_kind="stock", args=["--metrics-allow", "127.0.0.1/32"]).start()
    port = stack.nginx.port
    for target in SPELLINGS:
        expect_forbidden(*raw_http(port, "GET", target, source=OUTSIDER), what=target)
        assert raw_http(port, "HEAD", target, source=OUTSIDER)[0] == 403, f"HEAD {target}"
    status, _, _ = raw_http(port, "GET", "/METRICS", source=OUTSIDER)
    assert status == 404  # paths are case-sensitive: not the metrics route
    for target in ("/metrics", "/metrics/", "//metrics"):
        status, headers, body = raw_http(port, "GET", target)
        assert status == 200 and headers["content-type"].startswith("text/plain"), (target, status, body[:200])
        assert b"usersd_requests_total" in body
    # The refusals were answered and counted like any request.
    _, _, body = raw_http(port, "GET", "/metrics")
    assert re.search(rb'usersd_requests_total\{method="GET",route="/metrics",status="403"\} (\d+)', body), body[:3000]


def test_metrics_under_a_mount_prefix_are_guarded_too(make_stack):
    stack = make_stack(nginx_kind="stock", locations=["/api/"],
                       args=["--prefix", "/api", "--metrics-allow", "127.0.0.1/32"]).start()
    port = stack.nginx.port
    for target in ("/api/metrics", "/api/metrics/", "/api//metrics"):
        expect_forbidden(*raw_http(port, "GET", target, source=OUTSIDER), what=target)
    assert raw_http(port, "GET", "/api/metrics")[0] == 200


def test_metrics_without_an_ip_peer_are_forbidden(make_stack):
    """A peer without REMOTE_ADDR, or a unix-socket peer (nginx sends `unix:`), is not
    an allowed address; with REMOTE_ADDR 127.0.0.1 the same request is answered."""
    stack = make_stack().start()

    def ask(**kwargs):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(str(stack.service.socket))
            return harness.fastcgi_request(sock, "GET", "/metrics", **kwargs)

    for kwargs in ({"drop": ("REMOTE_ADDR",)}, {"params": {"REMOTE_ADDR": "unix:"}}, {"params": {"REMOTE_ADDR": ""}},
                   {"params": {"REMOTE_ADDR": "203.0.113.9"}}):
        status, headers, body = ask(**kwargs)
        assert status == 403 and "error" in json.loads(body), (kwargs, status, body[:200])
    assert ask(params={"REMOTE_ADDR": "::ffff:127.0.0.1"})[0] == 200
    assert ask()[0] == 200


def test_shipped_site_keeps_its_own_metrics_rule(api):
    """Defence in depth: the shipped site refuses every spelling to non-local clients
    itself (JSON 403), before usersd sees the request."""
    for target in SPELLINGS[:4]:
        expect_forbidden(*raw_http(api.nginx.port, "GET", target, source=OUTSIDER), what=target)


def test_head_of_start_task_starts_nothing(api, http):
    def task_ids():
        return [t["id"] for t in expect_json(http.get(api.url("/tasks?limit=1000"), timeout=TIMEOUT), 200)]

    before = task_ids()
    response = http.head(api.url("/start-task"), timeout=TIMEOUT)
    assert response.status_code == 405, describe(response)
    assert response.headers.get("Allow") == "GET"
    assert task_ids() == before
    started = expect_json(http.get(api.url("/start-task"), timeout=TIMEOUT), 202)["task"]
    assert task_ids() == before + [started["id"]]
    assert http.head(api.url("/users"), timeout=TIMEOUT).status_code == 200


def test_rejections_by_the_fastcgi_layer_are_logged_and_counted(make_stack, http):
    """A body over --max-body (usersd's own 413, nginx allows 1 MiB) and params over
    64 KiB (431, answered before libfcgi parses them) each write an access line and
    count in usersd_requests_total like every other answer."""
    stack = make_stack(nginx_kind="stock", args=["--max-body", "1000"]).start()
    response = http.post(stack.url("/users?too=big"), data=b"x" * 5000,
                         headers={"Content-Type": "application/json", "X-Request-Id": "big-body-1"}, timeout=TIMEOUT)
    expect_error(response, 413)
    assert response.headers["X-Request-Id"] == "big-body-1"

    params = dict(fz.http_params("GET", "/user/1"), REQUEST_ID="huge-params-1", HTTP_X_PADDING="p" * 70_000)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(stack.service.socket))
        sock.sendall(fz.request_bytes(params, params_chunk=32_768))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert fz._status_of(b"".join(c for kind, _, c in fz.records(data)[0] if kind == fz.STDOUT)) == 431

    log = stack.service.log_text()
    assert re.search(r"msg=request request_id=big-body-1 method=POST path=/users status=413 ", log), log[-2000:]
    assert re.search(r"msg=request request_id=huge-params-1 method=GET path=/user/1 status=431 ", log), log[-2000:]
    metrics = http.get(stack.url("/metrics"), timeout=TIMEOUT).text
    assert 'usersd_requests_total{method="POST",route="rejected",status="413"} 1' in metrics, metrics
    assert 'usersd_requests_total{method="GET",route="rejected",status="431"} 1' in metrics, metrics


@harness.sqlite_only("one process serves an SQLite file; PostgreSQL is served by many hosts at once (test_multihost.py)")
def test_a_second_serve_on_the_same_database_refuses_and_touches_nothing(make_stack, http, tmp_path):
    """One process serves a database. A second `serve` (another socket, same file)
    exits 75 with a clear message before it opens the database: the first one's
    running task is not re-queued, and it keeps serving. `check` and `backup` work
    beside it."""
    stack = make_stack().start()
    task = expect_json(post_json(http, stack.url("/tasks"), {"kind": "sleep", "seconds": 2}), 202)["task"]
    deadline = time.monotonic() + 20
    while expect_json(http.get(stack.url(f"/tasks/{task['id']}"), timeout=TIMEOUT), 200)["state"] != "running":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)

    second = harness.Service(stack.dir, db=stack.service.db, name="second")
    with pytest.raises(harness.StartError):
        second.start(timeout=20)
    assert second.proc.returncode == 75, second.log_tail()
    assert "already served by another usersd process" in second.log_text()
    assert not second.socket.exists()

    exe = harness.usersd_bin()
    env = harness.clean_env()
    check = subprocess.run([exe, "check", "--db", str(stack.service.db)], capture_output=True, text=True, env=env, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    copy = tmp_path / "copy.sqlite3"
    backup = subprocess.run([exe, "backup", str(copy), "--db", str(stack.service.db)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert backup.returncode == 0, backup.stdout + backup.stderr

    deadline = time.monotonic() + 30
    while (done := expect_json(http.get(stack.url(f"/tasks/{task['id']}"), timeout=TIMEOUT), 200))["state"] == "running":
        assert time.monotonic() < deadline, "the task never finished"
        time.sleep(0.1)
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert stack.service.log_text().count("Background task completed") == 1
    expect_json(http.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
    # Once the first has stopped, the database can be served again.
    assert stack.service.stop() == 0
    second.start()
    assert second.stop() == 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


def _connections(socket_path, count: int, parallel: int = 4) -> None:
    """`count` FastCGI requests, each on a connection of its own."""
    request = fz.request_bytes(fz.http_params("GET", "/user/1"))

    def run(n: int) -> None:
        for _ in range(n):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(TIMEOUT)
                sock.connect(str(socket_path))
                sock.sendall(request)
                data = b""
                while fz.count_ends(data) < 1:
                    chunk = sock.recv(65536)
                    assert chunk, "connection closed before the answer ended"
                    data += chunk

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, [count // parallel] * parallel))


def test_threads_that_exit_leave_no_metrics_behind(make_stack, http):
    """With --idle-threads 0 every connection's thread exits when the connection
    closes. 20,000 connections later, the per-thread metric shards of the threads
    that exited are gone (their counts kept) and memory is where it was."""
    stack = make_stack(args=["--idle-threads", "0", "--log-level", "warning"]).start()
    _connections(stack.service.socket, 2_000)  # allocator and thread-stack caches warm
    before = _rss_kib(stack.service.pid)
    _connections(stack.service.socket, 20_000)
    after = _rss_kib(stack.service.pid)
    metrics = http.get(stack.url("/metrics"), timeout=TIMEOUT).text
    shards = float(re.search(r"^usersd_request_metric_shards (\S+)$", metrics, re.M).group(1))
    assert shards <= 4, metrics
    counted = re.search(r'^usersd_requests_total\{method="GET",route="/user/\{id\}",status="404"\} (\S+)$', metrics, re.M)
    assert counted and float(counted.group(1)) == 22_000, metrics
    assert after - before <= 2048, f"RSS grew {after - before} KiB over 20,000 connections"
