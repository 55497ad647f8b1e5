#!/usr/bin/env bash
# scripts/bench-postgres.sh: the same service on SQLite and on PostgreSQL,
# side by side in one run, one table.
#
#   scripts/bench-postgres.sh   (or `make bench-postgres`; `make bench` runs it
#                                after scripts/bench.sh and appends its table
#                                to var/bench/latest.md)
#
# What it does, in this order (about 6 minutes plus the build):
#   1. swift build -c release --static-swift-stdlib (as scripts/bench.sh), and
#      a throwaway PostgreSQL 15 (scripts/postgres.sh, in a temporary directory
#      under /tmp, socket only) with its defaults: fsync on,
#      synchronous_commit on (the table prints what the server says), but
#      max_connections 800: each responder thread holds a read connection
#      (README), with `--writes connections` each request in flight a write
#      connection too, and the responders' pools are capped at --max-threads
#      128 (both engines). The most up at once are step 5's: two responders
#      in connections mode, 2 x (128 reads + 128 writes), and two in
#      group-commit mode, 2 x (128 + 1 writer), plus psql: 771. The
#      processors (one connection each) run beside one responder only. One
#      nginx serves the bank's `/instant` (a paid answer from memory) and logs
#      the Idempotency-Key of every call it gets.
#   2. One responder: an SQLite side (a fresh file, WAL, synchronous=FULL, the
#      service's default, group commit) and a PostgreSQL side (a fresh
#      database on that server, `--writes connections`: PostgreSQL's
#      default), each `wallet-fcgi --listen 127.0.0.1:PORT` behind an nginx of
#      its own whose `upstream wallet_fcgi` names it and which includes the
#      repository's nginx/wallet-locations.conf (the production request
#      handling; no rate limits, no access log). Each side gets an API key
#      (`walletctl keys create --stdin` against its database) that every
#      request carries, and one funded wallet. Then, at 32 connections (wrk
#      -t2 -c32, 1 s of warm-up before each 3 s run), BENCH_ROUNDS rounds,
#      alternating the engines (SQLite first in odd rounds, PostgreSQL first
#      in even ones) so that both are under the same drift of this shared
#      machine: GET wallet, and durable deposits to that one wallet (POST
#      deposit with a new Idempotency-Key per request:
#      scripts/bench/deposit-keyed.lua).
#   3. The same with TWO responders per side behind one nginx upstream (each on
#      its own loopback port): on SQLite both on one new file, on PostgreSQL
#      both on one new database.
#   4. Which PostgreSQL write mode serves durable deposits better: three new
#      sides of one responder each, SQLite, PostgreSQL `--writes group-commit`
#      (one writer thread, every queued write in one transaction with one
#      commit) and PostgreSQL `--writes connections` (a transaction per
#      request on a connection of its own, the server grouping the commits),
#      each with BENCH_SPREAD_WALLETS wallets made and funded through the API.
#      A deposit locks its wallet's row, so deposits to one wallet (steps 2
#      and 3) take turns in either mode; here they are spread: each request
#      to a wallet picked at random (scripts/bench/deposit-keyed.lua given
#      a file of wallets: the same sequence for every side). BENCH_ROUNDS
#      rounds, the three sides in that order in odd rounds and in the
#      reverse order in even ones.
#   5. The same with TWO responders per side behind one nginx upstream.
#   6. wallet-processor against `/instant` (WALLET_BANK_CONCURRENCY=16), on a
#      new database per engine (one responder for the fixtures): BENCH_WALLETS
#      funded wallets, BENCH_WITHDRAWALS withdrawals of 1 due at once made
#      through the API, one pass of ONE processor; then as many again and TWO
#      processors started at once on them. Timed from the first start to the
#      last exit. The fixtures of both engines are made before their passes,
#      which run back to back (SQLite first for one processor, PostgreSQL
#      first for two): one pass each, not rounds, so these ratios are noisier. Afterwards, checked: every withdrawal COMPLETED (counts by
#      status), one DEBIT ledger row per withdrawal and no REFUND, and the
#      bank's log of Idempotency-Keys has each completed withdrawal's key once
#      and no other key.
#   7. Prints one markdown table on stdout and writes it to
#      var/bench/postgres.md: each measurement, the SQLite figure, the
#      PostgreSQL figure, PostgreSQL/SQLite, and notes. Steps 4 and 5 give two
#      rows each, one per PostgreSQL write mode beside the same SQLite
#      rounds, and a line under the table says which mode served more
#      deposits per second and by how much.
#
# The figures:
#   - req/s of the round whose PostgreSQL/SQLite ratio is the median of the
#     rounds, both engines' figures from that round (p99 in ms beside them);
#     the notes list every round as SQLite/PostgreSQL req/s and the errors
#     (socket errors and answers >= 400, as wrk counts them) over all rounds,
#     with their kinds and rounds when there are any. The two write modes are
#     compared the same way: the round whose connections/group-commit ratio
#     is the median.
#   - withdrawals/s: N over the wall time from the processor's start (the
#     first one's) to its exit (the last one's), process start and database
#     open included.
#   - PostgreSQL/SQLite: above 100 % PostgreSQL is faster.
#
# A benchmark reports, it does not assert: a failed check is shown in the
# table (bold) and the run still exits 0. It exits non-zero only if something
# failed to run (build, server, a wrk run without a summary, a processor that
# failed, fixtures the API refused). The EXIT trap stops everything this
# script started, by pid (nginx, the responders, wrk, curl, the processors,
# then the PostgreSQL server through scripts/postgres.sh stop), and waits for
# it.
#
# Progress goes to stderr; stdout carries only the table.
#
# Environment (for quicker experiments; the defaults are the benchmark):
#   BENCH_ROUNDS          [5]     alternating rounds per measurement
#   BENCH_ROUND_DURATION  [3]     seconds measured per wrk run
#   BENCH_WARMUP          [1]     seconds of warm-up before each wrk run
#   BENCH_WALLETS         [500]   funded wallets the withdrawals are spread over
#   BENCH_SPREAD_WALLETS  [1000]  funded wallets the spread deposits go to (per side)
#   BENCH_WITHDRAWALS     [5000]  withdrawals per processor pass (N)
#   BENCH_KEEP            [0]     1: keep the temporary directory (logs, databases)
#   PG_BIN                [/usr/lib/postgresql/15/bin]  (scripts/postgres.sh)
# Every WALLET_* variable of the caller's environment is ignored.

# ShellCheck cannot see that functions called only from traps are reached.
# shellcheck disable=SC2317
# The table is markdown: backticks in single quotes are literal on purpose.
# shellcheck disable=SC2016
# One { ... } block, as in stack.sh: bash parses the whole file before running
# it, so an edit (or a checkout) during a run cannot feed it half a script.
{
set -Eeuo pipefail
shopt -s inherit_errexit

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
# shellcheck source=scripts/bench/lib.sh
. "$REPO/scripts/bench/lib.sh"
readonly REPO
readonly LUA_DIR=$REPO/scripts/bench
readonly STARTED_AT=$SECONDS

# --- Settings -----------------------------------------------------------------

ROUNDS=${BENCH_ROUNDS:-5}
ROUND_DURATION=${BENCH_ROUND_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
WALLETS=${BENCH_WALLETS:-500}
SPREAD_WALLETS=${BENCH_SPREAD_WALLETS:-1000}
WITHDRAWALS=${BENCH_WITHDRAWALS:-5000}
KEEP=${BENCH_KEEP:-0}
readonly CONNS=32 PROCESSOR_CONCURRENCY=16
# Each responder's thread pool is capped (the same on both engines) so that
# the PostgreSQL connections of every responder up at once stay under the
# server's max_connections. At 32 client connections the pools reached 64
# threads in trial runs (each thread serves one nginx connection until nginx
# closes it), so the cap is twice that. Each thread holds a read connection;
# with `--writes connections` each request in flight also holds a write
# connection (up to one per thread), with `--writes group-commit` the writer
# holds one. The most at once is the spread deposits with two responders per
# side: 2 x (128 + 128) for `connections` and 2 x (128 + 1) for
# `group-commit`, plus psql: 771 < 800. The processor passes need less (one
# responder's 256, one connection per processor, psql).
readonly MAX_THREADS=128 PG_MAX_CONNECTIONS=800
API_KEY="wsk_$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
# report.lua puts it on every request.
export BENCH_API_KEY=$API_KEY

log() { printf 'bench-postgres: %s\n' "$*" >&2; }
warn() { printf 'bench-postgres: warning: %s\n' "$*" >&2; }
die() {
    printf 'bench-postgres: error: %s\n' "$*" >&2
    exit 1
}

for var in ROUNDS ROUND_DURATION WARMUP WALLETS SPREAD_WALLETS WITHDRAWALS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$var must be a positive whole number, got '${!var}'"
done

# Forget the caller's WALLET_* settings: each command below gets exactly the
# ones it needs.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep '^WALLET_' || true)
export no_proxy="127.0.0.1,localhost,::1" NO_PROXY="127.0.0.1,localhost,::1"

# --- Tools ----------------------------------------------------------------------

command -v wrk >/dev/null || die "wrk not found; run 'make deps-bench' (Debian package wrk)"
command -v curl >/dev/null || die "curl not found; run 'make deps'"
command -v swift >/dev/null || die "swift not found"
command -v sqlite3 >/dev/null || die "sqlite3 not found; run 'make deps'"
command -v psql >/dev/null || die "psql not found; run 'make deps' (Debian package postgresql-15)"
[[ -x ${PG_BIN:-/usr/lib/postgresql/15/bin}/initdb ]] || die "PostgreSQL 15 not found; run 'make deps' (Debian package postgresql-15)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found; run 'make deps'"

# --- Cleanup --------------------------------------------------------------------

TMP="" PG_DIR="" PG_STARTED=0 FAILED_RUN=0
# Long-running children (nginx, responders) by pid, and what each one is.
declare -A RUNNING=()
# Short-lived children being waited for (wrk, curl, processors).
WAITING=()

# stop_pids PID...: SIGQUIT to nginx (it finishes what is in flight), SIGTERM
# to the rest, 10 s for all of them, then SIGKILL; each is reaped.
stop_pids() {
    local pid deadline
    for pid in "$@"; do
        if alive "$pid"; then
            if [[ ${RUNNING[$pid]:-} == nginx* ]]; then kill -s QUIT "$pid" 2>/dev/null || true; else kill -s TERM "$pid" 2>/dev/null || true; fi
        fi
    done
    deadline=$(($(now_us) + 10000000))
    for pid in "$@"; do
        while alive "$pid" && (($(now_us) < deadline)); do sleep 0.05; done
        if alive "$pid"; then
            warn "${RUNNING[$pid]:-pid $pid} did not stop within 10 s: SIGKILL"
            kill -s KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        unset "RUNNING[$pid]"
    done
}

cleanup() {
    local rc=$?
    trap '' INT TERM
    trap - EXIT
    if ((${#WAITING[@]})); then stop_pids "${WAITING[@]}"; fi
    if ((${#RUNNING[@]})); then stop_pids "${!RUNNING[@]}"; fi
    if ((PG_STARTED)); then
        bash "$REPO/scripts/postgres.sh" stop "$PG_DIR" || { warn "stopping PostgreSQL in $PG_DIR failed"; rc=1; }
    fi
    # Nothing may be left behind (a report, not a kill by name).
    report_leftovers "$TMP" || rc=1
    if ((KEEP)) || ((FAILED_RUN)) || ((rc != 0 && rc != 130 && rc != 143)); then
        [[ -z $TMP ]] || log "kept $TMP (logs, databases)"
    elif [[ -n $TMP ]]; then
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
trap 'FAILED_RUN=1; log "command failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR

# run_child [-o FILE] COMMAND...: runs COMMAND in the background (stdout to
# FILE, stderr to FILE.err) and waits for it, so that a signal reaches our
# trap at once and the trap knows what to stop. Returns its status.
run_child() {
    local out=/dev/null rc=0
    if [[ $1 == -o ]]; then out=$2; shift 2; fi
    "$@" </dev/null >"$out" 2>"$out.err" &
    WAITING=("$!")
    wait "${WAITING[0]}" || rc=$?
    WAITING=()
    return "$rc"
}

# --- Build and servers ------------------------------------------------------------

# A short path (unix sockets), traversable by the postgres user and nginx's
# workers (nobody when we are root).
TMP=$(mktemp -d /tmp/wallet-pgbench.XXXXXX)
chmod 0755 "$TMP"
log "temporary directory $TMP"

cd "$REPO"
log "building release binaries (swift build -c release --static-swift-stdlib; log $TMP/build.log)"
if ! run_child -o "$TMP/build.log" swift build -c release --static-swift-stdlib; then
    tail -n 20 "$TMP/build.log" "$TMP/build.log.err" >&2
    die "swift build -c release --static-swift-stdlib failed"
fi
BIN_DIR=$(swift build -c release --static-swift-stdlib --show-bin-path)
for exe in wallet-fcgi wallet-processor walletctl; do
    [[ -x $BIN_DIR/$exe ]] || die "$BIN_DIR/$exe missing after the build"
done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

PG_DIR=$TMP/pg
log "starting PostgreSQL in $PG_DIR"
PG_STARTED=1
PG_SERVER=$(bash "$REPO/scripts/postgres.sh" start "$PG_DIR") || die "scripts/postgres.sh start failed"
psql_run() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$1" -c "$2"; }
# Every responder thread holds a connection of its own (README, "PostgreSQL"):
# the server's default 100 is less than two responders' pools at 32
# connections. Set before any measurement, with a restart (same conninfo).
psql_run "$PG_SERVER" "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS" || die "ALTER SYSTEM failed"
bash "$REPO/scripts/postgres.sh" stop "$PG_DIR" || die "restarting PostgreSQL (stop) failed"
PG_SERVER=$(bash "$REPO/scripts/postgres.sh" start "$PG_DIR") || die "restarting PostgreSQL (start) failed"
PG_VERSION=$(psql_run "$PG_SERVER" 'SHOW server_version' | cut -d' ' -f1)
PG_FSYNC=$(psql_run "$PG_SERVER" 'SHOW fsync')
PG_SYNC_COMMIT=$(psql_run "$PG_SERVER" 'SHOW synchronous_commit')
PG_WAL_SYNC=$(psql_run "$PG_SERVER" 'SHOW wal_sync_method')
PG_SHARED_BUFFERS=$(psql_run "$PG_SERVER" 'SHOW shared_buffers')
[[ $(psql_run "$PG_SERVER" 'SHOW max_connections') == "$PG_MAX_CONNECTIONS" ]] || die "max_connections is not $PG_MAX_CONNECTIONS after the restart"
log "PostgreSQL $PG_VERSION: fsync $PG_FSYNC, synchronous_commit $PG_SYNC_COMMIT, wal_sync_method $PG_WAL_SYNC"

# wait_for WHAT SECONDS PID COMMAND...: polls COMMAND until it succeeds; dies
# if PID exits first or the time runs out.
wait_for() {
    local what=$1 seconds=$2 pid=$3 deadline
    shift 3
    deadline=$(($(now_us) + seconds * 1000000))
    until "$@"; do
        alive "$pid" || die "$what: the process (pid $pid) exited; see $TMP"
        (($(now_us) < deadline)) || die "$what: not within $seconds s; see $TMP"
        sleep 0.05
    done
}

# start_nginx NAME CONF: runs nginx in the foreground on CONF (its directory
# $TMP/NAME holds pid, logs and temp paths). Sets NGINX_PID.
start_nginx() {
    local name=$1 dir=$TMP/$1
    "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" </dev/null >>"$dir/nginx.out" 2>&1 &
    NGINX_PID=$!
    RUNNING[$NGINX_PID]="nginx $name"
}

# nginx_common DIR: the lines every nginx.conf here starts with.
nginx_common() {
    cat <<EOF
daemon off;
worker_processes 2;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_shutdown_timeout 5s;
events { worker_connections 1024; }
EOF
}
nginx_temp_paths() {
    local kind
    for kind in client_body fastcgi proxy uwsgi scgi; do printf '    %s_temp_path %s/tmp/%s;\n' "$kind" "$1" "$kind"; done
}

# The bank: `/instant` pays at once; its access log is one Idempotency-Key
# per line (nginx writes each line as the request ends: two workers, whole
# lines).
BANK_DIR=$TMP/bank
mkdir -p "$BANK_DIR/tmp"
free_port BANK_PORT
BANK_KEYS=$BANK_DIR/keys.log
{
    nginx_common "$BANK_DIR"
    printf 'http {\n    server_tokens off;\n'
    nginx_temp_paths "$BANK_DIR"
    cat <<EOF
    log_format bank_keys '\$http_idempotency_key';
    server {
        listen 127.0.0.1:$BANK_PORT;
        default_type application/json;
        access_log off;
        location = /instant {
            access_log $BANK_KEYS bank_keys;
            return 200 '{"data": "success", "status": 200}';
        }
        location / { return 404 '{"data": "not_found", "status": 404}'; }
    }
}
EOF
} >"$BANK_DIR/nginx.conf"
: >"$BANK_KEYS"
log "starting the bank (nginx /instant on 127.0.0.1:$BANK_PORT)"
start_nginx bank "$BANK_DIR/nginx.conf"
bank_up() { curl -fsS -o /dev/null --max-time 1 -X POST "http://127.0.0.1:$BANK_PORT/instant" 2>/dev/null; }
wait_for "the bank" 10 "$NGINX_PID" bank_up
BANK_URL=http://127.0.0.1:$BANK_PORT/instant

# --- Sides: a database, its responders, their nginx -------------------------------

# Per side: engine, database (a file or a conninfo), front port, wallet, pids,
# responders, and how they write (`wallet-fcgi --writes`, as they logged it).
declare -A SIDE_ENGINE=() SIDE_DB=() SIDE_PORT=() SIDE_WALLET=() SIDE_PIDS=() SIDE_COUNT=() SIDE_WRITES=()
declare -A ENGINE_NAME=([sqlite]=SQLite [postgres]=PostgreSQL)

responder_started() { grep -q '"event": "started"' "$1" 2>/dev/null; }
front_up() { curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/healthz" 2>/dev/null; }

# start_side NAME ENGINE RESPONDERS [WRITES]: a new database (SQLite: a new
# file; PostgreSQL: a new database on the server), RESPONDERS `wallet-fcgi
# --listen` on loopback ports (one after the other: the first makes the
# schema), with `--writes WRITES` if given (else the engine's default), one
# nginx in front of them all, the API key, and one wallet with funds.
start_side() {
    local name=$1 engine=$2 count=$3 writes=${4:-} dir=$TMP/$1 db port i pids=() servers="" key_log status logged
    local mode_args=()
    [[ -z $writes ]] || mode_args=(--writes "$writes")
    mkdir -p "$dir/tmp"
    if [[ $engine == sqlite ]]; then
        db=$dir/wallet.db
    else
        psql_run "$PG_SERVER" "CREATE DATABASE bench_$name" || die "CREATE DATABASE bench_$name failed"
        db="$PG_SERVER dbname=bench_$name"
    fi
    SIDE_ENGINE[$name]=$engine SIDE_DB[$name]=$db SIDE_COUNT[$name]=$count
    for ((i = 1; i <= count; i++)); do
        free_port port
        env WALLET_DB="$db" "$BIN_DIR/wallet-fcgi" --listen "127.0.0.1:$port" --max-threads "$MAX_THREADS" "${mode_args[@]}" \
            </dev/null >>"$dir/wallet-fcgi-$i.log" 2>&1 &
        pids+=("$!")
        RUNNING[$!]="wallet-fcgi $name #$i"
        wait_for "responder $i of $name" 30 "$!" responder_started "$dir/wallet-fcgi-$i.log"
        # The mode the responder says it runs, so that the table shows the
        # default as it was, not as this script assumes it.
        logged=$(grep -m1 '"event": "started"' "$dir/wallet-fcgi-$i.log" | grep -oE '"writes": "[a-z-]+"' | cut -d'"' -f4) ||
            die "responder $i of $name logged no write mode; see $dir/wallet-fcgi-$i.log"
        [[ -z $writes || $logged == "$writes" ]] || die "responder $i of $name writes with $logged, not $writes"
        SIDE_WRITES[$name]=$logged
        servers+="        server 127.0.0.1:$port;"$'\n'
    done
    free_port port
    {
        nginx_common "$dir"
        printf 'http {\n    server_tokens off;\n'
        nginx_temp_paths "$dir"
        # As nginx/dev.conf.template: 16 kept-alive connections per worker.
        printf '    upstream wallet_fcgi {\n%s        keepalive 16;\n    }\n' "$servers"
        printf '    server {\n        listen 127.0.0.1:%s;\n        server_name _;\n        access_log off;\n' "$port"
        printf '        include %s/nginx/wallet-locations.conf;\n    }\n}\n' "$REPO"
    } >"$dir/nginx.conf"
    start_nginx "$name" "$dir/nginx.conf"
    pids+=("$NGINX_PID")
    SIDE_PIDS[$name]="${pids[*]}"
    SIDE_PORT[$name]=$port
    wait_for "nginx of $name" 10 "$NGINX_PID" front_up "$port"
    key_log=$dir/walletctl.log
    printf '%s\n' "$API_KEY" | env WALLET_DB="$db" "$BIN_DIR/walletctl" keys create bench --stdin >>"$key_log" 2>&1 ||
        die "walletctl keys create on $name failed; see $key_log"
    status=$(curl -sS -o "$dir/wallet.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $API_KEY" \
        "http://127.0.0.1:$port/wallets/") || die "creating a wallet on $name failed"
    [[ $status == 201 ]] || die "creating a wallet on $name answered $status: $(cat "$dir/wallet.json")"
    SIDE_WALLET[$name]=$(grep -oE '[0-9a-f-]{36}' "$dir/wallet.json" | head -n 1)
    status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $API_KEY" \
        -H 'Content-Type: application/json' --data-binary '{"amount": 1000000}' \
        "http://127.0.0.1:$port/wallets/${SIDE_WALLET[$name]}/deposit") || die "funding the wallet on $name failed"
    [[ $status == 200 ]] || die "funding the wallet on $name answered $status"
    log "side $name: ${ENGINE_NAME[$engine]}, $count responder(s) with --writes ${SIDE_WRITES[$name]}, nginx on 127.0.0.1:$port"
}

stop_side() {
    local pids
    read -r -a pids <<<"${SIDE_PIDS[$1]}"
    stop_pids "${pids[@]}"
    SIDE_PIDS[$1]=""
}

# sql SIDE QUERY: one query against the side's database, rows as a|b lines.
sql() {
    if [[ ${SIDE_ENGINE[$1]} == sqlite ]]; then
        sqlite3 -batch -bail "${SIDE_DB[$1]}" "$2"
    else
        psql_run "${SIDE_DB[$1]}" "$2"
    fi
}

# --- wrk ------------------------------------------------------------------------

declare -A RPS=() P50=() P99=() ERRORS=() REQUESTS=()
# What the errors of a run were, by wrk's kinds ("timeouts 1"), so that the
# table tells a refused answer from a slow one.
declare -A ERROR_KINDS=()

# bench KEY URL SCRIPT [PREFIX [ARG...]]: a warm-up run, then the measured
# one, at 32 connections on 2 threads; the summary is report.lua's
# BENCH_RESULT line. PREFIX (Idempotency-Keys) gets -warm/-run appended; the
# ARGs follow it to the script unchanged.
bench() {
    local key=$1 url=$2 script=$3 out=$TMP/wrk-$1.txt line reqs dur errs field n kinds=() args=()
    if (($# > 3)); then args=(-- "$4-warm" "${@:5}"); fi
    run_child -o "$out.warmup" wrk -t2 -c"$CONNS" -d"${WARMUP}s" -s "$LUA_DIR/$script" "$url" "${args[@]}" ||
        die "wrk warm-up for $key failed; see $out.warmup"
    if (($# > 3)); then args=(-- "$4-run" "${@:5}"); fi
    run_child -o "$out" wrk -t2 -c"$CONNS" -d"${ROUND_DURATION}s" --latency -s "$LUA_DIR/$script" "$url" "${args[@]}" ||
        die "wrk for $key failed; see $out"
    line=$(grep -m1 '^BENCH_RESULT ' "$out") || die "wrk printed no summary for $key; see $out"
    reqs=$(json_field requests "$line")
    dur=$(json_field duration_us "$line")
    ((reqs > 0 && dur > 0)) || die "wrk made no request for $key; see $out"
    errs=0 kinds=()
    for field in connect_errors read_errors write_errors status_errors timeouts; do
        n=$(json_field "$field" "$line")
        errs=$((errs + n))
        ((n == 0)) || kinds+=("${field//_/ } $n")
    done
    ERROR_KINDS[$key]=$(IFS=';'; printf '%s' "${kinds[*]}" | sed 's/;/, /g')
    REQUESTS[$key]=$reqs
    RPS[$key]=$(calc "$reqs * 1000000 / $dur")
    P50[$key]=$(calc "$(json_field p50_us "$line") / 1000")
    P99[$key]=$(calc "$(json_field p99_us "$line") / 1000")
    ERRORS[$key]=$errs
    log "  $key: $(thousands "${RPS[$key]}") req/s, p99 $(printf '%.2f' "${P99[$key]}") ms, $errs errors of $reqs"
}

# rounds WORKLOAD SIDE...: BENCH_ROUNDS rounds of GET wallet ("get"), keyed
# deposits to the side's one wallet ("deposit") or keyed deposits spread over
# its wallets.txt ("spread") on every side, in the order given in odd rounds
# and in the reverse order in even ones; results under WORKLOAD-SIDE-rN.
rounds() {
    local work=$1 r i side order=() url
    shift
    for ((r = 1; r <= ROUNDS; r++)); do
        order=()
        if ((r % 2)); then order=("$@"); else for ((i = $#; i >= 1; i--)); do order+=("${!i}"); done; fi
        for side in "${order[@]}"; do
            url="http://127.0.0.1:${SIDE_PORT[$side]}/wallets/${SIDE_WALLET[$side]}"
            case $work in
                get) bench "$work-$side-r$r" "$url/" report.lua ;;
                deposit) bench "$work-$side-r$r" "$url/deposit" deposit-keyed.lua "$side-r$r" ;;
                spread) bench "$work-$side-r$r" "http://127.0.0.1:${SIDE_PORT[$side]}" deposit-keyed.lua "$side-r$r" "$TMP/$side/wallets.txt" ;;
                *) die "rounds: unknown workload $work" ;;
            esac
        done
    done
}

# median_ratio_round WORKLOAD BASE_SIDE OTHER_SIDE: the round whose OTHER/BASE
# req/s ratio is the median of the rounds'.
median_ratio_round() {
    local work=$1 base=$2 other=$3 r
    for ((r = 1; r <= ROUNDS; r++)); do
        printf '%s %s\n' "$(calc "${RPS[$work-$other-r$r]} / ${RPS[$work-$base-r$r]}")" "$r"
    done | sort -g | sed -n "$(((ROUNDS + 1) / 2))p" | cut -d' ' -f2
}

# round_figures WORKLOAD BASE_SIDE OTHER_SIDE: every round as
# "BASE/OTHER req/s (OTHER as % of BASE)", separated by "; ".
round_figures() {
    local work=$1 base=$2 other=$3 r notes=()
    for ((r = 1; r <= ROUNDS; r++)); do
        notes+=("$(thousands "${RPS[$work-$base-r$r]}")/$(thousands "${RPS[$work-$other-r$r]}") ($(pct "${RPS[$work-$other-r$r]}" "${RPS[$work-$base-r$r]}"))")
    done
    (IFS=';'; printf '%s' "${notes[*]}" | sed 's/;/; /g')
}

# median_round WORKLOAD SQLITE_SIDE POSTGRES_SIDE: the round with the median
# PostgreSQL/SQLite ratio gives both figures (under WORKLOAD-SQLITE_SIDE-
# POSTGRES_SIDE-sqlite and -postgres: one SQLite side can be compared with two
# PostgreSQL ones); requests and errors add up over all rounds;
# ROUND_NOTES[WORKLOAD-SQLITE_SIDE-POSTGRES_SIDE] lists the rounds.
declare -A ROUND_NOTES=() RATIO=()
median_round() {
    local work=$1 s=$2 p=$3 pair=$1-$2-$3 r chosen key side kinds
    chosen=$(median_ratio_round "$work" "$s" "$p")
    for side in "$s" "$p"; do
        key=$pair-${SIDE_ENGINE[$side]}
        RPS[$key]=${RPS[$work-$side-r$chosen]} P50[$key]=${P50[$work-$side-r$chosen]} P99[$key]=${P99[$work-$side-r$chosen]}
        REQUESTS[$key]=0 ERRORS[$key]=0 kinds=""
        for ((r = 1; r <= ROUNDS; r++)); do
            REQUESTS[$key]=$((${REQUESTS[$key]} + ${REQUESTS[$work-$side-r$r]}))
            ERRORS[$key]=$((${ERRORS[$key]} + ${ERRORS[$work-$side-r$r]}))
            [[ -z ${ERROR_KINDS[$work-$side-r$r]} ]] || kinds+="${kinds:+; }round $r: ${ERROR_KINDS[$work-$side-r$r]}"
        done
        ERROR_KINDS[$key]=${kinds:+ ($kinds)}
    done
    RATIO[$pair]=$(calc "${RPS[$pair-postgres]} / ${RPS[$pair-sqlite]}")
    ROUND_NOTES[$pair]=$(round_figures "$work" "$s" "$p")
    log "  $work $s/$p by round: ${ROUND_NOTES[$pair]}; median round $chosen"
}

# compare_modes WORKLOAD GROUP_COMMIT_SIDE CONNECTIONS_SIDE: the two
# PostgreSQL write modes against each other, from the same rounds: the round
# with the median connections/group-commit ratio. Sets
# MODES[WORKLOAD-GROUP_COMMIT_SIDE-CONNECTIONS_SIDE] to
# "RATIO ROUND GROUP_COMMIT_RPS CONNECTIONS_RPS" and MODE_NOTES[...] to
# every round's figures.
declare -A MODES=() MODE_NOTES=()
compare_modes() {
    local work=$1 g=$2 c=$3 pair=$1-$2-$3 chosen
    chosen=$(median_ratio_round "$work" "$g" "$c")
    MODES[$pair]="$(calc "${RPS[$work-$c-r$chosen]} / ${RPS[$work-$g-r$chosen]}") $chosen ${RPS[$work-$g-r$chosen]} ${RPS[$work-$c-r$chosen]}"
    MODE_NOTES[$pair]=$(round_figures "$work" "$g" "$c")
    log "  $work $g/$c (group-commit/connections) by round: ${MODE_NOTES[$pair]}; median round $chosen"
}

# commits SIDE: how many write requests each group commit carried on the
# side, from its responders' /metrics (wallet_write_requests_total over
# wallet_write_batches_total, every write since the start). nginx picks the
# responder, so with two it asks a few times and adds up the distinct
# answers (the counters stand still while nothing writes). Sets
# PER_COMMIT[SIDE] ("12.3", or "—" when it did not reach every responder).
declare -A PER_COMMIT=()
commits() {
    local side=$1 i text batches requests pairs="" found=()
    if [[ ${SIDE_WRITES[$side]} != group-commit ]]; then
        PER_COMMIT[$side]="none (each write its own transaction)"
        return 0
    fi
    for ((i = 0; i < 8; i++)); do
        text=$(curl -fsS --max-time 5 "http://127.0.0.1:${SIDE_PORT[$side]}/metrics") || die "GET /metrics on $side failed"
        batches=$(sed -n 's/^wallet_write_batches_total //p' <<<"$text")
        requests=$(sed -n 's/^wallet_write_requests_total //p' <<<"$text")
        [[ $batches =~ ^[0-9]+$ && $requests =~ ^[0-9]+$ ]] || die "no group-commit counters in /metrics of $side"
        [[ $pairs == *" $batches:$requests "* ]] || pairs+=" $batches:$requests "
    done
    read -r -a found <<<"${pairs//:/ }"
    PER_COMMIT[$side]="—"
    if ((${#found[@]} == 2 * ${SIDE_COUNT[$side]})); then
        batches=0 requests=0
        for ((i = 0; i < ${#found[@]}; i += 2)); do
            batches=$((batches + found[i])) requests=$((requests + found[i + 1]))
        done
        ((batches == 0)) || PER_COMMIT[$side]=$(awk -v r="$requests" -v b="$batches" 'BEGIN { printf "%.1f", r / b }')
    fi
    log "  $side: ${PER_COMMIT[$side]} write requests per group commit"
}

# --- Fixtures through the API -------------------------------------------------------

# The POSTs of a curl config file (--config), 32 at a time over kept-alive
# connections, each HTTP status on its own line; add --data-binary BODY.
CURL_MANY=(curl --no-progress-meter --parallel --parallel-max 32 --max-time 30
    -H 'Content-Type: application/json' -H "Authorization: Bearer $API_KEY" -w '%{http_code}\n')

# create_wallets SIDE N: N funded wallets, their UUIDs in $TMP/SIDE/wallets.txt.
create_wallets() {
    local side=$1 n=$2 dir=$TMP/$1 i got
    for ((i = 0; i < n; i++)); do printf 'url = "http://127.0.0.1:%s/wallets/"\n' "${SIDE_PORT[$side]}"; done >"$dir/wallets.curl"
    run_child -o "$dir/wallets.out" "${CURL_MANY[@]}" --data-binary '{}' --config "$dir/wallets.curl" || die "creating wallets on $side failed"
    grep -oE '"uuid": "[0-9a-f-]{36}"' "$dir/wallets.out" | grep -oE '[0-9a-f-]{36}' >"$dir/wallets.txt" || true
    got=$(wc -l <"$dir/wallets.txt")
    ((got == n)) || die "asked $side for $n wallets, got $got; see $dir/wallets.out"
    post_to_wallets "$side" fund "$n" deposit '{"amount": 1000000}' 200
}

# post_to_wallets SIDE NAME N PATH BODY STATUS: N POSTs of BODY to
# /wallets/UUID/PATH round-robin over the side's wallets; every answer must
# have STATUS.
post_to_wallets() {
    local side=$1 name=$2 n=$3 path=$4 body=$5 expected=$6 dir=$TMP/$1 i ok wallets=()
    mapfile -t wallets <"$dir/wallets.txt"
    for ((i = 0; i < n; i++)); do
        printf 'url = "http://127.0.0.1:%s/wallets/%s/%s"\noutput = "/dev/null"\n' \
            "${SIDE_PORT[$side]}" "${wallets[i % ${#wallets[@]}]}" "$path"
    done >"$dir/$name.curl"
    run_child -o "$dir/$name.status" "${CURL_MANY[@]}" --data-binary "$body" --config "$dir/$name.curl" || die "$side $name: curl failed"
    ok=$(grep -c "^$expected\$" "$dir/$name.status" || true)
    if ((ok != n)); then
        sort "$dir/$name.status" | uniq -c >&2
        die "$side $name: $ok of $n requests answered $expected"
    fi
}

# --- The processor ------------------------------------------------------------------

declare -A PASS_RATE=() PASS_SECONDS=() PASS_CLAIMED=() PASS_CHECK=()

# make_due KEY SIDE: BENCH_WITHDRAWALS new withdrawals of 1, due at once,
# through the API.
make_due() {
    log "creating $(thousands "$WITHDRAWALS") due withdrawals on $2 for pass $1"
    post_to_wallets "$2" "due-$1" "$WITHDRAWALS" withdraw '{"amount": 1}' 201
}

# processor_pass KEY SIDE PROCESSES: PROCESSES wallet-processor passes
# started at once on the due withdrawals (make_due), timed from the first
# start to the last exit; then the checks.
processor_pass() {
    local key=$1 side=$2 procs=$3 dir=$TMP/$2 i t0 t1 rc line claimed=0 pids=() bank_from bank_to
    log "pass $key: $(thousands "$WITHDRAWALS") due withdrawals on $side, $procs processor(s)"
    bank_from=$(($(wc -l <"$BANK_KEYS") + 1))
    t0=$(now_us)
    for ((i = 1; i <= procs; i++)); do
        env WALLET_DB="${SIDE_DB[$side]}" WALLET_BANK_URL="$BANK_URL" WALLET_BANK_CONCURRENCY="$PROCESSOR_CONCURRENCY" \
            "$BIN_DIR/wallet-processor" </dev/null >/dev/null 2>"$dir/processor-$key-$i.log" &
        pids+=("$!")
    done
    WAITING=("${pids[@]}")
    rc=0
    for i in "${pids[@]}"; do wait "$i" || rc=$?; done
    t1=$(now_us)
    WAITING=()
    ((rc == 0)) || { tail -n 5 "$dir"/processor-"$key"-*.log >&2; die "a wallet-processor of pass $key exited with status $rc"; }
    for ((i = 1; i <= procs; i++)); do
        line=$(grep '"event": "pass"' "$dir/processor-$key-$i.log" | tail -n 1) || die "no pass summary in $dir/processor-$key-$i.log"
        claimed=$((claimed + $(json_field claimed "$line")))
    done
    bank_to=$(wc -l <"$BANK_KEYS")
    sed -n "${bank_from},${bank_to}p" "$BANK_KEYS" >>"$dir/bank-keys.txt"
    PASS_SECONDS[$key]=$(calc "($t1 - $t0) / 1000000")
    PASS_RATE[$key]=$(calc "$WITHDRAWALS / ${PASS_SECONDS[$key]}")
    PASS_CLAIMED[$key]=$claimed
    log "  $(thousands "${PASS_RATE[$key]}") withdrawals/s ($(printf '%.2f' "${PASS_SECONDS[$key]}") s), claimed $claimed"
    check_payouts "$key" "$side"
}

# check_payouts KEY SIDE: after a pass, over every withdrawal of the side so
# far: the counts by status (all COMPLETED), ledger rows per withdrawal (one
# DEBIT, no REFUND), and the bank's keys against the completed withdrawals'
# (each once, none missing, none extra).
check_payouts() {
    local key=$1 side=$2 dir=$TMP/$2 statuses total completed doubled refunds calls distinct missing extra problems=()
    statuses=$(sql "$side" "SELECT status, count(*) FROM transactions WHERE type = 'WITHDRAWAL' GROUP BY status ORDER BY status")
    total=$(sql "$side" "SELECT count(*) FROM transactions WHERE type = 'WITHDRAWAL'")
    completed=$(sql "$side" "SELECT count(*) FROM transactions WHERE type = 'WITHDRAWAL' AND status = 'COMPLETED'")
    doubled=$(sql "$side" "SELECT count(*) FROM (SELECT transaction_id FROM ledger WHERE kind = 'DEBIT' GROUP BY transaction_id HAVING count(*) > 1) d")
    refunds=$(sql "$side" "SELECT count(*) FROM ledger WHERE kind = 'REFUND'")
    sql "$side" "SELECT bank_key FROM transactions WHERE type = 'WITHDRAWAL' AND status = 'COMPLETED'" | sort >"$dir/completed-keys.txt"
    sort "$dir/bank-keys.txt" >"$dir/bank-keys.sorted"
    calls=$(wc -l <"$dir/bank-keys.sorted")
    distinct=$(sort -u "$dir/bank-keys.sorted" | wc -l)
    missing=$(sort -u "$dir/bank-keys.sorted" | comm -23 "$dir/completed-keys.txt" - | wc -l)
    extra=$(sort -u "$dir/bank-keys.sorted" | comm -13 "$dir/completed-keys.txt" - | wc -l)
    ((completed == total)) || problems+=("$((total - completed)) not COMPLETED ($(tr '\n' ' ' <<<"$statuses"))")
    ((doubled == 0)) || problems+=("$doubled debited twice")
    ((refunds == 0)) || problems+=("$refunds refunded")
    ((calls == distinct)) || problems+=("$((calls - distinct)) bank keys called twice")
    ((missing == 0)) || problems+=("$missing completed without a bank call")
    ((extra == 0)) || problems+=("$extra bank keys of no completed withdrawal")
    if ((${#problems[@]})); then
        PASS_CHECK[$key]="**$(IFS=';'; printf '%s' "${problems[*]}" | sed 's/;/; /g')**"
        warn "pass $key: ${PASS_CHECK[$key]}"
    else
        PASS_CHECK[$key]="all $(thousands "$total") COMPLETED, each debited once, $(thousands "$calls") bank calls with $(thousands "$distinct") distinct keys"
        log "  checked: ${PASS_CHECK[$key]}"
    fi
}

# ==============================================================================
# The run
# ==============================================================================

# 2. One responder per engine.
start_side s1 sqlite 1
start_side p1 postgres 1
log "one responder: GET wallet, $ROUNDS alternating rounds"
rounds get s1 p1
median_round get s1 p1
log "one responder: durable deposits, $ROUNDS alternating rounds"
rounds deposit s1 p1
median_round deposit s1 p1
commits s1
commits p1
stop_side s1
stop_side p1

# 3. Two responders per engine, one upstream.
start_side s2 sqlite 2
start_side p2 postgres 2
log "two responders: GET wallet, $ROUNDS alternating rounds"
rounds get s2 p2
median_round get s2 p2
log "two responders: durable deposits, $ROUNDS alternating rounds"
rounds deposit s2 p2
median_round deposit s2 p2
commits s2
commits p2
stop_side s2
stop_side p2

# 4 and 5. Durable deposits spread over many wallets: SQLite, PostgreSQL with
# --writes group-commit, PostgreSQL with --writes connections; one responder
# per side, then two.
for n in 1 2; do
    start_side "ss$n" sqlite "$n"
    start_side "pg$n" postgres "$n" group-commit
    start_side "pc$n" postgres "$n" connections
    for side in "ss$n" "pg$n" "pc$n"; do
        log "creating $(thousands "$SPREAD_WALLETS") funded wallets on $side"
        create_wallets "$side" "$SPREAD_WALLETS"
    done
    log "$n responder(s): durable deposits spread over $(thousands "$SPREAD_WALLETS") wallets, $ROUNDS alternating rounds"
    rounds spread "ss$n" "pg$n" "pc$n"
    median_round spread "ss$n" "pg$n"
    median_round spread "ss$n" "pc$n"
    compare_modes spread "pg$n" "pc$n"
    for side in "ss$n" "pg$n" "pc$n"; do commits "$side"; done
    for side in "ss$n" "pg$n" "pc$n"; do stop_side "$side"; done
done

# 6. The processor: one, then two at once, on each engine. The fixtures of
# both engines are made first, then the passes run back to back, SQLite
# first for one processor and PostgreSQL first for two, so that both sides
# of each ratio are close in time.
start_side sx sqlite 1
start_side px postgres 1
for side in sx px; do
    log "creating $(thousands "$WALLETS") funded wallets on $side"
    create_wallets "$side" "$WALLETS"
    make_due "one-$side" "$side"
done
processor_pass one-sx sx 1
processor_pass one-px px 1
make_due two-sx sx
make_due two-px px
processor_pass two-px px 2
processor_pass two-sx sx 2
stop_side sx
stop_side px

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ==============================================================================
# The table
# ==============================================================================

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }
wrk_cell() { printf '%s req/s (p99 %.2f ms)' "$(thousands "${RPS[$1]}")" "${P99[$1]}"; }
# wrk_row WORKLOAD SQLITE_SIDE POSTGRES_SIDE LABEL
wrk_row() {
    local work=$1 s=$2 p=$3 pair=$1-$2-$3
    local per_commit=""
    [[ $work == get ]] || per_commit="; writes per group commit ${PER_COMMIT[$s]} and ${PER_COMMIT[$p]}"
    row "$4" "$(wrk_cell "$pair-sqlite")" "$(wrk_cell "$pair-postgres")" "$(pct "${RATIO[$pair]}" 1)" \
        "$CONNS conns; PostgreSQL \`--writes ${SIDE_WRITES[$p]}\`; rounds SQLite/PostgreSQL req/s: ${ROUND_NOTES[$pair]}; errors ${ERRORS[$pair-sqlite]} / $(thousands "${REQUESTS[$pair-sqlite]}")${ERROR_KINDS[$pair-sqlite]} and ${ERRORS[$pair-postgres]} / $(thousands "${REQUESTS[$pair-postgres]}")${ERROR_KINDS[$pair-postgres]}$per_commit"
}
pass_cell() { printf '%s withdrawals/s (%.2f s)' "$(thousands "${PASS_RATE[$1]}")" "${PASS_SECONDS[$1]}"; }
pass_row() {
    local n=$1 label=$2
    row "$label" "$(pass_cell "$n-sx")" "$(pass_cell "$n-px")" "$(pct "${PASS_RATE[$n-px]}" "${PASS_RATE[$n-sx]}")" \
        "N = $(thousands "$WITHDRAWALS") over $(thousands "$WALLETS") wallets, concurrency $PROCESSOR_CONCURRENCY per processor; claimed ${PASS_CLAIMED[$n-sx]} and ${PASS_CLAIMED[$n-px]}; SQLite: ${PASS_CHECK[$n-sx]}; PostgreSQL: ${PASS_CHECK[$n-px]}"
}

SPREAD_LABEL="POST deposit spread over $(thousands "$SPREAD_WALLETS") wallets (durable, new Idempotency-Key each)"
wrk_row get s1 p1 'GET wallet, one responder'
wrk_row deposit s1 p1 'POST deposit to one wallet (durable, new Idempotency-Key each), one responder'
wrk_row get s2 p2 'GET wallet, two responders (one nginx upstream)'
wrk_row deposit s2 p2 'POST deposit to one wallet (durable, new Idempotency-Key each), two responders (one nginx upstream)'
wrk_row spread ss1 pg1 "$SPREAD_LABEL, one responder: PostgreSQL (group-commit)"
wrk_row spread ss1 pc1 "$SPREAD_LABEL, one responder: PostgreSQL (connections)"
wrk_row spread ss2 pg2 "$SPREAD_LABEL, two responders (one nginx upstream): PostgreSQL (group-commit)"
wrk_row spread ss2 pc2 "$SPREAD_LABEL, two responders (one nginx upstream): PostgreSQL (connections)"
pass_row one 'processor, one process, bank `/instant`'
pass_row two 'processor, two processes at once on the same due set, bank `/instant`'

# mode_line RESPONDERS WORDS: which PostgreSQL write mode served the spread
# deposits better with RESPONDERS responders, by how much, in the median
# round, and every round.
mode_line() {
    local n=$1 words=$2 ratio round g c better worse by
    read -r ratio round g c <<<"${MODES[spread-pg$n-pc$n]}"
    if ge "$ratio" 1; then
        better=connections worse=group-commit by=$(calc "100 * ($ratio - 1)")
    else
        better=group-commit worse=connections by=$(calc "100 * (1 / $ratio - 1)")
    fi
    printf -- '- **Spread deposits on PostgreSQL, %s: `--writes %s` served %.1f %% more per second than `--writes %s`**\n' \
        "$words" "$better" "$by" "$worse"
    printf -- '  (%s req/s with connections, %s with group-commit, in round %s, the median of the rounds'"'"' ratios).\n' \
        "$(thousands "$c")" "$(thousands "$g")" "$round"
    printf -- '  Every round, group-commit/connections req/s (connections over group-commit): %s.\n' "${MODE_NOTES[spread-pg$n-pc$n]}"
}

ELAPSED=$((SECONDS - STARTED_AT))
((ELAPSED <= 480)) || warn "the run took ${ELAPSED}s, over its 8-minute budget"
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)

render() {
    printf '# SQLite and PostgreSQL, same run\n\n'
    printf 'Run %s, commit %s, %s cores, load average %s before and %s after, %d s in all (build included).\n' \
        "$(date -u +%FT%TZ)" "$COMMIT" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$ELAPSED"
    printf 'SQLite: a fresh file per measurement, WAL, synchronous=FULL. PostgreSQL %s: a fresh database per measurement on one\n' "$PG_VERSION"
    printf 'throwaway server on a unix socket, fsync %s, synchronous_commit %s, wal_sync_method %s, shared_buffers %s,\n' \
        "$PG_FSYNC" "$PG_SYNC_COMMIT" "$PG_WAL_SYNC" "$PG_SHARED_BUFFERS"
    printf 'max_connections %s (the only setting changed). Responders: `--max-threads %s` on both engines; on PostgreSQL\n' \
        "$PG_MAX_CONNECTIONS" "$MAX_THREADS"
    printf '`--writes connections` (its default) unless a row says group-commit; on SQLite group-commit (its only mode).\n'
    printf 'wrk -t2 -c%s: %s s measured after %s s of warm-up, %s rounds alternating the engines. Latencies in ms.\n\n' \
        "$CONNS" "$ROUND_DURATION" "$WARMUP" "$ROUNDS"
    printf '| Measurement | SQLite | PostgreSQL | PostgreSQL / SQLite | Notes |\n'
    printf '|---|---:|---:|---:|---|\n'
    printf '%s\n' "${ROWS[@]}"
    printf '\n'
    printf -- '- Responders: `wallet-fcgi --listen 127.0.0.1:PORT --max-threads %s`, behind an nginx of their own (2 workers,\n' "$MAX_THREADS"
    printf -- '  `keepalive 16`) that includes nginx/wallet-locations.conf; every request carries an API key; no rate limits.\n'
    printf -- '  Two responders: one upstream of two servers, both on the same SQLite file or PostgreSQL database.\n'
    printf -- '- PostgreSQL write modes: `--writes group-commit` queues every write to one writer thread, which applies them\n'
    printf -- '  in one transaction (a savepoint each) with one commit; `--writes connections` (the default, and the mode of\n'
    printf -- '  every PostgreSQL row that names none) runs each request'"'"'s write as a transaction of its own on a connection\n'
    printf -- '  of its own, all at once, and leaves grouping the commits'"'"' WAL flushes to the server. A deposit locks its\n'
    printf -- '  wallet'"'"'s row, so deposits to one wallet take turns in either mode; spread over %s wallets (picked at\n' \
        "$(thousands "$SPREAD_WALLETS")"
    printf -- '  random, the same sequence for every side: scripts/bench/deposit-keyed.lua with a file of wallets) they need not. The three sides of\n'
    printf -- '  a spread measurement alternate in rounds (SQLite, group-commit, connections in odd rounds, the reverse in even\n'
    printf -- '  ones), each on a fresh database with its wallets made and funded through the API first.\n'
    mode_line 1 'one responder'
    mode_line 2 'two responders'
    printf -- '- The figure of a wrk row is the round with the median PostgreSQL/SQLite ratio (both engines from that round);\n'
    printf -- '  its errors (socket errors and answers >= 400) count over all rounds. SQLite went first in odd rounds\n'
    printf -- '  (last in even ones). A spread row'"'"'s SQLite figure is from the round that is the median for its own ratio.\n'
    printf -- '- Processor passes: timed from the start of the (first) `wallet-processor` to the exit of the (last) one;\n'
    printf -- '  withdrawals created through the API; the bank is nginx answering `/instant` at once and logging each\n'
    printf -- '  Idempotency-Key. Checked after each pass over all the withdrawals of that database. One pass per figure,\n'
    printf -- '  the two engines back to back (SQLite first with one processor, PostgreSQL first with two): no rounds.\n'
}
mkdir -p "$REPO/var/bench"
render >"$REPO/var/bench/postgres.md.new"
mv -f "$REPO/var/bench/postgres.md.new" "$REPO/var/bench/postgres.md"
cat "$REPO/var/bench/postgres.md"
log "done in ${ELAPSED}s; table written to var/bench/postgres.md"
exit 0
}
