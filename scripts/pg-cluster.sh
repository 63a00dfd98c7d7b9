#!/usr/bin/env bash
# A private PostgreSQL cluster for tests, benchmarks and `make cluster`: its data
# directory, unix socket and log all live under DIR, it runs as the `postgres` user
# when started by root (PostgreSQL refuses to run as root), and it never touches the
# system cluster (Debian's /var/lib/postgresql, /run/postgresql).
#
#   scripts/pg-cluster.sh start DIR [PORT] [LISTEN]   # initdb when DIR is new, then start
#   scripts/pg-cluster.sh stop DIR
#   scripts/pg-cluster.sh restart DIR                 # pg_ctl restart -m fast
#   scripts/pg-cluster.sh uri DIR [DATABASE]          # the libpq URI of a database in it
#
# PORT (default 5432) names the socket file DIR/.s.PGSQL.PORT; LISTEN (default: none)
# is a TCP address to listen on as well. PG_OPTIONS adds server settings ("-c k=v ...").
# With PG_OWNER_PID set, a watcher stops the cluster once that process is gone, so a
# test run that dies leaves no server behind.
set -euo pipefail
command="${1:?usage: pg-cluster.sh start|stop|restart|uri DIR}"
dir="${2:?usage: pg-cluster.sh $command DIR}"
dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
bindir="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[[ -x "$bindir/pg_ctl" ]] || { echo "pg-cluster: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_of() { cat "$dir/port" 2>/dev/null || echo 5432; }

# Closes the descriptors the caller left open past stderr (a test process that starts
# the cluster through system(3) passes on every socket it holds without FD_CLOEXEC).
# Run in the subshell that starts the server or the watcher: a server that inherited
# one end of a connection holds it open for its whole life, so the other end never
# sees the hang-up. 255 is the descriptor bash reads this script through.
close_inherited() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd="${fd##*/}"
    if ((fd > 2 && fd != 255)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}

case "$command" in
start)
  port="${3:-5432}"
  listen="${4:-}"
  [[ $(id -u) == 0 ]] && chown postgres: "$dir"
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    as_owner "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log"
    if [[ -n "$listen" ]]; then
      # Hosts on other addresses (the zombie-host test's network namespace) log in too.
      echo "host all all 0.0.0.0/0 trust" >>"$dir/data/pg_hba.conf"
    fi
  fi
  echo "$port" >"$dir/port"
  (
    close_inherited
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-k $dir -p $port -c listen_addresses='$listen' -c max_connections=300 ${PG_OPTIONS:-}" start >/dev/null
  )
  if [[ -n "${PG_OWNER_PID:-}" ]]; then
    (
      close_inherited
      trap '' HUP INT
      while kill -0 "$PG_OWNER_PID" 2>/dev/null && [[ -f "$dir/data/postmaster.pid" ]]; do sleep 1; done
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    ) </dev/null >/dev/null 2>&1 &
    disown
  fi
  ;;
stop)
  [[ -f "$dir/data/postmaster.pid" ]] && as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
restart)
  (
    close_inherited
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -m fast -w restart >/dev/null
  )
  ;;
uri)
  echo "postgresql:///${3:-postgres}?host=$dir&port=$(port_of)&user=postgres"
  ;;
*)
  echo "pg-cluster: unknown command $command" >&2
  exit 64
  ;;
esac
