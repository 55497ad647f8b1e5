#!/usr/bin/env bash
# scripts/postgres.sh: a throwaway PostgreSQL server for the tests.
#
#   scripts/postgres.sh start DIR   initdb in DIR/data, start the server on a free
#                                   port with its socket in DIR and no TCP listener,
#                                   and print its conninfo on stdout:
#                                   host=DIR port=PORT user=postgres dbname=postgres
#   scripts/postgres.sh stop DIR    stop that server (fast shutdown) by its data dir
#
# DIR must not exist for start; its parents must be traversable by the postgres
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
  [[ -e $dir ]] && { echo "$dir exists" >&2; exit 1; }
  mkdir -m 755 "$dir"
  [[ $(id -u) == 0 ]] && chown postgres: "$dir"
  as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  local port
  port=$(free_port)
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null || {
    cat "$dir/pg.log" >&2
    exit 1
  }
  echo "host=$dir port=$port user=postgres dbname=postgres"
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
