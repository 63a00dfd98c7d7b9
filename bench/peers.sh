#!/usr/bin/env bash
# usersd beside what people would pick instead (`make bench-peers`): the shared
# peers harness (../shared/bench/bench.sh) measures, behind one nginx and in one
# run, nginx alone, the C libfcgi floor, PHP-FPM with PDO SQLite, the Go
# net/http/fcgi + go-sqlite3 peer and usersd (release build, its own fresh
# database, seeded by the harness through POST /add-user). Writes the table and
# usersd's ratios to bench/results/peers.md.
#
#   bench/peers.sh                                  # ~4 minutes
#   DURATION=5 WARMUP=1 bench/peers.sh              # quicker
#   TARGETS="static c php" bench/peers.sh           # without Go (usersd is always added)
#
# Knobs of the shared harness (DURATION, WARMUP, CONNS, NUSERS, ROUTES, PORT, ...)
# pass through. SHARED_BENCH points at the harness if it is not beside the repo.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
SHARED_BENCH="${SHARED_BENCH:-$ROOT/../shared/bench}"
export TARGETS="${TARGETS:-static c php go}"
RESULTS_MD="${RESULTS_MD-$BENCH/results/peers.md}"
RUN="${RUN:-/tmp/usersd-peers.$(date +%Y%m%d-%H%M%S).$$}"
PATH="$PATH:/usr/sbin:/sbin"
command -v swift >/dev/null || { [[ -x /opt/swift/usr/bin/swift ]] && PATH="$PATH:/opt/swift/usr/bin"; }

log() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -f "$SHARED_BENCH/bench.sh" ]] || die "no shared harness at $SHARED_BENCH (set SHARED_BENCH)"
mkdir -p "$RUN"
if [[ -z "${USERSD_BIN:-}" ]]; then
  (cd "$ROOT" && swift build -c release >/dev/null)
  USERSD_BIN="$(cd "$ROOT" && swift build -c release --show-bin-path)/usersd"
fi

"$USERSD_BIN" serve --socket "$RUN/usersd.sock" --db "$RUN/users.db" --log-level warning \
  >"$RUN/usersd.log" 2>&1 &
USERSD_PID=$!
trap 'kill -TERM "$USERSD_PID" 2>/dev/null; wait "$USERSD_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [[ -S "$RUN/usersd.sock" ]] && break; sleep 0.1; done
[[ -S "$RUN/usersd.sock" ]] || die "usersd did not start: $(cat "$RUN/usersd.log")"

results="$(SWIFT_FCGI_SOCKET="$RUN/usersd.sock" RUN="$RUN/peers" bash "$SHARED_BENCH/bench.sh" | tail -n 1)"
[[ -f "$results" ]] || die "the shared harness wrote no results"

[[ -n "$RESULTS_MD" ]] || exit 0
{
  echo "# usersd beside its peers (\`bench/peers.sh\`)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M:%S +0000'), usersd $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?')" \
    "(release), \`usersd serve --socket S --db D --log-level warning\`; machine: $(nproc) CPUs, $(uname -r);" \
    "harness: ../shared/bench/bench.sh, TARGETS=\"$TARGETS swift\" (swift = usersd)."
  echo "Every figure is from one run on one machine: compare the ratios, not req/s across runs."
  echo
  python3 "$SHARED_BENCH/table.py" "$results" --markdown
  echo
  python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rps = {(r["target"], r["route"]): r.get("rps", 0) for r in rows if not r.get("meta")}
routes = {"get_user": "`GET /user/<id>`", "users": "`GET /users`", "add_user": "`POST /add-user`"}
peers = [t for t in ("c", "php", "go") if any(k[0] == t for k in rps)]
print("| route | " + " | ".join(f"usersd ÷ {p}" for p in peers) + " |")
print("|---|" + "---:|" * len(peers))
for route, name in routes.items():
    mine = rps.get(("swift", route))
    if not mine:
        continue
    cells = [f"{mine / rps[(p, route)]:.2f}" if rps.get((p, route)) else "-" for p in peers]
    print(f"| {name} | " + " | ".join(cells) + " |")
EOF
} >"$RESULTS_MD"
log "wrote $RESULTS_MD"
