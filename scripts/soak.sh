#!/usr/bin/env bash
# Soak test: mixed read/write/task load through nginx (shipped site) against usersd
# for DURATION seconds, reporting requests, errors, usersd's RSS and open
# descriptors at start/end, the task backlog and the WAL size; exits non-zero when
# a criterion fails (see Tests/e2e/support/soak.py).
#
#   scripts/soak.sh [DURATION]          # seconds, default 60 (or $DURATION)
#   DURATION=1800 scripts/soak.sh       # the 30-minute run
#   CONNECTIONS=32 scripts/soak.sh 300  # more concurrent connections (default 16)
#   USERSD_BIN=.build/debug/usersd scripts/soak.sh 60   # a given binary (default: release build)
#   SOAK_JSON=report.json scripts/soak.sh               # also write the full report
#   SOAK_LOG=usersd.log scripts/soak.sh                 # keep usersd's log
#
# Load comes from wrk with scripts/soak.lua when wrk is installed, else Python threads.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
export PATH="$PATH:/opt/swift/usr/bin"
duration="${1:-${DURATION:-60}}"
if [[ -z "${USERSD_BIN:-}" ]]; then
  swift build -c release --product usersd >&2
  USERSD_BIN="$(swift build -c release --show-bin-path)/usersd"
fi
export USERSD_BIN
args=(--duration "$duration" --connections "${CONNECTIONS:-16}")
[[ -n "${SOAK_JSON:-}" ]] && args+=(--json "$SOAK_JSON")
[[ -n "${SOAK_LOG:-}" ]] && args+=(--keep-log "$SOAK_LOG")
echo "soak: $USERSD_BIN for ${duration}s" >&2
exec python3 Tests/e2e/support/soak.py "${args[@]}"
