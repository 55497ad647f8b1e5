#!/usr/bin/env bash
# scripts/postgres.sh: a throwaway PostgreSQL server for the tests.
#
#   scripts/postgres.sh start DIR   initdb in DIR/data (unless it is there already),
#                                   start the server on a free port with its socket
#                                   in DIR and no TCP listener, and print its
#                                   conninfo on stdout:
#                                   host=DIR port=PORT user=postgres dbname=postgres
#                                   (a start after a stop keeps DIR's port)
#   scripts/postgres.sh stop DIR    stop that server (fast shutdown: pg_ctl signals
#                                   the pid in its postmaster.pid)
#
# A new DIR must not exist; its parents must be traversable by the postgres
# user (e.g. a directory made with mktemp under /tmp). Authentication is trust,
# over the socket only: nothing listens on the network. As root the server runs
# as the postgres user (setpriv); otherwise as the current user. The server's log
# is DIR/pg.log. PostgreSQL 15's binaries are taken from $PG_BIN (default
# /usr/lib/postgresql/15/bin).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

usage() {
  echo "usage: $0 start DIR | stop DIR" >&2
  exit 64
}

# Runs a server binary as the postgres user when root, else as ourselves.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$@"
  else
    "$@"
  fi
}

# A TCP port nobody listens on now: the server's socket file is named after it.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=$1
  if [[ ! -d $dir/data ]]; then
    [[ -e $dir ]] && { echo "$dir exists and holds no server" >&2; exit 1; }
    mkdir -m 755 "$dir"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir"
    as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    # The port and the socket's directory go into the server's own settings,
    # so that a start after a stop serves the same conninfo.
    local port
    port=$(free_port)
    printf "port = %s\nunix_socket_directories = '%s'\nlisten_addresses = ''\n" "$port" "$dir" |
      as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
  fi
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w start >/dev/null || {
    cat "$dir/pg.log" >&2
    exit 1
  }
  echo "host=$dir port=$(sed -n 's/^port = //p' "$dir/data/postgresql.conf" | tail -1) user=postgres dbname=postgres"
}

stop() {
  local dir=$1
  [[ -d $dir/data ]] || { echo "no server in $dir" >&2; exit 1; }
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

[[ $# == 2 ]] || usage
case $1 in
  start) start "$2" ;;
  stop) stop "$2" ;;
  *) usage ;;
esac
