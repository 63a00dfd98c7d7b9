#!/usr/bin/env bash
# `make cluster`: the scale-out demo on one machine (docs/scale-out.md). A private
# PostgreSQL (data, socket and log under ./run/cluster/pg, run as the postgres user;
# never the system cluster), three usersd hosts on 127.0.0.1:9001-9003 sharing its
# database, and nginx on http://127.0.0.1:${PORT:-8080} with nginx/usersd-cluster.conf.
# Ctrl-C stops everything (the database last); the data stays for the next run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PORT:-8080}"
hosts="${HOSTS:-3}"
run_dir="$here/run/cluster"
binary="${USERSD_BIN:-$here/.build/release/usersd}"
mkdir -p "$run_dir"

PG_OWNER_PID=$$ "$here/scripts/pg-cluster.sh" start "$run_dir/pg"
uri_admin="$("$here/scripts/pg-cluster.sh" uri "$run_dir/pg" postgres)"
if [[ "$(psql -X -A -t -d "$uri_admin" -c "SELECT 1 FROM pg_database WHERE datname = 'usersd'")" != 1 ]]; then
  psql -X -q -d "$uri_admin" -c "CREATE DATABASE usersd"
fi
uri="$("$here/scripts/pg-cluster.sh" uri "$run_dir/pg" usersd)"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$here/scripts/pg-cluster.sh" stop "$run_dir/pg" || true
  echo "stopped (data kept in $run_dir/pg)" >&2
}
trap stop INT TERM EXIT

upstreams=()
for i in $(seq 1 "$hosts"); do
  address="127.0.0.1:$((9000 + i))"
  upstreams+=("$address")
  "$binary" serve --listen "$address" --db "$uri" --db-pool 4 2>>"$run_dir/host$i.log" &
  pids+=($!)
done
"$here/scripts/nginx-cluster.sh" "$run_dir/nginx" "$port" "${upstreams[@]}"
nginx -p "$run_dir/nginx" -c "$run_dir/nginx/nginx.conf" &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break
  sleep 0.1
done
cat >&2 <<TEXT
usersd cluster: $hosts hosts (${upstreams[*]}) on PostgreSQL ($run_dir/pg), nginx on http://127.0.0.1:$port
  logs: $run_dir/host*.log, $run_dir/nginx/logs/, $run_dir/pg/postgres.log
  try:  curl -s -X POST http://127.0.0.1:$port/users -H 'Content-Type: application/json' -d '{"name":"Ann","email":"ann@example.com"}'
  Ctrl-C stops everything.
TEXT
wait -n "${pids[@]}" || true
