"""Soak: mixed read/write/task load through nginx for DURATION seconds, watching
usersd's memory, descriptors and WAL file.

    python3 Tests/e2e/support/soak.py --duration 60          (scripts/soak.sh wraps this)

Load: wrk with scripts/soak.lua (reads by both user routes and keyset pages,
creates, renames, background tasks, task lists, health) when wrk is installed,
else Python threads doing the same mix. Every `--sample` seconds it records
usersd's RSS, open descriptors, threads and the WAL/database sizes.

Pass criteria (the exit status, and what Tests/e2e/test_soak.py asserts):
  - errors: no answer outside 2xx, except the expected 404/409 (reported), no
    socket errors;
  - RSS at the end is < 10 % above RSS after the warm-up (the first half of a
    run up to 2 minutes, the first quarter of a longer one, at most 5 minutes);
  - descriptors flat: at the end (load stopped, a moment to settle) sockets are
    only the listener and nginx's kept connections (<= 35), database handles at
    most two per thread at the high-water mark (pooled read connections), and
    every other descriptor as at the start (+2);
  - the task backlog drains within 30 s after the load stops;
  - the WAL file stays bounded (checkpoints happen): at most 64 MiB;
  - usersd still runs, then stops cleanly (exit 0) and `PRAGMA integrity_check` is ok.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import reliability as rel  # noqa: E402

LUA = harness.REPO_ROOT / "scripts" / "soak.lua"
SEEDED_USERS = 2000
WAL_LIMIT = 64 * 1024 * 1024
RSS_GROWTH_LIMIT = 0.10
TASK_DRAIN_SECONDS = 30
SHUTDOWN_SECONDS = 30


def python_load(base_url, duration: float, connections: int, prefix: str) -> dict:
    """The soak.lua mix with Python threads (when wrk is not installed)."""
    import requests

    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    lock = threading.Lock()
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    def worker(tid: int) -> None:
        rng = random.Random(7919 * tid + 17)
        counter = 0
        with requests.Session() as session:
            while time.monotonic() < deadline:
                counter += 1
                r = rng.randint(1, 100)
                json_headers = {"Content-Type": "application/json"}
                if r <= 32:
                    kind, method, path, body = "get_user", "GET", f"/user/{rng.randint(1, SEEDED_USERS)}", None
                elif r <= 44:
                    kind, method, path, body = "get_user_detail", "GET", f"/users/{rng.randint(1, SEEDED_USERS)}", None
                elif r <= 56:
                    kind, method, path, body = "list_users_page", "GET", f"/users?limit=20&after_id={rng.randint(0, SEEDED_USERS)}", None
                elif r <= 62:
                    email = f"{prefix}-t{tid}-{counter}@example.com"
                    kind, method, path, body = "add_user", "POST", "/add-user", json.dumps({"name": f"soak {tid}/{counter} ✓", "email": email})
                elif r <= 72:
                    kind, method, path, body = "patch_user", "PATCH", f"/users/{rng.randint(1, SEEDED_USERS)}", json.dumps({"name": f"renamed {tid}/{counter}"})
                elif r <= 74:
                    kind, method, path, body = "post_task", "POST", "/tasks", '{"kind": "sleep", "seconds": 0.01}'
                elif r <= 84:
                    kind, method, path, body = "list_tasks", "GET", "/tasks?state=succeeded&limit=10", None
                else:
                    kind, method, path, body = "healthz", "GET", "/healthz", None
                start = time.monotonic()
                try:
                    response = session.request(method, base_url + path, data=body.encode() if body else None,
                                               headers=json_headers if body else None, timeout=30)
                    status = str(response.status_code)
                except requests.Timeout:
                    with lock:
                        errors["timeout"] += 1
                    continue
                except requests.RequestException:
                    with lock:
                        errors["read"] += 1
                    continue
                with lock:
                    latencies.append(time.monotonic() - start)
                    statuses[status] = statuses.get(status, 0) + 1
                    kinds[kind] = kinds.get(kind, 0) + 1

    threads = [threading.Thread(target=worker, args=(k + 1,), daemon=True) for k in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 60)
    latencies.sort()

    def pct(p):
        return 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] if latencies else 0.0

    return {
        "statuses": statuses, "kinds": kinds, "requests": sum(statuses.values()),
        "duration_us": int((time.monotonic() - started) * 1e6), "socket_errors": errors,
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": 1000 * (latencies[-1] if latencies else 0)},
        "generator": "python",
    }


def wrk_load(base_url, duration: float, connections: int, threads: int, prefix: str) -> dict:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "30s", "-s", str(LUA), base_url,
               "--", str(SEEDED_USERS), prefix]
    run = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    match = re.search(r"^SOAK_JSON (.*)$", run.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no SOAK_JSON line (exit {run.returncode}):\n{run.stdout}\n{run.stderr}")
    result = json.loads(match.group(1))
    result["generator"] = "wrk"
    result["wrk_output"] = run.stdout
    return result


def unavailable_summary(log: str) -> dict:
    """503 answers by path, and the warnings usersd logged, from its log."""
    paths: dict[str, int] = {}
    warnings: dict[str, int] = {}
    for line in log.splitlines():
        if "status=503" in line:
            match = re.search(r"method=(\S+) path=(\S+)", line)
            key = f"{match.group(1)} {match.group(2).split('?')[0]}" if match else "?"
            key = re.sub(r"/\d+", "/{id}", key)
            paths[key] = paths.get(key, 0) + 1
        if "level=warning" in line:
            match = re.search(r'msg=("[^"]*"|\S+).*?(error=("[^"]*"|\S+))?$', line)
            key = (match.group(1) + " " + (match.group(3) or "")).strip() if match else line[:80]
            warnings[key] = warnings.get(key, 0) + 1
    return {"503_by_route": paths, "warnings": warnings}


def sample(stack) -> dict:
    pid = stack.service.pid
    db = stack.service.db
    kinds = rel.fd_kinds(pid)
    database = sum(n for name, n in kinds.items() if name.startswith(db.name))
    return {
        "t": time.monotonic(),
        "rss_kib": rel.rss_kib(pid),
        "fds": sum(kinds.values()),
        "sockets": kinds.get("socket", 0),
        "db_fds": database,
        "other_fds": sum(kinds.values()) - kinds.get("socket", 0) - database,
        "threads": rel.thread_count(pid),
        "wal_bytes": rel.file_size(Path(f"{db}-wal")),
        "db_bytes": rel.file_size(db),
    }


def hang_evidence(stack, message: str) -> dict:
    """Where a process that does not exit waits: its threads' kernel wait channels."""
    pid = stack.service.pid
    channels: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task") if os.path.exists(f"/proc/{pid}/task") else []:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip()
        except OSError:
            continue
        key = f"{name}:{wchan}"
        channels[key] = channels.get(key, 0) + 1
    return {"message": message, "threads": channels, "fds": rel.fd_kinds(pid)}


def stop_and_watch(stack) -> tuple:
    """SIGTERM; returns (exit status or a description, seconds, evidence if it took
    longer than SHUTDOWN_SECONDS). A slow exit is watched for 90 s more (slow or
    hung?), then killed."""
    proc = stack.service.proc
    started = time.monotonic()
    proc.send_signal(15)
    try:
        return proc.wait(SHUTDOWN_SECONDS), round(time.monotonic() - started, 1), None
    except subprocess.TimeoutExpired:
        pass
    hang = hang_evidence(stack, f"no exit within {SHUTDOWN_SECONDS} s of SIGTERM")
    hang["wal_bytes"] = rel.file_size(Path(f"{stack.service.db}-wal"))
    try:
        code = proc.wait(90)
        return f"exit {code} only after {time.monotonic() - started:.0f} s", round(time.monotonic() - started, 1), hang
    except subprocess.TimeoutExpired:
        hang["wal_bytes_after_120s"] = rel.file_size(Path(f"{stack.service.db}-wal"))
        stack.service.kill9()
        return f"no exit within {SHUTDOWN_SECONDS + 90} s of SIGTERM (killed)", None, hang


#: The mix offers tasks in proportion to the request rate: ~600 tasks/s at the
#: ~7,500 req/s a quiet 2-core machine reaches (welcome tasks of 6 % creates plus
#: 2 % 10-ms sleeps). With the default --task-concurrency 4 the scheduler completes
#: ~530/s here (each task waits on three group commits), so over half an hour the
#: queue fills and POST /tasks answers 503 (designed back-pressure, not a soak
#: result). The soak therefore runs usersd with room for the offered task load.
USERSD_ARGS = ("--task-concurrency", "16")


def run_soak(duration: float = 60, connections: int = 16, wrk_threads: int = 2, sample_every: float = 2.0,
             generator: str = "auto", args=USERSD_ARGS, keep_log: str | None = None) -> dict:
    """Runs the soak on a fresh stack; returns the report (see `verdict`)."""
    use_wrk = generator == "wrk" or (generator == "auto" and shutil.which("wrk"))
    stack = harness.Stack(args=list(args))
    report: dict = {"duration_s": duration, "connections": connections}
    try:
        stack.start()
        assert stack.service.stop() == 0  # the schema exists now
        harness.seed_users(stack.service.db, SEEDED_USERS, tag="soak")
        stack.service.start()
        samples: list[dict] = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append(sample(stack))
                # Read usersd's sd_notify datagrams as systemd would (the harness reads
                # them only until READY=1; an unread queue blocks usersd's sender:
                # see test_faults.py::test_unread_notify_socket_does_not_hang_shutdown).
                stack.service.notify.seen("")
                stop.wait(sample_every)

        sampling = threading.Thread(target=sampler, daemon=True)
        started = time.monotonic()
        sampling.start()
        prefix = f"soak{random.randrange(10**9)}"
        if use_wrk:
            load = wrk_load(stack.url(""), duration, connections, wrk_threads, prefix)
        else:
            load = python_load(stack.url(""), duration, connections, prefix)
        stop.set()
        sampling.join(10)
        # Load stopped: give idle connections a moment, then the end figures.
        time.sleep(2.0)
        end = sample(stack)
        report["wal_checkpoint_when_idle"] = subprocess.run(
            ["sqlite3", str(stack.service.db), "PRAGMA wal_checkpoint(PASSIVE);"], capture_output=True, text=True
        ).stdout.strip()  # busy|frames in the WAL|frames checkpointed: fewer checkpointed means a pinned snapshot
        # The task backlog must drain (the scheduler kept up, or nearly).
        drain_start = time.monotonic()
        backlog = lambda: rel.query(stack.service.db, "SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')")[0][0]  # noqa: E731
        report["backlog_at_end"] = backlog()
        rel.wait_until(lambda: backlog() == 0, timeout=TASK_DRAIN_SECONDS, interval=0.5)
        report["backlog_after_drain"] = backlog()
        report["drain_seconds"] = round(time.monotonic() - drain_start, 1)
        warm_until = started + warmup_seconds(duration)
        warm = [s for s in samples if s["t"] >= warm_until] or samples[-1:]
        after_warmup = warm[0]
        report.update(
            load={k: v for k, v in load.items() if k != "wrk_output"},
            start=samples[0] if samples else None,
            after_warmup=after_warmup,
            end=end,
            peak={key: max(s[key] for s in samples + [end]) for key in ("rss_kib", "fds", "threads", "wal_bytes", "db_bytes")},
            samples=len(samples),
            series=[{"t": round(x["t"] - started, 1), "rss_kib": x["rss_kib"], "fds": x["fds"], "threads": x["threads"],
                     "wal_kib": x["wal_bytes"] // 1024} for x in samples],
            alive=stack.service.running(),
            error_lines=[line for line in stack.service.log_text().splitlines() if "level=error" in line][:10],
            unavailable=unavailable_summary(stack.service.log_text()),
            tasks=dict(rel.query(stack.service.db, "SELECT state, COUNT(*) FROM tasks GROUP BY state")),
            users=rel.query(stack.service.db, "SELECT COUNT(*) FROM users")[0][0],
        )
        report["exit_status"] = None
        if report["alive"]:
            report["exit_status"], report["shutdown_seconds"], hang = stop_and_watch(stack)
            if hang:
                report["hang"] = hang
        report["integrity"] = rel.integrity_check(stack.service.db)
        report["log_tail"] = [line for line in stack.service.log_text().splitlines() if "msg=request" not in line][-40:]
        if keep_log:
            shutil.copy(stack.service.log_path, keep_log)
    finally:
        stack.close()
    report["verdict"] = verdict(report)
    return report


def warmup_seconds(duration: float) -> float:
    """Half of a short run, a quarter of a long one (at most 5 minutes): per-connection
    caches (each pooled read connection has its own SQLite page cache) fill first."""
    return duration * 0.5 if duration <= 120 else min(300.0, duration * 0.25)


def verdict(report: dict) -> list[str]:
    """What failed (empty: the soak passed)."""
    problems = []
    load = report["load"]
    statuses = {str(k): v for k, v in load["statuses"].items()}
    errors = {k: v for k, v in statuses.items() if not k.startswith("2") and k not in ("404", "409")}
    if errors:
        problems.append(f"answers outside 2xx (404/409 excepted): {errors}")
    if any(load["socket_errors"].values()):
        problems.append(f"socket errors: {load['socket_errors']}")
    if load["requests"] <= 0:
        problems.append("no requests were made")
    warm, end = report["after_warmup"], report["end"]
    growth = (end["rss_kib"] - warm["rss_kib"]) / max(1, warm["rss_kib"])
    report["rss_growth"] = round(growth, 4)
    if growth >= RSS_GROWTH_LIMIT:
        problems.append(f"RSS grew {growth:.1%} after the warm-up ({warm['rss_kib']} -> {end['rss_kib']} KiB)")
    # Descriptors: sockets are nginx's kept upstream connections (at most `keepalive 16`
    # per nginx worker, 2 workers) plus the listener; database handles follow the
    # thread high-water mark (one pooled read connection per FastCGI thread: the
    # database file and its WAL); everything else must not change.
    start = report["start"]
    if end["sockets"] > 1 + 2 * 16 + 2:
        problems.append(f"{end['sockets']} sockets open at the end (listener + nginx's kept connections is at most 35)")
    if end["db_fds"] > 2 * report["peak"]["threads"] + 4:
        problems.append(f"{end['db_fds']} database descriptors for at most {report['peak']['threads']} threads")
    if end["other_fds"] > start["other_fds"] + 2:
        problems.append(f"other descriptors grew: {start['other_fds']} at the start, {end['other_fds']} at the end")
    if report["peak"]["wal_bytes"] > WAL_LIMIT:
        problems.append(f"WAL reached {report['peak']['wal_bytes']} bytes")
    if not report["alive"]:
        problems.append("usersd was not running at the end")
    elif report["exit_status"] != 0:
        problems.append(f"SIGTERM: {report['exit_status']} {report.get('hang', '')}")
    if report["backlog_after_drain"]:
        problems.append(f"{report['backlog_after_drain']} tasks still queued/running {TASK_DRAIN_SECONDS} s after the load "
                        f"({report['backlog_at_end']} when it stopped): the scheduler does not keep up")
    if report["integrity"] != "ok":
        problems.append(f"integrity_check: {report['integrity']}")
    if report["error_lines"]:
        problems.append(f"error lines in usersd's log: {report['error_lines'][:3]}")
    return problems


def describe(report: dict) -> str:
    load = report["load"]
    seconds = load["duration_us"] / 1e6
    statuses = {str(k): v for k, v in sorted(load["statuses"].items())}
    expected = sum(v for k, v in statuses.items() if k in ("404", "409"))
    errors = sum(v for k, v in statuses.items() if not k.startswith("2") and k not in ("404", "409"))
    mib = lambda kib: f"{kib / 1024:.1f} MiB"  # noqa: E731
    start, warm, end, peak = report["start"], report["after_warmup"], report["end"], report["peak"]
    lines = [
        f"soak: {seconds:.0f} s, {load['connections'] if 'connections' in load else report['connections']} connections, load by {load['generator']}",
        f"  requests  {load['requests']} ({load['requests'] / max(seconds, 1e-9):.0f}/s), errors {errors}, expected 404/409 {expected}, "
        f"socket errors {sum(load['socket_errors'].values())}",
        f"  statuses  {statuses}",
        f"  mix       {dict(sorted(load['kinds'].items()))}",
        f"  latency   p50 {load['latency_ms']['p50']:.2f} ms, p90 {load['latency_ms']['p90']:.2f} ms, "
        f"p99 {load['latency_ms']['p99']:.2f} ms, max {load['latency_ms']['max']:.2f} ms",
        f"  RSS       start {mib(start['rss_kib'])}, after warm-up {mib(warm['rss_kib'])}, end {mib(end['rss_kib'])} "
        f"(growth {report.get('rss_growth', 0):+.1%}), peak {mib(peak['rss_kib'])}",
        f"  fds       start {start['fds']}, after warm-up {warm['fds']}, end {end['fds']} "
        f"(sockets {end['sockets']}, database {end['db_fds']}, other {end['other_fds']} vs {start['other_fds']} at start), "
        f"peak {peak['fds']}; threads end {end['threads']}, peak {peak['threads']}",
        f"  WAL       end {end['wal_bytes'] / 1048576:.1f} MiB, peak {peak['wal_bytes'] / 1048576:.1f} MiB; "
        f"database {end['db_bytes'] / 1048576:.1f} MiB, {report['users']} users; "
        f"idle checkpoint (busy|frames|checkpointed) {report.get('wal_checkpoint_when_idle')}",
        f"  tasks     {report['tasks']}; backlog {report['backlog_at_end']} when the load stopped, "
        f"{report['backlog_after_drain']} after {report['drain_seconds']} s",
        f"  503s      {report['unavailable']['503_by_route']}; warnings {report['unavailable']['warnings']}",
        f"  shutdown  exit {report['exit_status']}, integrity_check {report['integrity']}",
        "  verdict   " + ("PASS" if not report["verdict"] else "FAIL: " + "; ".join(report["verdict"])),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="usersd soak test")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)))
    parser.add_argument("--connections", type=int, default=int(os.environ.get("CONNECTIONS", 16)))
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", help="also write the full report here")
    parser.add_argument("--keep-log", help="copy usersd's log here")
    args = parser.parse_args()
    report = run_soak(args.duration, args.connections, args.threads, args.sample, args.generator, keep_log=args.keep_log)
    print(describe(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 1 if report["verdict"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
