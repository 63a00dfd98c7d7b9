"""Fault injection: crashes and restarts under load, a database locked by another
process, a full disk and a read-only database file, slow and vanishing clients,
more connections than usersd has threads, thousands of idle keep-alive
connections. Through the shipped nginx site, with the real binary.

What must hold: every write that got a 2xx survives (no loss, no duplicate),
the database passes `PRAGMA integrity_check`, every accepted task completes,
faults get a clear JSON 503 (never a crash, never a hang), the service recovers
by itself when the fault goes, and descriptors do not leak.

Knobs: FAULT_SEED (default 7), FAULT_KILLS (kill -9 rounds, default 6),
FAULT_IDLE_CONNECTIONS (default 10000, capped below `ulimit -n`).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import harness
import reliability as rel
from apiclient import TIMEOUT, describe, expect_json

SEED = int(os.environ.get("FAULT_SEED", "7"))
KILLS = int(os.environ.get("FAULT_KILLS", "6"))
IDLE_CONNECTIONS = int(os.environ.get("FAULT_IDLE_CONNECTIONS", "10000"))


def post_user(session, stack, email: str, name: str = "fault ✓", timeout: float = TIMEOUT):
    return session.post(stack.url("/add-user"), data=json.dumps({"name": name, "email": email}).encode(),
                        headers={"Content-Type": "application/json"}, timeout=timeout)


def expect_unavailable(response) -> dict:
    """The contract's answer to a fault: 503, JSON error, Retry-After, X-Request-Id."""
    assert response.status_code == 503, describe(response)
    assert response.headers.get("Content-Type") == harness.JSON_TYPE, describe(response)
    assert response.headers.get("X-Request-Id"), describe(response)
    assert (response.headers.get("Retry-After") or "").isdigit(), f"no Retry-After: {describe(response)} {dict(response.headers)}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], describe(response)
    return body


def error_lines(service) -> list[str]:
    return [line for line in service.log_text().splitlines() if "level=error" in line or "unhandled" in line]


# --------------------------------------------------------------------------- load that records what was acknowledged


class Writers:
    """Threads that create users through nginx and remember every acknowledgement.

    A request that fails without an answer (503 from nginx while usersd is down, a
    reset connection) is retried with the same email, as a careful client would; a
    409 on a retry means an earlier attempt did commit. Either way the email must
    exist exactly once in the end."""

    def __init__(self, stack, threads: int = 4, tag: str = "crash"):
        self.stack = stack
        self.tag = tag
        self.acked: dict[str, tuple[int, str]] = {}  # email -> (id, name)
        self.committed_by_retry: set[str] = set()
        self.gave_up: list[str] = []
        self.unexpected: list[str] = []
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def _count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def _run(self, k: int) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            email = f"{self.tag}{k}-{n}-{uuid.uuid4().hex[:6]}@example.com"
            name = f"{self.tag} {k}/{n} ✓"
            for attempt in range(200):
                try:
                    response = post_user(session, self.stack, email, name, timeout=30)
                except requests.RequestException:
                    self._count(0)
                    session.close()
                    session = requests.Session()
                    time.sleep(0.05)
                    continue
                self._count(response.status_code)
                if response.status_code == 201:
                    user = response.json()["user"]
                    with self.lock:
                        self.acked[email] = (user["id"], name)
                    break
                if response.status_code == 409 and attempt > 0:
                    with self.lock:
                        self.committed_by_retry.add(email)
                    break
                if response.status_code == 503:
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.unexpected.append(describe(response))
                break
            else:
                self.gave_up.append(email)


class TaskSubmitter(threading.Thread):
    """POSTs 1-second sleep tasks and remembers the acknowledged ids."""

    def __init__(self, stack, interval: float = 0.2):
        super().__init__(daemon=True)
        self.stack = stack
        self.interval = interval
        self.acked: list[int] = []
        self.unexpected: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.halt.is_set():
                try:
                    response = session.post(self.stack.url("/tasks"), data=b'{"kind": "sleep", "seconds": 1, "max_attempts": 100}',
                                            headers={"Content-Type": "application/json"}, timeout=30)
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
                if response.status_code == 202:
                    self.acked.append(response.json()["task"]["id"])
                elif response.status_code != 503:
                    self.unexpected.append(describe(response))
                self.halt.wait(self.interval)


def check_acknowledged(stack, writers: Writers) -> None:
    rows = rel.query(stack.service.db, "SELECT id, name, email FROM users")
    by_email = {email: (user_id, name) for user_id, name, email in rows}
    lost = {email: ack for email, ack in writers.acked.items() if by_email.get(email) != ack}
    assert not lost, f"{len(lost)} acknowledged users lost or changed: {list(lost.items())[:10]}"
    missing_retried = [email for email in writers.committed_by_retry if email not in by_email]
    assert not missing_retried, missing_retried[:10]
    duplicates = rel.query(stack.service.db, "SELECT email_key, COUNT(*) FROM users GROUP BY email_key HAVING COUNT(*) > 1")
    assert not duplicates, duplicates[:10]
    # and through the API, a sample by both routes
    with requests.Session() as session:
        for email, (user_id, name) in list(writers.acked.items())[:: max(1, len(writers.acked) // 50)]:
            got = expect_json(session.get(stack.url(f"/users/{user_id}"), timeout=TIMEOUT), 200)
            assert (got["email"], got["name"]) == (email, name)


def wait_tasks_succeeded(stack, ids: list[int], timeout: float) -> list[tuple]:
    """Polls the tasks table until every id succeeded; returns the ones that did not."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))

    def pending():
        return rel.query(stack.service.db, f"SELECT id, state, attempts, last_error FROM tasks WHERE id IN ({marks}) AND state != 'succeeded'", ids)

    deadline = time.monotonic() + timeout
    left = pending()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = pending()
    found = {row[0] for row in rel.query(stack.service.db, f"SELECT id FROM tasks WHERE id IN ({marks})", ids)}
    return left + [(task_id, "missing") for task_id in ids if task_id not in found]


# --------------------------------------------------------------------------- crashes and restarts


def test_kill9_under_load_loses_nothing(make_stack):
    rng = random.Random(SEED)
    stack = make_stack().start()
    service = stack.service
    kills = []
    with Writers(stack, threads=4) as writers:
        tasks = TaskSubmitter(stack)
        tasks.start()
        for round_ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            before = len(writers.acked)
            service.kill9()
            kills.append((round_, before, service.proc.returncode))
            time.sleep(rng.uniform(0.0, 0.3))
            service.start()
        time.sleep(1.0)
        tasks.halt.set()
        tasks.join(60)
    print(f"\n{KILLS} kill -9 rounds; {len(writers.acked)} users acknowledged, {len(writers.committed_by_retry)} committed "
          f"by an attempt whose answer was lost; statuses {writers.statuses}; {len(tasks.acked)} tasks acknowledged")
    assert all(code == -signal.SIGKILL for _, _, code in kills), kills
    assert not writers.unexpected, writers.unexpected[:10]
    assert not writers.gave_up, writers.gave_up[:10]
    assert not tasks.unexpected, tasks.unexpected[:10]
    assert len(writers.acked) > 50 and len(tasks.acked) > 5
    check_acknowledged(stack, writers)
    unfinished = wait_tasks_succeeded(stack, tasks.acked, timeout=90)
    assert not unfinished, f"{len(unfinished)} acknowledged tasks did not succeed: {unfinished[:10]}"
    assert service.stop() == 0
    assert rel.integrity_check(service.db) == "ok"
    assert not error_lines(service), error_lines(service)[:10]


class HeldSocketService:
    """usersd generations on one listening socket that the test holds, as systemd's
    usersd.socket does (LISTEN_FDS=1, fd 3): between generations connections wait in
    the socket's backlog instead of being refused."""

    def __init__(self, workdir: Path, args=()):
        self.dir = Path(workdir)
        self.socket = self.dir / "held.sock"
        self.db = self.dir / "users.sqlite3"
        self.log_path = self.dir / "usersd-held.log"
        self.args = list(args)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.socket))
        self.listener.listen(4096)
        self.proc: subprocess.Popen | None = None
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        notify = harness.NotifySocket(self.dir / f"held-notify-{self.generation}.sock")
        env = harness.clean_env({"LISTEN_FDS": "1", "NOTIFY_SOCKET": str(notify.path)})
        fd = self.listener.fileno()
        command = ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", harness.usersd_bin(), "serve", "--db", str(self.db), *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
                                         pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3))
        try:
            notify.wait_for("READY=1", harness.START_TIMEOUT, alive=lambda: self.proc.poll() is None, what="usersd (held socket)")
        finally:
            notify.close()

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.listener.close()

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


def test_sigterm_restarts_with_held_socket_lose_nothing_and_answer_no_5xx():
    """Restarts the way systemd does them with socket activation (stop, then start, the
    socket held throughout), under concurrent writes: no 5xx at all, nothing lost."""
    workdir = harness.make_workdir()
    service = HeldSocketService(workdir)
    web = harness.Nginx(workdir, service.socket)
    stack = type("HeldStack", (), {"url": staticmethod(web.url), "service": service})
    rng = random.Random(SEED + 1)
    try:
        service.start()
        web.start()
        codes = []
        with Writers(stack, threads=4, tag="term") as writers:
            for _ in range(10):
                time.sleep(rng.uniform(0.3, 1.0))
                codes.append(service.stop())
                service.start()
            time.sleep(0.5)
        print(f"\n10 SIGTERM restarts with the socket held; {len(writers.acked)} users acknowledged; statuses {writers.statuses}")
        assert codes == [0] * 10, codes
        bad = {status: n for status, n in writers.statuses.items() if status != 201}
        assert not bad, f"answers other than 201 across the restarts: {bad}\n{web.log_tail()}"
        check_acknowledged(stack, writers)
        assert service.stop() == 0
        assert rel.integrity_check(service.db) == "ok"
    finally:
        web.stop()
        service.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- the database under another process's lock


def test_database_locked_by_another_process(make_stack):
    stack = make_stack(args=["--busy-timeout", "300"]).start()
    with requests.Session() as http:
        created = expect_json(post_user(http, stack, "before-lock@example.com"), 201)["user"]
        holder = sqlite3.connect(str(stack.service.db), isolation_level=None, timeout=10)
        try:
            holder.execute("BEGIN IMMEDIATE")  # what `sqlite3 DB` + BEGIN IMMEDIATE does: holds the write lock
            start = time.monotonic()
            response = post_user(http, stack, "during-lock@example.com")
            waited = time.monotonic() - start
            body = expect_unavailable(response)
            print(f"\nPOST during the lock: 503 after {waited:.3f}s ({body['error']!r})")
            # It waited for the lock (the busy timeout), and gave up soon after it.
            assert 0.25 <= waited < 5, waited
            for method, path, payload in (("POST", "/users", {"name": "x", "email": "x-lock@example.com"}),
                                          ("PATCH", f"/users/{created['id']}", {"name": "renamed"}),
                                          ("DELETE", f"/users/{created['id']}", None),
                                          ("POST", "/tasks", {"kind": "sleep", "seconds": 1})):
                answer = http.request(method, stack.url(path), data=json.dumps(payload).encode() if payload else None,
                                      headers={"Content-Type": "application/json"} if payload else {}, timeout=TIMEOUT)
                expect_unavailable(answer)
            # Readers are not blocked by a writer in WAL mode.
            assert expect_json(http.get(stack.url(f"/user/{created['id']}"), timeout=TIMEOUT), 200)["email"] == "before-lock@example.com"
            assert created["id"] in [u["id"] for u in expect_json(http.get(stack.url("/users"), timeout=TIMEOUT), 200)]
            expect_json(http.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Lock gone: writes work again at once, and nothing half-done was left behind.
        expect_json(post_user(http, stack, "after-lock@example.com"), 201)
        emails = [u["email"] for u in expect_json(http.get(stack.url("/users"), timeout=TIMEOUT), 200)]
        assert "during-lock@example.com" not in emails and "after-lock@example.com" in emails
        assert expect_json(http.get(stack.url(f"/users/{created['id']}"), timeout=TIMEOUT), 200)["name"] == created["name"]
    assert stack.service.running()
    assert stack.service.stop() == 0
    assert rel.integrity_check(stack.service.db) == "ok"


# --------------------------------------------------------------------------- full disk, read-only database file


def skip_without_tools(*tools: str, package: str) -> None:
    """Skips (a failure under CI=true, see conftest.py) when a tool is not installed."""
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (Debian package {package}; scripts/deps.sh test installs it)")


@pytest.fixture
def tiny_disk():
    """A 4 MiB tmpfs for the database (needs root: CI runs the suite as root)."""
    skip_without_tools("mount", "umount", package="mount")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root on a throwaway machine)")
    directory = Path(harness.make_workdir("usersd-disk-"))
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)], capture_output=True, text=True)
    if mount.returncode != 0:
        directory.rmdir()
        pytest.skip(f"cannot mount a small tmpfs to fill (needs CAP_SYS_ADMIN): {mount.stderr.strip()}")
    yield directory
    subprocess.run(["umount", "-l", str(directory)], capture_output=True)
    directory.rmdir()


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_disk_full_is_503_and_recovers(make_stack, tiny_disk):
    stack = make_stack()
    stack.service.db = tiny_disk / "users.sqlite3"
    stack.start()
    with requests.Session() as http:
        before = [expect_json(post_user(http, stack, f"full-before{i}@example.com"), 201)["user"] for i in range(20)]
        filler = fill(tiny_disk)
        failures = 0
        for i in range(40):  # enough writes that the WAL must grow into the full disk
            response = post_user(http, stack, f"full-during{i}@example.com", name="x" * 50)
            if response.status_code == 201:
                continue
            failures += 1
            expect_unavailable(response)
        assert failures, "no write failed on a full disk"
        expect_json(http.get(stack.url(f"/user/{before[0]['id']}"), timeout=TIMEOUT), 200)
        expect_json(http.get(stack.url("/users"), timeout=TIMEOUT), 200)
        assert stack.service.running(), stack.service.log_tail()
        filler.unlink()
        after = expect_json(post_user(http, stack, "full-after@example.com"), 201)["user"]
        listed = {u["email"] for u in expect_json(http.get(stack.url("/users"), timeout=TIMEOUT), 200)}
        assert {u["email"] for u in before} | {after["email"]} <= listed
    print(f"\n{failures} of 40 writes on the full disk got 503")
    assert stack.service.stop() == 0
    assert rel.integrity_check(stack.service.db) == "ok"


def test_read_only_database_file_is_503_and_recovers(make_stack):
    """The database files made immutable (chattr +i: root bypasses plain permissions)."""
    skip_without_tools("chattr", package="e2fsprogs")
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root (CI runs the suite as root on a throwaway machine)")
    stack = make_stack().start()
    db = stack.service.db
    with requests.Session() as http:
        created = expect_json(post_user(http, stack, "ro-before@example.com"), 201)["user"]
        files = [str(db), f"{db}-wal", f"{db}-shm"]
        locked = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True)
        if locked.returncode != 0:
            subprocess.run(["chattr", "-i", *files], capture_output=True)  # any it did lock
            pytest.skip(f"chattr +i is not available here (CAP_LINUX_IMMUTABLE, a filesystem with the immutable flag): "
                        f"{locked.stderr.strip()}")
        try:
            for i in range(3):
                expect_unavailable(post_user(http, stack, f"ro-during{i}@example.com"))
            expect_json(http.get(stack.url(f"/user/{created['id']}"), timeout=TIMEOUT), 200)
            assert stack.service.running()
        finally:
            subprocess.run(["chattr", "-i", *files], capture_output=True)
        expect_json(post_user(http, stack, "ro-after@example.com"), 201)
    assert stack.service.stop() == 0
    assert rel.integrity_check(db) == "ok"


# --------------------------------------------------------------------------- clients: slow, vanishing, many, idle

BIG = 20000


@pytest.fixture(scope="module")
def big():
    """20 000 users written behind a stopped service's back (as test_streaming does)."""
    stack, _ = harness.seeded_stack(BIG, tag="faults")
    yield stack
    stack.close()


def http_get_raw(port: int, path: str, keep_alive: bool = True) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode()


#: nginx keeps up to `keepalive 16` idle upstream connections per worker (2 workers)
NGINX_KEPT = 2 * 16


def settle_sockets(pid: int, baseline: int, timeout: float = 20) -> int:
    """usersd's socket count once nginx's kept connections are all that is left."""
    return rel.wait_until(lambda: rel.socket_count(pid) <= baseline + NGINX_KEPT + 2 and rel.socket_count(pid), timeout) or rel.socket_count(pid)


def baseline_sockets(stack) -> int:
    time.sleep(0.2)
    return rel.socket_count(stack.service.pid)


def test_clients_disconnecting_mid_response(big):
    stack = big
    pid = stack.service.pid
    base = baseline_sockets(stack)
    rng = random.Random(SEED)
    with rel.Prober(stack.url, tag="midprobe") as prober:
        for k in range(100):
            sock = socket.create_connection(("127.0.0.1", stack.nginx.port), timeout=10)
            sock.sendall(http_get_raw(stack.nginx.port, "/users"))
            wanted = rng.choice([0, 1, 100, 5000, 65536, 300000])
            got = 0
            while got < wanted:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            if k % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
    assert not prober.failures, prober.failures[:10]
    assert stack.service.running(), stack.service.log_tail()
    users = expect_json(requests.get(stack.url("/users"), timeout=60), 200)
    assert len(users) >= BIG
    after = settle_sockets(pid, base)
    assert after <= base + NGINX_KEPT + 2, f"usersd sockets: {base} before, {after} after: {rel.fd_kinds(pid)}"
    assert not error_lines(stack.service), error_lines(stack.service)[:5]


def test_slow_clients_do_not_hold_up_others(big):
    """Slowloris through nginx (headers a byte at a time), slow request bodies, and
    slow readers of the big streamed GET /users, all at once: everyone else is served."""
    stack = big
    pid = stack.service.pid
    base = baseline_sockets(stack)
    port = stack.nginx.port
    stop = threading.Event()
    slow_read_bytes = []

    def slowloris(k):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        request = http_get_raw(port, "/healthz")
        try:
            for byte in request[:-2]:
                if stop.is_set():
                    break
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        finally:
            sock.close()

    def slow_body(k):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        body = json.dumps({"name": "slow", "email": f"slow{k}-{uuid.uuid4().hex[:6]}@example.com"}).encode()
        head = f"POST /add-user HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        try:
            for byte in body:
                if stop.is_set():
                    return None
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer.split(b" ", 2)[1]
        finally:
            sock.close()

    def slow_reader(k):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(http_get_raw(port, "/users", keep_alive=False))
        got = 0
        try:
            while not stop.is_set():
                chunk = sock.recv(512)
                if not chunk:
                    break
                got += len(chunk)
                time.sleep(0.05)
        finally:
            slow_read_bytes.append(got)
            sock.close()

    with rel.Prober(stack.url, tag="slowprobe") as prober, ThreadPoolExecutor(max_workers=130) as pool:
        loris = [pool.submit(slowloris, k) for k in range(60)]
        bodies = [pool.submit(slow_body, k) for k in range(30)]
        readers = [pool.submit(slow_reader, k) for k in range(30)]
        time.sleep(6)
        stop.set()
        for future in loris + readers:
            future.result(timeout=60)
        body_statuses = [future.result(timeout=60) for future in bodies]
    print(f"\nslow clients: prober {prober.rounds} rounds (max latency {prober.max_latency:.3f}s), slow readers got "
          f"{sum(slow_read_bytes)} bytes, slow bodies {body_statuses.count(b'201')} x 201")
    assert not prober.failures, prober.failures[:10]
    assert prober.rounds >= 5
    assert all(status in (b"201", None) for status in body_statuses), body_statuses
    assert stack.service.running()
    after = settle_sockets(pid, base)
    assert after <= base + NGINX_KEPT + 2, f"usersd sockets: {base} before, {after} after: {rel.fd_kinds(pid)}"


def test_many_idle_keepalive_connections(big):
    """Thousands of kept-alive client connections to nginx doing nothing: the service
    keeps answering, and usersd's own descriptors do not follow the client count."""
    stack = big
    pid = stack.service.pid
    base_sockets = rel.socket_count(pid)
    port = stack.nginx.port
    import resource

    wanted = min(IDLE_CONNECTIONS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    conns = []
    answered = 0
    try:
        for k in range(wanted):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                break
            conns.append(sock)
            sock.sendall(http_get_raw(port, "/healthz"))
        poller = select.poll()
        for sock in conns:
            poller.register(sock, select.POLLIN)
        pending = {sock.fileno(): sock for sock in conns}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(1000):
                sock = pending.pop(fd, None)
                if sock is None:
                    continue
                poller.unregister(fd)
                if sock.recv(65536).startswith(b"HTTP/1.1 200"):
                    answered += 1
        with requests.Session() as http:
            for _ in range(20):
                expect_json(http.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
            expect_json(post_user(http, stack, f"idle-{uuid.uuid4().hex[:8]}@example.com"), 201)
        during = rel.socket_count(pid)
    finally:
        for sock in conns:
            sock.close()
    print(f"\n{len(conns)} idle keep-alive connections opened, {answered} answered 200; usersd sockets {base_sockets} -> {during}")
    assert answered == wanted, answered
    # usersd sees nginx's upstream connections (at most `keepalive 16` idle per nginx
    # worker once the burst is over), never one per client.
    assert during <= base_sockets + NGINX_KEPT + 2, rel.fd_kinds(pid)
    assert stack.service.running()


def test_more_connections_than_usersd_threads(make_stack):
    """usersd capped at 40 FastCGI connections (threads), 150 clients at once through
    nginx: the extra connections wait in the backlog and every request is answered."""
    stack = make_stack(args=["--max-connections", "40"]).start()

    def client(k):
        with requests.Session() as http:
            codes = []
            for n in range(5):
                codes.append(post_user(http, stack, f"many{k}-{n}-{uuid.uuid4().hex[:6]}@example.com").status_code)
                codes.append(http.get(stack.url("/users?limit=5"), timeout=TIMEOUT).status_code)
            return codes

    with ThreadPoolExecutor(max_workers=150) as pool:
        codes = [code for result in pool.map(client, range(150)) for code in result]
    assert codes.count(201) == 750 and codes.count(200) == 750, {code: codes.count(code) for code in set(codes)}
    assert stack.service.running()


# --------------------------------------------------------------------------- a service manager that stops reading


def test_unread_notify_socket_does_not_hang_shutdown(make_stack):
    """sd_notify datagrams pile up when the NOTIFY_SOCKET reader stops reading (a busy
    or stuck service manager; the harness reads only until READY=1). The queue holds
    10 datagrams; with the watchdog at 1 s usersd sends STATUS every 0.5 s, so it is
    full within seconds. usersd must drop notifications rather than block on them:
    SIGTERM still ends it promptly."""
    stack = make_stack(env={"WATCHDOG_USEC": "1000000"}).start()
    time.sleep(8)  # > 10 datagrams at 0.5 s each, nobody reading
    expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
    stack.service.send_signal(signal.SIGTERM)
    try:
        code = stack.service.proc.wait(20)
    except subprocess.TimeoutExpired:
        pid = stack.service.pid
        waits: dict[str, int] = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip()
            except OSError:
                continue
            waits[wchan] = waits.get(wchan, 0) + 1
        stack.service.kill9()
        pytest.fail(f"usersd did not exit within 20 s of SIGTERM with an unread NOTIFY_SOCKET; its threads wait in {waits}; "
                    f"log ends: {stack.service.log_tail(3)}")
    assert code == 0
