"""Harness for the end-to-end tests: the real usersd binary behind real nginx.

Everything lives in a fresh temporary directory per fixture: the FastCGI socket,
the SQLite database, usersd's log (stderr), the systemd notify socket and
nginx's prefix (config, pid, temp and log files).

    with tempfile.TemporaryDirectory() as d:
        svc = Service(d).start()          # waits for READY=1 on NOTIFY_SOCKET
        web = Nginx(d, svc.socket).start()  # shipped site, waits for the port
        requests.get(web.url("/healthz"))
        svc.stop()                        # SIGTERM, returns the exit status
        web.stop()

Readiness is always an event with a deadline: READY=1 from usersd, a TCP
connect to nginx; nothing sleeps in the hope that a race is over.

USERSD_TEST_BACKEND=postgres runs the same tests against PostgreSQL: one private
cluster per test run (scripts/pg-cluster.sh under /tmp, stopped when the run
ends), a new database in it for each Service. `sql()` and `seed_users()` work on
both; a test that needs the SQLite file itself is marked `@sqlite_only(reason)`.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
#: "sqlite" (default) or "postgres": the database every Service gets.
BACKEND = os.environ.get("USERSD_TEST_BACKEND", "sqlite").strip().lower() or "sqlite"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
JSON_TYPE = "application/json; charset=utf-8"

#: Every Service/Nginx ever created in this run; conftest prints the log tails of
#: the ones a failed test touched.
TRACKED: list = []


def usersd_bin() -> str:
    """USERSD_BIN (relative to the repo root if relative) or the debug build."""
    value = os.environ.get("USERSD_BIN")
    path = Path(value) if value else REPO_ROOT / ".build" / "debug" / "usersd"
    if not path.is_absolute():
        path = REPO_ROOT / path
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """Waits until a web server started as `proc` accepts connections on loopback `port`:
    True; False when it exited first (e.g. the port was taken in between: try another).
    Raises StartError (after stopping it) when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                stop_process(proc, signal.SIGTERM)
                raise StartError(f"{Path(proc.args[0]).name} did not listen on {port} within {timeout:.0f}s")
            time.sleep(0.02)
    return False


def stop_process(proc: subprocess.Popen | None, sig: int, timeout: float = 15.0) -> None:
    """Sends `sig` and waits up to `timeout` s, then kills; nothing when it already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_workdir(prefix: str = "usersd-e2e-") -> str:
    # Short paths under /tmp: unix socket paths are limited to 107 bytes.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def tail(path: Path, lines: int = 60) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return f"<{path}: {error}>"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def clean_env(extra: dict | None = None) -> dict:
    """The test process's environment without anything that would change usersd's
    configuration or activation mode behind the test's back."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("USERSD_") or k.startswith("LISTEN_") or k in ("NOTIFY_SOCKET", "STATE_DIRECTORY"))
    }
    env.update(extra or {})
    return env


class StartError(RuntimeError):
    pass


# --------------------------------------------------------------------------- notify


class NotifySocket:
    """The AF_UNIX datagram socket systemd would own: collects sd_notify lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists():
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.lines: list[str] = []

    def _drain(self, timeout: float) -> None:
        readable, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        while readable:
            data = self.sock.recv(65536)
            self.lines.extend(line for line in data.decode("utf-8", "replace").split("\n") if line)
            readable, _, _ = select.select([self.sock], [], [], 0)

    def wait_for(self, line: str, timeout: float, alive=lambda: True, what: str = "usersd") -> None:
        """Blocks until `line` (e.g. READY=1) arrives; raises at the deadline or when
        `alive()` says the process is gone."""
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartError(f"{what}: no {line} within {timeout:.0f}s (got {self.lines})")
            if not alive():
                self._drain(0)
                if line in self.lines:
                    break
                raise StartError(f"{what}: exited before sending {line} (got {self.lines})")
            self._drain(min(remaining, 0.2))

    def seen(self, line: str) -> bool:
        self._drain(0)
        return line in self.lines

    def close(self) -> None:
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- FastCGI


FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = 1, 3, 4, 5, 6, 7


def _fcgi_record(kind: int, request_id: int, content: bytes) -> bytes:
    padding = (8 - len(content) % 8) % 8
    return struct.pack("!BBHHBB", 1, kind, request_id, len(content), padding, 0) + content + b"\0" * padding


def _fcgi_length(n: int) -> bytes:
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("FastCGI connection closed early")
        data += chunk
    return data


def stock_params(method: str, uri: str, body: bytes = b"", content_type: str = "") -> dict:
    """The FastCGI parameters a stock nginx `include fastcgi_params` location sends."""
    path, _, query = uri.partition("?")
    return {
        "REQUEST_METHOD": method,
        "REQUEST_URI": uri,
        "DOCUMENT_URI": path,
        "SCRIPT_NAME": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
    }


def fastcgi_request(sock: socket.socket, method: str, uri: str, body: bytes = b"", content_type: str = "",
                    params: dict | None = None, drop: tuple = ()):
    """One FastCGI request on a connected socket, the parameters a stock nginx sends
    (`params` added or replaced, the names in `drop` left out).
    Returns (status, headers as a lowercase dict, body)."""
    params = {**stock_params(method, uri, body, content_type), **(params or {})}
    for name in drop:
        params.pop(name, None)
    encoded = b"".join(
        _fcgi_length(len(k.encode())) + _fcgi_length(len(v.encode())) + k.encode() + v.encode() for k, v in params.items()
    )
    out = _fcgi_record(FCGI_BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, 0))
    out += _fcgi_record(FCGI_PARAMS, 1, encoded) + _fcgi_record(FCGI_PARAMS, 1, b"")
    if body:
        out += _fcgi_record(FCGI_STDIN, 1, body)
    out += _fcgi_record(FCGI_STDIN, 1, b"")
    sock.sendall(out)
    stdout = b""
    while True:
        _, kind, _, length, padding, _ = struct.unpack("!BBHHBB", _recv_exact(sock, 8))
        content = _recv_exact(sock, length + padding)[:length]
        if kind == FCGI_STDOUT:
            stdout += content
        elif kind == FCGI_END_REQUEST:
            break
    head, _, payload = stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    status = int(headers.get("status", "200").split()[0])
    return status, headers, payload


def connect_unix(path: Path, timeout: float) -> socket.socket:
    """Poll-connects to a unix stream socket until it accepts or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


# --------------------------------------------------------------------------- usersd


class Service:
    """One usersd process.

    mode: "socket"     usersd serve --socket PATH --db DB (usersd creates the socket)
          "env"        usersd with USERSD_SOCKET and USERSD_DB in its environment
          "spawn-fcgi" spawn-fcgi -s PATH -n -- usersd serve --db DB (socket on fd 0)
          "systemd"    systemd-socket-activate -l PATH ... usersd serve (LISTEN_FDS, fd 3)
          "tcp"        usersd serve --listen 127.0.0.1:PORT --db DB (FastCGI over TCP)
    """

    def __init__(self, workdir, mode: str = "socket", db=None, args=(), env=None, name: str = "usersd"):
        self.dir = Path(workdir)
        self.mode = mode
        self.socket = self.dir / f"{name}.sock"
        if db is not None:
            self.db = db if is_postgres(db) else Path(db)
        else:
            self.db = postgres_database() if BACKEND == "postgres" else self.dir / "users.sqlite3"
        self.args = list(args)
        self.env = dict(env or {})
        self.name = name
        #: "tcp" mode: the port usersd listens on (127.0.0.1)
        self.tcp_port = free_port() if mode == "tcp" else 0
        self.log_path = self.dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.notify: NotifySocket | None = None
        self.starts = 0
        #: systemd mode: the answer to GET /healthz sent on the connection that
        #: triggered the activation (status, headers, body).
        self.activation_response = None
        #: the Nginx in front of it, if any (set by Stack): url() goes through it
        self.nginx: "Nginx | None" = None
        TRACKED.append(self)

    # -- process control

    def command(self, notify_path: Path) -> tuple[list[str], dict]:
        exe = usersd_bin()
        env = clean_env(self.env)
        if self.mode == "socket":
            env["NOTIFY_SOCKET"] = str(notify_path)
            return [exe, "serve", "--socket", str(self.socket), "--db", str(self.db), *self.args], env
        if self.mode == "tcp":
            env["NOTIFY_SOCKET"] = str(notify_path)
            return [exe, "serve", "--listen", f"127.0.0.1:{self.tcp_port}", "--db", str(self.db), *self.args], env
        if self.mode == "env":
            # serve is the default command; everything through the USERSD_* twins
            env.update(NOTIFY_SOCKET=str(notify_path), USERSD_SOCKET=str(self.socket), USERSD_DB=str(self.db))
            return [exe, *self.args], env
        if self.mode == "spawn-fcgi":
            env["NOTIFY_SOCKET"] = str(notify_path)
            return ["spawn-fcgi", "-s", str(self.socket), "-n", "--", exe, "serve", "--db", str(self.db), *self.args], env
        if self.mode == "systemd":
            cmd = [
                "systemd-socket-activate",
                "-l",
                str(self.socket),
                f"--setenv=NOTIFY_SOCKET={notify_path}",
                f"--setenv=USERSD_DB={self.db}",
            ]
            cmd += [f"--setenv={k}={v}" for k, v in self.env.items()]
            return cmd + [exe, "serve", *self.args], env
        raise ValueError(self.mode)

    def start(self, timeout: float = START_TIMEOUT) -> "Service":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        if self.mode in ("spawn-fcgi", "systemd") and self.socket.exists():
            # In these modes the launcher, not usersd, owns the socket file.
            self.socket.unlink()
        if self.notify:
            self.notify.close()
        self.notify = NotifySocket(self.dir / f"{self.name}-notify-{self.starts}.sock")
        cmd, env = self.command(self.notify.path)
        with open(self.log_path, "ab") as log:
            log.write(f"---- start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(self.dir), close_fds=True
            )
        try:
            activation = None
            if self.mode == "systemd":
                # systemd-socket-activate execs usersd on the first connection.
                activation = connect_unix(self.socket, timeout)
            self.notify.wait_for("READY=1", timeout, alive=lambda: self.proc.poll() is None, what=self.name)
            if activation is not None:
                activation.settimeout(timeout)
                with activation:
                    self.activation_response = fastcgi_request(activation, "GET", "/healthz")
        except BaseException:
            self.kill9()
            raise
        return self

    def url(self, path: str) -> str:
        assert self.nginx is not None, "no nginx in front of this service"
        return self.nginx.url(path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Sends `sig` (SIGTERM) and returns the exit status."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.send_signal(sig)
        return self.wait(timeout)

    def kill9(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout: float = START_TIMEOUT) -> int:
        code = self.stop()
        self.start(timeout)
        return code

    def close(self) -> None:
        self.kill9()
        if self.notify:
            self.notify.close()

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


# --------------------------------------------------------------------------- nginx


def _user_line() -> str:
    return "user root;" if os.geteuid() == 0 else ""


class Nginx:
    """nginx in front of a usersd socket.

    kind "shipped": scripts/nginx-local.sh around nginx/usersd.conf.
    kind "stock":   a minimal `location LOCATION { include fastcgi_params; fastcgi_pass ...; }`
                    (no keepalive); `locations` lists the location prefixes to map.
    """

    def __init__(self, workdir, socket_path, kind: str = "shipped", locations=("/",), name: str = "nginx",
                 upstream: str | None = None):
        self.run_dir = Path(workdir) / name
        self.socket = Path(socket_path)
        #: what fastcgi_pass names (stock kind): the unix socket unless given
        self.upstream = upstream or f"unix:{self.socket}"
        self.kind = kind
        self.locations = list(locations)
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen | None = None
        TRACKED.append(self)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _render(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / "nginx.conf"
        if self.kind == "shipped":
            subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "nginx-local.sh"), str(self.run_dir), str(self.socket), str(self.port)],
                check=True,
                capture_output=True,
            )
            return conf
        run = self.run_dir
        (run / "tmp").mkdir(exist_ok=True)
        (run / "logs").mkdir(exist_ok=True)
        locations = "\n".join(
            f"        location {loc} {{ include /etc/nginx/fastcgi_params; fastcgi_pass {self.upstream}; }}"
            for loc in self.locations
        )
        conf.write_text(
            f"""{_user_line()}
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/logs/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log {run}/logs/access.log;
    client_body_temp_path {run}/tmp/body;
    fastcgi_temp_path {run}/tmp/fastcgi;
    proxy_temp_path {run}/tmp/proxy;
    scgi_temp_path {run}/tmp/scgi;
    uwsgi_temp_path {run}/tmp/uwsgi;
    server {{
        listen 127.0.0.1:{self.port};
{locations}
    }}
}}
"""
        )
        return conf

    def start(self, timeout: float = START_TIMEOUT) -> "Nginx":
        for attempt in range(3):
            self.port = free_port()
            conf = self._render()
            stderr = open(self.run_dir / "stderr.log", "ab")
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.run_dir), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                close_fds=True,
            )
            stderr.close()
            if wait_listening(self.proc, self.port, timeout):
                return self
        raise StartError(f"nginx exited at start: {self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, signal.SIGQUIT, timeout)

    close = stop

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(
            [
                "stderr: " + tail(self.run_dir / "stderr.log", lines),
                "error.log: " + tail(self.run_dir / "logs" / "error.log", lines),
            ]
        )


# --------------------------------------------------------------------------- a whole stack


class Stack:
    """usersd + nginx in one temporary directory; `url(path)` goes through nginx.

    USERSD_E2E_FRONT=apache|lighttpd|caddy|h2o puts a shipped-site stack (the `api`
    fixture's) behind that server's site in docs/web-servers/ instead (see
    support/webservers.py); `nginx` is then that server."""

    def __init__(self, mode="socket", nginx_kind="shipped", locations=("/",), args=(), env=None, workdir=None):
        self.owns_dir = workdir is None
        self.dir = Path(workdir or make_workdir())
        front = os.environ.get("USERSD_E2E_FRONT", "")
        if front and front != "nginx" and mode == "socket" and nginx_kind == "shipped":
            import webservers

            webservers.prepare_workdir(self.dir)
            self.service = Service(self.dir, mode=mode, args=[*webservers.SOCKET_ARGS, *args], env=env)
            self.nginx = webservers.make_server(front, self.dir, self.service.socket)
            self.service.nginx = self.nginx
            return
        self.service = Service(self.dir, mode=mode, args=args, env=env)
        upstream = f"127.0.0.1:{self.service.tcp_port}" if mode == "tcp" else None
        self.nginx = Nginx(self.dir, self.service.socket, kind=nginx_kind, locations=locations, upstream=upstream)
        self.service.nginx = self.nginx

    def start(self) -> "Stack":
        try:
            self.service.start()
            self.nginx.start()
        except BaseException:
            self.close()
            raise
        return self

    def url(self, path: str) -> str:
        return self.nginx.url(path)

    def close(self) -> None:
        self.nginx.stop()
        self.service.close()
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def parse_json(response) -> object:
    """The body as JSON, with a readable failure if it is not."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:300]!r}")


def seed_users(db, count: int, tag: str = "seed", name=None) -> list[dict]:
    """Inserts `count` users straight into a stopped service's (migrated) database;
    returns them as {"name", "email"} in insertion order. `name(i)` makes the i-th
    name (default `"{tag} user {i} ✓"`). Each `email_key` is the service's
    (Sources/Store/EmailKey.swift): NFC, full case folding, NFC."""
    import sqlite3
    import unicodedata

    def email_key(email: str) -> str:
        return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email).casefold())

    rows = [((name(i) if name else f"{tag} user {i} ✓"), f"{tag}{i}@example.com") for i in range(count)]
    stamp = "2024-01-02T03:04:05.000Z"
    if is_postgres(db):
        def copy_text(value: str) -> str:  # COPY's text format escapes
            return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

        lines = "".join(
            "\t".join(copy_text(value) for value in (user, email, email_key(email), stamp, stamp)) + "\n"
            for user, email in rows
        )
        psql(db, "COPY users (name, email, email_key, created_at, updated_at) FROM STDIN", stdin=lines)
        return [{"name": name, "email": email} for name, email in rows]
    connection = sqlite3.connect(str(db))
    try:
        with connection:
            connection.executemany(
                "INSERT INTO users (name, email, email_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(name, email, email_key(email), stamp, stamp) for name, email in rows],
            )
    finally:
        connection.close()
    return [{"name": name, "email": email} for name, email in rows]


def seeded_stack(count: int, tag: str, **kwargs) -> tuple["Stack", list[dict]]:
    """A started Stack (kwargs as for Stack) whose database holds `count` users written
    behind its back: started once for the schema, stopped, seeded, started again.
    Returns the stack and the users seeded (see seed_users)."""
    stack = Stack(**kwargs)
    try:
        stack.start()
        assert stack.service.stop() == 0
        seeded = seed_users(stack.service.db, count, tag=tag)
        stack.service.start()
    except BaseException:
        stack.close()
        raise
    return stack, seeded


def thread_policies(pid: int) -> dict[str, set[int]]:
    """The kernel scheduling policy of each of a process's threads, by thread name
    (0 SCHED_OTHER, 3 SCHED_BATCH): field 41 of /proc/<pid>/task/<tid>/stat."""
    policies: dict[str, set[int]] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                text = stat.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
        policies.setdefault(name, set()).add(int(fields[41 - 3]))
    return policies


# --------------------------------------------------------------------------- PostgreSQL


def is_postgres(db) -> bool:
    return isinstance(db, str) and (db.startswith("postgresql://") or db.startswith("postgres://"))


class PostgresCluster:
    """A private cluster for this test process (scripts/pg-cluster.sh): data, socket and
    log in one /tmp directory, run as the postgres user, stopped when the process exits
    (PG_OWNER_PID makes the script's watcher stop it even after a crash)."""

    def __init__(self, directory: Path, port: int = 5432, listen: str = ""):
        self.dir = Path(directory)
        self.port = port
        self.listen = listen
        self.serial = 0

    def script(self, *args, env=None, timeout=120):
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "pg-cluster.sh"), *args],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        )
        if result.returncode != 0:
            raise StartError(f"pg-cluster.sh {' '.join(args)}: {result.stderr}")
        return result.stdout.strip()

    def start(self) -> "PostgresCluster":
        args = ["start", str(self.dir), str(self.port)] + ([self.listen] if self.listen else [])
        self.script(*args, env={"PG_OWNER_PID": str(os.getpid())})
        return self

    def stop(self) -> None:
        self.script("stop", str(self.dir))

    def restart(self) -> None:
        """pg_ctl restart -m fast: every session ends, the server comes back."""
        self.script("restart", str(self.dir))

    def uri(self, database: str = "postgres", host: str | None = None) -> str:
        if host:
            return f"postgresql://postgres@{host}:{self.port}/{database}"
        return f"postgresql:///{database}?host={self.dir}&port={self.port}&user=postgres"

    def new_database(self, prefix: str = "e2e") -> str:
        self.serial += 1
        name = f"{prefix}_{os.getpid()}_{self.serial}"
        psql(self.uri(), f"CREATE DATABASE {name}")
        return self.uri(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_CLUSTER: PostgresCluster | None = None


def postgres_cluster() -> PostgresCluster:
    """The test process's shared cluster, started on first use."""
    global _CLUSTER
    if _CLUSTER is None:
        import atexit

        cluster = PostgresCluster(Path(make_workdir("usersd-e2e-pg-"))).start()
        atexit.register(cluster.close)
        _CLUSTER = cluster
    return _CLUSTER


def postgres_database() -> str:
    """A new database in the shared cluster: its URI."""
    return postgres_cluster().new_database()


PSQL = shutil.which("psql") or "/usr/bin/psql"


def psql(db: str, command: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [PSQL, "-X", "-q", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", command],
        input=stdin, capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"psql {command[:80]!r}: {result.stderr}")
    return result.stdout


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def sql(db, query: str, params=()) -> list[tuple]:
    """Rows of `query` (`?` placeholders) on either backend. On PostgreSQL the values
    come back as text, whole numbers as int."""
    if not is_postgres(db):
        import sqlite3

        with contextlib_closing(sqlite3.connect(str(db))) as connection:
            return connection.execute(query, tuple(params)).fetchall()
    parts = query.split("?")
    assert len(parts) == len(params) + 1, "placeholders and parameters differ"
    text = parts[0] + "".join(_literal(value) + part for value, part in zip(params, parts[1:]))
    rows = []
    for line in psql(db, text).splitlines():
        values = []
        for field in line.split("\x1f"):
            values.append(int(field) if field.lstrip("-").isdigit() else field)
        rows.append(tuple(values))
    return rows


def contextlib_closing(thing):
    import contextlib

    return contextlib.closing(thing)


def sqlite_only(reason: str):
    """Marks a test that needs the SQLite backend itself (its file, its locks, its
    backup): skipped with USERSD_TEST_BACKEND=postgres, and allowed to skip under CI."""
    import pytest

    def mark(function):
        function = pytest.mark.may_skip_in_ci(reason=f"SQLite only: {reason}")(function)
        return pytest.mark.skipif(BACKEND == "postgres", reason=f"SQLite only: {reason}")(function)

    return mark
