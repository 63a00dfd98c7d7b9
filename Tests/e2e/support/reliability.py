"""Helpers for the reliability tests (fuzzing, faults, soak): process figures from
/proc, a background prober that keeps checking the service through nginx, and a
few SQLite utilities."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import requests

JSON_TYPE = "application/json; charset=utf-8"

# --------------------------------------------------------------------------- /proc


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors of `pid` by kind: 'socket', 'pipe', 'anon_inode', or the file's name."""
    kinds: dict[str, int] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return {}
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("/"):
            kind = os.path.basename(target)
        else:
            kind = target.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def fd_count(pid: int) -> int:
    return sum(fd_kinds(pid).values())


def socket_count(pid: int) -> int:
    return fd_kinds(pid).get("socket", 0)


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(predicate, timeout: float, interval: float = 0.1):
    """Polls `predicate` until it returns a truthy value or the deadline passes;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --------------------------------------------------------------------------- probing through nginx


class Prober:
    """A thread that keeps doing real work through nginx while something hostile
    happens elsewhere: creates a user, reads it back by both routes, checks health.
    Every answer must be the right one; `failures` collects the ones that were not."""

    def __init__(self, base_url, interval: float = 0.02, timeout: float = 15.0, tag: str = "probe"):
        self.url = base_url  # callable path -> url
        self.interval = interval
        self.timeout = timeout
        self.tag = tag
        self.failures: list[str] = []
        self.rounds = 0
        self.max_latency = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout * 4)

    def _timed(self, session, method, path, **kwargs):
        start = time.monotonic()
        response = session.request(method, self.url(path), timeout=self.timeout, **kwargs)
        self.max_latency = max(self.max_latency, time.monotonic() - start)
        return response

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    self._round(session)
                except Exception as error:  # noqa: BLE001 - every failure is a finding
                    self.failures.append(f"round {self.rounds}: {error!r}")
                    session.close()
                    session = requests.Session()
                self.rounds += 1
                self._stop.wait(self.interval)

    def _round(self, session) -> None:
        email = f"{self.tag}-{uuid.uuid4().hex[:12]}@example.com"
        body = json.dumps({"name": f"{self.tag} ✓", "email": email}).encode()
        created = self._timed(session, "POST", "/add-user", data=body, headers={"Content-Type": "application/json"})
        if created.status_code != 201:
            self.failures.append(f"POST /add-user -> {created.status_code} {created.content[:200]!r}")
            return
        user = created.json()["user"]
        if user["email"] != email:
            self.failures.append(f"POST /add-user returned {user}")
        for path in (f"/user/{user['id']}", f"/users/{user['id']}"):
            got = self._timed(session, "GET", path)
            if got.status_code != 200 or got.json().get("email") != email:
                self.failures.append(f"GET {path} -> {got.status_code} {got.content[:200]!r}")
        health = self._timed(session, "GET", "/healthz")
        if health.status_code != 200:
            self.failures.append(f"GET /healthz -> {health.status_code} {health.content[:200]!r}")


# --------------------------------------------------------------------------- SQLite


def integrity_check(db: Path) -> str:
    """`PRAGMA integrity_check` through the sqlite3 command-line shell."""
    run = subprocess.run(["sqlite3", str(db), "PRAGMA integrity_check;"], capture_output=True, text=True, timeout=120)
    return (run.stdout + run.stderr).strip()


def query(db: Path, sql: str, params=()) -> list[tuple]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def file_size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0
