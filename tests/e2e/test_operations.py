"""Operations through the real binary: backup while serving, check, migrate, metrics
exposition, request ids, and SIGHUP re-reading the log level from --env-file."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time

import requests

import harness
from conftest import unique_email

JSON = {"Content-Type": "application/json"}


def run(*args, env=None):
    return subprocess.run([harness.usersd_bin(), *args], capture_output=True, text=True, timeout=60,
                          env=harness.clean_env(env))


def test_backup_while_serving_is_a_consistent_copy(make_stack, tmp_path):
    stack = make_stack().start()
    emails = [unique_email("bk") for _ in range(20)]
    for email in emails:
        assert requests.post(stack.url("/users"), json={"name": "b", "email": email}, headers=JSON,
                             timeout=10).status_code == 201
    target = tmp_path / "backup.sqlite3"
    result = run("backup", str(target), "--db", str(stack.service.db))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        saved = {row[0] for row in copy.execute("SELECT email FROM users")}
    assert set(emails) <= saved
    again = run("backup", str(target), "--db", str(stack.service.db))
    assert again.returncode == 1 and "already exists" in again.stderr
    # still serving after the backup
    assert requests.get(stack.url("/healthz"), timeout=10).status_code == 200


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
