#!/usr/bin/env bash
# scripts/bench.sh: the benchmarks of the wallet service, one table per run.
#
#   scripts/bench.sh        (or `make bench`, which installs wrk first)
#
# What it does, in this order (about 3 minutes plus the build):
#   1. swift build -c release, and a development stack (scripts/stack.sh
#      --no-processor) on free loopback ports, in a temporary run dir with a
#      fresh database, access log off, mock bank in mode `success` with 16
#      fcgiwrap workers.
#   2. wrk at 32 connections (-t2 -c32) and at 1 connection (-t1 -c1), 1 s of
#      warm-up then 5 s measured, against: nginx `return 200` (the HTTP
#      ceiling, same nginx, same run), GET wallet, POST wallet (empty body),
#      POST withdraw (due in 2099, so no processor pass touches it), POST
#      deposit; then POST deposit again with the responder restarted with
#      WALLET_SYNCHRONOUS=NORMAL on the same database (the durability
#      ceiling), and back to the default FULL.
#      The two ratios with goals at 32 connections (GET wallet against nginx
#      `return 200`, durable deposits against NORMAL) come from 5 alternating
#      rounds of ceiling and figure, 3 s each: on a shared machine the speed
#      drifts by tens of percent within a minute, and alternating puts both
#      sides of a ratio under the same drift. The table shows the round with
#      the median ratio and lists every round's ratio under it.
#      Every request carries the stack's API key; nginx's rate limits are
#      off (WALLET_RATE_LIMIT=0: the table says so), since one key sends
#      thousands of requests per second here.
#   2b. The same two figures against the binaries of a baseline commit
#      (BENCH_BASELINE, by default the commit before API keys, which
#      answers without a key), in a stack of its own on its own database,
#      measured in the same alternating rounds: what authentication and
#      ownership cost, with both sides under the same drift.
#      The comparison is made on the same content: a deposit's cost grows
#      with the tables it appends to, and by the deposit rounds HEAD's
#      database holds everything the runs before them wrote (tens of
#      thousands of wallets, withdrawals and deposits). The baseline gets the
#      same funded wallets before the GET rounds, and before each deposit
#      round both databases are brought to the same number of wallets,
#      deposits and withdrawals (counted with sqlite3), through the API of
#      whichever stack has fewer: the rows the earlier runs made, then the
#      deposits of the previous round's NORMAL run, which only HEAD gets.
#   3. The responder's peak RSS (VmHWM) after that load.
#   4. wallet-processor, one pass each, over withdrawals created through the
#      API (many funded wallets):
#        (a) 10,000 against the bank server's /instant (the processor's own
#            ceiling), WALLET_BANK_CONCURRENCY=16, under /usr/bin/time for
#            its peak RSS;
#        (b) against the bash mock bank /pay (mode success, 16 workers,
#            concurrency 16), next to the bank's own req/s under wrk
#            (post-pay.lua, -c16, a new Idempotency-Key per request). 10,000
#            if the bank is fast enough to finish them in BENCH_B_MAX_SECONDS,
#            else 2,000 (the table says which);
#        (c) 2,000 against the mock bank in mode `random 10 1000` (1 s per
#            answer, 10 % failed) with concurrency 64 and 64 fcgiwrap workers
#            (a second stack on the same database: the worker count is fixed
#            when fcgiwrap starts).
#   5. wallet-notifier, one pass: BENCH_DELIVERIES (10,000) deposits' events
#      delivered to one webhook endpoint whose receiver is nginx `return 200`
#      on loopback (the notifier's own ceiling: signing, libcurl, recording).
#   6. Prints one markdown table (every figure, its ceiling, the ratio, the
#      goal) on stdout and writes it to var/bench/latest.md.
#
# A benchmark reports, it does not assert: missed goals still exit 0. It
# exits non-zero only if something failed to run (build, stack, a wrk run
# without a summary, a processor pass that failed, fixtures the API refused).
# Whatever happens, the EXIT trap stops the stacks (by the pid of stack.sh,
# which stops its own children) and any child of ours, and waits for them.
#
# Progress goes to stderr; stdout carries only the table.
#
# Environment (for quicker experiments; the defaults are the benchmark):
#   BENCH_DURATION       [5]      seconds measured per wrk run
#   BENCH_WARMUP         [1]      seconds of warm-up before each wrk run
#   BENCH_ROUNDS         [5]      alternating rounds of the two ratios with goals
#   BENCH_ROUND_DURATION [3]      seconds measured per wrk run in those rounds
#   BENCH_WALLETS        [1000]   funded wallets the withdrawals are spread over
#   BENCH_WITHDRAWALS_A  [10000]  withdrawals for pass (a)
#   BENCH_WITHDRAWALS_B  [10000]  withdrawals for pass (b), if the bank can
#                                 pay them within BENCH_B_MAX_SECONDS ...
#   BENCH_WITHDRAWALS_B_SMALL [2000]  ... else this many
#   BENCH_B_MAX_SECONDS  [20]
#   BENCH_WITHDRAWALS_C  [2000]   withdrawals for pass (c)
#   BENCH_DELIVERIES     [10000]  webhook deliveries for the notifier pass (d)
#   BENCH_KEEP           [0]      1: keep the temporary directory (logs, db)
#   BENCH_BASELINE       [before API keys]  the git revision measured beside
#                                 HEAD; `none` skips it. Built once into
#                                 .build-bench-baseline/ (release) and kept
# Every WALLET_* variable of the caller's environment is ignored: a stray
# WALLET_SYNCHRONOUS=NORMAL or WALLET_BANK_TIMEOUT_MS would silently change
# what the figures mean.

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

DURATION=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-5}
ROUND_DURATION=${BENCH_ROUND_DURATION:-3}
WALLETS=${BENCH_WALLETS:-1000}
WITHDRAWALS_A=${BENCH_WITHDRAWALS_A:-10000}
WITHDRAWALS_B=${BENCH_WITHDRAWALS_B:-10000}
WITHDRAWALS_B_SMALL=${BENCH_WITHDRAWALS_B_SMALL:-2000}
B_MAX_SECONDS=${BENCH_B_MAX_SECONDS:-20}
WITHDRAWALS_C=${BENCH_WITHDRAWALS_C:-2000}
DELIVERIES=${BENCH_DELIVERIES:-10000}
KEEP=${BENCH_KEEP:-0}
# The baseline: by default the parent of the commit that added API keys.
BASELINE=${BENCH_BASELINE:-$(git -C "$(dirname -- "${BASH_SOURCE[0]}")/.." log --diff-filter=A --format=%H -- Sources/WalletDomain/APIKey.swift 2>/dev/null | tail -n 1)^}
# The stack's API key, in every request (report.lua and curl below).
API_KEY="wsk_$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
export BENCH_API_KEY=$API_KEY
# Fixed by the issues: the processor's calls in flight and the bank's workers.
readonly CONCURRENCY_B=16 WORKERS_B=16 CONCURRENCY_C=64 WORKERS_C=64
readonly MODE_C="random 10 1000"
# Mode (c) answers after 1 s: the ideal pass takes N / 64 × 1 s (the issue's
# ideal, 31.25 s for 2,000; whole rounds would make it 32 s).
readonly DELAY_C_MS=1000

# --- Output helpers -------------------------------------------------------------

log() { printf 'bench: %s\n' "$*" >&2; }
warn() { printf 'bench: warning: %s\n' "$*" >&2; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

for var in DURATION WARMUP ROUNDS ROUND_DURATION WALLETS WITHDRAWALS_A WITHDRAWALS_B WITHDRAWALS_B_SMALL B_MAX_SECONDS WITHDRAWALS_C; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$var must be a positive whole number, got '${!var}'"
done

# Forget the caller's WALLET_* settings (see the header); each command below
# gets exactly the ones it needs.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep '^WALLET_' || true)
# Loopback must never go through a proxy from the environment (curl here,
# libcurl in the processor). wrk ignores proxies.
export no_proxy="127.0.0.1,localhost,::1" NO_PROXY="127.0.0.1,localhost,::1"

# --- Tools ----------------------------------------------------------------------------

command -v wrk >/dev/null || die "wrk not found; run 'make deps-bench' (Debian package wrk)"
command -v curl >/dev/null || die "curl not found; run 'make deps'"
command -v swift >/dev/null || die "swift not found"
# GNU time gives the peak RSS of the whole pass from the kernel's own
# accounting (getrusage). Without it the pass's VmHWM is polled instead.
TIME_BIN=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
    TIME_BIN=/usr/bin/time
else
    warn "/usr/bin/time (Debian package time) not found: polling the processor's VmHWM instead"
fi

# --- Cleanup ---------------------------------------------------------------------------

TMP="" STACK_PID="" CHILD_PID="" MY_FCGI_PID="" RUN_DIR="" HTTP_PORT="" BANK_PORT="" BASE_STACK_PID=""
FAILED_RUN=0

# kill_tree PID: SIGTERM to PID and its direct children (the processor under
# /usr/bin/time: GNU time does not pass SIGTERM on), found before the parent
# goes, then waits for PID.
kill_tree() {
    local pid=$1 kids
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
    kill -s TERM "$pid" 2>/dev/null || true
    for kid in $kids; do kill -s TERM "$kid" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

# stop_stack: SIGTERM to stack.sh, which stops nginx, fcgiwrap (and its
# children) and the responder named in wallet-fcgi.pid (ours, after a
# restart), then exits 0; wait for it. Then make sure our own responder is
# gone too, in case stack.sh could not stop it.
stop_stack() {
    local rc=0 deadline
    if [[ -n $STACK_PID ]]; then
        if alive "$STACK_PID"; then kill -s TERM "$STACK_PID" 2>/dev/null || true; fi
        wait "$STACK_PID" 2>/dev/null || rc=$?
        ((rc == 0)) || warn "stack.sh (pid $STACK_PID) exited with status $rc; see $TMP/stack-*.log"
        STACK_PID=""
    fi
    if [[ -n $MY_FCGI_PID ]]; then
        if alive "$MY_FCGI_PID"; then
            warn "the restarted responder (pid $MY_FCGI_PID) outlived the stack: stopping it"
            kill -s TERM "$MY_FCGI_PID" 2>/dev/null || true
            deadline=$(($(now_us) + 10000000))
            while alive "$MY_FCGI_PID" && (($(now_us) < deadline)); do sleep 0.05; done
            if alive "$MY_FCGI_PID"; then kill -s KILL "$MY_FCGI_PID" 2>/dev/null || true; fi
            rc=1
        fi
        wait "$MY_FCGI_PID" 2>/dev/null || true
        MY_FCGI_PID=""
    fi
    return "$rc"
}

# stop_baseline: stops the baseline's stack (its responder was never
# replaced, so only stack.sh's own stop is needed), leaving stack 1 alone.
stop_baseline() {
    local rc=0
    [[ -n $BASE_STACK_PID ]] || return 0
    if alive "$BASE_STACK_PID"; then kill -s TERM "$BASE_STACK_PID" 2>/dev/null || true; fi
    wait "$BASE_STACK_PID" 2>/dev/null || rc=$?
    ((rc == 0)) || warn "the baseline's stack.sh (pid $BASE_STACK_PID) exited with status $rc; see $TMP/stack-baseline.log"
    BASE_STACK_PID=""
    return "$rc"
}

cleanup() {
    local rc=$?
    trap '' INT TERM
    trap - EXIT
    if [[ -n $CHILD_PID ]]; then kill_tree "$CHILD_PID"; CHILD_PID=""; fi
    stop_stack || rc=1
    stop_baseline || rc=1
    # Nothing may be left behind (a report, not a kill by name).
    report_leftovers "$TMP" || rc=1
    # Keep the evidence of a failure (not of an interrupted run).
    if ((KEEP)) || ((FAILED_RUN)) || ((rc != 0 && rc != 130 && rc != 143)); then
        [[ -z $TMP ]] || log "kept $TMP (logs, database)"
    elif [[ -n $TMP ]]; then
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
trap 'FAILED_RUN=1; log "command failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR

# run_child [-o FILE] [-e FILE] COMMAND...: runs COMMAND in the background
# (stdout to FILE with -o, stderr with -e) and waits for it, so that a
# signal reaches our trap at once (bash defers traps while a foreground
# child runs) and the trap knows what to stop. Returns its status. The
# redirections apply to the child only: put on the call of this function
# they would also catch what the trap prints if a signal comes meanwhile.
run_child() {
    local out=/dev/null err=/dev/null redirect_out=0 redirect_err=0 rc=0
    while (($#)); do
        case $1 in
        -o) out=$2 redirect_out=1 ;;
        -e) err=$2 redirect_err=1 ;;
        *) break ;;
        esac
        shift 2
    done
    if ((redirect_out && redirect_err)); then
        "$@" </dev/null >"$out" 2>"$err" &
    elif ((redirect_out)); then
        "$@" </dev/null >"$out" &
    elif ((redirect_err)); then
        "$@" </dev/null 2>"$err" &
    else
        "$@" </dev/null &
    fi
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# --- Build ------------------------------------------------------------------------------

# A short path: the run dir holds unix sockets (108 bytes at most). 0755:
# nginx workers run as `nobody` when we are root and must reach the sockets.
TMP=$(mktemp -d /tmp/wallet-bench.XXXXXX)
chmod 0755 "$TMP"
DB=$TMP/wallet.db
log "temporary directory $TMP"

cd "$REPO"
log "building release binaries (swift build -c release --static-swift-stdlib, like make release; log $TMP/build.log)"
if ! run_child -o "$TMP/build.log" -e "$TMP/build.log.err" swift build -c release --static-swift-stdlib; then
    cat "$TMP/build.log.err" >>"$TMP/build.log"
    tail -n 20 "$TMP/build.log" >&2
    die "swift build -c release --static-swift-stdlib failed"
fi
BIN_DIR=$(swift build -c release --static-swift-stdlib --show-bin-path)
for exe in wallet-fcgi wallet-processor walletctl; do
    [[ -x $BIN_DIR/$exe ]] || die "$BIN_DIR/$exe missing after the build"
done

# The baseline's tree (git archive of BASELINE, so that its own stack.sh
# runs its own binaries) and its release build, kept between runs in
# .build-bench-baseline/ and rebuilt only when BASELINE names another commit.
BASE_DIR="" BASE_BIN="" BASE_COMMIT=""
if [[ $BASELINE != none ]]; then
    BASE_COMMIT=$(git -C "$REPO" rev-parse --verify --quiet "$BASELINE^{commit}") || die "BENCH_BASELINE $BASELINE is not a commit"
    BASE_DIR=$REPO/.build-bench-baseline/src
    if [[ $(cat "$REPO/.build-bench-baseline/commit" 2>/dev/null) != "$BASE_COMMIT" ]]; then
        log "extracting the baseline ${BASE_COMMIT:0:10} into $BASE_DIR"
        rm -rf -- "$BASE_DIR"
        mkdir -p "$BASE_DIR"
        git -C "$REPO" archive "$BASE_COMMIT" | tar -x -C "$BASE_DIR"
        printf '%s\n' "$BASE_COMMIT" >"$REPO/.build-bench-baseline/commit"
    fi
    log "building the baseline's release binaries (log $TMP/build-baseline.log)"
    if ! run_child -o "$TMP/build-baseline.log" -e "$TMP/build-baseline.log.err" \
        swift build -c release --static-swift-stdlib --package-path "$BASE_DIR" --scratch-path "$REPO/.build-bench-baseline/build"; then
        cat "$TMP/build-baseline.log.err" >>"$TMP/build-baseline.log"
        tail -n 20 "$TMP/build-baseline.log" >&2
        die "the baseline's build failed"
    fi
    BASE_BIN=$(swift build -c release --static-swift-stdlib --package-path "$BASE_DIR" --scratch-path "$REPO/.build-bench-baseline/build" --show-bin-path)
fi

# --- The stack -----------------------------------------------------------------------------

# start_stack NAME BANK_WORKERS BANK_MODE [TREE BIN_DIR DB]: starts
# TREE/scripts/stack.sh --no-processor (TREE: this repository unless given)
# in $TMP/run-NAME on the shared database (or DB) and waits for its
# `stack ready` line. Sets STACK_PID, RUN_DIR, HTTP_PORT, BANK_PORT. The
# stack's development API key is ours; its rate limits are off.
start_stack() {
    local name=$1 workers=$2 mode=$3 tree=${4:-$REPO} bin=${5:-$BIN_DIR} db=${6:-$DB} out deadline no_notifier=()
    # A tree from before the notifier has no notifier loop to turn off.
    if grep -q -- '--no-notifier' "$tree/scripts/stack.sh"; then no_notifier=(--no-notifier); fi
    RUN_DIR=$TMP/run-$name
    free_port HTTP_PORT
    free_port BANK_PORT
    out=$TMP/stack-$name.out
    log "starting stack '$name' (wallet :$HTTP_PORT, bank :$BANK_PORT, $workers bank workers, bank mode '$mode')"
    env WALLET_RUN_DIR="$RUN_DIR" WALLET_HTTP_PORT="$HTTP_PORT" WALLET_BANK_PORT="$BANK_PORT" \
        WALLET_DB="$db" WALLET_BIN_DIR="$bin" WALLET_BANK_MODE="$mode" \
        WALLET_BANK_WORKERS="$workers" WALLET_ACCESS_LOG=off \
        WALLET_DEV_API_KEY="$API_KEY" WALLET_RATE_LIMIT=0 \
        bash "$tree/scripts/stack.sh" --no-processor "${no_notifier[@]}" </dev/null >"$out" 2>"$TMP/stack-$name.log" &
    STACK_PID=$!
    deadline=$(($(now_us) + 60000000))
    until grep -q '^stack ready' "$out" 2>/dev/null; do
        if ! alive "$STACK_PID"; then
            tail -n 20 "$TMP/stack-$name.log" >&2 || true
            die "stack.sh exited before it was ready"
        fi
        (($(now_us) < deadline)) || die "stack.sh not ready after 60 s; see $TMP/stack-$name.log"
        sleep 0.1
    done
}

healthz_ok() {
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null
}

# restart_responder [VAR=VALUE...]: replaces the responder, as the
# integration tests do: SIGTERM to the one in wallet-fcgi.pid, wait until it
# is gone (it unlinks only its own socket), start a new one with the given
# extra environment on the same socket path and database, record it in
# wallet-fcgi.pid (where stack.sh's stop finds it) and wait for /healthz.
restart_responder() {
    local old deadline
    old=$(read_pid_file "$RUN_DIR/wallet-fcgi.pid")
    [[ -n $old ]] || die "no responder pid in $RUN_DIR/wallet-fcgi.pid"
    kill -s TERM "$old" 2>/dev/null || true
    deadline=$(($(now_us) + 15000000))
    while alive "$old"; do
        (($(now_us) < deadline)) || die "the responder (pid $old) did not stop within 15 s"
        sleep 0.05
    done
    # Our own previous replacement: reap it.
    if [[ $old == "$MY_FCGI_PID" ]]; then wait "$old" 2>/dev/null || true; fi
    # What stack.sh gives the responder it starts: the development webhook settings.
    env WALLET_DB="$DB" WALLET_WEBHOOK_ALLOW_HTTP=1 WALLET_WEBHOOK_KEY_FILE="$RUN_DIR/webhook-master-key" "$@" \
        "$BIN_DIR/wallet-fcgi" --socket "$RUN_DIR/fcgi.sock" --socket-mode 0660 \
        </dev/null >>"$RUN_DIR/wallet-fcgi.log" 2>&1 &
    MY_FCGI_PID=$!
    printf '%s\n' "$MY_FCGI_PID" >"$RUN_DIR/wallet-fcgi.pid.new"
    mv -f "$RUN_DIR/wallet-fcgi.pid.new" "$RUN_DIR/wallet-fcgi.pid"
    deadline=$(($(now_us) + 15000000))
    until healthz_ok; do
        alive "$MY_FCGI_PID" || die "the restarted responder exited; see $RUN_DIR/wallet-fcgi.log"
        (($(now_us) < deadline)) || die "the restarted responder did not answer /healthz within 15 s"
        sleep 0.05
    done
}

# vm_hwm PID: the peak resident set size of a running process, in kB.
vm_hwm() {
    local key value _
    while read -r key value _; do
        if [[ $key == VmHWM: ]]; then
            printf '%s\n' "$value"
            return 0
        fi
    done <"/proc/$1/status"
    return 1
}

# --- wrk ----------------------------------------------------------------------------------

# Results, by key: requests/s, p50 and p99 in ms, errors (socket errors of
# any kind plus HTTP >= 400, as wrk counts them).
declare -A RPS=() P50=() P99=() ERRORS=() REQUESTS=() CONNS=()

# bench KEY CONNS URL SCRIPT [SCRIPT_ARGS...]: a warm-up run, then the
# measured one; its summary is the BENCH_RESULT line that report.lua's done()
# prints. 32 connections on 2 threads, 1 connection on 1. Script arguments
# (post-pay.lua's key prefix) get -warm/-run appended, so that the warm-up's
# keys never come back in the measured run.
bench() {
    local key=$1 conns=$2 url=$3 script=$4 threads=2 out line reqs dur errs field seconds=${RUN_SECONDS:-$DURATION}
    shift 4
    local args=()
    ((conns > 1)) || threads=1
    out=$TMP/wrk-$key.txt
    log "wrk $key: -t$threads -c$conns, ${WARMUP}s warm-up + ${seconds}s, $url"
    if (($#)); then args=(-- "$1-warm" "${@:2}"); fi
    run_child -o "$out.warmup" wrk -t"$threads" -c"$conns" -d"${WARMUP}s" -s "$LUA_DIR/$script" "$url" "${args[@]}" ||
        die "wrk warm-up for $key failed; see $out.warmup"
    if (($#)); then args=(-- "$1-run" "${@:2}"); fi
    run_child -o "$out" wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency -s "$LUA_DIR/$script" "$url" "${args[@]}" ||
        die "wrk for $key failed; see $out"
    line=$(grep -m1 '^BENCH_RESULT ' "$out") || die "wrk printed no summary for $key; see $out"
    reqs=$(json_field requests "$line")
    dur=$(json_field duration_us "$line")
    ((reqs > 0 && dur > 0)) || die "wrk made no request for $key; see $out"
    errs=0
    for field in connect_errors read_errors write_errors status_errors timeouts; do
        errs=$((errs + $(json_field "$field" "$line")))
    done
    REQUESTS[$key]=$reqs
    CONNS[$key]=$conns
    RPS[$key]=$(calc "$reqs * 1000000 / $dur")
    P50[$key]=$(calc "$(json_field p50_us "$line") / 1000")
    P99[$key]=$(calc "$(json_field p99_us "$line") / 1000")
    ERRORS[$key]=$errs
    log "  $(thousands "${RPS[$key]}") req/s, p50 $(printf '%.2f' "${P50[$key]}") ms," \
        "p99 $(printf '%.2f' "${P99[$key]}") ms, $errs errors of $reqs"
}

# median_round CEILING FIGURE: after ROUNDS rounds benched as CEILING_rN and
# FIGURE_rN, gives CEILING and FIGURE the req/s and latencies of the round
# whose FIGURE/CEILING ratio is the median, and the requests and errors of
# all rounds. Every round's ratio goes to ROUND_RATIOS[FIGURE].
declare -A ROUND_RATIOS=()
median_round() {
    local ceil=$1 fig=$2 r chosen key ratios=()
    for ((r = 1; r <= ROUNDS; r++)); do
        ratios+=("$(pct "${RPS[${fig}_r$r]}" "${RPS[${ceil}_r$r]}")")
    done
    chosen=$(for ((r = 1; r <= ROUNDS; r++)); do
        printf '%s %s\n' "$(calc "${RPS[${fig}_r$r]} / ${RPS[${ceil}_r$r]}")" "$r"
    done | sort -g | sed -n "$(((ROUNDS + 1) / 2))p" | cut -d' ' -f2)
    for key in "$ceil" "$fig"; do
        RPS[$key]=${RPS[${key}_r$chosen]}
        P50[$key]=${P50[${key}_r$chosen]}
        P99[$key]=${P99[${key}_r$chosen]}
        CONNS[$key]=${CONNS[${key}_r$chosen]}
        REQUESTS[$key]=0
        ERRORS[$key]=0
        for ((r = 1; r <= ROUNDS; r++)); do
            REQUESTS[$key]=$((REQUESTS[$key] + REQUESTS[${key}_r$r]))
            ERRORS[$key]=$((ERRORS[$key] + ERRORS[${key}_r$r]))
        done
    done
    ROUND_RATIOS[$fig]=$(IFS=,; printf '%s' "${ratios[*]}" | sed 's/,/, /g')
    log "  $fig / $ceil by round: ${ROUND_RATIOS[$fig]}; the median is round $chosen"
}

# median_ratio FIGURE BASE: the median over the rounds of FIGURE_rN /
# BASE_rN, in MEDIAN_RATIO[FIGURE] (a fraction), with every round's ratio in
# BASE_RATIOS[FIGURE] and BASE's median req/s in BASE_RPS[FIGURE]. Leaves
# FIGURE's own figures to median_round.
declare -A MEDIAN_RATIO=() BASE_RATIOS=() BASE_RPS=()
median_ratio() {
    local fig=$1 base=$2 r ratios=()
    for ((r = 1; r <= ROUNDS; r++)); do ratios+=("$(pct "${RPS[${fig}_r$r]}" "${RPS[${base}_r$r]}")"); done
    MEDIAN_RATIO[$fig]=$(for ((r = 1; r <= ROUNDS; r++)); do calc "${RPS[${fig}_r$r]} / ${RPS[${base}_r$r]}"; echo; done |
        sort -g | sed -n "$(((ROUNDS + 1) / 2))p")
    BASE_RPS[$fig]=$(for ((r = 1; r <= ROUNDS; r++)); do printf '%s\n' "${RPS[${base}_r$r]}"; done | sort -g | sed -n "$(((ROUNDS + 1) / 2))p")
    BASE_RATIOS[$fig]=$(IFS=,; printf '%s' "${ratios[*]}" | sed 's/,/, /g')
    log "  $fig / $base by round: ${BASE_RATIOS[$fig]}; median $(pct "${MEDIAN_RATIO[$fig]}" 1)"
}

# --- Fixtures through the API ----------------------------------------------------------------

# curl_many CONFIG BODY: runs the requests of a curl config file (url/output
# lines) 32 at a time over kept-alive connections, every one a POST of BODY,
# and prints each HTTP status on its own line. One curl process instead of
# thousands: a parallel client fast enough that the setup stays seconds.
curl_many() {
    curl --no-progress-meter --parallel --parallel-max 32 --max-time 30 \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $API_KEY" --data-binary "$2" \
        -w '%{http_code}\n' --config "$1"
}

# create_wallets N FILE: N new wallets, their UUIDs in FILE.
create_wallets() {
    local n=$1 file=$2 cfg=$TMP/wallets.curl i got
    : >"$cfg"
    for ((i = 0; i < n; i++)); do
        printf 'url = "http://127.0.0.1:%s/wallets/"\n' "$HTTP_PORT"
    done >"$cfg"
    # The bodies (no output file: stdout) carry the UUIDs. Concurrent answers
    # may end up on one line, so the UUIDs are picked out with grep -o.
    curl_many "$cfg" '{}' >"$TMP/wallets.out" || die "creating wallets failed"
    grep -oE '"uuid": "[0-9a-f-]{36}"' "$TMP/wallets.out" | grep -oE '[0-9a-f-]{36}' >"$file" || true
    got=$(wc -l <"$file")
    ((got == n)) || die "asked for $n wallets, the API created $got; see $TMP/wallets.out"
}

# post_to_wallets NAME N PATH BODY EXPECTED_STATUS: N POSTs of BODY to
# /wallets/UUID/PATH, spread round-robin over the wallets in $WALLET_FILE;
# every answer must have EXPECTED_STATUS.
post_to_wallets() {
    local name=$1 n=$2 path=$3 body=$4 expected=$5 cfg=$TMP/$1.curl i
    local -a wallets
    mapfile -t wallets <"$WALLET_FILE"
    for ((i = 0; i < n; i++)); do
        printf 'url = "http://127.0.0.1:%s/wallets/%s/%s"\noutput = "/dev/null"\n' \
            "$HTTP_PORT" "${wallets[i % ${#wallets[@]}]}" "$path"
    done >"$cfg"
    send_posts "$name" "$n" "$cfg" "$body" "$expected"
}

# send_posts NAME N CFG BODY EXPECTED_STATUS: the N POSTs of curl config CFG;
# every answer must have EXPECTED_STATUS.
send_posts() {
    local name=$1 n=$2 cfg=$3 body=$4 expected=$5 ok
    curl_many "$cfg" "$body" >"$TMP/$name.status" || die "$name: curl failed"
    ok=$(grep -c "^$expected\$" "$TMP/$name.status" || true)
    if ((ok != n)); then
        sort "$TMP/$name.status" | uniq -c >&2
        die "$name: $ok of $n requests answered $expected"
    fi
}

# post_n NAME N URL BODY EXPECTED_STATUS: N POSTs of BODY to URL (any
# stack: the baseline ignores the key); every answer must have
# EXPECTED_STATUS.
post_n() {
    local name=$1 n=$2 url=$3 body=$4 expected=$5 cfg=$TMP/$1.curl i
    ((n > 0)) || return 0
    for ((i = 0; i < n; i++)); do
        printf 'url = "%s"\noutput = "/dev/null"\n' "$url"
    done >"$cfg"
    send_posts "$name" "$n" "$cfg" "$body" "$expected"
}

# db_count DB WHAT: how many wallets, deposits or withdrawals DB holds.
db_count() {
    local sql
    case $2 in
    wallets) sql="SELECT count(*) FROM wallets" ;;
    deposits) sql="SELECT count(*) FROM transactions WHERE type = 'DEPOSIT'" ;;
    withdrawals) sql="SELECT count(*) FROM transactions WHERE type = 'WITHDRAWAL'" ;;
    *) die "db_count: unknown $2" ;;
    esac
    sqlite3 -cmd '.timeout 10000' "$1" "$sql" || die "cannot count $2 in $1"
}

# same_content: as many wallets, deposits and withdrawals in the baseline's
# database as in HEAD's, through the API of whichever stack has fewer (new
# wallets; deposits of 1 and withdrawals due in 2099 on the wallet its
# deposit series uses), so that both series of a round start from tables of
# the same size.
same_content() {
    local what head base body expected path
    for what in wallets deposits withdrawals; do
        head=$(db_count "$DB" "$what")
        base=$(db_count "$TMP/baseline.db" "$what")
        case $what in
        wallets) path="" body='{}' expected=201 ;;
        deposits) path=deposit body='{"amount": 1}' expected=200 ;;
        withdrawals) path=withdraw body='{"amount": 1, "scheduled_for": "2099-01-01T00:00:00Z"}' expected=201 ;;
        esac
        if ((head > base)); then
            log "  the baseline gets $((head - base)) more $what (HEAD $head, baseline $base)"
            post_n "same-base-$what" "$((head - base))" "$BASE_URL/${path:+$BASE_WALLET/$path}" "$body" "$expected"
        elif ((base > head)); then
            log "  HEAD gets $((base - head)) more $what (HEAD $head, baseline $base)"
            post_n "same-head-$what" "$((base - head))" "$WALLET_URL/${path:+$WALLET/$path}" "$body" "$expected"
        fi
    done
}

# create_due_withdrawals NAME N: N withdrawals of 1, due at once (no
# scheduled_for), through the API.
create_due_withdrawals() {
    local t0
    t0=$(now_us)
    post_to_wallets "$1" "$2" withdraw '{"amount": 1}' 201
    log "  created $(thousands "$2") due withdrawals in $(printf '%.1f' "$(calc "($(now_us) - $t0) / 1000000")") s"
}

# --- The processor ----------------------------------------------------------------------------

declare -A PASS_N=() PASS_SECONDS=() PASS_RATE=() PASS_RSS_KB=() PASS_COMPLETED=() PASS_FAILED=() PASS_RETRIED=() PASS_CLAIMED=()

# processor_pass KEY N BANK_URL CONCURRENCY: one wallet-processor pass, timed
# from start to exit, with its peak RSS. Its log (one JSON line per
# withdrawal, the summary last) goes to a file; the summary line gives the
# counts.
processor_pass() {
    local key=$1 n=$2 url=$3 conc=$4 log_file=$TMP/processor-$1.log rss_file=$TMP/processor-$1.rss
    local t0 t1 rc=0 line hwm peak=0
    local -a cmd=(env WALLET_DB="$DB" WALLET_BANK_URL="$url" WALLET_BANK_CONCURRENCY="$conc" "$BIN_DIR/wallet-processor")
    log "processor pass $key: $(thousands "$n") withdrawals, concurrency $conc, bank $url"
    t0=$(now_us)
    if [[ -n $TIME_BIN ]]; then
        run_child -e "$log_file" "$TIME_BIN" -f %M -o "$rss_file" "${cmd[@]}" || rc=$?
        t1=$(now_us)
        read -r peak <"$rss_file" || true
    else
        # No GNU time: poll VmHWM, which only grows, until the pass exits.
        "${cmd[@]}" </dev/null 2>"$log_file" &
        CHILD_PID=$!
        while alive "$CHILD_PID"; do
            if hwm=$(vm_hwm "$CHILD_PID" 2>/dev/null); then peak=$hwm; fi
            sleep 0.02
        done
        wait "$CHILD_PID" || rc=$?
        t1=$(now_us)
        CHILD_PID=""
    fi
    ((rc == 0)) || { tail -n 5 "$log_file" >&2; die "wallet-processor pass $key exited with status $rc"; }
    line=$(grep '"event": "pass"' "$log_file" | tail -n 1) || die "no pass summary in $log_file"
    PASS_N[$key]=$n
    PASS_CLAIMED[$key]=$(json_field claimed "$line")
    PASS_COMPLETED[$key]=$(json_field completed "$line")
    PASS_FAILED[$key]=$(json_field failed "$line")
    PASS_RETRIED[$key]=$(json_field retried "$line")
    PASS_SECONDS[$key]=$(calc "($t1 - $t0) / 1000000")
    PASS_RATE[$key]=$(calc "$n / ${PASS_SECONDS[$key]}")
    PASS_RSS_KB[$key]=${peak:-0}
    # duration_ms is the pass alone, without the process start and the
    # database open: the difference shows what the wall time includes.
    log "  $(thousands "${PASS_RATE[$key]}") withdrawals/s: $(printf '%.2f' "${PASS_SECONDS[$key]}") s" \
        "(the pass itself: $(printf '%.2f' "$(calc "$(json_field duration_ms "$line") / 1000")") s), claimed ${PASS_CLAIMED[$key]}," \
        "completed ${PASS_COMPLETED[$key]}, failed ${PASS_FAILED[$key]}, retried ${PASS_RETRIED[$key]}," \
        "peak RSS $((PASS_RSS_KB[$key] / 1024)) MB"
    ((PASS_CLAIMED[$key] == n)) || warn "pass $key claimed ${PASS_CLAIMED[$key]} withdrawals, expected $n"
}

# --- The notifier ------------------------------------------------------------------------------

# notifier_pass N RECEIVER_URL: one webhook endpoint for deposit.completed at
# RECEIVER_URL, N deposits through the API, then one wallet-notifier pass,
# timed from start to exit (fan-out included). Sets NOTIFY_SECONDS,
# NOTIFY_RATE, NOTIFY_DELIVERED.
notifier_pass() {
    local n=$1 receiver=$2 log_file=$TMP/notifier.log t0 t1 rc=0 line status
    status=$(curl --no-progress-meter -o "$TMP/endpoint.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $API_KEY" \
        --data-binary "{\"url\": \"$receiver\", \"events\": [\"deposit.completed\"]}" \
        "http://127.0.0.1:$HTTP_PORT/webhook-endpoints") || die "creating the webhook endpoint failed"
    [[ $status == 201 ]] || die "creating the webhook endpoint answered $status: $(cat "$TMP/endpoint.json")"
    log "notifier pass: $(thousands "$n") deposits, each event delivered to $receiver"
    post_to_wallets deliver "$n" deposit '{"amount": 1}' 200
    t0=$(now_us)
    run_child -e "$log_file" env WALLET_DB="$DB" WALLET_WEBHOOK_KEY_FILE="$RUN_DIR/webhook-master-key" \
        WALLET_WEBHOOK_ALLOW_HTTP=1 "$BIN_DIR/wallet-notifier" || rc=$?
    t1=$(now_us)
    ((rc == 0)) || { tail -n 5 "$log_file" >&2; die "wallet-notifier exited with status $rc"; }
    line=$(grep '"event": "pass"' "$log_file" | tail -n 1) || die "no pass summary in $log_file"
    NOTIFY_DELIVERED=$(json_field delivered "$line")
    NOTIFY_SECONDS=$(calc "($t1 - $t0) / 1000000")
    NOTIFY_RATE=$(calc "$NOTIFY_DELIVERED / $NOTIFY_SECONDS")
    log "  $(thousands "$NOTIFY_RATE") deliveries/s: $NOTIFY_DELIVERED in $(printf '%.2f' "$NOTIFY_SECONDS") s"
    ((NOTIFY_DELIVERED == n)) || warn "the pass delivered $NOTIFY_DELIVERED, expected $n"
}

# ==============================================================================================
# The run
# ==============================================================================================

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- The baseline's stack, beside stack 1 for the rounds ----------------------------------------

if [[ -n $BASE_BIN ]]; then
    start_stack baseline 2 success "$BASE_DIR" "$BASE_BIN" "$TMP/baseline.db"
    BASE_STACK_PID=$STACK_PID STACK_PID=""
    BASE_URL="http://127.0.0.1:$HTTP_PORT/wallets" BASE_HTTP_PORT=$HTTP_PORT
    BASE_WALLET=$(curl -fsS -X POST -H "Authorization: Bearer $API_KEY" "$BASE_URL/" | grep -oE '[0-9a-f-]{36}' | head -n 1) ||
        die "the baseline did not create a wallet"
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $API_KEY" \
        --data-binary '{"amount": 1000000}' "$BASE_URL/$BASE_WALLET/deposit" || die "the baseline refused a deposit"
fi

# --- Stack 1: the API, and passes (a) and (b) ---------------------------------------------------

start_stack api "$WORKERS_B" success
WALLET_FILE=$TMP/wallets.txt
WALLET_URL="http://127.0.0.1:$HTTP_PORT/wallets"
BANK_URL="http://127.0.0.1:$BANK_PORT"

# The HTTP ceiling: the same nginx answering from memory (at 32 connections
# in the rounds with GET wallet below).
bench static1 1 "$BANK_URL/static" report.lua

# Wallets for everything below: funded, so that every due withdrawal can
# be paid; 1,000,000 each covers far more than the passes take.
log "creating $(thousands "$WALLETS") funded wallets through the API"
create_wallets "$WALLETS" "$WALLET_FILE"
post_to_wallets fund "$WALLETS" deposit '{"amount": 1000000}' 200
read -r WALLET <"$WALLET_FILE"
if [[ -n $BASE_BIN ]]; then
    # The same funded wallets in the baseline's database (same_content, below).
    log "creating $(thousands "$WALLETS") funded wallets in the baseline's stack"
    HTTP_PORT=$BASE_HTTP_PORT create_wallets "$WALLETS" "$TMP/base-wallets.txt"
    HTTP_PORT=$BASE_HTTP_PORT WALLET_FILE=$TMP/base-wallets.txt post_to_wallets base-fund "$WALLETS" deposit '{"amount": 1000000}' 200
fi

for ((round = 1; round <= ROUNDS; round++)); do
    RUN_SECONDS=$ROUND_DURATION bench "static32_r$round" 32 "$BANK_URL/static" report.lua
    RUN_SECONDS=$ROUND_DURATION bench "get32_r$round" 32 "$WALLET_URL/$WALLET/" report.lua
    if [[ -n $BASE_BIN ]]; then RUN_SECONDS=$ROUND_DURATION bench "baseget32_r$round" 32 "$BASE_URL/$BASE_WALLET/" report.lua; fi
done
[[ -z $BASE_BIN ]] || median_ratio get32 baseget32
median_round static32 get32
bench get1 1 "$WALLET_URL/$WALLET/" report.lua
bench wallet32 32 "$WALLET_URL/" wallet.lua
bench wallet1 1 "$WALLET_URL/" wallet.lua
bench withdraw32 32 "$WALLET_URL/$WALLET/withdraw" withdraw.lua
bench withdraw1 1 "$WALLET_URL/$WALLET/withdraw" withdraw.lua
bench deposit1 1 "$WALLET_URL/$WALLET/deposit" deposit.lua
# Durable deposits against the durability ceiling: the same deposits with
# synchronous=NORMAL, the responder restarted between them (same database).
for ((round = 1; round <= ROUNDS; round++)); do
    if [[ -n $BASE_BIN ]]; then
        log "the same content in both databases before round $round"
        same_content
    fi
    RUN_SECONDS=$ROUND_DURATION bench "deposit32_r$round" 32 "$WALLET_URL/$WALLET/deposit" deposit.lua
    if [[ -n $BASE_BIN ]]; then
        RUN_SECONDS=$ROUND_DURATION bench "basedeposit32_r$round" 32 "$BASE_URL/$BASE_WALLET/deposit" deposit.lua
    fi
    if ((round == 1)); then
        # The responder's peak RSS over all the API load above (a restart
        # starts a new process).
        FCGI_PID=$(read_pid_file "$RUN_DIR/wallet-fcgi.pid")
        RESPONDER_RSS_KB=$(vm_hwm "$FCGI_PID") || die "cannot read VmHWM of the responder (pid $FCGI_PID)"
        log "responder peak RSS: $((RESPONDER_RSS_KB / 1024)) MB (VmHWM of pid $FCGI_PID)"
    fi
    log "restarting the responder with WALLET_SYNCHRONOUS=NORMAL (same database)"
    restart_responder WALLET_SYNCHRONOUS=NORMAL
    RUN_SECONDS=$ROUND_DURATION bench "normal32_r$round" 32 "$WALLET_URL/$WALLET/deposit" deposit.lua
    if ((round == ROUNDS)); then bench normal1 1 "$WALLET_URL/$WALLET/deposit" deposit.lua; fi
    log "restarting the responder with the default synchronous=FULL"
    restart_responder
done
[[ -z $BASE_BIN ]] || median_ratio deposit32 basedeposit32
median_round normal32 deposit32
if [[ -n $BASE_STACK_PID ]]; then
    log "stopping the baseline's stack"
    stop_baseline || die "stopping the baseline's stack failed"
fi

# (a) The processor's own ceiling: a bank that answers at once.
log "creating $(thousands "$WITHDRAWALS_A") due withdrawals for pass (a)"
create_due_withdrawals due-a "$WITHDRAWALS_A"
processor_pass a "$WITHDRAWALS_A" "$BANK_URL/instant" "$CONCURRENCY_B"

# (b) The bash mock bank: first its own throughput under wrk, then the pass.
bench pay16 16 "$BANK_URL/pay" post-pay.lua bench
N_B=$WITHDRAWALS_B
if ! ge "$(calc "${RPS[pay16]} * $B_MAX_SECONDS")" "$WITHDRAWALS_B"; then
    N_B=$WITHDRAWALS_B_SMALL
    log "the bank pays $(thousands "${RPS[pay16]}") req/s: $(thousands "$WITHDRAWALS_B") would take over ${B_MAX_SECONDS}s, using $(thousands "$N_B") for pass (b)"
fi
log "creating $(thousands "$N_B") due withdrawals for pass (b)"
create_due_withdrawals due-b "$N_B"
processor_pass b "$N_B" "$BANK_URL/pay" "$CONCURRENCY_B"

# (d) The notifier against an instant receiver: the same nginx's `return 200`.
notifier_pass "$DELIVERIES" "$BANK_URL/static"

log "stopping stack 'api'"
stop_stack || die "stopping stack 'api' failed"

# --- Stack 2: pass (c), a slow and unreliable bank with 64 workers ------------------------------

start_stack slow "$WORKERS_C" "$MODE_C"
BANK_URL="http://127.0.0.1:$BANK_PORT"
log "creating $(thousands "$WITHDRAWALS_C") due withdrawals for pass (c)"
create_due_withdrawals due-c "$WITHDRAWALS_C"
processor_pass c "$WITHDRAWALS_C" "$BANK_URL/pay" "$CONCURRENCY_C"
log "stopping stack 'slow'"
stop_stack || die "stopping stack 'slow' failed"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ==============================================================================================
# The table
# ==============================================================================================

ms() { printf '%.2f' "$1"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
yesno() { if "$@"; then printf 'yes'; else printf '**no**'; fi; }

ROWS=()
# row MEASUREMENT CONNS RESULT P50 P99 ERRORS CEILING RATIO GOAL MET
row() {
    ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 | $9 | ${10} |")
}
# wrk_row KEY LABEL CEILING_KEY CEILING_LABEL GOAL MET
wrk_row() {
    local key=$1 ratio="—"
    [[ -z $3 ]] || ratio=$(pct "${RPS[$key]}" "${RPS[$3]}")
    row "$2" "${CONNS[$key]}" "$(thousands "${RPS[$key]}") req/s" "$(ms "${P50[$key]}")" "$(ms "${P99[$key]}")" \
        "${ERRORS[$key]} / $(thousands "${REQUESTS[$key]}")" "$4" "$ratio" "$5" "$6"
}

get_goal() { ge "$(calc "${RPS[get32]} / ${RPS[static32]}")" 0.20 && ge 5 "${P99[get32]}"; }
deposit_goal() { ge "$(calc "${RPS[deposit32]} / ${RPS[normal32]}")" 0.80 && ge 15 "${P99[deposit32]}"; }
GET_MET=$(yesno get_goal)
DEPOSIT_MET=$(yesno deposit_goal)

wrk_row static32 'nginx `return 200` (HTTP ceiling)' "" "—" "—" "—"
wrk_row static1 'nginx `return 200` (HTTP ceiling)' "" "—" "—" "—"
wrk_row get32 'GET wallet' static32 "static @32" "≥ 20 %, p99 ≤ 5 ms" "$GET_MET"
if [[ -n $BASE_BIN ]]; then
    row "GET wallet, HEAD over the baseline \`${BASE_COMMIT:0:10}\` (median of the rounds' ratios)" 32 \
        "$(thousands "$(calc "${MEDIAN_RATIO[get32]} * ${BASE_RPS[get32]}")") req/s" "—" "—" "—" \
        "baseline $(thousands "${BASE_RPS[get32]}") req/s" "$(pct "${MEDIAN_RATIO[get32]}" 1)" "≥ 90 %" \
        "$(yesno ge "${MEDIAN_RATIO[get32]}" 0.90)"
fi
wrk_row get1 'GET wallet' static1 "static @1" "—" "—"
wrk_row wallet32 'POST wallet (empty body)' static32 "static @32" "—" "—"
wrk_row wallet1 'POST wallet (empty body)' static1 "static @1" "—" "—"
wrk_row withdraw32 'POST withdraw (due 2099)' normal32 "deposit NORMAL @32" "—" "—"
wrk_row withdraw1 'POST withdraw (due 2099)' normal1 "deposit NORMAL @1" "—" "—"
wrk_row deposit32 'POST deposit (durable, FULL)' normal32 "deposit NORMAL @32" "≥ 80 %, p99 ≤ 15 ms" "$DEPOSIT_MET"
if [[ -n $BASE_BIN ]]; then
    row "POST deposit (durable), HEAD over the baseline \`${BASE_COMMIT:0:10}\` (median of the rounds' ratios)" 32 \
        "$(thousands "$(calc "${MEDIAN_RATIO[deposit32]} * ${BASE_RPS[deposit32]}")") req/s" "—" "—" "—" \
        "baseline $(thousands "${BASE_RPS[deposit32]}") req/s" "$(pct "${MEDIAN_RATIO[deposit32]}" 1)" "≥ 90 %" \
        "$(yesno ge "${MEDIAN_RATIO[deposit32]}" 0.90)"
fi
wrk_row deposit1 'POST deposit (durable, FULL)' normal1 "deposit NORMAL @1" "—" "—"
wrk_row normal32 'POST deposit, `WALLET_SYNCHRONOUS=NORMAL` (durability ceiling)' static32 "static @32" "—" "—"
wrk_row normal1 'POST deposit, `WALLET_SYNCHRONOUS=NORMAL` (durability ceiling)' static1 "static @1" "—" "—"
row "wallet-fcgi peak RSS (VmHWM after all the load above)" "—" "$(mb "$RESPONDER_RSS_KB")" "—" "—" "—" "—" "—" "≤ 30 MB" \
    "$(yesno ge 30720 "$RESPONDER_RSS_KB")"

# pass_errors KEY: withdrawals of the pass not paid in it (in mode random,
# about 10 % are expected: the bank said "failed", they are retried later).
pass_errors() {
    local key=$1
    printf '%s of %s unpaid (%s retried later, %s failed)' "$((PASS_N[$key] - PASS_COMPLETED[$key]))" \
        "$(thousands "${PASS_N[$key]}")" "${PASS_RETRIED[$key]}" "${PASS_FAILED[$key]}"
}
pass_result() {
    printf '%s withdrawals/s (%s in %s s)' "$(thousands "${PASS_RATE[$1]}")" "$(thousands "${PASS_N[$1]}")" \
        "$(printf '%.1f' "${PASS_SECONDS[$1]}")"
}
row "processor (a): bank \`/instant\`, concurrency $CONCURRENCY_B" "$CONCURRENCY_B" "$(pass_result a)" "—" "—" \
    "$(pass_errors a)" "— (its own ceiling)" "absolute" "≥ 5,000/s" "$(yesno ge "${PASS_RATE[a]}" 5000)"
wrk_row pay16 'mock bank `/pay` own throughput (wrk, mode success, new key per request)' "" "—" "—" "—"
B_LABEL="processor (b): bash mock bank \`/pay\`, success, concurrency $CONCURRENCY_B, $WORKERS_B workers"
if ((N_B != WITHDRAWALS_B)); then
    B_LABEL+=", **$(thousands "$N_B") withdrawals, not $(thousands "$WITHDRAWALS_B")** (the bank pays $(thousands "${RPS[pay16]}") req/s)"
fi
row "$B_LABEL" "$CONCURRENCY_B" "$(pass_result b)" "—" "—" "$(pass_errors b)" "bank $(thousands "${RPS[pay16]}") req/s" \
    "$(pct "${PASS_RATE[b]}" "${RPS[pay16]}")" "≥ 80 %" "$(yesno ge "$(calc "${PASS_RATE[b]} / ${RPS[pay16]}")" 0.80)"
IDEAL_C=$(awk -v n="$WITHDRAWALS_C" -v c="$CONCURRENCY_C" -v d="$DELAY_C_MS" 'BEGIN { printf "%.2f", n / c * d / 1000 }')
row "processor (c): mock bank \`random 10 1000\`, concurrency $CONCURRENCY_C, $WORKERS_C workers" "$CONCURRENCY_C" \
    "$(printf '%.1f' "${PASS_SECONDS[c]}") s ($(thousands "${PASS_RATE[c]}") withdrawals/s)" "—" "—" "$(pass_errors c)" \
    "ideal $(printf '%.1f' "$IDEAL_C") s ($(thousands "$WITHDRAWALS_C")/$CONCURRENCY_C × 1 s)" \
    "$(pct "$IDEAL_C" "${PASS_SECONDS[c]}")" "< 40 s" "$(yesno ge 40 "${PASS_SECONDS[c]}")"
row "notifier (d): one endpoint, receiver nginx \`return 200\`, in event order" "1" \
    "$(thousands "$NOTIFY_RATE") deliveries/s ($(thousands "$NOTIFY_DELIVERED") in $(printf '%.1f' "$NOTIFY_SECONDS") s)" "—" "—" \
    "$((DELIVERIES - NOTIFY_DELIVERED)) of $(thousands "$DELIVERIES") not delivered" "—" "—" "—" "—"
row "wallet-processor peak RSS (pass (a), $(thousands "$WITHDRAWALS_A") withdrawals; (b) $(mb "${PASS_RSS_KB[b]}"), (c) $(mb "${PASS_RSS_KB[c]}"))" \
    "—" "$(mb "${PASS_RSS_KB[a]}")" "—" "—" "—" "—" "—" "≤ 50 MB" "$(yesno ge 51200 "${PASS_RSS_KB[a]}")"

ELAPSED=$((SECONDS - STARTED_AT))
((ELAPSED <= 300)) || warn "the run took ${ELAPSED}s, over its 5-minute budget"
if [[ -n $TIME_BIN ]]; then RSS_SOURCE='`/usr/bin/time -f %M`'; else RSS_SOURCE='VmHWM polled in /proc'; fi
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)

render() {
    printf '# Wallet benchmarks\n\n'
    printf 'Run %s, commit %s, %s cores, load average %s before and %s after, %d s in all (build included).\n' \
        "$(date -u +%FT%TZ)" "$COMMIT" "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" "$ELAPSED"
    printf 'wrk: %s s measured after %s s of warm-up (%s s in the rounds below); 32 connections on 2 threads, 1 on 1 thread.\n' \
        "$DURATION" "$WARMUP" "$ROUND_DURATION"
    printf 'Latencies in ms.\n\n'
    printf '| Measurement | Conns | Result | p50 | p99 | Errors | Ceiling | Ratio | Goal | Met |\n'
    printf '|---|---:|---:|---:|---:|---:|---|---:|---|---|\n'
    printf '%s\n' "${ROWS[@]}"
    printf '\n'
    printf -- '- Errors: socket errors and HTTP answers >= 400 (as wrk counts them) out of all requests; for the\n'
    printf -- '  processor, the withdrawals not paid in the pass (failed for good, or retried later).\n'
    printf -- '- Ceilings: reads and wallet creation against nginx `return 200` at the same connection count;\n'
    printf -- '  durable writes (deposit, withdraw) against the deposit with `WALLET_SYNCHRONOUS=NORMAL`, same\n'
    printf -- '  database, same connection count.\n'
    printf -- '- GET wallet and durable deposits at 32 connections, with their ceilings: %s alternating rounds\n' "$ROUNDS"
    printf -- '  of %s s each, the round with the median ratio shown (requests and errors: all rounds).\n' "$ROUND_DURATION"
    printf -- '  Ratios by round: GET wallet %s; durable deposits %s.\n' "${ROUND_RATIOS[get32]}" "${ROUND_RATIOS[deposit32]}"
    printf -- '- Every request to the service carries an API key; nginx rate limits were off (WALLET_RATE_LIMIT=0).\n'
    if [[ -n $BASE_BIN ]]; then
        printf -- '- Baseline: commit %s (%s), release build, its own stack and database, measured in the same\n' \
            "${BASE_COMMIT:0:10}" "$(git -C "$REPO" log -1 --format=%s "$BASE_COMMIT" | cut -c1-60)"
        printf -- '  rounds as HEAD. HEAD/baseline by round: GET wallet %s; durable deposits %s.\n' \
            "${BASE_RATIOS[get32]}" "${BASE_RATIOS[deposit32]}"
    fi
    printf -- '- Processor passes are timed from the start of `wallet-processor` to its exit; withdrawals were\n'
    printf -- '  created through the API over %s funded wallets. Peak RSS from %s.\n' \
        "$(thousands "$WALLETS")" "$RSS_SOURCE"
}
mkdir -p "$REPO/var/bench"
render >"$REPO/var/bench/latest.md.new"
mv -f "$REPO/var/bench/latest.md.new" "$REPO/var/bench/latest.md"
cat "$REPO/var/bench/latest.md"
log "done in ${ELAPSED}s; table written to var/bench/latest.md"
exit 0
}
