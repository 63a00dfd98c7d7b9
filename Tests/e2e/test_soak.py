"""Soak through nginx (Tests/e2e/support/soak.py, the same run as `scripts/soak.sh`): mixed
read/write/task load; 0 errors, RSS growth after warm-up < 10 %, descriptors flat,
task backlog drained, WAL bounded, clean shutdown, integrity_check ok.

A short run by default (SOAK_DURATION, default 20 s); SOAK=1 makes it 60 s."""

from __future__ import annotations

import os

import soak

DURATION = float(os.environ.get("SOAK_DURATION") or (60 if os.environ.get("SOAK") == "1" else 20))


def test_soak():
    report = soak.run_soak(duration=DURATION, connections=16)
    print("\n" + soak.describe(report))
    assert not report["verdict"], soak.describe(report)
