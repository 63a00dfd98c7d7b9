#!/usr/bin/env bash
# The PostgreSQL part of `make bench` (bench/run.sh calls it last; PG=0 there skips it):
# usersd on PostgreSQL against PostgreSQL itself, on the same machine in the same run.
#
#   1. pgbench runs the statements usersd runs for POST /add-user (the user and its
#      welcome task in one statement, as PostgresStore.createUser sends it) and for
#      GET /user/<id> (PostgresStore.userByID), prepared, with CONNS clients: the ceiling.
#   2. usersd on PostgreSQL (one host, --db-pool POOL) behind the shipped nginx site,
#      driven by wrk with CONNS connections on the same routes (bench/bench.lua).
#   3. usersd on SQLite, same routes, same wrk: the embedded default.
#   4. one host and three hosts behind nginx/usersd-cluster.conf: does adding hosts on
#      this 2-core machine collapse (contention) or hold? Both runs open the same
#      connections in all, HOSTS_POOL (POOL rounded to a multiple of 3, at least 6):
#      one host with --db-pool HOSTS_POOL, three with a third each. An operator sizes
#      that total against the database's cores; equal totals give PostgreSQL the same
#      concurrency (a commit-bound write rate follows the number of connections).
# Writes bench/results/postgres.md (RESULTS_MD) and JSON lines in the run dir.
#
#   bench/postgres.sh                       # ~3 minutes
#   DURATION=5 WARMUP=1 bench/postgres.sh   # quicker
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNS="${PG_CONNS:-32}"
POOL="${PG_POOL:-8}"
HOSTS_POOL=$(( (POOL + 1) / 3 * 3 )); ((HOSTS_POOL >= 6)) || HOSTS_POOL=6
NUSERS="${NUSERS:-1000}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="${PG_PORT:-$(free_port)}"
RESULTS_MD="${PG_RESULTS_MD-$BENCH/results/postgres.md}"
RUN="${PG_RUN:-/tmp/usersd-bench-pg.$(date +%Y%m%d-%H%M%S).$$}"
PATH="$PATH:/usr/sbin:/sbin:/opt/swift/usr/bin"
mkdir -p "$RUN"/{logs,bin}
RESULTS="$RUN/results.jsonl"
: >"$RESULTS"
log() { printf '[bench-pg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[[ -x "$PGBIN/pgbench" ]] || die "no pgbench (scripts/deps.sh bench installs postgresql)"
for t in nginx wrk psql sqlite3 curl python3; do command -v "$t" >/dev/null || die "missing $t"; done
USERSD_BIN="${USERSD_BIN:-$ROOT/.build/release/usersd}"
[[ -x "$USERSD_BIN" ]] || die "no usersd at $USERSD_BIN (swift build -c release)"
cp "$USERSD_BIN" "$RUN/bin/usersd"
USERSD="$RUN/bin/usersd"

PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_all
  "$ROOT/scripts/pg-cluster.sh" stop "$RUN/pg" >/dev/null 2>&1
  [[ $rc == 0 ]] || log "failed (exit $rc); logs in $RUN/logs"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_200() {
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  die "no 200 from $1"
}

# ---------------------------------------------------------------- database
log "private PostgreSQL cluster in $RUN/pg (fsync and synchronous_commit on: the defaults)"
PG_OWNER_PID=$$ "$ROOT/scripts/pg-cluster.sh" start "$RUN/pg"
ADMIN="$("$ROOT/scripts/pg-cluster.sh" uri "$RUN/pg" postgres)"
fresh_db() {  # fresh_db NAME: an empty database with usersd's schema and NUSERS users
  psql -X -q -d "$ADMIN" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" 2>/dev/null
  local uri
  uri="$("$ROOT/scripts/pg-cluster.sh" uri "$RUN/pg" "$1")"
  "$USERSD" migrate --db "$uri" >>"$RUN/logs/migrate.log" 2>&1
  psql -X -q -d "$uri" -c "INSERT INTO users (name, email, email_key, created_at, updated_at)
    SELECT 'seed user ' || i, 'seed' || i || '@example.com', 'seed' || i || '@example.com',
      '2024-01-02T03:04:05.000Z', '2024-01-02T03:04:05.000Z' FROM generate_series(1, $NUSERS) AS i" \
    -c "VACUUM ANALYZE"
  echo "$uri"
}

# ---------------------------------------------------------------- 1. pgbench
cat >"$RUN/add_user.sql" <<'SQL'
\set r random(1, 4000000000000000)
WITH u AS (
    INSERT INTO users (name, email, email_key, created_at, updated_at)
    VALUES ('bench ' || :client_id, 'p-' || :r || '@example.com', 'p-' || :r || '@example.com',
        '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')
    ON CONFLICT (email_key) DO NOTHING RETURNING id
), t AS (
    INSERT INTO tasks (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at, enqueued_by)
    SELECT 'welcome', '{"user_id":' || u.id || '}', 'queued', 0, 5, 1767225600000,
        '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 'bench' FROM u RETURNING id
)
SELECT u.id, t.id FROM u, t;
SQL
# add_user_welcomed: the same insert, and the work usersd does afterwards for every
# new user: its welcome run (PostgresStore.runQueuedWelcomes), in batches as the
# scheduler gathers them. One run in CONNS takes the 2*CONNS newest task ids (those
# still queued); a welcome that falls outside every window is left undone, which
# only raises this ceiling.
# (A ':' followed by a name would be a pgbench variable: chr(58) spells the results.)
{
  sed -n '1,/^SELECT u.id, t.id FROM u, t;$/p' "$RUN/add_user.sql" | sed '$s/.*/SELECT t.id AS task_id FROM u, t \\gset/'
  cat <<SQL
\\set batch random(1, $CONNS)
\\set slot random(0, 63)
\\if :batch = 1
WITH runnable AS (
    SELECT t.id, u.id AS user_id FROM tasks t
        LEFT JOIN users u ON u.id = substring(t.payload from '^\\{"user_id":([0-9]{1,18})\\}\$')::bigint
    WHERE t.id = ANY(ARRAY(SELECT generate_series(:task_id - $((CONNS * 2 - 1)), :task_id)))
        AND t.kind = 'welcome' AND t.state = 'queued' AND t.run_at <= 1767225600000
        AND substring(t.payload from '^\\{"user_id":([0-9]{1,18})\\}\$')::bigint IS NOT NULL
    FOR UPDATE OF t SKIP LOCKED
), moved AS (
    UPDATE tasks SET state = 'succeeded', attempts = tasks.attempts + 1, started_at = '2026-01-01T00:00:00.000Z',
        finished_at = '2026-01-01T00:00:00.000Z', updated_at = '2026-01-01T00:00:00.000Z',
        result = CASE WHEN r.user_id IS NULL THEN '{"outbox"' || chr(58) || '"user no longer exists"}'
            ELSE '{"outbox"' || chr(58) || '"written"}' END
    FROM runnable r WHERE tasks.id = r.id RETURNING tasks.id
), written AS (
    INSERT INTO outbox (user_id, recipient, subject, body, created_at)
    SELECT u.id, u.email, 'Welcome to usersd', 'Hello ' || u.name || ', your account is ready.',
        '2026-01-01T00:00:00.000Z' FROM runnable r JOIN users u ON u.id = r.user_id
    ON CONFLICT (user_id) DO NOTHING
), counted AS (
    UPDATE task_counts SET count = count + (SELECT count(*) FROM moved)
    WHERE state = 'succeeded' AND slot = CAST(:slot AS integer) AND EXISTS (SELECT 1 FROM moved)
)
SELECT count(*) FROM moved;
\\endif
SQL
} >"$RUN/add_user_welcomed.sql"
cat >"$RUN/get_user.sql" <<SQL
\set id random(1, $NUSERS)
SELECT id, name, email, created_at, updated_at FROM users WHERE id = :id;
SQL
pgbench_run() {  # pgbench_run ROUTE URI
  local out tps failed
  [[ "$WARMUP" != 0 ]] && "$PGBIN/pgbench" -n -M prepared -c "$CONNS" -j 2 -T "$WARMUP" -f "$RUN/$1.sql" "$2" \
    >/dev/null 2>&1
  out="$("$PGBIN/pgbench" -n -M prepared -c "$CONNS" -j 2 -T "$DURATION" -f "$RUN/$1.sql" "$2" 2>&1)"
  echo "$out" >"$RUN/logs/pgbench-$1.log"
  tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")"
  failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")"
  echo "{\"kind\":\"pgbench\",\"route\":\"$1\",\"rps\":${tps:-0},\"errors\":${failed:-0}}" >>"$RESULTS"
  log "pgbench $1: ${tps:-?} tx/s, ${failed:-0} failed"
}
DB="$(fresh_db bench_pgbench)"
pgbench_run add_user "$DB"
pgbench_run get_user "$DB"
pgbench_run add_user_welcomed "$(fresh_db bench_pgbench_welcomed)"

# ---------------------------------------------------------------- usersd under wrk
wrk_run() {  # wrk_run TARGET ROUTE URL
  local out line
  [[ "$WARMUP" != 0 ]] && wrk -t 2 -c "$CONNS" -d "${WARMUP}s" --timeout 10s -s "$BENCH/bench.lua" "$3" \
    -- "$2" "$NUSERS" "warm$RANDOM$1" >/dev/null 2>&1
  out="$(wrk -t 2 -c "$CONNS" -d "${DURATION}s" --timeout 10s -s "$BENCH/bench.lua" "$3" \
    -- "$2" "$NUSERS" "run$RANDOM$1" 2>&1)"
  echo "$out" >"$RUN/logs/wrk-$1-$2.log"
  line="$(sed -n 's/^WRKJSON //p' <<<"$out")"
  [[ -n "$line" ]] || die "wrk gave no summary: $out"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(kind="wrk", target=sys.argv[2], route=sys.argv[3]); d["errors"]=d["non2xx3xx"]+d["err_connect"]+d["err_read"]+d["err_write"]+d["err_timeout"]; print(json.dumps(d))' \
    "$line" "$1" "$2" >>"$RESULTS"
  log "$1 $2: $(tail -n 1 "$RESULTS" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f req/s, p99 %.2f ms, %d errors" % (d["rps"], d["p99_ms"], d["errors"]))')"
}

# One host on a unix socket behind the shipped site (nginx/usersd.conf).
single() {  # single TARGET DB
  local socket="$RUN/usersd.sock"
  rm -f "$socket"
  "$USERSD" serve --socket "$socket" --db "$2" --db-pool "$POOL" --log-level warning \
    >>"$RUN/logs/$1.log" 2>&1 &
  PIDS+=($!)
  "$ROOT/scripts/nginx-local.sh" "$RUN/nginx-$1" "$socket" "$PORT"
  nginx -p "$RUN/nginx-$1" -c "$RUN/nginx-$1/nginx.conf" >>"$RUN/logs/nginx.log" 2>&1 &
  PIDS+=($!)
  wait_200 "http://127.0.0.1:$PORT/healthz"
  wrk_run "$1" add_user "http://127.0.0.1:$PORT"
  wrk_run "$1" get_user "http://127.0.0.1:$PORT"
  stop_all
}

single usersd-pg "$(fresh_db bench_usersd)"
SQLITE_DB="$RUN/users.sqlite3"
"$USERSD" migrate --db "$SQLITE_DB" >>"$RUN/logs/migrate.log" 2>&1
sqlite3 "$SQLITE_DB" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $NUSERS)
  INSERT INTO users (name, email, email_key, created_at, updated_at)
  SELECT 'seed user ' || i, 'seed' || i || '@example.com', 'seed' || i || '@example.com',
    '2024-01-02T03:04:05.000Z', '2024-01-02T03:04:05.000Z' FROM n;"
single usersd-sqlite "$SQLITE_DB"

# Hosts on TCP behind the shipped cluster site.
hosts() {  # hosts N
  local db upstreams=() i address
  db="$(fresh_db "bench_hosts$1")"
  local pool=$((HOSTS_POOL / $1))
  for i in $(seq 1 "$1"); do
    address="127.0.0.1:$(free_port)"
    upstreams+=("$address")
    "$USERSD" serve --listen "$address" --db "$db" --db-pool "$pool" --log-level warning \
      >>"$RUN/logs/hosts$1.log" 2>&1 &
    PIDS+=($!)
  done
  "$ROOT/scripts/nginx-cluster.sh" "$RUN/nginx-hosts$1" "$PORT" "${upstreams[@]}"
  nginx -p "$RUN/nginx-hosts$1" -c "$RUN/nginx-hosts$1/nginx.conf" >>"$RUN/logs/nginx.log" 2>&1 &
  PIDS+=($!)
  wait_200 "http://127.0.0.1:$PORT/healthz"
  for i in $(seq 1 "$1"); do
    while ! curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.05; done
  done
  wrk_run "hosts$1" add_user "http://127.0.0.1:$PORT"
  wrk_run "hosts$1" get_user "http://127.0.0.1:$PORT"
  stop_all
}
hosts 1
hosts 3

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "${RESULTS_MD}" "$DURATION" "$CONNS" "$POOL" "$NUSERS" "$HOSTS_POOL" <<'PY'
import json, sys, subprocess, datetime
path, out, duration, conns, pool, nusers, hosts_pool = sys.argv[1:8]
rows = [json.loads(line) for line in open(path)]
def get(kind, route, target=None):
    for r in rows:
        if r["kind"] == kind and r["route"] == route and (target is None or r.get("target") == target):
            return r
    return {"rps": 0, "errors": 0, "p99_ms": 0}
def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"
lines = []
lines.append("# usersd on PostgreSQL: bench results")
lines.append("")
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines.append(f"bench/postgres.sh, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, git {rev}: {duration} s per run, "
             f"{conns} clients (pgbench -c {conns} -j 2 -M prepared; wrk -t 2 -c {conns}), --db-pool {pool}, "
             f"{nusers} users seeded, one 2-core machine running everything (PostgreSQL, pgbench or wrk, nginx, usersd). "
             "PostgreSQL 15 with its default settings (fsync, synchronous_commit on).")
lines.append("")
lines.append("| route | pgbench (tx/s) | usersd on PostgreSQL (req/s) | ÷ pgbench | usersd on SQLite (req/s) | PostgreSQL ÷ SQLite | p99 on PostgreSQL (ms) | errors |")
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
for route, label in (("add_user", "POST /add-user"), ("get_user", "GET /user/<id>")):
    bench = get("pgbench", route); pg = get("wrk", route, "usersd-pg"); lite = get("wrk", route, "usersd-sqlite")
    errors = bench["errors"] + pg["errors"] + lite["errors"]
    lines.append(f"| {label} | {bench['rps']:.0f} | {pg['rps']:.0f} | {ratio(pg['rps'], bench['rps'])} | "
                 f"{lite['rps']:.0f} | {ratio(pg['rps'], lite['rps'])} | {pg['p99_ms']:.2f} | {errors} |")
welcomed = get("pgbench", "add_user_welcomed"); pg = get("wrk", "add_user", "usersd-pg")
lines.append(f"| POST /add-user, ceiling with each user's welcome run | {welcomed['rps']:.0f} | {pg['rps']:.0f} | "
             f"{ratio(pg['rps'], welcomed['rps'])} | | | | {welcomed['errors']} |")
lines.append("")
lines.append(f"Hosts behind nginx/usersd-cluster.conf over TCP, {hosts_pool} connections in all (--db-pool {hosts_pool} "
             f"for one host, {int(hosts_pool) // 3} each for three):")
lines.append("")
lines.append("| route | 1 host (req/s) | 3 hosts (req/s) | 3 ÷ 1 | errors |")
lines.append("|---|---:|---:|---:|---:|")
for route, label in (("add_user", "POST /add-user"), ("get_user", "GET /user/<id>")):
    one = get("wrk", route, "hosts1"); three = get("wrk", route, "hosts3")
    lines.append(f"| {label} | {one['rps']:.0f} | {three['rps']:.0f} | {ratio(three['rps'], one['rps'])} | "
                 f"{one['errors'] + three['errors']} |")
lines.append("")
lines.append("Reading it: pgbench is PostgreSQL's own ceiling for usersd's statements (issue 21's targets: usersd "
             "at 0.5x or more of it, 0 errors). A pgbench client is a few microseconds of C per transaction; usersd's "
             "request also pays nginx, FastCGI, JSON and the hand-over to a pool thread, on the same two cores as "
             "PostgreSQL and the load generator. For GET /user/<id> that path alone bounds the ratio: usersd on "
             "SQLite, with no database round trip at all, reaches about 0.4x of pgbench's rate, so usersd on "
             "PostgreSQL (which adds PostgreSQL's own CPU per query) stays well below 0.5x here; on separate "
             "machines nginx and usersd would not take PostgreSQL's cores. For POST /add-user the first row's "
             "ceiling is the insert alone, but usersd then runs every new user's welcome (an UPDATE of the task, "
             "an outbox row, the count), which costs PostgreSQL nearly as much again (pg_stat_statements figures "
             "in bench/results/history.md); the row 'with each user's welcome run' is the "
             "ceiling for that whole work. Three hosts get the same total connections as one: the row shows "
             "whether adding hosts collapses under contention. Runs on this machine vary by tens of percent "
             "with what else runs on it (other builds and benchmarks).")
lines.append("")
text = "\n".join(lines) + "\n"
print(text)
if out:
    open(out, "w").write(text)
PY
log "results: $RESULTS${RESULTS_MD:+ (table: $RESULTS_MD)}"
