"""Hostile FastCGI input straight to usersd's socket (bypassing nginx).

fcgi_fuzz.py builds the cases (truncated / oversized records, bogus versions and
types, malformed name-value lengths, missing params, lying CONTENT_LENGTH, long
stdin, aborts, multiplexed ids, random bytes, dropped connections, ...) from one
seed. While they run, a prober keeps creating and reading users through nginx.

What must hold: usersd never crashes and never hangs a connection, never
answers 5xx, answers every well-formed request correctly, the prober's requests
all succeed, and afterwards the open descriptors are back to where they were.

Knobs: FCGI_FUZZ_SEED (default 20250123), FCGI_FUZZ_CASES (default 3000),
FCGI_FUZZ_MAX_CRASHES (the run stops after this many crashes, default 6),
FCGI_FUZZ_BUDGET (seconds, default 240: the run stops there, and says so).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import requests

import fcgi_fuzz as fz
import reliability as rel
from apiclient import TIMEOUT, expect_json

SEED = int(os.environ.get("FCGI_FUZZ_SEED", "20250123"))
COUNT = int(os.environ.get("FCGI_FUZZ_CASES", "3000"))
PARALLEL = 8
BATCH = 64
MAX_CRASHES = int(os.environ.get("FCGI_FUZZ_MAX_CRASHES", "6"))
#: A case whose connection usersd neither answers nor closes within this long after
#: EOF is a hang; the run stops early after MAX_HANGS of them or BUDGET seconds.
CASE_TIMEOUT = 5.0
MAX_HANGS = 16
BUDGET = float(os.environ.get("FCGI_FUZZ_BUDGET", "240"))


def crash_lines(service) -> list[str]:
    """The lines of usersd's log since its last start that tell how it died."""
    text = service.log_text()
    last = text.rfind("---- start #")
    lines = text[last:].splitlines() if last >= 0 else text.splitlines()
    markers = ("Assertion", "Fatal error", "crashed", "Signal ", "fatalError", "Segmentation", "panic")
    return [line.strip() for line in lines if any(m in line for m in markers)][:4]


def died(service, settle: float = 0.0) -> bool:
    if settle and service.running():
        try:
            service.proc.wait(settle)
        except Exception:  # noqa: BLE001 - still running
            pass
    return not service.running()


def restart(service) -> None:
    service.kill9()
    service.start()


def replay_one_by_one(service, batch: list[fz.Case]) -> tuple[list[fz.Outcome], list[str]]:
    """usersd died during `batch`: restart it and replay the batch one case at a time
    to name the case(s) that kill it. Returns the replayed outcomes (they replace the
    batch's, whose problems were mostly the crash's collateral) and the killers."""
    restart(service)
    outcomes, killers = [], []
    for case in batch:
        outcome = fz.run_case(str(service.socket), case, timeout=CASE_TIMEOUT)
        # A crash closes the connection without an answer; give the exit a moment.
        if died(service, settle=0 if outcome.end_requests else 0.1):
            data = b"".join(case.chunks)
            killers.append(f"{case.label}: {crash_lines(service)} first bytes {data[:48].hex()}")
            restart(service)
            outcome.detail += " [killed usersd]"
        outcomes.append(outcome)
    if not killers:
        killers = [f"batch {batch[0].index}-{batch[-1].index}: crashed, not reproduced one case at a time"]
    return outcomes, killers


def warm_up(stack, connections: int = 2 * PARALLEL) -> dict:
    """Brings the per-connection resources to the concurrency the fuzzer uses, then
    returns the descriptor figures to compare with afterwards."""
    outcomes = fz.hold_connections(str(stack.service.socket), connections, 0.2)
    assert not [o.problems() for o in outcomes if o.problems()]
    for _ in range(5):
        expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
    time.sleep(0.3)
    pid = stack.service.pid
    return {"pid": pid, "total": rel.fd_count(pid), "sockets": rel.socket_count(pid), "kinds": rel.fd_kinds(pid)}


#: usersd keeps at most this many worker read connections (Database.maximumReaders),
#: plus the writer's and the shared reader's: the pool may grow to the concurrency
#: the run reached, never past this.
DATABASE_HANDLES_CAP = 64 + 2


def descriptors_settled(stack, baseline: dict, slack: int = 2) -> tuple[bool, dict]:
    """Whether the descriptors are back to the baseline: every socket closed again;
    database handles within the read-connection pool's cap (a pooled read connection
    holds the database file and, once it has read, the WAL file); every other kind
    back where it was."""
    pid = stack.service.pid
    base = baseline["kinds"]

    def settled():
        now = rel.fd_kinds(pid)
        db = [name for name in now if name.endswith((".sqlite3", ".db"))]
        for name, count in now.items():
            if name.endswith("-wal"):
                if count > now.get(name[: -len("-wal")], 0) + slack:
                    return False
            elif name in db:
                if count > max(base.get(name, 0), DATABASE_HANDLES_CAP) + slack:
                    return False
            elif count > base.get(name, 0) + slack:
                return False
        return bool(db) or not any(name.endswith(".sqlite3") for name in base)

    ok = bool(rel.wait_until(settled, timeout=15))
    return ok, {"now": rel.fd_kinds(pid), "baseline": base}


def test_libfcgi_param_length_overflow_regression(make_stack):
    """CVE-2025-23016: libfcgi's ReadParams allocates nameLen + valueLen + 2 with
    32-bit arithmetic. Every overflowing shape, as PARAMS of a request and as the
    names of a management GET_VALUES record, must leave usersd running."""
    stack = make_stack().start()
    service = stack.service
    tail = fz.encode_params(fz.http_params("GET", "/healthz"))
    deaths = []
    for name_len, value_len in fz.OVERFLOW_LENGTHS:
        lengths = fz.nv_length(name_len, True) + fz.nv_length(value_len, True)
        shapes = {
            "PARAMS": fz.begin() + fz.stream_records(fz.PARAMS, 1, lengths + b"A" * 64 + tail) + fz.stream_records(fz.STDIN, 1, b""),
            "GET_VALUES": fz.record(fz.GET_VALUES, 0, lengths + b"B" * 64),
        }
        for where, data in shapes.items():
            fz.run_case(str(service.socket), fz.Case("cve", 0, [data]), timeout=10)
            if died(service, settle=0.3):
                deaths.append(f"{where} nameLen={name_len:#x} valueLen={value_len:#x}: exit {service.proc.returncode} {crash_lines(service)}")
                restart(service)
    expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
    assert not deaths, f"usersd died on {len(deaths)} of {2 * len(fz.OVERFLOW_LENGTHS)} overflowing name-value lengths:\n" + "\n".join(deaths)


def test_fuzzed_fastcgi_never_crashes_hangs_or_leaks(make_stack):
    stack = make_stack().start()
    service = stack.service
    cases = fz.generate(SEED, COUNT, overflow=False)
    baseline = warm_up(stack)
    outcomes: list[fz.Outcome] = []
    crashes: list[str] = []
    start = time.monotonic()
    with rel.Prober(stack.url, interval=0.01, tag="fuzzprobe") as prober:
        for first in range(0, len(cases), BATCH):
            batch = cases[first : first + BATCH]
            batch_outcomes = fz.run_cases(str(service.socket), batch, parallel=PARALLEL, timeout=CASE_TIMEOUT)
            if died(service):
                batch_outcomes, killers = replay_one_by_one(service, batch)
                crashes += killers
                baseline = warm_up(stack)
            outcomes += batch_outcomes
            hangs = sum(1 for o in outcomes if o.kind == "hang")
            if len(crashes) >= MAX_CRASHES or hangs >= MAX_HANGS or time.monotonic() - start > BUDGET:
                break
    elapsed = time.monotonic() - start
    summary = fz.summarize(outcomes)
    print(f"\n{len(outcomes)} FastCGI cases in {elapsed:.1f}s (seed {SEED}); prober {prober.rounds} rounds, "
          f"max latency {prober.max_latency:.3f}s; crashes {len(crashes)}")
    for family, figures in sorted(summary.items()):
        print(f"  {family:15} {figures}")

    findings = []
    if len(outcomes) < len(cases):
        findings.append(f"the run stopped after {len(outcomes)} of {len(cases)} cases ({elapsed:.0f}s; "
                        f"{sum(1 for o in outcomes if o.kind == 'hang')} hangs, {len(crashes)} crashes)")
    if crashes:
        findings.append(f"usersd crashed {len(crashes)} time(s) (the run stops at {MAX_CRASHES}):\n" + "\n".join(crashes))
    problems = [f"{o.case.label}: {o.problems()}" for o in outcomes if o.problems() and "[killed usersd]" not in o.detail]
    if problems:
        findings.append(f"{len(problems)} cases went wrong:\n" + "\n".join(problems[:40]))
    if prober.failures:
        findings.append(f"{len(prober.failures)} requests through nginx failed during the fuzzing"
                        f"{' (crash restarts included)' if crashes else ''}:\n" + "\n".join(prober.failures[:10]))
    if prober.rounds <= 10:
        findings.append(f"the prober made only {prober.rounds} rounds")
    if service.running():
        # Afterwards: normal answers through nginx, and no descriptor left behind.
        expect_json(requests.get(stack.url("/healthz"), timeout=TIMEOUT), 200)
        ok, figures = descriptors_settled(stack, baseline)
        if not ok:
            findings.append(f"open descriptors did not return to the baseline: {figures}")
    else:
        findings.append(f"usersd is not running at the end: {crash_lines(service)}")
    assert not findings, "\n\n".join(findings)


def test_many_parallel_connections(make_stack):
    """300 connections open at once, each mid-record; a third are dropped, the rest
    completed and answered. Twice: the second round must not leave more behind."""
    stack = make_stack().start()
    service = stack.service
    baseline = warm_up(stack)
    rounds = []
    with rel.Prober(stack.url, interval=0.02, tag="parallelprobe") as prober:
        for seed in (1, 2):
            outcomes = fz.hold_connections(str(service.socket), 300, hold=0.5, seed=seed)
            problems = [f"{o.case.label}: {o.problems()}" for o in outcomes if o.problems()]
            answered = sum(1 for o in outcomes if o.statuses == [200])
            assert len(outcomes) == 300
            assert not problems, "\n".join(problems[:20])
            assert answered == 200, answered
            time.sleep(0.5)
            rounds.append(rel.fd_count(service.pid))
    assert not prober.failures, "\n".join(prober.failures[:20])
    assert service.running()
    print(f"\ndescriptors: baseline {baseline['total']}, after round 1 {rounds[0]}, after round 2 {rounds[1]}; "
          f"threads now {rel.thread_count(service.pid)}")
    # Per-connection resources may stay pooled at the high-water mark, but a second
    # identical round must not add to them, and every socket must be closed.
    assert rounds[1] <= rounds[0] + 4, rounds
    assert rel.wait_until(lambda: rel.socket_count(service.pid) <= baseline["sockets"] + 2, timeout=15), rel.fd_kinds(service.pid)


def test_dropped_connections_mid_response(make_stack):
    """Clients (here: the FastCGI peer) that vanish while usersd writes a large answer."""
    stack = make_stack().start()
    service = stack.service
    # enough users that GET /users is a long streamed answer
    for k in range(200):
        requests.post(stack.url("/add-user"), json={"name": f"drop {k}", "email": f"drop{k}@example.com"}, timeout=TIMEOUT)
    baseline = warm_up(stack)
    data = fz.request_bytes(fz.http_params("GET", "/users"))
    for k in range(200):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(service.socket))
        sock.sendall(data)
        if k % 2:
            sock.recv(100)  # read a little of the answer first
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert service.running(), crash_lines(service)
    users = expect_json(requests.get(stack.url("/users"), timeout=TIMEOUT), 200)
    assert len(users) == 200
    ok, figures = descriptors_settled(stack, baseline)
    assert ok, f"open descriptors did not return to the baseline: {figures}"
