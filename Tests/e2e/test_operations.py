"""Operations through the real binary: backup while serving, check, migrate, metrics
exposition, request ids, and SIGHUP re-reading the log level from --env-file."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import sqlite3
import stat
import subprocess
import threading
import time

import requests

import harness
from conftest import unique_email

JSON = {"Content-Type": "application/json"}


def run(*args, env=None, cwd=None, timeout=60, preexec_fn=None):
    return subprocess.run([harness.usersd_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          env=harness.clean_env(env), cwd=cwd, preexec_fn=preexec_fn)


def test_backup_while_serving_is_a_consistent_copy(make_stack, tmp_path):
    stack = make_stack().start()
    emails = [unique_email("bk") for _ in range(20)]
    for email in emails:
        assert requests.post(stack.url("/users"), json={"name": "b", "email": email}, headers=JSON,
                             timeout=10).status_code == 201
    target = tmp_path / "backup.sqlite3"
    result = run("backup", str(target), "--db", str(stack.service.db))
    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        saved = {row[0] for row in copy.execute("SELECT email FROM users")}
    assert set(emails) <= saved
    again = run("backup", str(target), "--db", str(stack.service.db))
    assert again.returncode == 73 and "already exists" in again.stderr  # EX_CANTCREAT
    assert os.listdir(tmp_path) == ["backup.sqlite3"]  # the refused attempt left no temporary file
    # still serving after the backup
    assert requests.get(stack.url("/healthz"), timeout=10).status_code == 200


def seed_long_users(db, count: int, name_length: int) -> None:
    """Inserts `count` users with `name_length`-character names straight into a
    migrated database that no usersd is serving."""
    harness.seed_users(db, count, tag="long", name=lambda i: f"{i:08d}" + "n" * name_length)


class PacedWriter(threading.Thread):
    """POSTs /add-user through nginx every 5 ms until stopped; records the emails
    acknowledged (201) in order, and any other answer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.created: list[str] = []
        self.failures: list[str] = []
        self.halt = threading.Event()
        self.warm = threading.Event()  # set once 20 writes were acknowledged

    def run(self) -> None:
        with requests.Session() as session:
            while not self.halt.wait(0.005):
                email = unique_email("live")
                try:
                    response = session.post(self.url, json={"name": "live", "email": email}, timeout=10)
                except requests.RequestException as error:
                    self.failures.append(repr(error))
                    continue
                if response.status_code == 201:
                    self.created.append(email)
                    if len(self.created) >= 20:
                        self.warm.set()
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")


def test_backup_of_a_large_database_finishes_under_continuous_writes(make_stack, tmp_path):
    """About 50 MB copied while a client writes every 5 ms: the backup finishes
    (one read snapshot; a copy in steps restarts after every write and never does),
    the copy is whole, holds every row acknowledged before it started, is 0600
    under umask 022, and nothing else is left beside it."""
    stack = make_stack().start()
    assert stack.service.stop() == 0  # migrated; now fill it behind its back
    seed_long_users(stack.service.db, 24_000, 2_000)
    with sqlite3.connect(stack.service.db) as db:
        size = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    assert size >= 48_000_000, size
    stack.service.start()
    out = tmp_path / "out"
    out.mkdir()
    target = out / "backup.sqlite3"
    writer = PacedWriter(stack.url("/add-user"))
    umask = os.umask(0o022)
    try:
        writer.start()
        assert writer.warm.wait(30), f"the writer did not get going: {writer.failures[:3]}"
        acknowledged = list(writer.created)
        try:
            result = run("backup", str(target), "--db", str(stack.service.db), timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("usersd backup did not finish within 10 s under writes every 5 ms")
        during = len(writer.created) - len(acknowledged)
    finally:
        os.umask(umask)
        writer.halt.set()
        writer.join(15)
    assert result.returncode == 0, result.stderr
    assert writer.failures == [], writer.failures[:5]
    assert during >= 1, "no write was acknowledged while the backup ran"
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o600
    assert os.listdir(out) == ["backup.sqlite3"]  # no journal, no temporary file
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM users WHERE email LIKE 'long%'").fetchone()[0] == 24_000
        saved = {row[0] for row in copy.execute("SELECT email FROM users WHERE name = 'live'")}
    assert set(acknowledged) <= saved


def test_backup_of_a_missing_database_fails_and_creates_nothing(tmp_path):
    """A mistyped --db, or none where ./data/users.sqlite3 does not exist: exit 66
    (EX_NOINPUT) with one line saying why, and no database, -wal, -shm, backup or
    temporary file appears."""
    out = tmp_path / "out"
    source_dir = tmp_path / "db"
    empty = tmp_path / "empty"
    for directory in (out, source_dir, empty):
        directory.mkdir()
    missing = source_dir / "users.sqlite3"
    result = run("backup", str(out / "backup.sqlite3"), "--db", str(missing))
    assert result.returncode == 66, result.stdout + result.stderr
    assert result.stderr.strip() == f"usersd backup: cannot read database {missing}: No such file or directory"
    assert os.listdir(source_dir) == [] and os.listdir(out) == []
    default = run("backup", str(out / "backup.sqlite3"), cwd=empty)
    assert default.returncode == 66, default.stdout + default.stderr
    assert default.stderr.strip() == (
        "usersd backup: cannot read database ./data/users.sqlite3: No such file or directory")
    assert os.listdir(empty) == [] and os.listdir(out) == []


def test_backup_refuses_a_planted_symlink(tmp_path):
    """The destination is a symbolic link to a file elsewhere (or to where one
    could be created): exit 73, the link and its target untouched, nothing left
    beside the link."""
    db = tmp_path / "users.sqlite3"
    assert run("migrate", "--db", str(db)).returncode == 0
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"keep me\n")
    victim.chmod(0o644)
    absent = elsewhere / "absent"
    link = out / "backup.sqlite3"
    for target in (absent, victim):
        link.symlink_to(target)
        result = run("backup", str(link), "--db", str(db))
        assert not os.path.lexists(absent), "the backup was written through the link"
        assert os.readlink(link) == str(target)
        assert os.listdir(out) == ["backup.sqlite3"]
        assert result.returncode == 73, result.stdout + result.stderr
        assert "already exists" in result.stderr
        link.unlink()
    assert victim.read_bytes() == b"keep me\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_a_failed_backup_leaves_nothing_and_the_next_one_succeeds(tmp_path):
    """Writing the copy fails half-way (a 1 MiB file size limit, EFBIG): exit 74
    (EX_IOERR) and nothing at or beside the destination, so the next attempt
    succeeds."""
    db = tmp_path / "users.sqlite3"
    assert run("migrate", "--db", str(db)).returncode == 0
    seed_long_users(db, 2_000, 1_000)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "backup.sqlite3"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) fails with EFBIG instead

    failed = run("backup", str(target), "--db", str(db), preexec_fn=limit_file_size)
    assert os.listdir(out) == []
    assert failed.returncode == 74, failed.stdout + failed.stderr
    assert "File too large" in failed.stderr
    again = run("backup", str(target), "--db", str(db))
    assert again.returncode == 0, again.stderr
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM users").fetchone()[0] == 2_000


def test_check_and_migrate(tmp_path):
    db = tmp_path / "fresh.sqlite3"
    missing = run("check", "--db", str(db))
    assert missing.returncode == 0 and "not created yet" in missing.stdout
    migrated = run("migrate", "--db", str(db))
    assert migrated.returncode == 0 and "applied migrations 1, 2, 3, 4, 5, 6, 7" in migrated.stdout
    assert run("migrate", "--db", str(db)).stdout.strip() == "up to date"
    checked = run("check", "--db", str(db), "--nginx", str(harness.REPO_ROOT / "nginx" / "usersd.conf"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "database integrity: ok" in checked.stdout and "migrations: up to date" in checked.stdout
    assert "agrees with usersd's settings" in checked.stdout
    # a site that disagrees is reported
    site = tmp_path / "site.conf"
    site.write_text("client_max_body_size 5m;\nfastcgi_read_timeout 2s;\n")
    disagreeing = run("check", "--db", str(db), "--nginx", str(site))
    assert disagreeing.returncode == 1
    assert "client_max_body_size" in disagreeing.stdout and "fastcgi_keep_conn" in disagreeing.stdout
    assert "fastcgi_read_timeout" in disagreeing.stdout


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_exposition_parses_and_counters_move(api):
    before = parse_metrics(requests.get(api.url("/metrics"), timeout=10).text)
    key = 'usersd_requests_total{method="GET",route="/user/{id}",status="404"}'
    for _ in range(3):
        assert requests.get(api.url("/user/999999"), timeout=10).status_code == 404
    response = requests.get(api.url("/metrics"), timeout=10)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    after = parse_metrics(response.text)
    assert after[key] - before.get(key, 0) == 3
    for name in ("usersd_requests_in_flight", "process_resident_memory_bytes", "process_open_fds",
                 "usersd_uptime_seconds", 'usersd_worker_threads{state="total"}',
                 'usersd_tasks{state="queued"}', "usersd_db_write_transactions_total"):
        assert name in after, name
    assert after['usersd_request_duration_seconds_count{route="/user/{id}"}'] >= 3
    assert after["process_resident_memory_bytes"] > 0


def test_uptime_counts_from_the_start_not_from_the_first_scrape(make_stack):
    stack = make_stack().start()
    ready = time.monotonic()
    time.sleep(1.0)  # time passes before anybody asks for /metrics
    first = parse_metrics(requests.get(stack.url("/metrics"), timeout=10).text)["usersd_uptime_seconds"]
    assert first >= time.monotonic() - ready - 0.1 >= 0.9, first
    second = parse_metrics(requests.get(stack.url("/metrics"), timeout=10).text)["usersd_uptime_seconds"]
    assert second >= first


def test_request_id_from_nginx_is_logged_and_returned(api):
    response = requests.get(api.url("/healthz"), timeout=10)
    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    deadline = time.monotonic() + 10
    while f"request_id={request_id}" not in api.service.log_text():
        assert time.monotonic() < deadline, "access line never written"
        time.sleep(0.05)
    line = next(l for l in api.service.log_text().splitlines() if f"request_id={request_id}" in l)
    for part in ("level=info", "msg=request", "method=GET", "path=/healthz", "status=200", "duration_ms="):
        assert part in line, line


def test_sighup_rereads_the_log_level_from_the_env_file(make_stack, tmp_path):
    env_file = tmp_path / "usersd.env"
    env_file.write_text("USERSD_LOG_LEVEL=info\n")
    stack = make_stack(args=["--env-file", str(env_file)]).start()
    assert requests.get(stack.url("/healthz"), timeout=10).status_code == 200
    env_file.write_text("# quieter\nUSERSD_LOG_LEVEL=warning\n")
    stack.service.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded (SIGHUP)" not in stack.service.log_text():
        assert time.monotonic() < deadline, "SIGHUP not handled"
        time.sleep(0.05)
    marker = requests.get(stack.url("/user/424242"), timeout=10).headers["X-Request-Id"]
    # a later warning-level event proves lines are still written; the request line is not
    assert stack.service.stop(signal.SIGTERM) == 0
    assert f"request_id={marker}" not in stack.service.log_text()


def test_writes_through_nginx_keep_the_wal_checkpointed_off_the_writer(make_stack):
    """Sustained writes fill the WAL past 1000 pages: the checkpoint thread copies
    the bulk, the writer finishes the pass, the WAL starts over (the metrics show
    each step), and nothing written is lost."""
    stack = make_stack().start()
    session = requests.Session()
    created = 0
    samples = {}
    for _ in range(3000):  # about 10 WAL pages per user written alone; bounded
        response = session.post(stack.url("/add-user"), json={"name": "wal", "email": unique_email("wal")}, timeout=10)
        assert response.status_code == 201, response.text
        created += 1
        if created % 25:
            continue
        samples = parse_metrics(session.get(stack.url("/metrics"), timeout=10).text)
        if (samples['usersd_db_checkpoints_total{thread="checkpointer"}'] >= 1
                and samples['usersd_db_checkpoints_total{thread="writer"}'] >= 1
                and samples["usersd_db_wal_pages"] < 1000):
            break
    assert samples['usersd_db_checkpoints_total{thread="checkpointer"}'] >= 1, samples
    assert samples['usersd_db_checkpoints_total{thread="writer"}'] >= 1, samples
    assert samples["usersd_db_wal_pages"] < 1000, samples
    assert samples["usersd_db_checkpoint_seconds_count"] >= 1, samples
    assert stack.service.stop() == 0
    with sqlite3.connect(stack.service.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM users WHERE name = 'wal'").fetchone()[0] == created
