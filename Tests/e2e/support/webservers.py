"""The other web servers in front of usersd: Apache httpd, lighttpd, Caddy and h2o.

Each runs the shipped site configuration of docs/web-servers/ (the socket path,
the port and the error-document directory rendered for the test), started
privately on 127.0.0.1 with its own configuration, pid, log and temporary files
under the test's directory, never as the system's service, like harness.Nginx:

    with tempfile.TemporaryDirectory() as d:
        svc = harness.Service(d, args=SOCKET_ARGS).start()
        web = make_server("apache", d, svc.socket).start()   # waits for the port
        requests.get(web.url("/healthz"))
        web.stop()

Apache httpd and h2o drop their workers to www-data, as Debian runs them: the
socket gets that group (SOCKET_ARGS) and the test's directory is made traversable
(prepare_workdir). Readiness is a TCP connect with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import harness

SITES = harness.REPO_ROOT / "docs" / "web-servers"
#: Every front the tests and the benchmark know (nginx is harness.Nginx).
SERVERS = ("apache", "lighttpd", "caddy", "h2o")
#: usersd's socket is served to the group the web servers' workers run as.
SOCKET_ARGS = ("--socket-group", "www-data")
SHIPPED_SOCKET = "/run/usersd/usersd.sock"
APACHE_MODULES = "/usr/lib/apache2/modules"


def prepare_workdir(workdir) -> None:
    """Lets www-data (Apache's and h2o's workers) reach the socket inside it."""
    os.chmod(workdir, 0o711)


def missing_binaries() -> list[str]:
    """The server binaries that are not installed (scripts/deps.sh test installs them)."""
    wanted = {"apache": "apache2", "lighttpd": "lighttpd", "caddy": "caddy", "h2o": "h2o"}
    return [binary for binary in wanted.values() if not _which(binary)]


def _which(binary: str) -> str | None:
    return shutil.which(binary) or next(
        (str(Path(d) / binary) for d in ("/usr/sbin", "/usr/bin") if (Path(d) / binary).exists()), None
    )


class WebServer:
    """One private instance of a web server in front of a usersd socket; the same
    interface as harness.Nginx (url, port, start, stop, log_tail)."""

    kind = ""
    #: the file under docs/web-servers/ that is the shipped configuration
    site = ""

    def __init__(self, workdir, socket_path, name: str | None = None, site: Path | None = None):
        self.name = name or self.kind
        self.run_dir = Path(workdir) / self.name
        self.socket = Path(socket_path)
        self.site_path = Path(site) if site else SITES / self.site
        self.port = 0
        self.proc: subprocess.Popen | None = None
        harness.TRACKED.append(self)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def shipped(self) -> str:
        """The shipped configuration with the test's socket."""
        return self.site_path.read_text().replace(SHIPPED_SOCKET, str(self.socket))

    def errors_dir(self) -> Path:
        """A copy of the shipped JSON error documents, readable by the workers."""
        target = self.run_dir / "errors"
        if not target.exists():
            shutil.copytree(SITES / "errors", target)
        return target

    def render(self) -> tuple[list[str], dict]:
        """Writes the configuration under run_dir; returns the command and environment."""
        raise NotImplementedError

    def start(self, timeout: float = harness.START_TIMEOUT) -> "WebServer":
        last = ""
        for _ in range(3):
            self.port = harness.free_port()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.run_dir, 0o755)
            command, env = self.render()
            with open(self.run_dir / "stderr.log", "ab") as stderr:
                stderr.write(f"---- {' '.join(command)} (port {self.port})\n".encode())
                stderr.flush()
                self.proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, close_fds=True, env=env,
                    cwd=str(self.run_dir)
                )
            if harness.wait_listening(self.proc, self.port, timeout):
                return self
            last = self.log_tail()
        raise harness.StartError(f"{self.kind} exited at start: {last}")

    stop_signal = signal.SIGTERM

    def stop(self, timeout: float = 15.0) -> None:
        harness.stop_process(self.proc, self.stop_signal, timeout)

    close = stop

    def log_files(self) -> list[Path]:
        return [self.run_dir / "stderr.log", self.run_dir / "error.log"]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"{path.name}: {harness.tail(path, lines)}" for path in self.log_files() if path.exists())


class Apache(WebServer):
    kind, site = "apache", "apache.conf"
    stop_signal = signal.SIGTERM

    def render(self):
        run = self.run_dir
        site = self.shipped().replace("<VirtualHost *:80>", f"<VirtualHost 127.0.0.1:{self.port}>")
        (run / "site.conf").write_text(site)
        modules = ["mpm_event", "authz_core", "authz_host", "headers", "proxy", "proxy_fcgi"]
        loads = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in modules)
        user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
        (run / "httpd.conf").write_text(
            f"""ServerRoot {run}
ServerName localhost
PidFile {run}/httpd.pid
DefaultRuntimeDir {run}
Mutex file:{run} default
ErrorLog {run}/error.log
LogLevel warn
{user}
Listen 127.0.0.1:{self.port}
{loads}
Include {run}/site.conf
"""
        )
        return [_which("apache2") or "apache2", "-f", str(run / "httpd.conf"), "-DFOREGROUND"], harness.clean_env()


class Lighttpd(WebServer):
    kind, site = "lighttpd", "lighttpd.conf"
    stop_signal = signal.SIGINT  # graceful: requests in flight finish

    def render(self):
        run = self.run_dir
        (run / "tmp").mkdir(exist_ok=True)
        (run / "www").mkdir(exist_ok=True)
        site = self.shipped().replace("/etc/lighttpd/usersd-errors/", f"{self.errors_dir()}/")
        (run / "site.conf").write_text(site)
        (run / "lighttpd.conf").write_text(
            f"""server.document-root = "{run}/www"
server.bind = "127.0.0.1"
server.port = {self.port}
server.errorlog = "{run}/error.log"
server.upload-dirs = ( "{run}/tmp" )
include "{run}/site.conf"
"""
        )
        return [_which("lighttpd") or "lighttpd", "-D", "-f", str(run / "lighttpd.conf")], harness.clean_env()


class Caddy(WebServer):
    kind, site = "caddy", "Caddyfile"

    def render(self):
        run = self.run_dir
        site = self.shipped().replace(":80 {", f"http://:{self.port} {{\n\tbind 127.0.0.1", 1)
        (run / "Caddyfile").write_text(
            f"""{{
	admin off
	log {{
		output file {run}/error.log
		level WARN
	}}
}}

{site}"""
        )
        env = harness.clean_env(
            {"HOME": str(run), "XDG_DATA_HOME": str(run / "data"), "XDG_CONFIG_HOME": str(run / "config")}
        )
        command = [_which("caddy") or "caddy", "run", "--config", str(run / "Caddyfile"), "--adapter", "caddyfile"]
        return command, env


class H2O(WebServer):
    kind, site = "h2o", "h2o.conf"

    def render(self):
        run = self.run_dir
        conf = self.shipped().replace("/etc/h2o/usersd-errors", str(self.errors_dir()))
        conf = conf.replace("\nlisten: 80\n", f"\nlisten:\n  host: 127.0.0.1\n  port: {self.port}\n")
        if os.geteuid() != 0:
            conf = conf.replace("\nuser: www-data\n", "\n")
        (run / "h2o.conf").write_text(f"pid-file: {run}/h2o.pid\nerror-log: {run}/error.log\n{conf}")
        if os.geteuid() == 0:
            # h2o writes its pid file after dropping to www-data.
            shutil.chown(run, user="www-data", group="www-data")
        return [_which("h2o") or "h2o", "-c", str(run / "h2o.conf")], harness.clean_env()


CLASSES = {"apache": Apache, "lighttpd": Lighttpd, "caddy": Caddy, "h2o": H2O}


def make_server(kind: str, workdir, socket_path, **kwargs) -> WebServer:
    return CLASSES[kind](workdir, socket_path, **kwargs)


class FrontStack(harness.Stack):
    """usersd behind one of the other web servers (or nginx, kind "nginx"): the same
    interface as harness.Stack, `nginx` being whichever front it is."""

    def __init__(self, kind: str, args=(), env=None, workdir=None):
        self.kind = kind
        self.owns_dir = workdir is None
        self.dir = Path(workdir or harness.make_workdir())
        prepare_workdir(self.dir)
        self.service = harness.Service(self.dir, args=[*SOCKET_ARGS, *args], env=env)
        if kind == "nginx":
            self.nginx = harness.Nginx(self.dir, self.service.socket)
        else:
            self.nginx = make_server(kind, self.dir, self.service.socket)
        self.service.nginx = self.nginx
