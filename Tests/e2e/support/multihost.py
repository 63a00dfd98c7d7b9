"""Several usersd hosts on one PostgreSQL database, behind the shipped cluster site
(nginx/usersd-cluster.conf): the harness of test_multihost.py.

Each host is a harness.Service in "tcp" mode (FastCGI on 127.0.0.1:PORT, or on an
address in a network namespace of the test's own for the zombie test). `fcgi()`
sends a request to one chosen host, bypassing nginx: a write on one host and a read
on another are then certain to have gone where the test says.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import harness


class Host(harness.Service):
    """A usersd host serving FastCGI over TCP on `address` (127.0.0.1 by default),
    optionally inside network namespace `netns`."""

    def __init__(self, workdir, db: str, name: str, args=(), env=None, address: str = "127.0.0.1",
                 netns: str | None = None):
        super().__init__(workdir, mode="tcp", db=db, args=args, env=env, name=name)
        self.address = address
        self.netns = netns
        self._socket: socket.socket | None = None

    def command(self, notify_path: Path):
        cmd, env = super().command(notify_path)
        cmd = [c.replace(f"127.0.0.1:{self.tcp_port}", f"{self.address}:{self.tcp_port}") for c in cmd]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd, env

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.tcp_port}"

    def fcgi(self, method: str, uri: str, body=None, timeout: float = 30.0, params: dict | None = None):
        """One request straight to this host on a kept connection: (status, json).
        `params` adds FastCGI params (e.g. HTTP_AUTHORIZATION)."""
        data = json.dumps(body).encode() if body is not None else b""
        for attempt in range(2):
            if self._socket is None:
                self._socket = socket.create_connection((self.address, self.tcp_port), timeout=timeout)
            try:
                self._socket.settimeout(timeout)
                status, _, payload = harness.fastcgi_request(
                    self._socket, method, uri, data, "application/json" if data else "", params=params)
                return status, (json.loads(payload) if payload else None)
            except (OSError, ConnectionError):
                self._socket.close()
                self._socket = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def metric(self, name: str) -> float:
        status, _ = 0, None
        sock = socket.create_connection((self.address, self.tcp_port), timeout=10)
        with sock:
            status, _, payload = harness.fastcgi_request(sock, "GET", "/metrics")
        assert status == 200, status
        total = 0.0
        for line in payload.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def close(self) -> None:
        if self._socket:
            self._socket.close()
            self._socket = None
        super().close()


class ClusterNginx(harness.Nginx):
    """nginx with the shipped cluster site in front of `hosts`."""

    def __init__(self, workdir, hosts: list[Host], name: str = "nginx"):
        super().__init__(workdir, "/dev/null", kind="cluster", name=name)
        self.hosts = hosts

    def _render(self) -> Path:
        subprocess.run(
            ["bash", str(harness.REPO_ROOT / "scripts" / "nginx-cluster.sh"), str(self.run_dir), str(self.port),
             *[host.endpoint for host in self.hosts]],
            check=True, capture_output=True,
        )
        return self.run_dir / "nginx.conf"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns a truthy value (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


class Namespace:
    """A network namespace of the test's own with a veth pair to the root namespace:
    `inside` is the host's address there, `outside` the root side's. `cut()` and
    `mend()` take the link down and up (tc netem is not in this kernel)."""

    def __init__(self, tag: str, subnet: int):
        self.name = f"usersd-{tag}"
        self.outer = f"uz{tag}r"[:15]
        self.inner = f"uz{tag}z"[:15]
        self.outside = f"10.213.{subnet}.1"
        self.inside = f"10.213.{subnet}.2"

    def ip(self, *args, netns: bool = False):
        command = (["ip", "netns", "exec", self.name, "ip"] if netns else ["ip"]) + list(args)
        subprocess.run(command, check=True, capture_output=True, timeout=30)

    def create(self) -> "Namespace":
        self.ip("netns", "add", self.name)
        self.ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        self.ip("link", "set", self.inner, "netns", self.name)
        self.ip("addr", "add", f"{self.outside}/30", "dev", self.outer)
        self.ip("link", "set", self.outer, "up")
        self.ip("addr", "add", f"{self.inside}/30", "dev", self.inner, netns=True)
        self.ip("link", "set", self.inner, "up", netns=True)
        self.ip("link", "set", "lo", "up", netns=True)
        return self

    def cut(self):
        self.ip("link", "set", self.outer, "down")

    def mend(self):
        self.ip("link", "set", self.outer, "up")

    def delete(self):
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0
