#!/usr/bin/env bash
# usersd's benchmark (`make bench`): one nginx in front of
#   /static/  nginx `return 200` (the ceiling),
#   /c/       a minimal C libfcgi responder serving fixed bytes (the floor),
#   /usersd/  usersd (release build) behind the shipped site file nginx/usersd.conf,
# each route driven with wrk for a fixed time; then a memory run (idle RSS,
# GET /users over 1,000,000 users). Prints a table with usersd's ratios to the
# floor and ceiling of the same run, writes JSON lines to the run dir and the
# table to bench/results/latest.md. See bench/README.md for the knobs.
#
#   bench/run.sh                                  # everything, ~4 minutes
#   DURATION=5 WARMUP=1 bench/run.sh              # quicker
#   MODE=memory bench/run.sh                      # only the memory run
#   ROUTES="get_user users" TARGETS="c usersd" bench/run.sh
#   SERVER=apache bench/run.sh                    # + usersd behind Apache httpd (lighttpd, caddy, h2o;
#                                                 #   a list measures several in one run)
#
# Adapted from the shared harness ../shared/bench/bench.sh (process handling,
# nginx layout, wrk script, C floor). Everything it starts lives under one run
# dir in /tmp and is stopped on exit, by PID.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
KNOBS=(MODE PORT DURATION WARMUP CONNS WRK_THREADS WRK_TIMEOUT NUSERS MEM_USERS TARGETS ROUTES KEEPALIVE
       C_THREADS PREFIX TASK_CONCURRENCY TASK_QUEUE_LIMIT USERSD_ARGS USERSD_BIN BUILD RUN RESULTS_MD MEM_VERIFY SITE
       SERVER)
COMMAND=""
for k in "${KNOBS[@]}"; do [[ -n "${!k+x}" ]] && COMMAND+="$k=${!k} "; done
COMMAND+="bench/run.sh"

MODE="${MODE:-all}"                      # all | throughput | memory
PORT="${PORT:-18090}"
DURATION="${DURATION:-10}"               # seconds per measured wrk run
WARMUP="${WARMUP:-2}"                    # seconds of unmeasured wrk before each (0: none)
CONNS="${CONNS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_TIMEOUT="${WRK_TIMEOUT:-10s}"
NUSERS="${NUSERS:-1000}"                 # users seeded for the throughput runs
MEM_USERS="${MEM_USERS:-1000000}"        # users streamed by the memory run
TARGETS="${TARGETS:-static c usersd usersd-auth}"  # + c-site: the C floor behind a copy of the shipped location
                                         # usersd-auth: usersd with --auth-file, driven with a token
ROUTES="${ROUTES:-get_user users add_user mixed start_task}"
SITE="${SITE:-$ROOT/nginx/usersd.conf}"  # the shipped nginx site, rendered under $PREFIX
# nginx, or other fronts for usersd as well: apache, lighttpd, caddy and/or h2o (a
# list) with their shipped sites (docs/web-servers/), each measured as target
# usersd-<server> beside nginx's, against the same usersd
SERVER="${SERVER:-nginx}"
PREFIX="${PREFIX:-/usersd}"              # URL prefix of usersd (usersd --prefix)
# nginx upstream keepalive of the floor: the shipped site's value unless set
KEEPALIVE="${KEEPALIVE:-$(sed -n 's/^[[:space:]]*keepalive[[:space:]]\{1,\}\([0-9]\{1,\}\);.*/\1/p' "$SITE" | head -n 1)}"
KEEPALIVE="${KEEPALIVE:-16}"
# libfcgi pins a kept connection to one thread, and nginx can hold up to CONNS
# in flight + KEEPALIVE idle per worker: the floor gets that many threads.
C_THREADS="${C_THREADS:-$((CONNS + $(nproc) * KEEPALIVE))}"
TASK_CONCURRENCY="${TASK_CONCURRENCY:-64}"       # throughput instance only: tasks sleep 5 s each,
TASK_QUEUE_LIMIT="${TASK_QUEUE_LIMIT:-10000000}" # so /start-task must never meet a full queue
USERSD_ARGS="${USERSD_ARGS:-}"           # extra flags for the throughput instance
BUILD="${BUILD:-1}"                      # 1: swift build -c release first (unless USERSD_BIN is set)
MEM_VERIFY="${MEM_VERIFY:-1}"            # 1: hash the 1M-user stream once more and compare
RESULTS_MD="${RESULTS_MD-$BENCH/results/latest.md}"   # empty: do not write it
RUN="${RUN:-/tmp/usersd-bench.$(date +%Y%m%d-%H%M%S).$$}"
RESULTS="$RUN/results.jsonl"
BASE="http://127.0.0.1:$PORT"
TOOLS=(python3 "$BENCH/tools.py")

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$MODE" in all|throughput|memory) ;; *) die "MODE must be all, throughput or memory" ;; esac
FRONTS=()
for front in $SERVER; do
  case "$front" in
    nginx) ;;
    apache|lighttpd|caddy|h2o) FRONTS+=("$front") ;;
    *) die "SERVER must list nginx, apache, lighttpd, caddy or h2o" ;;
  esac
  binary="$front"; [[ "$front" == apache ]] && binary=apache2
  command -v "$binary" >/dev/null || die "missing $binary (scripts/deps.sh bench installs it)"
done
[[ -f "$SITE" ]] || die "no nginx site file $SITE"
PATH="$PATH:/usr/sbin:/sbin"
command -v swift >/dev/null || { [[ -x /opt/swift/usr/bin/swift ]] && PATH="$PATH:/opt/swift/usr/bin"; }
for t in nginx wrk sqlite3 curl python3; do
  command -v "$t" >/dev/null || die "missing $t (scripts/deps.sh bench installs it)"
done
CC="${CC:-}"
if [[ -z "$CC" ]]; then
  for c in cc gcc clang; do command -v "$c" >/dev/null && { CC="$c"; break; }; done
fi
[[ -n "$CC" ]] || die "no C compiler (cc, gcc or clang) for the C floor"

mkdir -p "$RUN"/{bin,logs,nginx-tmp,usersd,usersd-auth,usersd-mem}
: >"$RESULTS"

# ---------------------------------------------------------------- processes
PIDS=()          # "name:pid" of everything started, in start order
LAST_PID=""
start() {  # start NAME CMD...  (background; logs in $RUN/logs/NAME.log)
  local name="$1"; shift
  "$@" >"$RUN/logs/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$name:$LAST_PID")
}
pid_of() { local e; for e in "${PIDS[@]}"; do [[ "${e%%:*}" == "$1" ]] && { echo "${e##*:}"; return; }; done; }
running() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1; [[ -n "$st" && "$st" != Z* ]]; }
STOP_RC=""; STOP_S=""
stop_proc() {  # stop_proc NAME [TIMEOUT]: TERM (nginx: QUIT), wait, KILL after TIMEOUT s; sets STOP_RC/STOP_S
  local name="$1" timeout="${2:-20}" pid t0 e rest=()
  pid="$(pid_of "$name")"; [[ -n "$pid" ]] || return 0
  t0=$(date +%s.%N)
  if [[ "$name" == nginx ]]; then kill -QUIT "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
  local deadline=$((SECONDS + timeout))
  while running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
  if running "$pid"; then log "$name ($pid) still running after ${timeout}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  STOP_RC=0; wait "$pid" 2>/dev/null || STOP_RC=$?
  STOP_S="$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)")"
  for e in "${PIDS[@]}"; do [[ "$e" == "$name:$pid" ]] || rest+=("$e"); done
  PIDS=("${rest[@]+"${rest[@]}"}")
}
cleanup() {
  local rc=$? i e pid
  set +e
  trap - EXIT INT TERM
  log "stopping everything"
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do   # usersd first (started last), nginx last
    e="${PIDS[$i]}"; pid="${e##*:}"
    running "$pid" || continue
    if [[ "${e%%:*}" == nginx ]]; then kill -QUIT "$pid"; else kill -TERM "$pid"; fi
  done
  local deadline=$((SECONDS + 20)) alive
  while :; do
    alive=0
    for e in "${PIDS[@]+"${PIDS[@]}"}"; do running "${e##*:}" && alive=1; done
    [[ $alive == 0 || $SECONDS -ge $deadline ]] && break
    sleep 0.1
  done
  for e in "${PIDS[@]+"${PIDS[@]}"}"; do
    pid="${e##*:}"
    running "$pid" && { log "force-killing $e"; kill -KILL "$pid"; }
    wait "$pid" 2>/dev/null
  done
  # anything left whose command line names this (unique) run dir was started here
  local strays
  strays="$(ps -eo pid=,args= | awk -v run="$RUN/" 'index($0, run) && !/awk/ {print $1}')"
  for pid in $strays; do
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    log "stray process $pid: $(ps -o args= -p "$pid" 2>/dev/null)"; kill -KILL "$pid" 2>/dev/null
  done
  [[ $rc == 0 ]] || log "failed (exit $rc); logs in $RUN/logs"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_usersd NAME DB [ARGS...]: start usersd on $RUN/usersd.sock (START_SOCK) under
# --prefix $PREFIX (START_PREFIX) and wait for READY=1
READY_S=""
start_usersd() {
  local name="$1" db="$2"; shift 2
  local ns="$RUN/notify-$name.sock" pidfile="$RUN/$name.pid" nw
  local sock="${START_SOCK:-$RUN/usersd.sock}" prefix="${START_PREFIX:-$PREFIX}"
  rm -f "$pidfile" "$sock"
  "${TOOLS[@]}" notify-wait "$ns" --timeout 60 --pidfile "$pidfile" >"$RUN/$name.ready" 2>"$RUN/logs/$name-notify.log" &
  nw=$!
  PIDS+=("notify-$name:$nw")
  for _ in $(seq 1 200); do [[ -S "$ns" ]] && break; sleep 0.02; done
  start "$name" env NOTIFY_SOCKET="$ns" "$USERSD" serve --socket "$sock" --db "$db" \
    --log-level warning --prefix "$prefix" "$@"
  echo "$LAST_PID" >"$pidfile"
  if ! wait "$nw"; then
    tail -n 20 "$RUN/logs/$name.log" >&2
    die "$name did not report READY=1 ($(cat "$RUN/logs/$name-notify.log"))"
  fi
  READY_S="$(cat "$RUN/$name.ready")"
  log "$name ready after ${READY_S}s (pid $LAST_PID): usersd serve --socket $sock --db $db --prefix $prefix $*"
}
# migrate DB: create usersd's schema in a fresh database
migrate() {
  local rc=0
  "$USERSD" migrate --db "$1" >"$RUN/logs/migrate.log" 2>&1 || rc=$?
  if [[ $rc == 64 ]]; then   # a usersd without the migrate command
    log "usersd migrate: $(tail -n 1 "$RUN/logs/migrate.log"); creating the schema with one start/stop"
    start_usersd usersd-schema "$1"
    stop_proc usersd-schema
  elif [[ $rc != 0 ]]; then
    cat "$RUN/logs/migrate.log" >&2
    die "usersd migrate --db $1 failed with status $rc"
  fi
}

# ---------------------------------------------------------------- build
if [[ -z "${USERSD_BIN:-}" ]]; then
  if [[ "$BUILD" == 1 ]]; then
    log "swift build -c release"
    (cd "$ROOT" && swift build -c release) >"$RUN/logs/swift-build.log" 2>&1 ||
      { tail -n 30 "$RUN/logs/swift-build.log" >&2; die "swift build -c release failed"; }
  fi
  USERSD_BIN="$ROOT/.build/release/usersd"
fi
[[ -x "$USERSD_BIN" ]] || die "no usersd binary at $USERSD_BIN (swift build -c release)"
# a private copy: a rebuild during the run does not change what is measured
cp "$USERSD_BIN" "$RUN/bin/usersd"
USERSD="$RUN/bin/usersd"
"$CC" -O2 -Wall -pthread -o "$RUN/bin/hello" "$BENCH/c-floor/hello.c" -lfcgi 2>"$RUN/logs/cc.log" ||
  { cat "$RUN/logs/cc.log" >&2; die "building the C floor failed (needs libfcgi-dev)"; }

# ---------------------------------------------------------------- nginx
"${TOOLS[@]}" users-json "$NUSERS" "$RUN/users.json"
cp /etc/nginx/fastcgi_params "$RUN/fastcgi_params"   # the shipped site includes the stock file
csite=(); [[ " $TARGETS " == *" c-site "* ]] && csite=(--c-site)
[[ " $TARGETS " == *" usersd-auth "* ]] && csite+=(--usersd-auth "$PREFIX-auth")
"${TOOLS[@]}" render-site --site "$SITE" --socket "$RUN/usersd.sock" --port "$PORT" --prefix "$PREFIX" \
  --run "$RUN" --bench "$BENCH" --locations-template "$BENCH/nginx/bench-locations.conf.template" \
  --keepalive "$KEEPALIVE" "${csite[@]+"${csite[@]}"}"
user_line=""; [[ $(id -u) == 0 ]] && user_line="user root;"
sed -e "s#@RUN@#$RUN#g" -e "s#@KEEPALIVE@#$KEEPALIVE#g" -e "s#@USER_LINE@#$user_line#g" \
  "$BENCH/nginx/nginx.conf.template" >"$RUN/nginx.conf"
nginx -t -p "$RUN" -c "$RUN/nginx.conf" >"$RUN/logs/nginx-t.log" 2>&1 ||
  { cat "$RUN/logs/nginx-t.log" >&2; die "nginx -t failed"; }
start nginx nginx -p "$RUN" -c "$RUN/nginx.conf"
NGINX_PID="$LAST_PID"

AUTH_TOKEN=""   # usersd-auth's token (write scope: every route the bench drives)
auth_header() {  # auth_header PREFIX: curl arguments with the token for usersd-auth's prefix
  [[ "$1" == "$PREFIX-auth" && -n "$AUTH_TOKEN" ]] && printf '%s\n' -H "Authorization: Bearer $AUTH_TOKEN"
  return 0
}
wait_200() {  # wait_200 URL [CURL ARGS...]
  local code="" url="$1"; shift
  for _ in $(seq 1 100); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)"
    [[ "$code" == 200 ]] && return 0
    sleep 0.1
  done
  die "$url answers $code, not 200"
}

meta() {  # meta KEY=VALUE... (strings) -> one meta JSON line
  python3 - "$@" <<'EOF' >>"$RESULTS"
import json, os, platform, subprocess, sys, time
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout.strip()
    except Exception:
        return "?"
m = {"kind": "meta", "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "cpus": os.cpu_count(),
     "kernel": platform.release(),
     "cpu_model": sh("lscpu | sed -n 's/^Model name: *//p' | head -n 1") or platform.machine(),
     "nginx": sh("nginx -v 2>&1 | sed 's#.*/##'"), "wrk": sh("wrk -v 2>&1 | head -n 1 | cut -d' ' -f2")}
for kv in sys.argv[1:]:
    k, _, v = kv.partition("=")
    try:
        m[k] = json.loads(v)
    except ValueError:
        m[k] = v
print(json.dumps(m))
EOF
}

# ---------------------------------------------------------------- throughput
if [[ "$MODE" != memory ]]; then
  DB="$RUN/usersd/users.sqlite3"
  migrate "$DB"
  "${TOOLS[@]}" seed-sql 1 "$NUSERS" | sqlite3 "$DB"
  read -r cnt maxid seq <<<"$(sqlite3 -separator ' ' "$DB" "SELECT count(*), max(id), (SELECT seq FROM sqlite_sequence WHERE name = 'users') FROM users")"
  [[ "$cnt" == "$NUSERS" && "$maxid" == "$NUSERS" && "$seq" == "$NUSERS" ]] ||
    die "seeding: $cnt users, max id $maxid, sequence $seq (want $NUSERS)"
  log "seeded $NUSERS users into $DB"

  targets=()
  for t in $TARGETS; do
    case "$t" in
      static) targets+=("static=/static=") ;;
      c) start c "$RUN/bin/hello" "$RUN/c.sock" "$C_THREADS" "$RUN/users.json"; targets+=("c=/c=$LAST_PID") ;;
      c-site) start c-site "$RUN/bin/hello" "$RUN/c-site.sock" "$C_THREADS" "$RUN/users.json"; targets+=("c-site=/c-site=$LAST_PID") ;;
      usersd|usersd-auth) ;;
      *) die "unknown target $t (static c c-site usersd usersd-auth)" ;;
    esac
  done
  USERSD_FLAGS=(--task-concurrency "$TASK_CONCURRENCY" --task-queue-limit "$TASK_QUEUE_LIMIT")
  # shellcheck disable=SC2206
  [[ -n "$USERSD_ARGS" ]] && USERSD_FLAGS+=($USERSD_ARGS)
  if ((${#FRONTS[@]})); then
    # Apache's and h2o's workers run as www-data: the socket's group, a traversable run dir.
    USERSD_FLAGS+=(--socket-group www-data)
    chmod 711 "$RUN"
  fi
  if [[ " $TARGETS " == *" usersd "* ]]; then
    start_usersd usersd "$DB" "${USERSD_FLAGS[@]}"
    USERSD_PID="$LAST_PID"
    targets+=("usersd=$PREFIX=$USERSD_PID")
    for front in "${FRONTS[@]+"${FRONTS[@]}"}"; do
      start "front-$front" "${TOOLS[@]}" front --kind "$front" --socket "$RUN/usersd.sock" --run "$RUN" \
        --port-file "$RUN/$front.port" --pid-file "$RUN/$front.pids"
      for _ in $(seq 1 300); do [[ -s "$RUN/$front.port" ]] && break; sleep 0.1; done
      [[ -s "$RUN/$front.port" ]] || { cat "$RUN/logs/front-$front.log" >&2; die "$front did not start"; }
      log "$front in front of the same usersd on port $(cat "$RUN/$front.port") (docs/web-servers/)"
      targets+=("usersd-$front=http://127.0.0.1:$(cat "$RUN/$front.port")$PREFIX=$USERSD_PID")
    done
  fi
  if [[ " $TARGETS " == *" usersd-auth "* ]]; then
    # The same, with access control on: its own copy of the seeded database, a token
    # file with one write-scope token (every route here needs read or write), and a
    # copy of the shipped location and upstream under $PREFIX-auth.
    ADB="$RUN/usersd-auth/users.sqlite3"
    migrate "$ADB"
    "${TOOLS[@]}" seed-sql 1 "$NUSERS" | sqlite3 "$ADB"
    AUTH_TOKEN="$("$USERSD" token add bench --scope write --auth-file "$RUN/usersd-auth/tokens" 2>>"$RUN/logs/token.log")"
    START_SOCK="$RUN/usersd-auth.sock" START_PREFIX="$PREFIX-auth" \
      start_usersd usersd-auth "$ADB" "${USERSD_FLAGS[@]}" --auth-file "$RUN/usersd-auth/tokens"
    targets+=("usersd-auth=$PREFIX-auth=$LAST_PID=$AUTH_TOKEN")
    c401="$(curl -s -o /dev/null -w '%{http_code}' "$BASE$PREFIX-auth/user/1")"
    [[ "$c401" == 401 ]] || die "GET $PREFIX-auth/user/1 without a token -> $c401, not 401 (another nginx on port $PORT?)"
  fi
  url_of() { if [[ "$1" == http* ]]; then echo "$1"; else echo "$BASE$1"; fi; }
  for spec in "${targets[@]}"; do
    IFS== read -r _ p _ <<<"$spec"
    mapfile -t hdr < <(auth_header "$p")
    wait_200 "$(url_of "$p")/user/1" "${hdr[@]+"${hdr[@]}"}"
  done

  # GET /users must be the same bytes everywhere (measured before any POST)
  equal=null
  for spec in "${targets[@]}"; do
    IFS== read -r t p _ <<<"$spec"
    mapfile -t hdr < <(auth_header "$p")
    curl -s -o "$RUN/users-$t.json" "${hdr[@]+"${hdr[@]}"}" "$(url_of "$p")/users"
    if cmp -s "$RUN/users.json" "$RUN/users-$t.json"; then
      log "GET $p/users: identical to users.json ($(stat -c %s "$RUN/users.json") bytes)"
      [[ $t == usersd ]] && equal=true
    else
      log "WARNING: GET $p/users differs from users.json ($(stat -c %s "$RUN/users-$t.json") vs $(stat -c %s "$RUN/users.json") bytes)"
      [[ $t == usersd ]] && equal=false
    fi
  done
  if [[ " $TARGETS " == *" usersd "* ]]; then
    c404="$(curl -s -o /dev/null -w '%{http_code}' "$BASE$PREFIX/user/$((NUSERS + 1))")"
    [[ "$c404" == 404 ]] || log "WARNING: GET $PREFIX/user/$((NUSERS + 1)) -> $c404, not 404"
  fi

  git_rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  [[ -n "$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null)" ]] && git_rev+="+uncommitted"
  meta "command=$COMMAND" "run=$RUN" "duration_s=$DURATION" "warmup_s=$WARMUP" "conns=$CONNS" \
    "wrk_threads=$WRK_THREADS" "nusers=$NUSERS" "c_threads=$C_THREADS" "keepalive=$KEEPALIVE" \
    "targets=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1].split()))' "$TARGETS")" \
    "usersd_version=$("$USERSD" --version 2>&1 | head -n 1)" "git=$git_rev" \
    "usersd_cmd=usersd serve --socket S --db D --log-level warning --prefix $PREFIX ${USERSD_FLAGS[*]}" \
    "users_bytes_equal=$equal" "users_json_bytes=$(stat -c %s "$RUN/users.json")" \
    "site_diff=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["location_vs_floor"]))' "$RUN/site-diff.json")"

  log "measuring: routes [$ROUTES] x targets [$TARGETS], ${DURATION}s each after ${WARMUP}s warmup (run dir $RUN)"
  "${TOOLS[@]}" measure "${targets[@]/#/--target=}" --routes "$ROUTES" --port "$PORT" --nusers "$NUSERS" \
    --conns "$CONNS" --wrk-threads "$WRK_THREADS" --wrk-timeout "$WRK_TIMEOUT" --duration "$DURATION" \
    --warmup "$WARMUP" --lua "$BENCH/bench.lua" --log "$RUN/logs/non2xx.log" --logdir "$RUN/logs" \
    --nginx-pid "$NGINX_PID" --db "$DB" --auth-db "$RUN/usersd-auth/users.sqlite3" --results "$RESULTS"

  for front in "${FRONTS[@]+"${FRONTS[@]}"}"; do stop_proc "front-$front" 20; done
  if [[ " $TARGETS " == *" usersd "* ]]; then
    stop_proc usersd 30
    log "usersd stopped by SIGTERM in ${STOP_S}s, exit status $STOP_RC"
    echo "{\"kind\": \"usersd_stop\", \"exit\": $STOP_RC, \"seconds\": $STOP_S}" >>"$RESULTS"
  fi
  [[ -n "$(pid_of usersd-auth)" ]] && stop_proc usersd-auth 30
  for t in c c-site; do [[ -n "$(pid_of "$t")" ]] && stop_proc "$t" 5; done
fi

# ---------------------------------------------------------------- memory
if [[ "$MODE" != throughput ]]; then
  [[ "$MODE" == memory ]] && meta "command=$COMMAND" "run=$RUN" "usersd_version=$("$USERSD" --version 2>&1 | head -n 1)"
  MDB="$RUN/usersd-mem/users.sqlite3"
  migrate "$MDB"
  start_usersd usersd-mem "$MDB"
  MPID="$LAST_PID"
  wait_200 "$BASE$PREFIX/healthz"
  sleep 1
  "${TOOLS[@]}" proc "$MPID" --kind memory_idle --after-s 1 >>"$RESULTS"
  log "idle: $(tail -n 1 "$RESULTS")"
  log "inserting $MEM_USERS users with sqlite3"
  t0=$(date +%s.%N)
  { "${TOOLS[@]}" seed-sql 1 "$MEM_USERS"; echo "PRAGMA wal_checkpoint(TRUNCATE);"; } | sqlite3 "$MDB" >"$RUN/logs/mem-insert.log"
  insert_s="$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)")"
  log "inserted in ${insert_s}s; streaming GET $PREFIX/users"
  verify=(); [[ "$MEM_VERIFY" == 1 ]] && verify=(--verify)
  "${TOOLS[@]}" stream-mem --pid "$MPID" --url "$BASE$PREFIX/users" --nusers "$MEM_USERS" \
    --insert-s "$insert_s" "${verify[@]+"${verify[@]}"}" >>"$RESULTS"
  stop_proc usersd-mem 30
  log "usersd-mem stopped in ${STOP_S}s, exit status $STOP_RC"
fi

# ---------------------------------------------------------------- report
# usersd's and nginx's own complaints during the run
for f in "$RUN"/logs/usersd.log "$RUN"/logs/usersd-mem.log "$RUN"/logs/nginx-error.log; do
  [[ -s "$f" ]] || continue
  log "$(basename "$f"): $(wc -l <"$f") lines, e.g.:"
  head -n 5 "$f" | cut -c1-300 >&2
done
echo
if [[ -n "$RESULTS_MD" ]]; then
  mkdir -p "$(dirname "$RESULTS_MD")"
  "${TOOLS[@]}" table "$RESULTS" --markdown-out "$RESULTS_MD"
else
  "${TOOLS[@]}" table "$RESULTS"
fi
echo
log "results: $RESULTS${RESULTS_MD:+ (table: $RESULTS_MD)}"

# ---------------------------------------------------------------- PostgreSQL
# usersd on PostgreSQL against pgbench, SQLite and three hosts: bench/postgres.sh
# (its own run dir, cluster and table bench/results/postgres.md). PG=0 skips it.
if [[ "${PG:-1}" == 1 && "$MODE" != memory ]]; then
  USERSD_BIN="$RUN/bin/usersd" DURATION="$DURATION" WARMUP="$WARMUP" NUSERS="$NUSERS" "$BENCH/postgres.sh"
fi
