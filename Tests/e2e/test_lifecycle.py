"""Lifecycle: graceful restart keeps data, kill -9 loses no acknowledged write,
SIGTERM drains in-flight requests and exits 0."""

import fcntl
import json
import signal
import socket
import struct
import termios
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import fcgi_fuzz as fcgi
import harness
from apiclient import TIMEOUT, create_user, describe, expect_error, expect_json, post_json
from conftest import unique_email


def all_users(stack):
    return expect_json(requests.get(stack.url("/users"), timeout=TIMEOUT), 200)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_restart_keeps_data(make_stack, sig):
    stack = make_stack().start()
    with requests.Session() as http:
        created = [create_user(http, stack.url, f"keep {i} 😀", unique_email("keep")) for i in range(20)]
        http.delete(stack.url(f"/users/{created[0]['id']}"), timeout=TIMEOUT)
        post_json(http, stack.url(f"/users/{created[1]['id']}"), {"name": "patched"}, method="PATCH")

    assert stack.service.stop(sig) == 0
    assert stack.service.notify.seen("STOPPING=1"), stack.service.notify.lines
    stack.service.start()

    expected = [dict(created[1], name="patched")] + created[2:]
    listed = all_users(stack)
    assert [u for u in listed if u["id"] in {c["id"] for c in created}] == expected
    with requests.Session() as http:
        newer = create_user(http, stack.url, "after restart", unique_email())
        assert newer["id"] > created[-1]["id"]
        # the unique index survived too
        expect_error(post_json(http, stack.url("/users"), {"name": "dup", "email": created[5]["email"].upper()}), 409)
    assert stack.service.stop() == 0


def test_unavailable_while_stopped_is_503_json(make_stack):
    stack = make_stack().start()
    assert stack.service.stop() == 0
    response = requests.get(stack.url("/healthz"), timeout=TIMEOUT)
    assert response.status_code == 503, describe(response)
    assert response.headers.get("Content-Type") == harness.JSON_TYPE
    assert response.headers.get("Retry-After")
    assert isinstance(response.json()["error"], str)
    stack.service.start()
    assert expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}


def test_kill9_loses_no_acknowledged_write(make_stack):
    stack = make_stack().start()
    acked, others = [], []
    lock = threading.Condition()
    stop = threading.Event()

    def writer(w):
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                email = f"w{w}-{i}-{unique_email('k9')}"
                i += 1
                try:
                    response = post_json(session, stack.url("/add-user"), {"name": f"writer {w} #{i}", "email": email})
                except requests.RequestException as error:  # connection-level trouble is not an ack
                    with lock:
                        others.append(repr(error))
                        lock.notify_all()
                    continue
                with lock:
                    if response.status_code == 201:
                        acked.append(response.json()["user"])
                        lock.notify_all()
                    else:
                        others.append(response)
                        lock.notify_all()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    try:
        with lock:
            assert lock.wait_for(lambda: len(acked) >= 300, timeout=60), f"only {len(acked)} writes acknowledged"
        stack.service.kill9()
        # Keep writing against the dead service until a few answers came back refused.
        with lock:
            lock.wait_for(lambda: len(others) >= 8, timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    for response in others:
        if isinstance(response, requests.Response):
            # in flight at the kill, or sent after it: nginx's JSON 503, never a usersd answer other than 201
            assert response.status_code in (502, 503), describe(response)

    stack.service.start()  # same socket path (stale file left by kill -9) and same database
    listed = {u["id"]: u for u in all_users(stack)}
    missing = [u for u in acked if listed.get(u["id"]) != u]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged users lost, e.g. {missing[:3]}"
    assert stack.service.stop() == 0


def _stream_get(port: int, path: str) -> socket.socket:
    """A raw HTTP/1.0 GET with a tiny receive buffer so the sender is held back."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    return s


def _read_head(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or data.endswith(b"\r\n\r\n"):
        chunk = s.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def _read_rest(s: socket.socket, data: bytes) -> bytes:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_sigterm_drains_in_flight_requests(make_stack):
    stack = make_stack().start()
    assert stack.service.stop() == 0  # migrated; now fill it behind its back
    seeded = harness.seed_users(stack.service.db, 20000, tag="drain")
    stack.service.start()

    streams = [_stream_get(stack.nginx.port, "/users") for _ in range(6)]
    heads = [_read_head(s) for s in streams]  # every request has started answering
    for head in heads:
        assert head.startswith(b"HTTP/1.1 200"), head[:200]

    stack.service.send_signal(signal.SIGTERM)
    bodies = []
    for s, head in zip(streams, heads):
        with s:
            raw = _read_rest(s, head)
        bodies.append(raw.partition(b"\r\n\r\n")[2])

    assert stack.service.wait() == 0
    assert stack.service.notify.seen("STOPPING=1")
    for body in bodies:
        try:
            users = json.loads(body)
        except ValueError:
            raise AssertionError(f"stream cut at SIGTERM after {len(body)} bytes: ...{body[-100:]!r}")
        assert len(users) == 20000
        assert [u["email"] for u in users] == [u["email"] for u in seeded]
        ids = [u["id"] for u in users]
        assert ids == sorted(ids)


def test_sigterm_answers_concurrent_requests(make_stack):
    """Many requests in flight at once when SIGTERM arrives: each one that usersd
    began answering completes with 2xx; the rest are nginx's 503, never cut."""
    stack = make_stack().start()
    n = 64
    barrier = threading.Barrier(n + 1)
    results = [None] * n

    def client(i):
        with requests.Session() as session:
            barrier.wait(timeout=60)
            try:
                if i % 2:
                    results[i] = post_json(session, stack.url("/users"), {"name": f"drain {i}", "email": unique_email("d")})
                else:
                    results[i] = session.get(stack.url("/users"), timeout=TIMEOUT)
            except requests.RequestException as error:
                results[i] = error

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait(timeout=60)
    stack.service.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert stack.service.wait() == 0

    acked = []
    for r in results:
        assert isinstance(r, requests.Response), f"connection-level failure: {r!r}"
        assert r.status_code in (200, 201, 503), describe(r)
        if r.status_code == 503:
            assert r.headers.get("Content-Type") == harness.JSON_TYPE
        elif r.status_code == 200:
            assert isinstance(r.json(), list)
        else:
            acked.append(r.json()["user"])
    stack.service.start()
    listed = {u["id"]: u for u in all_users(stack)}
    assert all(listed.get(u["id"]) == u for u in acked)


def _records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, request id, content) of each record in `data`, which holds nothing else."""
    found, used = fcgi.records(data)
    assert used == len(data), f"cut record at byte {used}: {data[used:]!r}"
    return found


def _read_through_end_request(s: socket.socket) -> bytes:
    data = b""
    while not fcgi.count_ends(data):
        chunk = s.recv(65536)
        assert chunk, f"closed before END_REQUEST: {data!r}"
        data += chunk
    return data


def _unread_bytes(s: socket.socket) -> int:
    """Bytes this socket sent that the peer has not read yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, struct.pack("i", 0)))[0]


def test_last_response_of_a_drain_makes_nginx_close_the_kept_connection(make_stack):
    """nginx (fastcgi_keep_conn) puts a connection back in its keep-alive cache as soon as
    a response's END_REQUEST ends exactly where its read ended, and may send the next
    request on it at once: a connection closed right after its last response loses that
    request (a 502 that nginx does not retry for a POST; CI saw one across restarts).
    While draining, usersd ends the last response on a kept connection with END_REQUEST
    and one more record in the same write, which makes nginx close the connection instead
    (ngx_http_fastcgi_input_filter). Responses outside a drain end exactly at END_REQUEST."""
    stack = make_stack().start()
    body = json.dumps({"name": "last of a drain", "email": unique_email("last")}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(stack.service.socket))
        s.sendall(fcgi.request_bytes(fcgi.http_params("GET", "/healthz"), flags=fcgi.KEEP_CONN))
        first = _read_through_end_request(s)
        assert [kind for kind, _, _ in _records(first)][-1] == fcgi.END_REQUEST, _records(first)
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(65536)  # nothing after END_REQUEST: nginx may reuse the connection
        s.settimeout(30)

        # A POST whose body is still on its way when SIGTERM arrives: usersd has read the
        # params (the socket's unread count is back to 0) and waits for the body.
        params = fcgi.http_params("POST", "/add-user", body)
        s.sendall(fcgi.begin(flags=fcgi.KEEP_CONN) + fcgi.stream_records(fcgi.PARAMS, 1, fcgi.encode_params(params)))
        deadline = time.monotonic() + 30
        while _unread_bytes(s) > 0:
            assert time.monotonic() < deadline, "usersd did not read the request"
            time.sleep(0.001)
        stack.service.send_signal(signal.SIGTERM)
        stack.service.notify.wait_for("STOPPING=1", 30)
        s.sendall(fcgi.stream_records(fcgi.STDIN, 1, body))
        last = b""
        while chunk := s.recv(65536):
            last += chunk

    records = _records(last)
    kinds = [kind for kind, _, _ in records]
    stdout = b"".join(content for kind, _, content in records if kind == fcgi.STDOUT)
    assert stdout.startswith(b"Status: 201"), stdout[:200]
    end = kinds.index(fcgi.END_REQUEST)
    assert records[end][1] == 1 and records[end][2][:5] == b"\0\0\0\0\0", records[end]  # complete, status 0
    assert records[end + 1 :] == [(fcgi.GET_VALUES_RESULT, 0, b"")], records[end:]
    assert stack.service.wait() == 0

    user = json.loads(stdout.partition(b"\r\n\r\n")[2])["user"]
    stack.service.start()
    assert expect_json(requests.get(stack.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user


def _serving_line(service) -> str:
    lines = [line for line in service.log_text().splitlines() if "msg=serving" in line]
    assert len(lines) == 1, service.log_text()[-2000:]
    return lines[0]


@harness.sqlite_only("checks the SQLite writer thread's scheduling policy")
def test_worker_threads_run_under_batch_scheduling_and_the_writer_does_not(make_stack):
    """The FastCGI workers ask the kernel for SCHED_BATCH (a worker woken up does not
    preempt the writer inside its transaction or nginx); the database threads keep
    the normal policy. `--worker-scheduling normal` leaves the workers normal too.
    (A thread a worker creates inherits its policy, as pthreads do: libdispatch may
    start a pool thread from one, so those are not checked.)"""
    stack = make_stack().start()
    # Concurrent keep-alive requests make nginx open several connections (threads).
    with ThreadPoolExecutor(8) as pool:
        for response in pool.map(lambda _: requests.get(stack.url("/healthz"), timeout=TIMEOUT), range(64)):
            expect_json(response, 200)
    create_user(requests, stack.url, "Sched", unique_email("sched"))
    policies = harness.thread_policies(stack.service.pid)
    assert policies.get("usersd-fcgi") == {3}, policies
    for name in ("usersd-writer", "usersd-reader", "usersd-ckpt"):
        assert policies.get(name) == {0}, policies
    assert "scheduling" not in stack.service.log_text()
    assert stack.service.stop() == 0

    stack = make_stack(args=["--worker-scheduling", "normal"]).start()
    create_user(requests, stack.url, "Sched", unique_email("sched"))
    policies = harness.thread_policies(stack.service.pid)
    assert "usersd-fcgi" in policies and all(policy == {0} for policy in policies.values()), policies
    assert stack.service.stop() == 0


@harness.sqlite_only("names the SQLite threads (usersd-writer, -reader, -ckpt)")
def test_serve_sets_its_malloc_settings_once_and_keeps_its_pid(make_stack):
    """`usersd serve` re-executes itself once to give glibc its malloc settings
    (GLIBC_TUNABLES is read only at process start). The process that serves, sends
    READY=1 and takes SIGTERM is the one that was started; an operator's own
    GLIBC_TUNABLES (even empty) is kept instead."""
    import os

    inherited = os.environ.get("GLIBC_TUNABLES")
    stack = make_stack().start()
    service = stack.service
    expected = inherited if inherited is not None else "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=32"
    assert f'malloc="{expected}"' in _serving_line(service) or f"malloc={expected}" in _serving_line(service)
    assert service.notify.seen("READY=1"), service.notify.lines
    with open(f"/proc/{service.pid}/cmdline", "rb") as cmdline:
        assert b"serve" in cmdline.read().split(b"\0")
    expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
    # The re-exec keeps the process's name (what `pgrep usersd`, `top` and `ps`
    # show), and each thread carries its own.
    with open(f"/proc/{service.pid}/comm") as comm:
        assert comm.read().strip() == os.path.basename(os.path.realpath(harness.usersd_bin()))[:15]
    threads = set()
    for task in os.listdir(f"/proc/{service.pid}/task"):
        try:
            with open(f"/proc/{service.pid}/task/{task}/comm") as comm:
                threads.add(comm.read().strip())
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    assert {"usersd-fcgi", "usersd-writer", "usersd-reader", "usersd-ckpt"} <= threads, threads
    assert service.stop() == 0

    for own in ("glibc.malloc.tcache_count=7", ""):
        stack = make_stack(env={"GLIBC_TUNABLES": own}).start()
        line = _serving_line(stack.service)
        assert f'malloc="{own}"' in line or f"malloc={own} " in line + " ", line
        expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
        assert stack.service.stop() == 0


@pytest.mark.parametrize("args", [[], ["--log-level", "info", "serve"]], ids=["usersd", "usersd --flag serve"])
def test_every_spelling_of_serving_gets_the_malloc_settings(make_stack, args):
    """Serving is the default command and flags may come before it: plain `usersd`
    and `usersd --log-level info serve` re-execute with the malloc settings like
    `usersd serve` does."""
    import os

    inherited = os.environ.get("GLIBC_TUNABLES")
    expected = inherited if inherited is not None else "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=32"
    stack = make_stack(mode="env", args=args).start()
    line = _serving_line(stack.service)
    assert f'malloc="{expected}"' in line or f"malloc={expected} " in line + " ", line
    expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
    assert stack.service.stop() == 0
