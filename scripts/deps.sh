#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test usersd.
# Safe to run again: it only calls apt-get/pip when something is missing.
#   scripts/deps.sh run    # build + run: libfcgi-dev, libsqlite3-dev, libpq-dev, nginx
#   scripts/deps.sh test   # + test tools: sqlite3, postgresql, spawn-fcgi, wrk, pytest, requests, schemathesis
#   scripts/deps.sh cluster  # run + postgresql (make cluster)
#   scripts/deps.sh soak   # test tools (the soak drives load with wrk)
#   scripts/deps.sh bench  # + wrk, PHP-FPM with PDO SQLite (a yardstick)
set -euo pipefail
mode="${1:-run}"

# libpq-dev builds the PostgreSQL backend in (a client library: running needs no server).
packages=(libfcgi-dev libsqlite3-dev libpq-dev nginx-light curl)
if [[ "$mode" == test || "$mode" == bench || "$mode" == cluster ]]; then
  # Private clusters (scripts/pg-cluster.sh: initdb, pg_ctl, psql, pgbench); never the
  # system cluster the package may create.
  packages+=(postgresql postgresql-contrib)
fi
if [[ "$mode" == test || "$mode" == bench || "$mode" == soak ]]; then
  packages+=(sqlite3 spawn-fcgi libfcgi-bin systemd python3 strace dpkg-dev wrk)
fi
if [[ "$mode" == test ]]; then
  # mount/umount and chattr for the full-disk and read-only fault tests: Priority
  # required but not Essential in Debian 12, so a minimal image may lack them.
  packages+=(mount e2fsprogs)
  # ip netns and veth pairs for the zombie-host test (Tests/e2e/test_multihost.py).
  packages+=(iproute2)
fi
if [[ "$mode" == deb ]]; then
  packages+=(dpkg-dev)
fi
if [[ "$mode" == bench ]]; then
  packages+=(wrk php8.2-fpm php8.2-sqlite3)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
  for candidate in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [[ -x "$candidate/swift" ]] && { echo "deps: add $candidate to PATH" >&2; break; }
  done
  echo "deps: the Swift 6 toolchain is needed (https://www.swift.org/install/linux/)" >&2
  exit 1
fi

if [[ "$mode" == test || "$mode" == soak ]]; then
  python3 -c 'import pytest, requests' 2>/dev/null || python3 -m pip install -q pytest requests
fi
if [[ "$mode" == test ]]; then
  # The OpenAPI contract test (Tests/e2e/test_openapi.py); pinned for repeatable runs.
  python3 -c 'import schemathesis, openapi_spec_validator' 2>/dev/null ||
    python3 -m pip install -q schemathesis==4.32.5 openapi-spec-validator==0.9.0
fi
