"""The shipped systemd units (systemd/usersd.socket, systemd/usersd.service):
they verify, they rate SAFE, usersd runs exactly as they start it (socket
activation or a socket on fd 0, STATE_DIRECTORY, their ExecStart and Environment=)
and under their hardening (seccomp allow-list, MemoryDenyWriteExecute, no
capabilities, an unprivileged user, no network), and a restart under load loses
nothing because the socket outlives the process.

systemd is not PID 1 here, so the units' effects are reproduced: the socket is
bound the way usersd.socket binds it, and unitsandbox.py applies the service's
restrictions before it execs usersd.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

import harness
from apiclient import TIMEOUT, create_user, describe, expect_json, post_json
from conftest import unique_email
from harness import REPO_ROOT, START_TIMEOUT, STOP_TIMEOUT, NotifySocket, Nginx, clean_env, usersd_bin
from unitsandbox import allowed_syscalls, audit_strace, parse_unit, unit_environment

UNIT_DIR = REPO_ROOT / "systemd"
SERVICE_FILE = UNIT_DIR / "usersd.service"
SOCKET_FILE = UNIT_DIR / "usersd.socket"
SERVICE = parse_unit(SERVICE_FILE)["Service"]
SOCKET = parse_unit(SOCKET_FILE)["Socket"]
INSTALLED_BINARY = "/usr/bin/usersd"
ENV_FILE = "/etc/default/usersd"
SANDBOX = Path(__file__).parent / "support" / "unitsandbox.py"
NOBODY = 65534


def last(section: dict, key: str, default: str | None = None) -> str | None:
    values = section.get(key)
    return values[-1] if values else default


def exec_start(binary: str) -> list[str]:
    """The unit's ExecStart=, with the installed path replaced by the binary under test."""
    argv = shlex.split(last(SERVICE, "ExecStart"))
    assert argv[0] == INSTALLED_BINARY, argv
    return [binary, *argv[1:]]


def unit_env(workdir: Path) -> dict[str, str]:
    """The unit's Environment=, with /etc/default/usersd replaced by a copy of the
    file the package installs there."""
    env = unit_environment(SERVICE)
    if "USERSD_ENV_FILE" in env:
        assert env["USERSD_ENV_FILE"] == ENV_FILE
        copy = workdir / "usersd.default"
        shutil.copy(REPO_ROOT / "packaging" / "usersd.default", copy)
        copy.chmod(0o644)
        env["USERSD_ENV_FILE"] = str(copy)
    return env


def env_file_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def seconds(value: str) -> float:
    """A systemd time span like 30s, 1min 30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", value):
        total += float(number) * units[unit or "s"]
    return total


@pytest.fixture
def workdir():
    path = Path(harness.make_workdir("usersd-unit-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class UnitProcess:
    """A usersd started the way the units start it; registered with the harness so a
    failing test shows its log tail."""

    def __init__(self, workdir: Path, name: str):
        self.dir = workdir
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.notify = NotifySocket(workdir / f"{name}-notify.sock")
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        harness.TRACKED.append(self)

    def spawn(self, argv, env, **kwargs) -> "UnitProcess":
        with open(self.log_path, "ab") as log:
            log.write(f"---- {' '.join(map(str, argv))}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, **kwargs)
        self.pid = self.proc.pid
        return self

    def wait_ready(self, pidfile: Path | None = None) -> "UnitProcess":
        try:
            self.notify.wait_for("READY=1", START_TIMEOUT, alive=lambda: self.proc.poll() is None, what=self.name)
        except BaseException:
            self.kill()
            raise
        if pidfile is not None:
            self.pid = int(pidfile.read_text())
        return self

    def signal(self, sig) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            if self.pid != self.proc.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.notify.close()

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return harness.tail(self.log_path, lines)


def bind_like_socket_unit(path: Path) -> socket.socket:
    """Binds and listens the way usersd.socket does: SocketUser/SocketGroup/SocketMode,
    Backlog=. Returns the listening socket (held by the caller, like systemd)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    if os.geteuid() == 0:
        import grp
        import pwd

        os.chown(path, pwd.getpwnam(last(SOCKET, "SocketUser", "root")).pw_uid, grp.getgrnam(last(SOCKET, "SocketGroup")).gr_gid)
    os.chmod(path, int(last(SOCKET, "SocketMode"), 8))
    listener.listen(int(last(SOCKET, "Backlog", "4096")))
    return listener


def exercise(url, tag: str) -> dict:
    """GET and POST through nginx; returns the created user."""
    with requests.Session() as http:
        user = create_user(http, url, f"{tag} ✓", unique_email(tag))
        assert expect_json(http.get(url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
        assert user in expect_json(http.get(url("/users"), timeout=TIMEOUT), 200)
        assert expect_json(http.get(url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
        return user


def db_row(db: Path, user_id: int):
    with sqlite3.connect(str(db)) as connection:
        return connection.execute("SELECT name, email FROM users WHERE id = ?", (user_id,)).fetchone()


# --------------------------------------------------------------------------- the unit files


def test_units_verify(tmp_path):
    """systemd-analyze verify: no complaint at all (with ExecStart= pointing at the
    binary under test, since /usr/bin/usersd exists only once the .deb is installed)."""
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(SOCKET_FILE, units)
    text = SERVICE_FILE.read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in text
    (units / "usersd.service").write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={usersd_bin()} "))
    command = ["systemd-analyze", "verify"]
    env = dict(os.environ)
    if shutil.which("man"):
        # Documentation=man:usersd(8): the page the package installs, generated here.
        man8 = tmp_path / "man" / "man8"
        man8.mkdir(parents=True)
        page = subprocess.run(
            ["bash", str(REPO_ROOT / "packaging" / "manpage.sh"), usersd_bin()], capture_output=True, check=True
        ).stdout
        (man8 / "usersd.8").write_bytes(page)
        env["MANPATH"] = str(tmp_path / "man")
    else:
        command.append("--man=no")
    result = subprocess.run(
        [*command, str(units / "usersd.socket"), str(units / "usersd.service")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"systemd-analyze verify: exit {result.returncode}\n{result.stdout}{result.stderr}"
    )


def test_security_exposure_is_safe():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=10", str(SERVICE_FILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for usersd\.service: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposed = "\n".join(line for line in result.stdout.splitlines() if line.startswith("✗"))
    assert float(match.group(1)) <= 1.0, f"exposure {match.group(1)} {match.group(2)}:\n{exposed}"


def test_units_agree_with_usersd_and_nginx():
    """The settings the units and the rest of the product must agree on."""
    # the socket nginx connects to is the socket systemd holds
    site = (REPO_ROOT / "nginx" / "usersd.conf").read_text()
    assert re.findall(r"server\s+unix:(\S+?);", site) == SOCKET["ListenStream"]
    assert last(SOCKET, "Accept") == "no"
    assert last(SOCKET, "SocketGroup") == "www-data" and last(SOCKET, "SocketMode") == "0660"
    # how usersd is started and supervised
    assert last(SERVICE, "ExecStart") == f"{INSTALLED_BINARY} serve"
    assert last(SERVICE, "Type") == "notify" and last(SERVICE, "NotifyAccess") == "main"
    assert last(SERVICE, "DynamicUser") == "yes" and last(SERVICE, "StateDirectory") == "usersd"
    assert seconds(last(SERVICE, "WatchdogSec")) > 0
    assert last(SERVICE, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # the stop timeout covers usersd's whole drain: requests, then tasks
    help_text = subprocess.run([usersd_bin(), "--help"], capture_output=True, text=True, check=True).stdout
    env = {**env_file_values(REPO_ROOT / "packaging" / "usersd.default"), **unit_environment(SERVICE)}

    def setting(flag: str, variable: str) -> float:
        default = re.search(rf"{flag} SECONDS.*\n.*\(default ([\d.]+)\)", help_text)
        assert default, f"{flag} not in usersd --help"
        return float(env.get(variable, default.group(1)))

    drain = setting("--shutdown-grace", "USERSD_SHUTDOWN_GRACE") + setting("--task-grace", "USERSD_TASK_GRACE")
    assert seconds(last(SERVICE, "TimeoutStopSec")) > drain, "systemd would SIGKILL usersd while it drains"
    # the unit's settings are valid for usersd (a bad one would exit 64 at every start)
    check_env = clean_env({**unit_environment(SERVICE), "USERSD_ENV_FILE": str(REPO_ROOT / "packaging" / "usersd.default")})
    result = subprocess.run(
        [usersd_bin(), "check", "--db", "/nonexistent-dir/users.sqlite3"], capture_output=True, text=True, env=check_env
    )
    assert result.returncode != 64, result.stderr


# --------------------------------------------------------------------------- started as the units start it


@pytest.mark.parametrize("how", ["LISTEN_FDS", "fd0"])
def test_started_as_the_units_start_it(workdir, how):
    """The unit's exact ExecStart= and Environment=, STATE_DIRECTORY instead of --db,
    and the socket from systemd-socket-activate (LISTEN_FDS, fd 3) or on fd 0
    (StandardInput=socket / spawn-fcgi); GET and POST through the shipped nginx site."""
    state = workdir / "state"
    state.mkdir(mode=0o700)
    sock = workdir / "usersd.sock"
    service = UnitProcess(workdir, f"usersd-{how}")
    env = {**unit_env(workdir), "STATE_DIRECTORY": str(state), "NOTIFY_SOCKET": str(service.notify.path)}
    argv = exec_start(usersd_bin())
    if how == "LISTEN_FDS":
        command = ["systemd-socket-activate", "-l", str(sock), *[f"--setenv={k}={v}" for k, v in env.items()], *argv]
        service.spawn(command, clean_env(), stdin=subprocess.DEVNULL, cwd=str(workdir))
        # it execs usersd in place on the first connection
        activation = harness.connect_unix(sock, START_TIMEOUT)
        with activation:
            service.wait_ready()
            activation.settimeout(TIMEOUT)
            status, _, body = harness.fastcgi_request(activation, "GET", "/healthz")
        assert status == 200, body
    else:
        command = ["spawn-fcgi", "-s", str(sock), "-n", "--", *argv]
        service.spawn(command, clean_env(env), stdin=subprocess.DEVNULL, cwd=str(workdir))
        service.wait_ready()
    assert os.path.realpath(f"/proc/{service.pid}/exe") == os.path.realpath(usersd_bin())
    web = Nginx(workdir, sock)
    try:
        web.start()
        user = exercise(web.url, how)
        assert service.stop() == 0
        assert service.notify.seen("STOPPING=1"), service.notify.lines
    finally:
        web.stop()
        service.close()
    # the database went where StateDirectory= puts it, and nowhere else
    assert (state / "users.sqlite3").exists(), sorted(p.name for p in state.iterdir())
    assert not (workdir / "data").exists()
    assert db_row(state / "users.sqlite3", user["id"]) == (user["name"], user["email"])
    assert f"{state}/users.sqlite3" in service.log_text()


# --------------------------------------------------------------------------- under the unit's hardening


def sandboxed_service(workdir: Path, name: str, strace_log: Path | None, watchdog_usec: int):
    """usersd as usersd.service runs it: an unprivileged user that is not in the
    socket's group, no capabilities, no network, seccomp allow-list + MDWE,
    STATE_DIRECTORY owned by that user, cwd /, the socket passed through LISTEN_FDS
    and bound like usersd.socket. Returns (service, listener, state dir, binary)."""
    os.chmod(workdir, 0o711)
    binary = workdir / "usersd"
    shutil.copy(usersd_bin(), binary)  # the repository may not be readable by nobody
    binary.chmod(0o755)
    state = workdir / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    sock = workdir / "usersd.sock"
    listener = bind_like_socket_unit(sock)
    service = UnitProcess(workdir, name)
    os.chmod(service.notify.path, 0o777)  # like /run/systemd/notify
    pidfile = workdir / f"{name}.pid"
    env = clean_env(
        {
            **unit_env(workdir),
            "STATE_DIRECTORY": str(state),
            "NOTIFY_SOCKET": str(service.notify.path),
            "LISTEN_FDS": "1",
            "LISTEN_FDNAMES": "usersd.socket",
            "WATCHDOG_USEC": str(watchdog_usec),
        }
    )
    argv = [sys.executable, str(SANDBOX), "--unit", str(SERVICE_FILE), "--uid", str(NOBODY), "--gid", str(NOBODY)]
    argv += ["--pidfile", str(pidfile), "--", str(binary), *exec_start(str(binary))[1:]]
    if strace_log is not None:
        argv = ["strace", "-f", "-qq", "-s", "256", "-o", str(strace_log), *argv]
    fd = listener.fileno()

    def socket_on_fd3():
        os.dup2(fd, 3)

    service.spawn(argv, env, stdin=subprocess.DEVNULL, cwd="/", pass_fds=(3,), preexec_fn=socket_on_fd3)
    service.wait_ready(pidfile)
    return service, listener, state, binary


def workload(url) -> dict:
    """Every kind of work usersd does: reads, writes, streaming, tasks, metrics."""
    with requests.Session() as http:
        user = create_user(http, url, "sandboxed ✓", unique_email("sandbox"))
        assert expect_json(http.get(url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
        other = create_user(http, url, "to delete", unique_email("sandbox"), path="/users")
        expect_json(post_json(http, url(f"/users/{user['id']}"), {"name": "patched ✓"}, method="PATCH"), 200)
        assert http.delete(url(f"/users/{other['id']}"), timeout=TIMEOUT).status_code == 204
        assert any(u["id"] == user["id"] for u in expect_json(http.get(url("/users"), timeout=TIMEOUT), 200))
        task = expect_json(post_json(http, url("/tasks"), {"kind": "sleep", "seconds": 0.2}), 202)["task"]
        deadline = time.monotonic() + 20
        while True:
            state = expect_json(http.get(url(f"/tasks/{task['id']}"), timeout=TIMEOUT), 200)["state"]
            if state == "succeeded":
                break
            assert state in ("queued", "running") and time.monotonic() < deadline, f"task {task['id']}: {state}"
            time.sleep(0.05)
        metrics = http.get(url("/metrics"), timeout=TIMEOUT)
        assert metrics.status_code == 200, describe(metrics)
        assert expect_json(http.get(url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
        user["name"] = "patched ✓"
        return user


def run_sandboxed(workdir: Path, strace_log: Path | None):
    watchdog_usec = 2_000_000  # the unit says 30 s; the same code path, sooner
    service, listener, state, binary = sandboxed_service(workdir, "usersd-sandbox", strace_log, watchdog_usec)
    web = Nginx(workdir, workdir / "usersd.sock")
    try:
        status = Path(f"/proc/{service.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{NOBODY}\s", status, re.M) and re.search(r"^CapBnd:\s+0+$", status, re.M), status
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^Seccomp:\s+2$", status, re.M), status
        web.start()
        user = workload(web.url)
        # The unit lets the workers take SCHED_BATCH (sched_setscheduler is allowed;
        # RestrictRealtime= still refuses the real-time policies).
        policies = harness.thread_policies(service.pid)
        assert policies.get("usersd-fcgi") == {3} and policies.get("usersd-writer") == {0}, policies
        # ExecReload=: SIGHUP keeps serving
        service.signal(signal.SIGHUP)
        exercise(web.url, "reloaded")
        # WatchdogSec=: usersd must send WATCHDOG=1 within a few intervals (from its
        # real health check), or systemd kills and restarts it
        try:
            service.notify.wait_for("WATCHDOG=1", 4 * watchdog_usec / 1e6, alive=lambda: service.proc.poll() is None)
            watchdog = None
        except harness.StartError as error:
            watchdog = str(error)
        assert service.stop() == 0
        assert service.notify.seen("STOPPING=1"), service.notify.lines
    finally:
        web.stop()
        service.close()
        listener.close()
    # errors other than the watchdog's health check (test_runs_under_the_unit_hardening)
    errors = [l for l in service.log_text().splitlines() if "level=error" in l and "health check failed" not in l]
    assert not errors, errors[:5]
    assert "normal scheduling policy" not in service.log_text()
    db = state / "users.sqlite3"
    assert db.stat().st_uid == NOBODY and stat.S_IMODE(db.stat().st_mode) & 0o077 == 0  # UMask=0077
    assert db_row(db, user["id"]) == (user["name"], user["email"])
    return state, binary, watchdog


def test_runs_under_the_unit_hardening(workdir):
    """Everything usersd does (reads, writes, streaming, tasks, metrics, SIGHUP,
    SIGTERM, the watchdog) works as usersd.service runs it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user and unshare namespaces, as systemd does")
    service_log = workdir / "usersd-sandbox.log"
    _, _, watchdog = run_sandboxed(workdir, None)
    probe_errors = [line for line in service_log.read_text().splitlines() if "health check failed" in line]
    assert watchdog is None, (
        f"{watchdog}\nusersd's log: {probe_errors[:3]}\n"
        "Under usersd.service systemd would kill usersd every WatchdogSec= and restart it."
    )


#: System calls usersd makes that the unit denies on purpose (EPERM, see the unit).
EXPECTED_DENIED = {
    # libdispatch sets a nice value per worker thread for its QoS classes: 0 (the
    # default anyway) or -4, which needs CAP_SYS_NICE and fails outside any sandbox
    # too. Denying it (SystemCallFilter=~@resources) changes nothing.
    "setpriority",
}


#: Files outside ProcSubset=pid that are read but whose absence is handled.
HIDDEN_OK = {
    # glibc malloc reads it once to decide how to give heap memory back; when it is
    # missing it uses madvise(MADV_DONTNEED), which is right for overcommit 0 and 1.
    "/proc/sys/vm/overcommit_memory",
}


def test_syscalls_and_files_stay_within_the_unit_hardening(workdir):
    """The same run under strace: every system call usersd makes is in the unit's
    SystemCallFilter= allow-list (a denied one would fail with EPERM somewhere deep
    in the Swift runtime), no W+X memory, only AF_UNIX sockets, /proc only for its own
    process (ProcSubset=pid), only the devices PrivateDevices= leaves, and writes only
    under StateDirectory= (ProtectSystem=strict)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user and unshare namespaces, as systemd does")
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (scripts/deps.sh test installs it)")
    log = workdir / "strace.log"
    state, binary, _ = run_sandboxed(workdir, log)
    audit = audit_strace(log, str(binary))
    assert audit["syscalls"], f"usersd's execve not found in {log}"
    allowed = allowed_syscalls(SERVICE)
    denied = {
        name: n
        for name, n in audit["syscalls"].items()
        if name not in allowed and name not in EXPECTED_DENIED and name != "execve"
    }
    assert not denied, f"system calls outside SystemCallFilter=: {denied}"
    assert not audit["wx_maps"], audit["wx_maps"][:5]
    assert all(f in ("AF_UNIX", "AF_LOCAL") for f in audit["socket_families"]), audit["socket_families"]
    devices = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/log"}
    problems = []
    for path, flags in audit["opened"]:
        if path.startswith("/proc/") and not re.match(r"/proc/(self|thread-self|\d+)(/|$)", path) and path not in HIDDEN_OK:
            problems.append(f"{path}: not visible with ProcSubset=pid")
        if path.startswith("/dev/") and path not in devices and not path.startswith(("/dev/shm/", "/dev/pts/")):
            problems.append(f"{path}: not visible with PrivateDevices=yes")
        writes = any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT"))
        # A thread naming itself writes its own /proc/thread-self/comm: ProtectSystem=
        # leaves /proc writable (it is an API file system; ProtectKernelTunables=
        # guards /proc/sys), and ProcSubset=pid keeps the process's own entries.
        own_name = re.fullmatch(r"/proc/(self|thread-self|\d+)(/task/\d+)?/comm", path)
        if writes and not (path.startswith(f"{state}/") or path in devices or own_name
                           or path.startswith(("/tmp/", "/var/tmp/", "/dev/shm/"))):
            problems.append(f"{path} ({flags}): read-only with ProtectSystem=strict")
    assert not problems, problems


# --------------------------------------------------------------------------- zero-downtime restart


class Load:
    """Continuous requests through nginx from a few threads: GET /user/<id> of a
    known user and POST /add-user with unique emails. Records every answer."""

    def __init__(self, url, known: dict, getters: int = 2, posters: int = 2):
        self.url = url
        self.known = known
        self.stop_event = threading.Event()
        self.lock = threading.Condition()
        self.ok = 0
        self.failures: list[str] = []
        self.created: list[dict] = []
        self.threads = [threading.Thread(target=self.get_loop, daemon=True) for _ in range(getters)]
        self.threads += [threading.Thread(target=self.post_loop, args=(i,), daemon=True) for i in range(posters)]

    def record(self, ok: bool, what: str, user: dict | None = None) -> None:
        with self.lock:
            if ok:
                self.ok += 1
                if user:
                    self.created.append(user)
            else:
                self.failures.append(what)
            self.lock.notify_all()

    def get_loop(self) -> None:
        with requests.Session() as http:
            while not self.stop_event.is_set():
                try:
                    r = http.get(self.url(f"/user/{self.known['id']}"), timeout=TIMEOUT)
                    good = r.status_code == 200 and r.json() == self.known
                    self.record(good, describe(r))
                except Exception as error:  # noqa: BLE001 - every failure counts
                    self.record(False, f"GET: {error!r}")

    def post_loop(self, index: int) -> None:
        with requests.Session() as http:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                email = f"zd-{index}-{n}-{uuid.uuid4().hex[:8]}@example.com"
                try:
                    r = post_json(http, self.url("/add-user"), {"name": f"restart {index}/{n}", "email": email})
                    good = r.status_code == 201 and r.json()["user"]["email"] == email
                    self.record(good, describe(r), r.json()["user"] if good else None)
                except Exception as error:  # noqa: BLE001
                    self.record(False, f"POST {email}: {error!r}")

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def wait_for_more(self, count: int, timeout: float = 60) -> None:
        """Blocks until `count` more requests succeeded (the load is really running)."""
        with self.lock:
            target = self.ok + count
            assert self.lock.wait_for(lambda: self.ok >= target or self.failures, timeout), "load stalled"

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(TIMEOUT + 5)


def test_zero_downtime_restarts(workdir):
    """The test holds the listening socket like systemd does; usersd gets it on fd 0.
    Under continuous GETs and POSTs through nginx, usersd is restarted 4 times as
    `systemctl restart` does it (SIGTERM, wait for the exit, start the new one:
    requests wait in the socket's backlog meanwhile). Before two of them a second
    process is started beside the serving one, as an overlapping hand-over would: it
    must refuse (exit 75, one process serves a database) and change nothing. Not one
    request may fail, and every user answered 201 must exist afterwards."""
    state = workdir / "state"
    state.mkdir()
    sock = workdir / "usersd.sock"
    listener = bind_like_socket_unit(sock)
    env = clean_env({**unit_env(workdir), "STATE_DIRECTORY": str(state)})
    argv = exec_start(usersd_bin())
    generations: list[UnitProcess] = []
    refused: list[UnitProcess] = []

    def stop_cleanly(service: UnitProcess) -> None:
        assert service.stop() == 0, f"{service.name} exit status"
        assert service.notify.seen("STOPPING=1"), (service.name, service.notify.lines)

    def spawn(name: str) -> UnitProcess:
        service = UnitProcess(workdir, name)
        service.spawn(argv, {**env, "NOTIFY_SOCKET": str(service.notify.path)}, stdin=listener.fileno(), cwd=str(workdir))
        return service

    def start_one() -> UnitProcess:
        service = spawn(f"usersd-{len(generations) + 1}")
        generations.append(service)
        return service.wait_ready()

    def start_beside() -> None:
        intruder = spawn(f"intruder-{len(refused) + 1}")
        refused.append(intruder)
        assert intruder.proc.wait(START_TIMEOUT) == 75, intruder.log_tail()
        assert "already served by another usersd process" in intruder.log_text()
        assert not intruder.notify.seen("READY=1")

    web = Nginx(workdir, sock)
    load = None
    try:
        current = start_one()
        web.start()
        with requests.Session() as http:
            known = create_user(http, web.url, "always there ✓", unique_email("zd"))
        load = Load(web.url, known).start()
        load.wait_for_more(50)
        for attempt_overlap in [False, True, False, True]:
            if attempt_overlap:
                start_beside()
                load.wait_for_more(50)
            stop_cleanly(current)
            current = start_one()
            load.wait_for_more(50)
        load.stop()
        failures, created, ok = list(load.failures), list(load.created), load.ok
        assert not failures, f"{len(failures)} failed requests of {ok + len(failures)}, first: {failures[:5]}"
        assert len(created) > 0
        with requests.Session() as http:
            for user in created:
                assert expect_json(http.get(web.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
        stop_cleanly(current)
    finally:
        if load:
            load.stop()
        web.stop()
        for service in generations + refused:
            service.close()
        listener.close()
    assert len(generations) == 5 and len(refused) == 2
    with sqlite3.connect(str(state / "users.sqlite3")) as connection:
        stored = {row[0]: row[1] for row in connection.execute("SELECT id, email FROM users")}
    assert all(stored.get(user["id"]) == user["email"] for user in created)
