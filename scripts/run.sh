#!/usr/bin/env bash
# `make run`: usersd on a unix socket with its database under ./data/, and nginx in
# front on http://127.0.0.1:${PORT:-8080} using the shipped site file. Ctrl-C stops both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PORT:-8080}"
run_dir="$here/run"
socket="$run_dir/usersd.sock"
binary="${USERSD_BIN:-$here/.build/release/usersd}"
mkdir -p "$run_dir" "$here/data"

"$here/scripts/nginx-local.sh" "$run_dir/nginx" "$socket" "$port"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped" >&2
}
trap stop INT TERM EXIT

"$binary" serve --socket "$socket" --db "${USERSD_DB:-$here/data/users.sqlite3}" &
pids+=($!)
nginx -p "$run_dir/nginx" -c "$run_dir/nginx/nginx.conf" &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break
  sleep 0.1
done
echo "usersd is serving on http://127.0.0.1:$port (Ctrl-C stops it)" >&2
wait -n "${pids[@]}" || true
