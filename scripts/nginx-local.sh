#!/usr/bin/env bash
# Renders a self-contained nginx.conf that serves the shipped site file
# (nginx/usersd.conf) as an unprivileged-style instance: its own prefix, pid file,
# temp dirs and port, never touching the system nginx.
#
#   scripts/nginx-local.sh RUN_DIR SOCKET PORT   -> writes RUN_DIR/nginx.conf
#   nginx -p RUN_DIR -c RUN_DIR/nginx.conf
set -euo pipefail
run_dir="$1"; socket="$2"; port="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$run_dir"
# The site file as shipped, with only the socket path and the listen address changed.
sed -e "s#unix:/run/usersd/usersd.sock#unix:$socket#" \
    -e "s#^\( *\)listen 80;#\1listen 127.0.0.1:$port;#" \
    "$here/nginx/usersd.conf" >"$run_dir/site.conf"
"$here/scripts/nginx-instance.sh" "$run_dir" scripts/nginx-local.sh
