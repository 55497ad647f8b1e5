#!/usr/bin/env bash
# scripts/stack.sh: run the whole wallet stack on loopback, in the foreground.
#
#   scripts/stack.sh [--no-processor] [--no-notifier] [--follow]
#
# Starts, in this order, and supervises until SIGINT (Ctrl-C) or SIGTERM:
#   1. the responder  $WALLET_BIN_DIR/wallet-fcgi --socket RUN_DIR/fcgi.sock
#   2. the mock bank  fcgiwrap on RUN_DIR/bank.sock running bank/bank.cgi
#   3. nginx          the wallet API on 127.0.0.1:$WALLET_HTTP_PORT and the
#                     bank on 127.0.0.1:$WALLET_BANK_PORT (/pay, /instant,
#                     /static), from nginx/dev.conf.template
#   4. unless --no-processor, a loop running $WALLET_BIN_DIR/wallet-processor
#      every $WALLET_PROCESS_INTERVAL seconds, as the systemd timer would.
#   5. unless --no-notifier, a loop running $WALLET_BIN_DIR/wallet-notifier
#      every $WALLET_NOTIFY_INTERVAL seconds (its log: RUN_DIR/notifier.log).
# Once GET /healthz answers 200 it prints `stack ready http://127.0.0.1:PORT`
# on stdout (its only line on stdout; progress goes to stderr). With --follow
# (what `make run` passes) the responder's and the processor's JSON log lines
# and the mock bank's calls also go to stderr as they are written, each line
# prefixed by its program, besides their files in RUN_DIR.
#
# On SIGINT/SIGTERM, on an error and on any exit it stops everything it
# started, by PID (the log followers by their process group), with a bounded
# deadline and then SIGKILL: no process is ever left behind. It exits 0 after a requested stop, non-zero if something
# failed to start (or nginx died).
#
# Environment (the interface in docs/INTERFACES.md; defaults in brackets):
#   WALLET_RUN_DIR           [var/run]  sockets, pid files, logs, nginx.conf
#   WALLET_HTTP_PORT         [8080]     wallet API port
#   WALLET_BANK_PORT         [8081]     mock bank port
#   WALLET_DB                [var/wallet.db]  an SQLite file, or a PostgreSQL URI or conninfo
#   WALLET_BIN_DIR           [.build/debug]
#   WALLET_BANK_URL          [http://127.0.0.1:$WALLET_BANK_PORT/pay]
#   WALLET_BANK_MODE         [random 10 1000]  written to RUN_DIR/bank/mode
#   WALLET_PROCESS_INTERVAL  [10]       seconds from one processor pass to the next
#   WALLET_DEV_API_KEY       [RUN_DIR/api-key, else new]  the development API key
#   WALLET_RATE_LIMIT        [20]       requests per second per API key (0 = off)
#   WALLET_NOTIFY_INTERVAL   [2]        seconds from one notifier pass to the next
#   WALLET_WEBHOOK_ALLOW_HTTP [1]       http:// and loopback webhook URLs allowed
#   WALLET_WEBHOOK_KEY_FILE  [RUN_DIR/webhook-master-key]  made (0600) if absent
# Extras of this script:
#   WALLET_ACCESS_LOG        [on]       `off` disables the JSON access log (benchmarks)
#   WALLET_NGINX_WORKERS     [2]        nginx worker_processes
#   WALLET_BANK_WORKERS      [see below] fcgiwrap's preforked children (-c)
#   WALLET_STOP_TIMEOUT      [10]       seconds allowed for a graceful stop
# Relative paths are relative to the current directory; the defaults are
# relative to the repository. Every other WALLET_* variable (retries, bank
# timeout, ...) is passed through to the executables unchanged.
#
# Files in RUN_DIR: nginx.conf, fcgi.sock, bank.sock, bank/ (mode, ledger,
# calls), tmp/ (nginx temp paths), wallet-fcgi.pid, nginx.pid, fcgiwrap.pid,
# wallet-fcgi.log, nginx-access.log, nginx-error.log, fcgiwrap.log,
# processor.log, api-key (the development key, 0600), walletctl.log.
#
# The responder may be killed and replaced while the stack runs (the tests
# do): whoever replaces it rewrites RUN_DIR/wallet-fcgi.pid, and the stop
# signals the pid found there at that time.

# ShellCheck cannot see that functions inside the block below are reached
# through traps and calls (SC2317 false positives).
# shellcheck disable=SC2317
# The whole script is one { ... } block: bash parses it completely before
# running any of it, so editing this file (or a git checkout) while a stack
# runs cannot feed the running shell a half-changed script.
{
set -Eeuo pipefail
# Command substitutions inherit errexit too, so a failing $(...) is an error.
shopt -s inherit_errexit

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
readonly REPO
readonly TEMPLATE="$REPO/nginx/dev.conf.template"

# --- Output helpers -------------------------------------------------------------

# Progress and errors go to stderr, so stdout carries only `stack ready`.
log() { printf 'stack: %s\n' "$*" >&2; }
warn() { printf 'stack: warning: %s\n' "$*" >&2; }
# Exits non-zero; the EXIT trap then stops whatever was started.
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

# --- Arguments --------------------------------------------------------------------

RUN_PROCESSOR=1
RUN_NOTIFIER=1
FOLLOW=0
while (($#)); do
    case $1 in
    --no-processor) RUN_PROCESSOR=0 ;;
    --no-notifier) RUN_NOTIFIER=0 ;;
    --follow) FOLLOW=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage
        die "unknown argument: $1"
        ;;
    esac
    shift
done

# --- Settings ---------------------------------------------------------------------

# Absolute paths: the children run with other working directories in mind,
# and nginx resolves relative paths against its own prefix.
abs_path() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

RUN_DIR=$(abs_path "${WALLET_RUN_DIR:-$REPO/var/run}")
HTTP_PORT=${WALLET_HTTP_PORT:-8080}
BANK_PORT=${WALLET_BANK_PORT:-8081}
# WALLET_DB is an SQLite file (made absolute here) or a PostgreSQL URI or
# conninfo (passed on as it is; the server and its database already exist).
case ${WALLET_DB:-} in
postgres://* | postgresql://* | *=*) DB=$WALLET_DB DB_IS_FILE=0 ;;
*) DB=$(abs_path "${WALLET_DB:-$REPO/var/wallet.db}") DB_IS_FILE=1 ;;
esac
BIN_DIR=$(abs_path "${WALLET_BIN_DIR:-$REPO/.build/debug}")
BANK_URL=${WALLET_BANK_URL:-http://127.0.0.1:$BANK_PORT/pay}
BANK_MODE=${WALLET_BANK_MODE:-random 10 1000}
INTERVAL=${WALLET_PROCESS_INTERVAL:-10}
NOTIFY_INTERVAL=${WALLET_NOTIFY_INTERVAL:-2}
ACCESS_LOG=${WALLET_ACCESS_LOG:-on}
NGINX_WORKERS=${WALLET_NGINX_WORKERS:-2}
RATE_LIMIT=${WALLET_RATE_LIMIT:-20}
STOP_TIMEOUT=${WALLET_STOP_TIMEOUT:-10}
# fcgiwrap serves one CGI call per preforked child, and its children mostly
# sleep (the bank's delay modes), so what matters is concurrency, not cores:
# with fewer children than calls in flight, calls wait in the socket backlog
# and that wait counts against the processor's per-call timeout, turning a
# slow bank into "outcome unknown" by accident. So: as many children as the
# processor has calls in flight (WALLET_BANK_CONCURRENCY, default 16),
# between 2 and 32. Each idle child is a ~1 MB process.
BANK_CONCURRENCY=${WALLET_BANK_CONCURRENCY:-16}
if [[ -n ${WALLET_BANK_WORKERS:-} ]]; then
    BANK_WORKERS=$WALLET_BANK_WORKERS
elif [[ $BANK_CONCURRENCY =~ ^[0-9]+$ ]]; then
    BANK_WORKERS=$((BANK_CONCURRENCY < 2 ? 2 : BANK_CONCURRENCY > 32 ? 32 : BANK_CONCURRENCY))
else
    BANK_WORKERS=16
fi

is_port() { [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] && (($1 <= 65535)); }
is_port "$HTTP_PORT" || die "WALLET_HTTP_PORT must be a port number, got '$HTTP_PORT'"
is_port "$BANK_PORT" || die "WALLET_BANK_PORT must be a port number, got '$BANK_PORT'"
[[ $HTTP_PORT != "$BANK_PORT" ]] || die "WALLET_HTTP_PORT and WALLET_BANK_PORT are both $HTTP_PORT"
[[ $INTERVAL =~ ^[0-9]+(\.[0-9]{1,6})?$ && ! $INTERVAL =~ ^0+(\.0*)?$ ]] ||
    die "WALLET_PROCESS_INTERVAL must be a positive number of seconds, got '$INTERVAL'"
[[ $NOTIFY_INTERVAL =~ ^[0-9]+(\.[0-9]{1,6})?$ && ! $NOTIFY_INTERVAL =~ ^0+(\.0*)?$ ]] ||
    die "WALLET_NOTIFY_INTERVAL must be a positive number of seconds, got '$NOTIFY_INTERVAL'"
[[ $ACCESS_LOG == on || $ACCESS_LOG == off ]] || die "WALLET_ACCESS_LOG must be on or off, got '$ACCESS_LOG'"
[[ $NGINX_WORKERS =~ ^[1-9][0-9]?$ ]] || die "WALLET_NGINX_WORKERS must be 1-99, got '$NGINX_WORKERS'"
[[ $BANK_WORKERS =~ ^[1-9][0-9]?$ ]] || die "WALLET_BANK_WORKERS must be 1-99, got '$BANK_WORKERS'"
[[ $STOP_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "WALLET_STOP_TIMEOUT must be a whole number of seconds, got '$STOP_TIMEOUT'"
[[ $RATE_LIMIT =~ ^(0|[1-9][0-9]{0,5})$ ]] ||
    die "WALLET_RATE_LIMIT must be a whole number of requests per second (0 = off), got '$RATE_LIMIT'"
# nginx's limit_req: the per-key rate, the address's five times as much, and
# bursts of two seconds' worth; with 0, the zones stay (unused) and the
# limit_req lines are commented out.
if ((RATE_LIMIT > 0)); then
    KEY_RATE=$RATE_LIMIT limit_req=limit_req
else
    KEY_RATE=1 limit_req="# limit_req"
fi
# The paths end up unquoted in nginx.conf and in sed replacements: keep them
# to characters that need no quoting anywhere.
PATHS=("$RUN_DIR" "$REPO" "$BIN_DIR")
((DB_IS_FILE)) && PATHS+=("$DB")
for path in "${PATHS[@]}"; do
    [[ $path =~ ^[A-Za-z0-9._/+@%=,:-]+$ ]] ||
        die "unsupported characters in path '$path' (use letters, digits and ._/+-)"
done
# sun_path holds 108 bytes including the terminating NUL; the longest socket
# name is "/fcgi.sock" (10).
((${#RUN_DIR} <= 97)) ||
    die "WALLET_RUN_DIR is too long for a unix socket path (${#RUN_DIR} > 97 characters): $RUN_DIR"

# Tools, from PATH or where Debian puts them (sbin is not in a user's PATH).
# Sets the variable named $1 (no command substitution, so that die() ends
# this shell and not a subshell).
find_tool() {
    local var=$1 name=$2 package=$3
    if command -v "$name" >/dev/null 2>&1; then
        printf -v "$var" '%s' "$(command -v "$name")"
    elif [[ -x /usr/sbin/$name ]]; then
        printf -v "$var" '%s' "/usr/sbin/$name"
    else
        die "$name not found; run 'make deps' (it installs Debian's $package package)"
    fi
}
find_tool NGINX nginx nginx
find_tool FCGIWRAP fcgiwrap fcgiwrap
find_tool CURL curl curl
find_tool PS ps procps
[[ -f $TEMPLATE ]] || die "missing $TEMPLATE"
[[ -x $BIN_DIR/wallet-fcgi ]] ||
    die "$BIN_DIR/wallet-fcgi not found or not executable; run 'swift build' (or set WALLET_BIN_DIR)"
if ((RUN_PROCESSOR)); then
    [[ -x $BIN_DIR/wallet-processor ]] ||
        die "$BIN_DIR/wallet-processor not found or not executable; run 'swift build' (or use --no-processor)"
fi
if ((RUN_NOTIFIER)); then
    [[ -x $BIN_DIR/wallet-notifier ]] ||
        die "$BIN_DIR/wallet-notifier not found or not executable; run 'swift build' (or use --no-notifier)"
fi
[[ -f $REPO/bank/bank.cgi ]] || die "missing $REPO/bank/bank.cgi"

# What the executables read (docs/INTERFACES.md), as absolute values.
export WALLET_RUN_DIR=$RUN_DIR WALLET_HTTP_PORT=$HTTP_PORT WALLET_BANK_PORT=$BANK_PORT
export WALLET_DB=$DB WALLET_BIN_DIR=$BIN_DIR WALLET_BANK_URL=$BANK_URL
export WALLET_PROCESS_INTERVAL=$INTERVAL WALLET_NOTIFY_INTERVAL=$NOTIFY_INTERVAL
# Development webhooks: http:// and loopback receivers are allowed, and the
# master key is a file in the run dir (created below) unless one is named.
export WALLET_WEBHOOK_ALLOW_HTTP=${WALLET_WEBHOOK_ALLOW_HTTP:-1}
export WALLET_WEBHOOK_KEY_FILE=${WALLET_WEBHOOK_KEY_FILE:-$RUN_DIR/webhook-master-key}
# Loopback must never go through a proxy from the environment (libcurl in
# the processor and curl here honour http_proxy and no_proxy).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
export NO_PROXY=$no_proxy

# --- Process bookkeeping ------------------------------------------------------------

# The pids of what we started (kept even after a component exits, to reap
# it and to find what it left behind).
FCGI_PID="" FCGIWRAP_PID="" NGINX_PID="" LOOP_PID="" NOTIFY_LOOP_PID="" FOLLOW_PID=""
# Their names, for messages once they are gone.
declare -A NAME_OF=()
# nginx's worker pids, noted once nginx is up: if the master ever died
# unexpectedly its workers would be orphans that descendants() cannot find.
NGINX_WORKERS_SEEN=()
# Set once fcgiwrap was started (its children are found by its socket path).
BANK_STARTED=0
STOPPING=0

# Sets CMDLINE to the command line of pid $1, spaces between the arguments
# (empty if it is gone). A variable rather than output: no subshell, so the
# scans below stay fast.
CMDLINE=""
read_cmdline() {
    local -a args=()
    { mapfile -d '' -t args <"/proc/$1/cmdline"; } 2>/dev/null || true
    CMDLINE="${args[*]}"
    # nginx pads its rewritten titles with spaces.
    CMDLINE=${CMDLINE%"${CMDLINE##*[! ]}"}
}

# True if pid $1 is alive and its command line contains $2: a pid read from a
# file is only signalled if it still is the program it claims to be.
is_program() {
    alive "$1" || return 1
    read_cmdline "$1"
    [[ $CMDLINE == *"$2"* ]]
}

# Prints the pids of all descendants of the given pids, from one `ps`
# snapshot. Used to find fcgiwrap's preforked children (SIGTERM to the
# parent leaves them running), nginx's workers and
# the processor loop's current child, BEFORE anything is signalled: once a
# parent is gone its children are re-parented and can no longer be found
# this way.
descendants() {
    local -A children=()
    local pid ppid
    local -a todo=("$@")
    while read -r pid ppid; do
        children[$ppid]+="$pid "
    done < <("$PS" -e -o pid= -o ppid=)
    while ((${#todo[@]})); do
        pid=${todo[0]}
        todo=("${todo[@]:1}")
        for ppid in ${children[$pid]:-}; do
            printf '%s\n' "$ppid"
            todo+=("$ppid")
        done
    done
}

# Prints the pids whose command line contains $1. Only ever called with a
# path inside our own run dir (the bank socket), which no other process
# names: it finds fcgiwrap children even if their parent died and they were
# re-parented.
pids_naming() {
    local dir pid
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
        if is_program "$pid" "$1"; then printf '%s\n' "$pid"; fi
    done
}

# Prints the pids of the live members of process group $1 (the log
# followers', whose leader may be gone).
group_members() {
    local dir stat
    for dir in /proc/[0-9]*; do
        { read -r stat <"$dir/stat"; } 2>/dev/null || continue
        # After the command name: state, ppid, pgrp.
        [[ ${stat##*) } =~ ^([^ ]+)\ [0-9]+\ ([0-9]+)\  ]] || continue
        if [[ ${BASH_REMATCH[1]} != Z && ${BASH_REMATCH[2]} == "$1" ]]; then printf '%s\n' "${dir#/proc/}"; fi
    done
}

# Sends signal $1 to the pids that follow (skipping the ones already gone).
signal_pids() {
    local sig=$1 pid
    shift
    for pid in "$@"; do
        if alive "$pid"; then kill -s "$sig" "$pid" 2>/dev/null || true; fi
    done
}

# Waits until every pid that follows is gone, or until $DEADLINE_US.
# Returns 1 if some are still alive then.
wait_gone() {
    local pid pending
    while :; do
        pending=""
        for pid in "$@"; do
            if alive "$pid"; then
                pending=$pid
                break
            fi
        done
        [[ -n $pending ]] || return 0
        (($(now_us) < DEADLINE_US)) || return 1
        sleep 0.05
    done
}

# Stops everything this script started, by pid, in dependency order: the
# processor loop (it calls the bank), nginx (QUIT: it finishes the requests
# in flight, which still need the responder and the bank), then the
# responder and fcgiwrap. One shared deadline of $STOP_TIMEOUT seconds;
# whatever is left then gets SIGKILL. Safe to call with only some
# components started. Returns 1 if a process survived even SIGKILL.
stop_all() {
    local -a loop_tree=() nginx_tree=() fcgi_pids=() bank_tree=() follow_tree=() everything=() found=()
    local pid
    DEADLINE_US=$(($(now_us) + STOP_TIMEOUT * 1000000))

    # Collect every pid first (see descendants).
    if [[ -n $LOOP_PID ]]; then
        mapfile -t found < <(descendants "$LOOP_PID")
        loop_tree=("$LOOP_PID" "${found[@]}")
    fi
    if [[ -n $NOTIFY_LOOP_PID ]]; then
        mapfile -t found < <(descendants "$NOTIFY_LOOP_PID")
        loop_tree+=("$NOTIFY_LOOP_PID" "${found[@]}")
    fi
    if [[ -n $FOLLOW_PID ]]; then
        mapfile -t follow_tree < <(group_members "$FOLLOW_PID")
    fi
    if [[ -n $NGINX_PID ]]; then
        mapfile -t found < <(descendants "$NGINX_PID")
        nginx_tree=("$NGINX_PID" "${found[@]}")
        for pid in "${NGINX_WORKERS_SEEN[@]}"; do
            if is_program "$pid" nginx && [[ " ${nginx_tree[*]} " != *" $pid "* ]]; then nginx_tree+=("$pid"); fi
        done
    fi
    # The responder: ours (our child, so its pid cannot have been reused
    # while it is set), and whatever wallet-fcgi.pid names now if that is
    # another wallet-fcgi (a test may have replaced ours).
    if [[ -n $FCGI_PID ]]; then fcgi_pids+=("$FCGI_PID"); fi
    pid=$(read_pid_file "$RUN_DIR/wallet-fcgi.pid")
    if [[ -n $pid && $pid != "$FCGI_PID" ]] && is_program "$pid" wallet-fcgi; then fcgi_pids+=("$pid"); fi
    if ((BANK_STARTED)); then
        # The parent (if still running), its children, and any fcgiwrap that
        # names our socket (children whose parent died unexpectedly).
        mapfile -t found < <(
            if [[ -n $FCGIWRAP_PID ]]; then descendants "$FCGIWRAP_PID"; fi
            pids_naming "unix:$RUN_DIR/bank.sock"
        )
        if [[ -n $FCGIWRAP_PID ]]; then bank_tree=("$FCGIWRAP_PID"); fi
        for pid in "${found[@]}"; do
            [[ " ${bank_tree[*]} " == *" $pid "* ]] || bank_tree+=("$pid")
        done
    fi
    for pid in "${loop_tree[@]}" "${nginx_tree[@]}" "${fcgi_pids[@]}" "${bank_tree[@]}" "${follow_tree[@]}"; do
        if alive "$pid" && [[ " ${everything[*]} " != *" $pid "* ]]; then everything+=("$pid"); fi
    done
    ((${#everything[@]})) || return 0
    log "stopping (pids ${everything[*]})"

    # The loop's trap passes TERM on to the running processor (or sleep) and
    # waits for it.
    signal_pids TERM "${LOOP_PID:-}" "${NOTIFY_LOOP_PID:-}"
    wait_gone "${loop_tree[@]}" || true
    # QUIT: graceful stop of the master and its workers (bounded by
    # worker_shutdown_timeout in nginx.conf). Should the master be gone, its
    # orphaned workers get the QUIT themselves.
    if alive "${nginx_tree[0]:-}"; then
        signal_pids QUIT "${nginx_tree[0]}"
    else
        signal_pids QUIT "${nginx_tree[@]}"
    fi
    wait_gone "${nginx_tree[@]}" || true
    # The responder finishes its requests in flight and exits.
    signal_pids TERM "${fcgi_pids[@]}"
    # fcgiwrap: the parent first, since it replaces children that die; then
    # the children, which the parent's SIGTERM leaves running (pitfall 18),
    # found again by socket path in case one was forked meanwhile.
    if ((${#bank_tree[@]})); then
        signal_pids TERM "${bank_tree[0]}"
        wait_gone "${bank_tree[0]}" || true
        mapfile -t found < <(pids_naming "unix:$RUN_DIR/bank.sock")
        for pid in "${found[@]}"; do
            [[ " ${everything[*]} " == *" $pid "* ]] || everything+=("$pid")
            [[ " ${bank_tree[*]} " == *" $pid "* ]] || bank_tree+=("$pid")
        done
        signal_pids TERM "${bank_tree[@]:1}"
    fi
    # Last, the log followers: they have shown everything the others wrote.
    # Their process group as a whole, while one of its members (noted above)
    # still lives: as long as one does, the group's id cannot be reused.
    for pid in "${follow_tree[@]}"; do
        if alive "$pid"; then
            kill -s TERM -- "-$FOLLOW_PID" 2>/dev/null || true
            break
        fi
    done

    if ! wait_gone "${everything[@]}"; then
        for pid in "${everything[@]}"; do
            if alive "$pid"; then
                read_cmdline "$pid"
                warn "pid $pid ($CMDLINE) did not stop within ${STOP_TIMEOUT}s: SIGKILL"
                kill -s KILL "$pid" 2>/dev/null || true
            fi
        done
        DEADLINE_US=$(($(now_us) + 3000000))
        if ! wait_gone "${everything[@]}"; then
            for pid in "${everything[@]}"; do
                if alive "$pid"; then warn "pid $pid survived SIGKILL"; fi
            done
            return 1
        fi
    fi
    return 0
}

# The EXIT trap: runs on every exit (normal, error, signal).
cleanup() {
    local rc=$? pid f
    # A second Ctrl-C must not interrupt the stop half-way.
    trap '' INT TERM
    trap - EXIT
    STOPPING=1
    stop_all || rc=1
    # Reap our own children so that none lingers as a zombie.
    for pid in "$FCGI_PID" "$FCGIWRAP_PID" "$NGINX_PID" "$LOOP_PID"; do
        if [[ -n $pid ]] && ! alive "$pid"; then wait "$pid" 2>/dev/null || true; fi
    done
    # Remove the pid files and sockets of what is gone (nginx removes its own
    # pid file, but `nginx -t` leaves an empty one behind); stale ones would
    # only confuse the next start.
    for f in wallet-fcgi fcgiwrap nginx; do
        pid=$(read_pid_file "$RUN_DIR/$f.pid")
        if [[ -z $pid ]] || ! alive "$pid"; then rm -f "$RUN_DIR/$f.pid"; fi
    done
    [[ -e $RUN_DIR/fcgiwrap.pid ]] || rm -f "$RUN_DIR/bank.sock"
    [[ -e $RUN_DIR/wallet-fcgi.pid ]] || rm -f "$RUN_DIR/fcgi.sock"
    if ((rc == 0)); then log "stopped"; else log "stopped (exit status $rc)"; fi
    exit "$rc"
}

# The traps go in before anything is started: whatever happens from here on,
# the EXIT trap stops what exists. A requested stop exits 0.
trap cleanup EXIT
trap 'log "SIGINT received"; exit 0' INT
trap 'log "SIGTERM received"; exit 0' TERM
# Say where an error that set -e turns into an exit happened.
on_error() {
    local rc=$?
    ((STOPPING)) || log "command failed (status $rc) at line $1: $2"
}
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

# Prints the last lines of the named run-dir logs (for failure messages).
show_logs() {
    local name
    for name in "$@"; do
        [[ -s $RUN_DIR/$name ]] || continue
        printf -- '---- %s (last 20 lines) ----\n' "$RUN_DIR/$name" >&2
        tail -n 20 "$RUN_DIR/$name" >&2 || true
    done
}

# wait_until DESCRIPTION SECONDS PIDS COMMAND...: runs COMMAND every 50 ms
# until it succeeds. Fails (die, with logs) after SECONDS, or at once if one
# of the space-separated PIDS has exited.
wait_until() {
    local what=$1 seconds=$2 pids=$3 pid
    shift 3
    local deadline=$(($(now_us) + seconds * 1000000))
    while ! "$@"; do
        for pid in $pids; do
            if ! alive "$pid"; then
                show_logs wallet-fcgi.log fcgiwrap.log nginx-error.log
                die "${NAME_OF[$pid]:-pid $pid} exited while waiting for: $what"
            fi
        done
        if (($(now_us) >= deadline)); then
            show_logs wallet-fcgi.log fcgiwrap.log nginx-error.log
            die "timed out after ${seconds}s waiting for: $what"
        fi
        sleep 0.05
    done
}

# --- Run directory --------------------------------------------------------------------

# Nothing this stack creates is for other local users: the database, the logs
# and the bank's files are this user's alone (umask 077, inherited by every
# process started below). The run dir and its sockets are shared with exactly
# one other party, nginx's workers: as root, nginx runs them as nobody:nogroup,
# so the run dir is root:nogroup 2750 (the setgid bit gives every socket made
# in it that group) and the sockets are 0660. Anyone else can neither reach
# the responder nor make fcgiwrap run a script. Not as root, nginx's workers
# are this user and the run dir is 0700.
umask 077
mkdir -p "$RUN_DIR/bank" "$RUN_DIR/tmp"
((DB_IS_FILE)) && mkdir -p "$(dirname "$DB")"
if ((EUID == 0)); then
    WORKER_GROUP=$(id -gn nobody)
    chgrp "$WORKER_GROUP" "$RUN_DIR" "$RUN_DIR/tmp"
    # tmp: nginx's workers write request bodies under it.
    chmod 2750 "$RUN_DIR" "$RUN_DIR/tmp"
    SOCKET_MODE=0660
else
    chmod 0700 "$RUN_DIR"
    SOCKET_MODE=0600
fi
# The bank dir is only written by the CGI, which runs as this user.
chmod 0700 "$RUN_DIR/bank"
if ((EUID == 0)); then
    # The workers must also traverse every directory above the run dir.
    dir=$(dirname "$RUN_DIR")
    while [[ $dir != / ]]; do
        perms=$(stat -L -c %A "$dir")
        [[ ${perms:9:1} == [xt] ]] ||
            die "$dir is not traversable by others ($perms): nginx workers run as 'nobody' and could not reach the sockets in $RUN_DIR; chmod o+x it or choose another WALLET_RUN_DIR"
        dir=$(dirname "$dir")
    done
fi

# Refuse to start over a stack that is still running in this run dir: its
# sockets and pid files would be clobbered.
# A pid only counts if that process names this run dir (pids get reused).
for spec in "wallet-fcgi:$RUN_DIR/fcgi.sock" "fcgiwrap:$RUN_DIR/bank.sock" "nginx:$RUN_DIR/nginx.conf"; do
    name=${spec%%:*}
    pid=$(read_pid_file "$RUN_DIR/$name.pid")
    if [[ -n $pid ]] && is_program "$pid" "${spec#*:}"; then
        # Not ours: make sure the EXIT trap leaves it alone.
        trap - EXIT
        die "a stack is already running in $RUN_DIR ($name pid $pid); stop it first"
    fi
    rm -f "$RUN_DIR/$name.pid"
done
rm -f "$RUN_DIR/fcgi.sock" "$RUN_DIR/bank.sock"

# The bank's behaviour; ledger and calls are kept across runs, like the
# database the bank pays for.
printf '%s\n' "$BANK_MODE" >"$RUN_DIR/bank/mode"
# The development webhook master key: made once (0600), kept across runs so
# that endpoints' secrets stay valid.
if [[ $WALLET_WEBHOOK_KEY_FILE == "$RUN_DIR/webhook-master-key" && ! -s $WALLET_WEBHOOK_KEY_FILE ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$WALLET_WEBHOOK_KEY_FILE.new" && printf '\n' >>"$WALLET_WEBHOOK_KEY_FILE.new")
    mv "$WALLET_WEBHOOK_KEY_FILE.new" "$WALLET_WEBHOOK_KEY_FILE"
fi

# --- nginx.conf ------------------------------------------------------------------------

# Escapes a value for the replacement side of a sed s||| command.
sed_escape() { printf '%s\n' "$1" | sed -e 's/[\\&|]/\\&/g'; }

if [[ $ACCESS_LOG == on ]]; then
    access_log_args="$RUN_DIR/nginx-access.log wallet_json"
else
    access_log_args=off
fi
sed -e "s|@ACCESS_LOG@|$(sed_escape "$access_log_args")|g" \
    -e "s|@RUN_DIR@|$(sed_escape "$RUN_DIR")|g" \
    -e "s|@REPO@|$(sed_escape "$REPO")|g" \
    -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
    -e "s|@BANK_PORT@|$BANK_PORT|g" \
    -e "s|@NGINX_WORKERS@|$NGINX_WORKERS|g" \
    -e "s|@KEY_RATE@|$KEY_RATE|g" -e "s|@KEY_BURST@|$((KEY_RATE * 2))|g" \
    -e "s|@ADDRESS_RATE@|$((KEY_RATE * 5))|g" -e "s|@ADDRESS_BURST@|$((KEY_RATE * 10))|g" \
    -e "s|@LIMIT_REQ@|$limit_req|g" \
    "$TEMPLATE" >"$RUN_DIR/nginx.conf.new"
if leftover=$(grep -n -o '@[A-Z_]*@' "$RUN_DIR/nginx.conf.new"); then
    die "unreplaced placeholders in $TEMPLATE: ${leftover//$'\n'/ }"
fi
mv -f "$RUN_DIR/nginx.conf.new" "$RUN_DIR/nginx.conf"

nginx_args=(-p "$RUN_DIR/" -c "$RUN_DIR/nginx.conf" -e "$RUN_DIR/nginx-error.log")
# Check the config before starting anything, and show nginx's own words.
if ! out=$("$NGINX" -t -q "${nginx_args[@]}" 2>&1); then
    printf '%s\n' "$out" >&2
    die "nginx -t rejected $RUN_DIR/nginx.conf"
fi

# nginx -t does not notice a port in use; nginx itself would only say so
# after 2.5 s of retries. Ask first, with a clear message.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$HTTP_PORT" "$BANK_PORT"; do
    if port_in_use "$port"; then
        die "port $port on 127.0.0.1 is already in use (another stack or server?); set WALLET_HTTP_PORT / WALLET_BANK_PORT"
    fi
done

# --- Start ---------------------------------------------------------------------------------

# 1. The responder. It creates its socket itself, SOCKET_MODE in the run dir's
# group (see "Run directory"; in production systemd owns the socket, 0660 for
# nginx's group).
# --follow: one `tail -F | sed` per log, each line prefixed by its program,
# to stderr. Started first, from the logs' current ends (a reused run dir
# keeps earlier runs' lines), so no line of this run is missed.
# The followers are a process group of their own, stopped as one by stop_all:
# started from this shell they would share its group, so a Ctrl-C would kill
# the subshell that holds them (bash resets a trapped SIGINT to the default in
# a background subshell) while its pipelines, started with SIGINT ignored, ran
# on as orphans that no longer descend from this script. In their own group
# a Ctrl-C does not reach them, and a group outlives its leader. tail --pid
# also ends them should this script ever die without its EXIT trap (SIGKILL).
follow_logs() {
    local name file
    # A background group writing to a terminal set to `stty tostop` would be
    # stopped by SIGTTOU; ignored, the writes go through (inherited by sed).
    trap '' TTOU
    for name in wallet-fcgi:wallet-fcgi.log processor:processor.log notifier:notifier.log bank:bank/calls; do
        file=$RUN_DIR/${name#*:}
        tail -n 0 -q -F --pid="$$" "$file" 2>/dev/null | sed -u "s/^/${name%%:*} | /" >&2 &
    done
    wait
}
if ((FOLLOW)); then
    mkdir -p "$RUN_DIR/bank"
    touch "$RUN_DIR/wallet-fcgi.log" "$RUN_DIR/processor.log" "$RUN_DIR/notifier.log" "$RUN_DIR/bank/calls"
    # Job control for this one start: a background job gets a process group
    # of its own, whose id is the job's pid.
    set -m
    follow_logs </dev/null &
    FOLLOW_PID=$!
    set +m
fi

log "starting wallet-fcgi ($BIN_DIR/wallet-fcgi, database $( ((DB_IS_FILE)) && echo "$DB" || echo PostgreSQL))"
"$BIN_DIR/wallet-fcgi" --socket "$RUN_DIR/fcgi.sock" --socket-mode "$SOCKET_MODE" </dev/null >>"$RUN_DIR/wallet-fcgi.log" 2>&1 &
FCGI_PID=$!
NAME_OF[$FCGI_PID]=wallet-fcgi
printf '%s\n' "$FCGI_PID" >"$RUN_DIR/wallet-fcgi.pid"
wait_until "wallet-fcgi to create $RUN_DIR/fcgi.sock" 10 "$FCGI_PID" test -S "$RUN_DIR/fcgi.sock"

# 2. The mock bank. fcgiwrap creates its socket with the process umask
# (0700 here), which the workers could not connect to; it is made SOCKET_MODE
# with chmod rather than by starting fcgiwrap under another umask: the CGI
# inherits fcgiwrap's umask, and the bank's files are this user's alone.
# Nothing connects before the chmod: nginx starts afterwards.
log "starting fcgiwrap with $BANK_WORKERS children (bank mode: $BANK_MODE)"
"$FCGIWRAP" -c "$BANK_WORKERS" -s "unix:$RUN_DIR/bank.sock" </dev/null >>"$RUN_DIR/fcgiwrap.log" 2>&1 &
FCGIWRAP_PID=$!
BANK_STARTED=1
NAME_OF[$FCGIWRAP_PID]=fcgiwrap
printf '%s\n' "$FCGIWRAP_PID" >"$RUN_DIR/fcgiwrap.pid"
wait_until "fcgiwrap to create $RUN_DIR/bank.sock" 10 "$FCGIWRAP_PID" test -S "$RUN_DIR/bank.sock"
chmod "$SOCKET_MODE" "$RUN_DIR/bank.sock"

# 3. nginx, in the foreground (daemon off) as our child. Its early errors
# (such as a failed bind) go to our stderr.
log "starting nginx on 127.0.0.1:$HTTP_PORT (wallet) and 127.0.0.1:$BANK_PORT (bank)"
"$NGINX" "${nginx_args[@]}" </dev/null >&2 &
NGINX_PID=$!
NAME_OF[$NGINX_PID]=nginx

healthz_ok() {
    "$CURL" --noproxy '*' -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null
}
bank_ok() {
    "$CURL" --noproxy '*' -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$BANK_PORT/static" 2>/dev/null
}
wait_until "GET http://127.0.0.1:$HTTP_PORT/healthz to answer 200" 10 "$NGINX_PID $FCGI_PID" healthz_ok
wait_until "the bank server on 127.0.0.1:$BANK_PORT" 5 "$NGINX_PID" bank_ok
mapfile -t NGINX_WORKERS_SEEN < <(descendants "$NGINX_PID")

# The development API key: $WALLET_DEV_API_KEY when set, else the one an
# earlier run left in RUN_DIR/api-key, else a new one (wsk_ and 256 random
# bits, the shape `walletctl keys create` makes). It is stored through
# `walletctl keys create --stdin`, so it never appears in a command line, and
# written to RUN_DIR/api-key (0600, by the umask above).
readonly KEY_FILE="$RUN_DIR/api-key"
key_shape='^[A-Za-z0-9_-]{32,128}$'
new_key() { printf 'wsk_%s\n' "$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"; }
store_key() { printf '%s\n' "$1" | "$BIN_DIR/walletctl" keys create development --stdin --existing-ok >>"$RUN_DIR/walletctl.log" 2>&1; }
if [[ -n ${WALLET_DEV_API_KEY:-} ]]; then
    [[ $WALLET_DEV_API_KEY =~ $key_shape ]] || die "WALLET_DEV_API_KEY must be 32 to 128 characters of A-Z a-z 0-9 _ -"
    API_KEY=$WALLET_DEV_API_KEY
    store_key "$API_KEY" || { show_logs walletctl.log; die "cannot store WALLET_DEV_API_KEY (revoked?)"; }
else
    API_KEY=""
    if [[ -s $KEY_FILE ]]; then
        API_KEY=$(<"$KEY_FILE")
        if ! [[ $API_KEY =~ $key_shape ]] || ! store_key "$API_KEY"; then
            warn "the key in $KEY_FILE is malformed or revoked: making a new one"
            API_KEY=""
        fi
    fi
    if [[ -z $API_KEY ]]; then
        API_KEY=$(new_key)
        store_key "$API_KEY" || { show_logs walletctl.log; die "cannot store a new development API key"; }
    fi
fi
printf '%s\n' "$API_KEY" >"$KEY_FILE.new"
mv -f "$KEY_FILE.new" "$KEY_FILE"

# 4. The processor loop: one pass every INTERVAL seconds, start to start
# (like the timer's OnUnitActiveSec), never two passes at once.
interval_us() {
    local interval=${1:-$INTERVAL}
    local whole=${interval%%.*} frac=""
    [[ $interval == *.* ]] && frac=${interval#*.}
    frac="${frac}000000"
    printf '%s\n' "$((10#$whole * 1000000 + 10#${frac:0:6}))"
}
# pass_loop PROGRAM LOG INTERVAL: the processor's loop, and the notifier's.
pass_loop() {
    local program=$1 logfile=$2
    local child="" rc started rest step sleep_fd
    # Only stack.sh stops the loop, with SIGTERM: a Ctrl-C (SIGINT to the
    # whole process group) must not kill the loop and orphan a running pass.
    trap '' INT
    # On SIGTERM let the current pass end by SIGTERM too, and wait for it.
    trap 'if [[ -n $child ]]; then kill -s TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi; exit 0' TERM
    trap - EXIT ERR
    # Sleep with `read -t` on a pipe that never gets data: no sleep child
    # that could outlive the loop, and a signal interrupts it at once.
    exec {sleep_fd}<> <(:)
    step=$(interval_us "$3")
    while :; do
        started=$(now_us)
        "$BIN_DIR/$program" </dev/null >>"$logfile" 2>&1 &
        child=$!
        rc=0
        wait "$child" || rc=$?
        child=""
        if ((rc != 0)); then
            printf '%s stack: %s exited with status %d\n' "$(date -u +%FT%TZ)" "$program" "$rc" >>"$logfile"
        fi
        rest=$((started + step - $(now_us)))
        if ((rest > 0)); then
            read -r -t "$((rest / 1000000)).$(printf '%06d' $((rest % 1000000)))" -u "$sleep_fd" _ || true
        fi
    done
}
if ((RUN_PROCESSOR)); then
    log "starting the processor loop (every ${INTERVAL}s, log $RUN_DIR/processor.log)"
    pass_loop wallet-processor "$RUN_DIR/processor.log" "$INTERVAL" &
    LOOP_PID=$!
fi
if ((RUN_NOTIFIER)); then
    log "starting the notifier loop (every ${NOTIFY_INTERVAL}s, log $RUN_DIR/notifier.log)"
    pass_loop wallet-notifier "$RUN_DIR/notifier.log" "$NOTIFY_INTERVAL" &
    NOTIFY_LOOP_PID=$!
fi

log "development API key $API_KEY (in $KEY_FILE); e.g. curl -H \"Authorization: Bearer \$(cat $KEY_FILE)\" ..."
log "bank http://127.0.0.1:$BANK_PORT/pay, run dir $RUN_DIR; Ctrl-C stops everything"
printf 'stack ready http://127.0.0.1:%s\n' "$HTTP_PORT"

# --- Supervise -------------------------------------------------------------------------------

# Sleep until a signal (the traps above stop everything) or until a child
# exits. A child that exits is reaped by `wait -n`, so its pid may be reused
# by an unrelated process: forget it. The responder may be killed on purpose
# (tests restart it; the stop then uses wallet-fcgi.pid): note it and carry
# on. Without nginx there is no stack: stop with an error.
while :; do
    exited="" status=0
    wait -n -p exited 2>/dev/null || status=$?
    if ! alive "$NGINX_PID"; then
        if [[ $exited != "$NGINX_PID" ]]; then
            status=0
            wait "$NGINX_PID" 2>/dev/null || status=$?
        fi
        # Status 0: nginx was told to stop (a Ctrl-C reaches the whole
        # foreground process group, nginx included, and nginx may be
        # faster than our trap). Anything else is a crash.
        if ((status == 0)); then
            log "nginx has stopped: stopping the rest"
            exit 0
        fi
        show_logs nginx-error.log
        die "nginx exited unexpectedly (status $status)"
    fi
    if [[ -n $FCGI_PID ]] && ! alive "$FCGI_PID"; then
        log "wallet-fcgi (pid $FCGI_PID) exited"
        FCGI_PID=""
    fi
    if [[ -n $FCGIWRAP_PID ]] && ! alive "$FCGIWRAP_PID"; then
        warn "fcgiwrap (pid $FCGIWRAP_PID) exited: the bank now answers 502"
        FCGIWRAP_PID=""
    fi
    if [[ -n $LOOP_PID ]] && ! alive "$LOOP_PID"; then
        warn "the processor loop (pid $LOOP_PID) exited"
        LOOP_PID=""
    fi
    if [[ -n $NOTIFY_LOOP_PID ]] && ! alive "$NOTIFY_LOOP_PID"; then
        warn "the notifier loop (pid $NOTIFY_LOOP_PID) exited"
        NOTIFY_LOOP_PID=""
    fi
done

# Never reached (the loop above ends in exit); keeps bash from reading on.
exit
}
