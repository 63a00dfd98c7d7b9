#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test usersd.
# Safe to run again: it only calls apt-get/pip when something is missing.
#   scripts/deps.sh run    # build + run: libfcgi-dev, libsqlite3-dev, libpq-dev, nginx
#   scripts/deps.sh test   # + test tools: sqlite3, postgresql, spawn-fcgi, wrk, pytest, requests, schemathesis,
#                          #   and the other web servers (apache2, lighttpd, caddy, h2o) the tests
#                          #   start privately (their system services stay stopped and disabled)
#   scripts/deps.sh cluster  # run + postgresql (make cluster)
#   scripts/deps.sh soak   # test tools (the soak drives load with wrk)
#   scripts/deps.sh bench  # + wrk, PHP-FPM with PDO SQLite (a yardstick), the other web servers (SERVER=)
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
if [[ "$mode" == test || "$mode" == bench ]]; then
  # The other FastCGI fronts usersd is tested and measured behind (docs/web-servers/).
  packages+=(apache2 lighttpd caddy h2o)
fi
if [[ "$mode" == deb ]]; then
  packages+=(dpkg-dev)
fi
if [[ "$mode" == bench ]]; then
  packages+=(wrk php8.2-fpm php8.2-sqlite3 golang-go golang-github-mattn-go-sqlite3-dev)
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
  # Installing a web server package starts its system service, on port 80, where an
  # init system runs; with nginx there already, that start fails. The tests and the
  # benchmark start their own private instances on loopback: keep the services from
  # starting while they install (policy-rc.d, which invoke-rc.d and
  # deb-systemd-invoke obey), and from starting at boot. PostgreSQL likewise: usersd's
  # tests, benchmark and `make cluster` run private clusters (scripts/pg-cluster.sh).
  servers=()
  for package in "${missing[@]}"; do
    [[ " apache2 lighttpd caddy h2o postgresql postgresql-contrib " == *" $package "* ]] && servers+=("$package")
  done
  others=()
  for package in "${missing[@]}"; do
    [[ " ${servers[*]-} " == *" $package "* ]] || others+=("$package")
  done
  install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
  ((${#others[@]})) && install "${others[@]}"
  if ((${#servers[@]})); then
    policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
      $sudo chmod 755 "$policy"
    fi
    install "${servers[@]}" || { [[ -n "$policy" ]] && $sudo rm -f "$policy"; exit 1; }
    [[ -n "$policy" ]] && $sudo rm -f "$policy"
    if [[ -d /run/systemd/system ]]; then
      for service in "${servers[@]}"; do $sudo systemctl disable "$service" >/dev/null 2>&1 || true; done
    fi
  fi
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
