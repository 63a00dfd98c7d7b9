#!/usr/bin/env bash
# Renders a self-contained nginx.conf around the shipped cluster site file
# (nginx/usersd-cluster.conf): its own prefix, pid file, temp dirs and port, the
# upstream's servers replaced by the hosts given. Never touches the system nginx.
#
#   scripts/nginx-cluster.sh RUN_DIR PORT HOST:PORT...   -> writes RUN_DIR/nginx.conf
#   nginx -p RUN_DIR -c RUN_DIR/nginx.conf
set -euo pipefail
run_dir="$1"; port="$2"; shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$run_dir"
servers=""
for host in "$@"; do servers+="    server $host max_fails=1 fail_timeout=2s;\n"; done
awk -v servers="$servers" -v port="$port" '
  /^ *server 127\.0\.0\.1:900[0-9]/ { if (!done) { printf "%s", servers; done = 1 } next }
  /^ *listen 8080;/ { sub(/listen 8080;/, "listen 127.0.0.1:" port ";") }
  { print }
' "$here/nginx/usersd-cluster.conf" >"$run_dir/site.conf"
"$here/scripts/nginx-instance.sh" "$run_dir" scripts/nginx-cluster.sh
