#!/bin/bash
# Tests for the mock bank, bank/bank.cgi.
#
# The script is run directly as a CGI program, the way fcgiwrap runs it: the
# request arrives as environment variables plus the body on stdin, and the
# answer is read back from stdout. Every test works in its own state
# directory, so the checks do not depend on each other's ledger.
#
# Usage: bash Tests/bank/test_bank_cgi.sh
# Prints one line per check and a closing "N passed, M failed" line; exits
# non-zero when a check failed.

set -u
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cgi=${BANK_CGI:-$here/../../bank/bank.cgi}
cgi=$(cd "$(dirname "$cgi")" && pwd)/$(basename "$cgi")

work=$(mktemp -d "${TMPDIR:-/tmp}/bank-cgi-test.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

passed=0
failed=0
TAB=$'\t'
WALLET=3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
BODY='{"reference": "wd-1", "wallet": "'$WALLET'", "amount": 5000}'
SUCCESS='{"data": "success", "status": 200}'
FAILED='{"data": "failed", "status": 503}'
BAD='{"data": "bad_request", "status": 400}'
INTERNAL='{"error": "internal"}'
IN_PROGRESS='{"data": "in_progress", "status": 409}'
TIMEOUT='{"error": "timeout"}'

check() { # check DESCRIPTION COMMAND...: one line per check.
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        printf 'ok   %s\n' "$what"
    else
        failed=$((failed + 1))
        printf 'FAIL %s\n' "$what"
        [[ -n ${detail-} ]] && printf '     %s\n' "$detail"
    fi
    detail=
}

# new_state [MODE]: a fresh state directory in $state, with an optional mode.
# The CGI's stderr goes to $stderr_file.
state_n=0
new_state() {
    state_n=$((state_n + 1))
    state=$work/state$state_n
    stderr_file=$state.stderr
    mkdir -p "$state"
    if [[ $# -gt 0 ]]; then
        printf '%s\n' "$1" >"$state/mode"
    fi
}

set_mode() { printf '%s\n' "$1" >"$state/mode"; }

# call KEY BODY [METHOD [CONTENT_LENGTH]]: run the CGI once against $state.
# KEY "-" means no Idempotency-Key header at all; CONTENT_LENGTH "unset"
# leaves that variable out. Sets $status (the numeric
# HTTP status), $body and $headers.
call() {
    local key=$1 req_body=$2 method=${3:-POST} length=${4-}
    [[ -n $length ]] || length=${#req_body}
    local -a env_args=(REQUEST_METHOD="$method" BANK_STATE_DIR="$state")
    [[ $length == unset ]] || env_args+=(CONTENT_LENGTH="$length")
    [[ $key == - ]] || env_args+=(HTTP_IDEMPOTENCY_KEY="$key")
    local out
    out=$(printf '%s' "$req_body" |
        env -u HTTP_IDEMPOTENCY_KEY -u BANK_STATE_DIR -u CONTENT_LENGTH "${env_args[@]}" "$cgi" 2>"$stderr_file"; printf x)
    out=${out%x}
    headers=${out%%$'\r\n\r\n'*}
    body=${out#*$'\r\n\r\n'}
    status=${headers#Status: }
    status=${status%% *}
}

ledger_lines() { # ledger_lines: the number of payouts in $state.
    if [[ -f $state/ledger ]]; then
        wc -l <"$state/ledger" | tr -d ' '
    else
        echo 0
    fi
}

# The key field (the second one) of each line of the calls file, with its answer.
calls_for() { # calls_for KEY: the answers logged for KEY, space separated.
    local out=()
    [[ -f $state/calls ]] || { echo; return; }
    local line k
    # Split by hand: read would merge the two tabs around an empty key.
    while IFS= read -r line; do
        k=${line#*"$TAB"}
        k=${k%"$TAB"*}
        [[ $k == "$1" ]] && out+=("${line##*"$TAB"}")
    done <"$state/calls"
    echo "${out[*]}"
}

expect() { # expect STATUS BODY: the last call's answer.
    if [[ $status == "$1" && $body == "$2" ]]; then
        return 0
    fi
    detail="got status '$status' body '$body', want '$1' '$2'"
    return 1
}

has_header() { # has_header "NAME: VALUE": a header line of the last answer.
    [[ $headers == *$'\r\n'"$1" || $headers == *$'\r\n'"$1"$'\r\n'* ]] && return 0
    detail="no header '$1' in: ${headers//$'\r\n'/ | }"
    return 1
}

expect_match() { # expect_match TEXT ERE
    [[ $1 =~ $2 ]] && return 0
    detail="'$1' does not match '$2'"
    return 1
}

between() { # between N LOW HIGH
    [[ $1 -ge $2 && $1 -le $3 ]] && return 0
    detail="$1 is not in $2..$3"
    return 1
}

expect_ledger() { # expect_ledger N
    local n
    n=$(ledger_lines)
    [[ $n == "$1" ]] && return 0
    detail="ledger has $n lines, want $1"
    return 1
}

# key_file KEY SUFFIX: the path of one of KEY's files in $state/keys, as the
# bank documents it: the key's bytes in hexadecimal, cut into directory
# levels of 200 digits. Computed here with od, not the bank's own code.
key_file() {
    local hex path=$state/keys
    hex=$(printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n')
    while ((${#hex} > 200)); do
        path+=/${hex:0:200}
        hex=${hex:200}
    done
    printf '%s/%s%s\n' "$path" "$hex" "$2"
}

# lock_held KEY: another process holds KEY's lock right now.
lock_held() {
    local lock
    lock=$(key_file "$1" .lock)
    [[ -e $lock ]] && ! flock --nonblock "$lock" true
}

# wait_for [-n POLLS] COMMAND...: polls COMMAND until it succeeds, at most
# POLLS times (default 100), 50 ms apart: a bound against hanging, not a
# measure of speed. Fails if it never succeeded.
wait_for() {
    local i polls=100
    if [[ $1 == -n ]]; then
        polls=$2
        shift 2
    fi
    for ((i = 0; i < polls; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    detail="never true: $*"
    return 1
}

# call_bg NAME KEY BODY: call in the background; the answer goes to
# $work/NAME.answer as "STATUS BODY" and the pid to $bg_pid.
call_bg() {
    local name=$1
    shift
    (
        call "$@"
        printf '%s %s' "$status" "$body" >"$work/$name.answer"
    ) &
    bg_pid=$!
}

# expect_answer NAME STATUS BODY: the answer a call_bg call left.
expect_answer() {
    local got
    got=$(cat "$work/$1.answer" 2>/dev/null)
    [[ $got == "$2 $3" ]] && return 0
    detail="got '$got', want '$2 $3'"
    return 1
}

expect_calls() { # expect_calls KEY "ANSWERS..."
    local got
    got=$(calls_for "$1")
    [[ $got == "$2" ]] && return 0
    detail="calls for '$1' are '$got', want '$2'"
    return 1
}

# --- success mode ------------------------------------------------------------

new_state
call key-1 "$BODY"
check "success: a new key is paid with 200 and the success body" expect 200 "$SUCCESS"
check "success: the CGI answers with a JSON content type" \
    has_header "Content-Type: application/json"
check "success: one ledger line" expect_ledger 1
line=$(cat "$state/ledger")
check "success: the ledger line holds time, key, wallet, amount, reference" \
    expect_match "$line" "^[0-9]{10}${TAB}key-1${TAB}${WALLET}${TAB}5000${TAB}wd-1\$"
call key-1 "$BODY"
check "success: the same key again replays the success" expect 200 "$SUCCESS"
check "success: the replay pays nothing more" expect_ledger 1
check "success: calls log paid then replayed" expect_calls key-1 "paid replayed"
call key-2 "$BODY"
check "success: another key is another payout" expect_ledger 2

new_state
call key-1 "$BODY"
check "missing mode file: pays like success" expect 200 "$SUCCESS"
: >"$state/mode"
call key-2 "$BODY"
check "empty mode file: pays like success" expect 200 "$SUCCESS"

# --- fail mode ---------------------------------------------------------------

new_state fail
call key-1 "$BODY"
check "fail: answers 503 with the failed body" expect 503 "$FAILED"
call key-1 "$BODY"
check "fail: keeps failing for the same key" expect 503 "$FAILED"
check "fail: never pays" expect_ledger 0
check "fail: calls log failed twice" expect_calls key-1 "failed failed"
set_mode success
call key-1 "$BODY"
check "fail then success: the key is paid once the bank works" expect 200 "$SUCCESS"
set_mode fail
call key-1 "$BODY"
check "fail: a key already paid still replays the success" expect 200 "$SUCCESS"
check "fail: the replay pays nothing more" expect_ledger 1

# --- fail-first mode ---------------------------------------------------------

new_state 'fail-first 2'
call key-1 "$BODY"
check "fail-first 2: first call fails" expect 503 "$FAILED"
call key-1 "$BODY"
check "fail-first 2: second call fails" expect 503 "$FAILED"
check "fail-first 2: nothing paid after two calls" expect_ledger 0
call key-1 "$BODY"
check "fail-first 2: third call is paid" expect 200 "$SUCCESS"
check "fail-first 2: one ledger line" expect_ledger 1
call key-1 "$BODY"
check "fail-first 2: fourth call replays" expect 200 "$SUCCESS"
check "fail-first 2: calls log failed, failed, paid, replayed" \
    expect_calls key-1 "failed failed paid replayed"
call key-2 "$BODY"
check "fail-first 2: the count is per key" expect 503 "$FAILED"
call key-1x "$BODY"
check "fail-first 2: a longer key is counted apart" expect 503 "$FAILED"
call - "$BODY"
call key-3 '{"amount": 1}'
call key-3 '{"amount": 2}'
call key-3 "$BODY"
check "fail-first 2: malformed calls do not count" expect 503 "$FAILED"
new_state 'fail-first 0'
call key-1 "$BODY"
check "fail-first 0: the first call is paid" expect 200 "$SUCCESS"

# --- http500 mode ------------------------------------------------------------

new_state http500
call key-1 "$BODY"
check "http500: answers 500 with the internal error body" expect 500 "$INTERNAL"
check "http500: never pays" expect_ledger 0
check "http500: calls log http500" expect_calls key-1 "http500"

new_state success
call key-1 "$BODY"
set_mode http500
call key-1 "$BODY"
check "http500: answers 500 even for a key already paid" expect 500 "$INTERNAL"

# --- status mode ---------------------------------------------------------------

for code in 200 401 409 422 425 429 500 502; do
    new_state "status $code"
    call key-1 "$BODY"
    check "status $code: answers $code with a body that is no bank body" \
        expect "$code" "{\"error\": \"status $code\"}"
    check "status $code: never pays" expect_ledger 0
    check "status $code: calls log status" expect_calls key-1 status
done
new_state 'status 404'
call key-1 "$BODY"
check "status 404: answers 404" [ "$status" = 404 ]
check "status 404: with an HTML page" has_header "Content-Type: text/html"
check "status 404: the page says so" expect_match "$body" '<title>404 Not Found</title>'
check "status 404: never pays" expect_ledger 0
set_mode success
call key-1 "$BODY"
set_mode 'status 404'
call key-1 "$BODY"
check "status 404: answers 404 even for a key already paid" [ "$status" = 404 ]
check "status 404: calls log status, paid, status" expect_calls key-1 "status paid status"

# --- hang mode -------------------------------------------------------------------

new_state 'hang 4000'
call_bg hang hang-key "$BODY"
hang_pid=$bg_pid
check "hang: holds the key's lock while it waits" wait_for lock_held hang-key
call hang-key "$BODY"
check "hang: another call of the key meanwhile gets 409 in_progress" expect 409 "$IN_PROGRESS"
wait "$hang_pid"
check "hang: answers 500 with the timeout body" expect_answer hang 500 "$TIMEOUT"
check "hang: never pays" expect_ledger 0
check "hang: calls log in_progress, then hang" expect_calls hang-key "in_progress hang"
set_mode success
call hang-key "$BODY"
check "hang then success: the key is paid" expect 200 "$SUCCESS"
set_mode 'hang 0'
call hang-key "$BODY"
check "hang: answers the timeout even for a key already paid" expect 500 "$TIMEOUT"
check "hang: pays nothing more" expect_ledger 1

# --- pay-then-hang mode ------------------------------------------------------------

# The money leaves before the answer: the ledger line is there while the call
# still holds its answer back (and its key).
new_state 'pay-then-hang 5000'
call_bg pth pth-key "$BODY"
pth_pid=$bg_pid
check "pay-then-hang: calls log paid at the payout" wait_for expect_calls pth-key paid
check "pay-then-hang: the payout is in the ledger" expect_ledger 1
check "pay-then-hang: ... while the call has not answered yet" [ ! -e "$work/pth.answer" ]
call pth-key "$BODY"
check "pay-then-hang: another call of the key meanwhile gets 409 in_progress" \
    expect 409 "$IN_PROGRESS"
wait "$pth_pid"
check "pay-then-hang: then answers success" expect_answer pth 200 "$SUCCESS"
set_mode 'pay-then-hang 0'
call pth-key "$BODY"
check "pay-then-hang: a key already paid replays" expect 200 "$SUCCESS"
check "pay-then-hang: one ledger line" expect_ledger 1
check "pay-then-hang: calls log paid, in_progress, replayed" \
    expect_calls pth-key "paid in_progress replayed"

# --- slow mode ---------------------------------------------------------------

new_state 'slow 300'
start=$(date +%s%N)
call key-1 "$BODY"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
check "slow 300: pays" expect 200 "$SUCCESS"
check "slow 300: answers after the delay (${elapsed_ms} ms)" [ "$elapsed_ms" -ge 300 ]
check "slow 300: one ledger line" expect_ledger 1

# A client that gives up before the answer still leaves a payout behind, and
# its retry gets the replayed success.
new_state 'slow 600'
(call key-1 "$BODY") &
slow_pid=$!
sleep 0.2
check "slow 600: nothing is paid while the bank waits" expect_ledger 0
wait "$slow_pid"
check "slow 600: the payout lands after the delay" expect_ledger 1
set_mode success
call key-1 "$BODY"
check "slow 600: the retry with the same key replays" expect 200 "$SUCCESS"
check "slow 600: still one ledger line" expect_ledger 1

# --- one key, one call at a time ----------------------------------------------

# A slow first call holds its key from its start: a second call with the key
# meanwhile (here in mode fail) must not be answered failed while the first
# goes on to pay, since the wallet refunds on a failed answer. It gets 409
# in_progress, which promises nothing. (The wait for the lock is bounded well
# below the delay, so that the second call surely comes while the first is
# still waiting, even with a bank that took no lock. The delays here and
# below are long so that a loaded machine still starts the second call
# within them.)
new_state 'slow 8000'
call_bg first serial-key "$BODY"
first_pid=$bg_pid
check "a slow call holds its key's lock while it waits" wait_for -n 80 lock_held serial-key
set_mode fail
call serial-key "$BODY"
second="$status $body"
wait "$first_pid"
check "a slow call pays" expect_answer first 200 "$SUCCESS"
check "a second call while the first is in progress: 409 in_progress" \
    [ "$second" = "409 $IN_PROGRESS" ]
check "a second call while the first is in progress is never answered failed" \
    [ "$second" != "503 $FAILED" ]
check "a second call while the first is in progress pays nothing" expect_ledger 1
check "calls log in_progress, then paid" expect_calls serial-key "in_progress paid"
call serial-key "$BODY"
check "once the first call is over, the key replays (even in mode fail)" expect 200 "$SUCCESS"

# --- random mode -------------------------------------------------------------

new_state 'random 100 0'
call key-1 "$BODY"
check "random 100 0: always fails" expect 503 "$FAILED"
check "random 100 0: pays nothing" expect_ledger 0
new_state 'random 0 200'
start=$(date +%s%N)
call key-1 "$BODY"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
check "random 0 200: always pays" expect 200 "$SUCCESS"
check "random 0 200: answers after the delay (${elapsed_ms} ms)" [ "$elapsed_ms" -ge 200 ]
new_state 'random 50 0'
for i in $(seq 1 40); do call "r-$i" "$BODY"; done
paid=$(ledger_lines)
check "random 50 0: some of 40 keys paid, some not ($paid paid)" between "$paid" 1 39
fails=$(grep -c "${TAB}failed\$" "$state/calls")
check "random 50 0: every unpaid call answered failed" [ $((paid + fails)) -eq 40 ]

# --- unknown modes -----------------------------------------------------------

for bad_mode in 'bogus' 'random 101 0' 'random 10' 'fail-first x' 'slow' \
    'slow -5' 'success now' 'fail-first 2 3' 'hang' 'hang x' 'hang 1 2' \
    'pay-then-hang' 'pay-then-hang -1' 'status' 'status x' 'status 99' \
    'status 199' 'status 600' 'status 204' 'status 205' 'status 304' \
    'status 404 1' 'http500 1'; do
    new_state "$bad_mode"
    call key-1 "$BODY"
    check "mode '$bad_mode': internal error" expect 500 "$INTERNAL"
    check "mode '$bad_mode': pays nothing" expect_ledger 0
    check "mode '$bad_mode': the reason goes to stderr" grep -q "unknown mode" "$stderr_file"
done

# A bank that cannot read bodies is broken, not the client: without jq on
# its PATH it answers like an outage, not bad_request.
new_state
mkdir -p "$work/no-jq"
for tool in flock sync cat mkdir sleep head; do
    ln -sf "$(command -v "$tool")" "$work/no-jq/$tool"
done
# (The body has a leading space: the processor's own shape needs no jq.)
no_jq=$(printf ' %s' "$BODY" | env PATH="$work/no-jq" REQUEST_METHOD=POST CONTENT_LENGTH=$((${#BODY} + 1)) \
    BANK_STATE_DIR="$state" HTTP_IDEMPOTENCY_KEY=k1 "$cgi" 2>"$stderr_file")
check "jq missing: internal error" expect_match "$no_jq" "^Status: 500 .*\\{\"error\": \"internal\"\\}\$"
check "jq missing: pays nothing" expect_ledger 0
check "jq missing: the reason goes to stderr" grep -q "jq failed" "$stderr_file"

# --- malformed requests ------------------------------------------------------

# reject_case DESCRIPTION KEY BODY [METHOD [LENGTH [STATUS]]]
reject_case() {
    local what=$1 key=$2 req=$3 method=${4:-POST} length=${5-} want=${6:-400}
    new_state
    call "$key" "$req" "$method" "$length"
    local want_body="{\"data\": \"bad_request\", \"status\": $want}"
    check "$what: $want" expect "$want" "$want_body"
    check "$what: pays nothing" expect_ledger 0
    [[ $key == - ]] && key=
    key=${key:0:255}
    key=${key//[^ -~]/?}
    check "$what: logged as bad_request" expect_calls "$key" bad_request
}

W='"wallet": "'$WALLET'"'
reject_case "body not JSON" k1 'reference=a&amount=1'
reject_case "body empty" k1 ''
reject_case "body an array" k1 '[1, 2]'
reject_case "body a string" k1 '"x"'
reject_case "body an empty object" k1 '{}'
reject_case "body truncated" k1 '{"reference": "a", '"$W"', "amount": 1'
reject_case "body with trailing garbage" k1 '{"reference": "a", '"$W"', "amount": 1} x'
reject_case "body with a trailing comma" k1 '{"reference": "a", '"$W"', "amount": 1,}'
reject_case "body with single quotes" k1 "{'reference': 'a', $W, 'amount': 1}"
reject_case "reference missing" k1 '{'"$W"', "amount": 1}'
reject_case "wallet missing" k1 '{"reference": "a", "amount": 1}'
reject_case "amount missing" k1 '{"reference": "a", '"$W"'}'
reject_case "amount 0" k1 '{"reference": "a", '"$W"', "amount": 0}'
reject_case "amount 1.5" k1 '{"reference": "a", '"$W"', "amount": 1.5}'
reject_case "amount 1.0" k1 '{"reference": "a", '"$W"', "amount": 1.0}'
reject_case "amount 1e3" k1 '{"reference": "a", '"$W"', "amount": 1e3}'
reject_case "amount \"100\"" k1 '{"reference": "a", '"$W"', "amount": "100"}'
reject_case "amount negative" k1 '{"reference": "a", '"$W"', "amount": -5}'
reject_case "amount 10^15+1" k1 '{"reference": "a", '"$W"', "amount": 1000000000000001}'
reject_case "amount huge" k1 '{"reference": "a", '"$W"', "amount": 99999999999999999999999}'
reject_case "amount true" k1 '{"reference": "a", '"$W"', "amount": true}'
reject_case "amount null" k1 '{"reference": "a", '"$W"', "amount": null}'
reject_case "amount with a leading zero" k1 '{"reference": "a", '"$W"', "amount": 012}'
reject_case "amount twice" k1 '{"reference": "a", '"$W"', "amount": 1, "amount": 2}'
reject_case "reference a number" k1 '{"reference": 7, '"$W"', "amount": 1}'
reject_case "reference with a raw tab" k1 $'{"reference": "a\tb", '"$W"', "amount": 1}'
reject_case "reference with a bad escape" k1 '{"reference": "a\qb", '"$W"', "amount": 1}'
reject_case "reference with a raw tab after an escape" k1 $'{"reference": "a\\nb\tc", '"$W"', "amount": 1}'
reject_case "reference not terminated" k1 '{"reference": "abc, '"$W"', "amount": 1}'
reject_case "an extra member with a bad number" k1 '{"x": 01, "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member with a bad literal" k1 '{"x": truex, "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member with a trailing comma in an array" k1 '{"x": [1,], "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member nested too deep" k1 '{"x": '"$(printf '[%.0s' $(seq 40))$(printf ']%.0s' $(seq 40))"', "reference": "a", '"$W"', "amount": 1}'
reject_case "a member without a value" k1 '{"x": , "reference": "a", '"$W"', "amount": 1}'
reject_case "a member name that is not a string" k1 '{x: 1, "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member NaN" k1 '{"x": NaN, "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member infinity" k1 '{"x": infinity, "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member .5" k1 '{"x": .5, "reference": "a", '"$W"', "amount": 1}'
reject_case "an extra member +1" k1 '{"x": +1, "reference": "a", '"$W"', "amount": 1}'
reject_case "amount 1." k1 '{"reference": "a", '"$W"', "amount": 1.}'
reject_case "reference twice" k1 '{"reference": "a", '"$W"', "amount": 1, "reference": "b"}'
reject_case "wallet twice" k1 '{"reference": "a", '"$W"', "amount": 1, '"$W"'}'
reject_case "amount twice, once with an escaped name" k1 '{"reference": "a", '"$W"', "amount": 1, "am\u006funt": 1}'
reject_case "reference an object" k1 '{"reference": {"a": "b"}, '"$W"', "amount": 1}'
reject_case "two objects" k1 '{"reference": "a", '"$W"', "amount": 1}{}'
reject_case "wallet not a UUID" k1 '{"reference": "a", "wallet": "not-a-uuid", "amount": 1}'
reject_case "wallet a UUID without dashes" k1 '{"reference": "a", "wallet": "3f1c2d4e5a6b4c7d8e9f0a1b2c3d4e5f", "amount": 1}'
reject_case "wallet a number" k1 '{"reference": "a", "wallet": 1, "amount": 1}'
reject_case "Idempotency-Key missing" - "$BODY"
reject_case "Idempotency-Key empty" '' "$BODY"
reject_case "Idempotency-Key with a tab" $'a\tb' "$BODY"
reject_case "Idempotency-Key with a control character" $'a\x01b' "$BODY"
reject_case "Idempotency-Key not ASCII" $'caf\xc3\xa9' "$BODY"
reject_case "Idempotency-Key of 256 characters" "$(printf 'k%.0s' $(seq 256))" "$BODY"
reject_case "CONTENT_LENGTH missing" k1 "$BODY" POST unset 400
reject_case "CONTENT_LENGTH not a number" k1 "$BODY" POST 'abc' 400
reject_case "CONTENT_LENGTH longer than the body" k1 "$BODY" POST $((${#BODY} + 5)) 400
reject_case "body over 16 KiB" k1 "$BODY$(printf ' %.0s' $(seq 16400))" POST '' 413
reject_case "GET" k1 '' GET 0 405
reject_case "PUT" k1 "$BODY" PUT '' 405
check "405: carries an Allow header" has_header "Allow: POST"

# A CONTENT_LENGTH shorter than the body reads only that many bytes.
new_state
call k1 "$BODY" POST $((${#BODY} - 1))
check "CONTENT_LENGTH shorter than the body: 400" expect 400 "$BAD"

# fcgiwrap answers 502 itself when it cannot hand the whole body to a script
# that has already exited, so every answer, refusals included, must come after
# the body was read. The CGI gets stdin as a file here; the offset it leaves
# behind in the shared file description shows how much it read.
# consumed KEY METHOD BODY: print the bytes of BODY the CGI read.
consumed() {
    local key=$1 method=$2 req=$3 fd pos
    printf '%s' "$req" >"$work/stdin"
    local -a env_args=(REQUEST_METHOD="$method" BANK_STATE_DIR="$state" CONTENT_LENGTH="${#req}")
    [[ $key == - ]] || env_args+=(HTTP_IDEMPOTENCY_KEY="$key")
    exec {fd}<"$work/stdin"
    env -u HTTP_IDEMPOTENCY_KEY "${env_args[@]}" "$cgi" <&"$fd" >/dev/null 2>>"$stderr_file"
    pos=$(sed -n 's/^pos:[[:space:]]*//p' "/proc/$BASHPID/fdinfo/$fd")
    exec {fd}<&-
    echo "$pos"
}
new_state
big="$BODY$(printf ' %.0s' $(seq 20000))"
# drain_check DESCRIPTION KEY METHOD BODY
drain_check() {
    local n
    n=$(consumed "$2" "$3" "$4")
    check "body read before answering: $1 (${#4} bytes, read $n)" [ "$n" = "${#4}" ]
}
drain_check "a good request" k1 POST "$BODY"
drain_check "no Idempotency-Key" - POST "$BODY"
drain_check "a key with a tab" $'a\tb' POST "$BODY"
drain_check "GET with a body" k1 GET "$BODY"
drain_check "a body over 16 KiB" k1 POST "$big"
set_mode bogus
drain_check "an unknown mode" k2 POST "$BODY"

# --- the processor's shape without jq ------------------------------------------

# Bodies in the processor's shape (compact, or with a space after each colon
# and comma, as the benchmarks send) are read without jq; every other one
# with it. Both readings must agree: the same body with a leading space goes
# to jq, and the two ledger lines must match from the wallet on.
# runs_jq BODY: the CGI started jq for BODY (under strace).
runs_jq() {
    printf '%s' "$1" | env REQUEST_METHOD=POST CONTENT_LENGTH=${#1} BANK_STATE_DIR="$state" \
        HTTP_IDEMPOTENCY_KEY="jq-probe-$RANDOM$RANDOM" strace -f -qq -e trace=execve \
        -o "$work/execve" "$cgi" >/dev/null 2>>"$stderr_file"
    grep -q 'execve("[^"]*/jq"' "$work/execve"
}
runs_no_jq() { ! runs_jq "$@"; }
# ledger_tail KEY: KEY's ledger line without its time and key.
ledger_tail() {
    local line
    line=$(grep -F "${TAB}$1${TAB}" "$state/ledger")
    line=${line#*"$TAB"}
    printf '%s\n' "${line#*"$TAB"}"
}
new_state
compact='{"reference":"withdrawal-42","wallet":"'$WALLET'","amount":5000}'
check "the processor's compact body is read without jq" runs_no_jq "$compact"
check "the benchmarks' spaced body is read without jq" runs_no_jq "$BODY"
check "a body with a leading space is read with jq" runs_jq " $BODY"
check "a body with a newline at its end is read with jq" runs_jq "$BODY"$'\n'
n=0
for shaped in "$compact" "$BODY" \
    '{"reference": "] !#[^~{}:,'"'"'", "wallet": "3F1C2D4E-5A6B-4C7D-8E9F-0A1B2C3D4E5F", "amount": 1000000000000000}' \
    '{"reference": "", '"$W"', "amount": 1}'; do
    n=$((n + 1))
    call "fast-$n" "$shaped"
    call "jq-$n" " $shaped"
    fast=$(ledger_tail "fast-$n")
    slow=$(ledger_tail "jq-$n")
    check "shape $n: paid" [ -n "$fast" ]
    check "shape $n: read alike with and without jq ('$fast')" [ "$fast" = "$slow" ]
done
reject_case "the processor's shape with amount 10^15+1" k1 '{"reference":"a","wallet":"'$WALLET'","amount":1000000000000001}'
reject_case "the processor's shape with amount 0" k1 '{"reference":"a","wallet":"'$WALLET'","amount":0}'

# --- well-formed variations --------------------------------------------------

# accept_case DESCRIPTION BODY: a body that must be paid.
accept_case() {
    new_state
    call k1 "$2"
    check "$1: paid" expect 200 "$SUCCESS"
    check "$1: one ledger line" expect_ledger 1
}
accept_case "keys in another order" '{"amount": 7, "wallet": "'$WALLET'", "reference": "x"}'
accept_case "whitespace and newlines everywhere" $' \n{\n\t"reference" :\r\n "x" ,\n  "wallet":"'$WALLET$'"\t,"amount"  :  7 \n}\n'
accept_case "amount 1" '{"reference": "a", '"$W"', "amount": 1}'
accept_case "amount 10^15" '{"reference": "a", '"$W"', "amount": 1000000000000000}'
accept_case "upper-case wallet" '{"reference": "a", "wallet": "3F1C2D4E-5A6B-4C7D-8E9F-0A1B2C3D4E5F", "amount": 1}'
accept_case "reference with escapes" '{"reference": "a\"b\\c\u00e9\n", '"$W"', "amount": 1}'
accept_case "extra members" '{"reference": "a", "note": {"x": [1, 2.5, true, null, "s"]}, '"$W"', "amount": 1, "currency": "EUR"}'
accept_case "an escaped quote before the closing one" '{"reference": "say \"hi\"", '"$W"', "amount": 1}'
accept_case "a reference ending in an escaped backslash" '{"reference": "a\\", '"$W"', "amount": 1}'
accept_case "extra members of every kind" '{"n": -0.5e-3, "z": 0, "t": true, "f": false, "u": null, "e": {}, "a": [], "d": '"$(printf '[%.0s' $(seq 30))$(printf ']%.0s' $(seq 30))"', "reference": "a", '"$W"', "amount": 1}'
accept_case "a nested object repeating amount" '{"note": {"amount": 1, "amount": 2}, "reference": "a", '"$W"', "amount": 3}'
accept_case "a reference holding JSON punctuation" '{"reference": "a,b:c{d}[e]\"", '"$W"', "amount": 1}'
accept_case "a member name with an escaped quote" '{"a\"": "x", "reference": "a", '"$W"', "amount": 1}'
accept_case "no whitespace at all" '{"reference":"a","wallet":"'$WALLET'","amount":42}'

accept_case "a body of almost 16 KiB" '{"reference": "'"$(printf 'r%.0s' $(seq 16000))"'", '"$W"', "amount": 1}'
line=$(cat "$state/ledger")
check "a long reference is kept whole in the ledger" [ "${#line}" -gt 16000 ]

new_state
call "$(printf 'k%.0s' $(seq 255))" "$BODY"
check "Idempotency-Key of 255 characters: paid" expect 200 "$SUCCESS"
call 'key with spaces ~!' "$BODY"
check "Idempotency-Key with spaces and symbols: paid" expect 200 "$SUCCESS"

# --- exact key matching --------------------------------------------------------

new_state
call 'a.b*' "$BODY"
check "key 'a.b*': paid" expect 200 "$SUCCESS"
call 'aXbb' "$BODY"
check "key 'aXbb' is not taken for 'a.b*'" expect_calls aXbb paid
call '.*' "$BODY"
check "key '.*' is not taken for any other" expect_calls '.*' paid
call 'a.b' "$BODY"
check "key 'a.b', a prefix of 'a.b*', is its own key" expect_calls 'a.b' paid
call 'b*' "$BODY"
check "key 'b*', a suffix of 'a.b*', is its own key" expect_calls 'b*' paid
call "$WALLET" "$BODY"
check "a key equal to a wallet in the ledger is its own key" expect_calls "$WALLET" paid
call 'wd-1' "$BODY"
check "a key equal to a reference in the ledger is its own key" expect_calls 'wd-1' paid
call 'a.b*' "$BODY"
check "key 'a.b*' again: replayed" expect_calls 'a.b*' "paid replayed"
check "seven keys, seven payouts" expect_ledger 7

# --- payout markers and key names ------------------------------------------------

new_state
call mk "$BODY"
marker=$(key_file mk .paid)
check "a payout leaves the key's marker in keys/" [ -f "$marker" ]
check "the marker holds the key's ledger line" [ "$(cat "$marker")" = "$(cat "$state/ledger")" ]
: >"$state/ledger"
call mk "$BODY"
check "a key with a marker replays, whatever the ledger holds" expect 200 "$SUCCESS"
check "a key with a marker pays nothing more" expect_ledger 0
: >"$(key_file by-hand .paid)"
set_mode fail
call by-hand "$BODY"
check "an empty marker made by hand is enough: the key replays" expect 200 "$SUCCESS"
check "a marker made by hand pays nothing" expect_ledger 0

# Keys that cannot be file names as they are, or that are too long to be one,
# and long keys that share a prefix (they meet in one directory level).
new_state
k255=$(printf 'k%.0s' $(seq 255))
awkward=('/' '.' '..' '../x' 'a/b' ' ' "'" '"' "\\" '%2F' '*' "${k255:0:100}" "${k255:0:101}"
    "${k255:0:200}" "${k255:0:254}j" "$k255")
for k in "${awkward[@]}"; do call "$k" "$BODY"; done
check "${#awkward[@]} awkward keys: all paid, one payout each" expect_ledger "${#awkward[@]}"
for k in "${awkward[@]}"; do
    call "$k" "$BODY"
    check "awkward key '${k:0:12}' (${#k} characters): paid once, then replayed" \
        expect_calls "$k" "paid replayed"
done
check "awkward keys: the replays paid nothing more" expect_ledger "${#awkward[@]}"
entries=("$state"/*)
check "awkward keys: nothing written outside keys/" [ "${entries[*]#"$state"/}" = "calls keys ledger" ]
marker=$(key_file "$k255" .paid)
check "a 255-character key's marker exists" [ -f "$marker" ]
check "a 255-character key's marker is two directory levels down" \
    expect_match "${marker#"$state"/keys/}" '^[0-9a-f]{200}/[0-9a-f]{200}/[0-9a-f]{110}\.paid$'


# --- durability ------------------------------------------------------------------

# The payout is on disk before the answer leaves: under strace, the ledger,
# the marker and the keys directory are flushed (fdatasync) before the status
# line is written. strace is one of the packages `make deps` installs.
# first_line FILE PATTERN: the number of FILE's first line matching PATTERN (ERE), or 0.
first_line() {
    local n
    n=$(grep -n -m1 -E -e "$2" "$1" | cut -d: -f1)
    echo "${n:-0}"
}
new_state
if command -v strace >/dev/null; then
    printf '%s' "$BODY" | env REQUEST_METHOD=POST CONTENT_LENGTH=${#BODY} BANK_STATE_DIR="$state" \
        HTTP_IDEMPOTENCY_KEY=durable strace -f -y -qq -e trace=fdatasync,fsync,write \
        -o "$work/strace" "$cgi" >/dev/null 2>>"$stderr_file"
    answer_at=$(first_line "$work/strace" 'write\(1<[^>]*>, "Status: 200')
    check "durability: the call paid (strace line $answer_at)" [ "$answer_at" -gt 0 ]
    for synced in "$state/ledger" "$(key_file durable .paid)" "$state/keys"; do
        at=$(first_line "$work/strace" "fdatasync\\([0-9]+<${synced//./\\.}>\\)")
        check "durability: ${synced#"$state"/} flushed before the answer (line $at < $answer_at)" \
            between "$at" 1 $((answer_at - 1))
    done
else
    check "durability: strace is installed (make deps)" false
fi

# --- concurrency ---------------------------------------------------------------

# burst_keys KEY...: one call per KEY, all reaching the bank at the same
# moment, each with the body $burst_body (default $BODY). Each CGI starts
# reading its body from its own FIFO (opened read-write, so the open does not
# wait for a writer) and blocks there; once all of them are up, the bodies are
# written one after the other, so the calls race for the key instead of
# arriving one at a time behind bash's start-up. The answers land in
# $work/burst.N. The pids are in $burst_pids; without burst_wait=0 it waits
# for them.
burst_keys() {
    local i=0 key req=${burst_body:-$BODY}
    burst_pids=()
    rm -f "$work"/burst.* "$work"/fifo.*
    for key in "$@"; do
        i=$((i + 1))
        mkfifo "$work/fifo.$i"
        env REQUEST_METHOD=POST CONTENT_LENGTH=${#req} BANK_STATE_DIR="$state" \
            HTTP_IDEMPOTENCY_KEY="$key" "$cgi" <>"$work/fifo.$i" >"$work/burst.$i" \
            2>>"$stderr_file" &
        burst_pids+=($!)
    done
    sleep 0.5
    for ((i = 1; i <= $#; i++)); do
        printf '%s' "$req" >"$work/fifo.$i"
    done
    [[ ${burst_wait-1} == 0 ]] || wait "${burst_pids[@]}"
}

# burst N KEY: N calls with one key, as burst_keys.
burst() {
    local -a keys=()
    local i
    for ((i = 0; i < $1; i++)); do keys+=("$2"); done
    burst_keys "${keys[@]}"
}

# burst_answers: "STATUS_LINE BODY" of every call of the last burst, one a line.
burst_answers() {
    local f out
    for f in "$work"/burst.*; do
        out=$(<"$f")
        printf '%s %s\n' "${out%%$'\r\n'*}" "${out#*$'\r\n\r\n'}"
    done
}

# count_answer STATUS_LINE BODY: how many calls of the last burst got it.
count_answer() {
    burst_answers | grep -c -F -x "Status: $1 $2"
}

# count_calls KEY ANSWER: how many calls of KEY the calls file logs as ANSWER.
count_calls() {
    calls_for "$1" | tr ' ' '\n' | grep -c -x -F "$2"
}

# One key: exactly one call holds it and pays; the others that come while it
# is held get 409, those after it the replay.
new_state
burst 20 same-key
check "20 concurrent calls with one key: exactly one ledger line" expect_ledger 1
ok_answers=$(count_answer '200 OK' "$SUCCESS")
busy_answers=$(count_answer '409 Conflict' "$IN_PROGRESS")
check "20 concurrent calls with one key: each answered success or in_progress ($ok_answers + $busy_answers)" \
    [ $((ok_answers + busy_answers)) = 20 ]
check "20 concurrent calls with one key: 1 paid in calls" [ "$(count_calls same-key paid)" = 1 ]
check "20 concurrent calls with one key: a replayed in calls for every other success" \
    [ "$(count_calls same-key replayed)" = $((ok_answers - 1)) ]
check "20 concurrent calls with one key: an in_progress in calls for every 409" \
    [ "$(count_calls same-key in_progress)" = "$busy_answers" ]

# Different keys do not wait for each other: eight slow calls hold their
# eight locks at one moment, and all of them pay.
new_state 'slow 6000'
distinct=(d-1 d-2 d-3 d-4 d-5 d-6 d-7 d-8)
all_locks_held() {
    local k
    for k in "${distinct[@]}"; do lock_held "$k" || return 1; done
}
burst_wait=0 burst_keys "${distinct[@]}"
check "8 slow calls with 8 keys: all 8 locks are held at once" wait_for all_locks_held
wait "${burst_pids[@]}"
check "8 slow calls with 8 keys: all answered success" [ "$(count_answer '200 OK' "$SUCCESS")" = 8 ]
check "8 slow calls with 8 keys: 8 payouts" expect_ledger 8

# Long ledger lines of different keys written at the same moment stay whole:
# each is appended in one write.
new_state
long_ref=$(printf 'r%.0s' $(seq 12000))
burst_body='{"reference": "'$long_ref'", "wallet": "'$WALLET'", "amount": 9}' \
    burst_keys l-1 l-2 l-3 l-4 l-5 l-6 l-7 l-8
check "8 concurrent payouts with 12 KB references: 8 ledger lines" expect_ledger 8
whole=$(grep -c -E -x "[0-9]+${TAB}l-[1-8]${TAB}${WALLET}${TAB}9${TAB}${long_ref}" "$state/ledger")
check "8 concurrent payouts with 12 KB references: every line whole ($whole)" [ "$whole" = 8 ]

# fail-first counts the failed answers of a key, also when its calls race:
# after a burst and as many calls one at a time as it takes, the key was
# answered failed exactly 3 times and paid once.
new_state 'fail-first 3'
burst 10 ff-key
for _ in 1 2 3 4 5; do
    call ff-key "$BODY"
    [[ $status == 200 ]] && break
done
check "fail-first 3 with 10 concurrent calls, then more: exactly one payout" expect_ledger 1
check "fail-first 3 with 10 concurrent calls, then more: 3 failed" [ "$(count_calls ff-key failed)" = 3 ]
check "fail-first 3 with 10 concurrent calls, then more: 1 paid" [ "$(count_calls ff-key paid)" = 1 ]

# --- state directory -----------------------------------------------------------

# Without BANK_STATE_DIR the bank keeps its state in state/ next to itself.
mkdir -p "$work/copy"
cp "$cgi" "$work/copy/bank.cgi"
out=$(printf '%s' "$BODY" | env -u BANK_STATE_DIR REQUEST_METHOD=POST \
    CONTENT_LENGTH=${#BODY} HTTP_IDEMPOTENCY_KEY=k1 "$work/copy/bank.cgi")
check "no BANK_STATE_DIR: pays" expect_match "$out" "\\{\"data\": \"success\", \"status\": 200\\}\$"
check "no BANK_STATE_DIR: uses state/ beside the script" [ -s "$work/copy/state/ledger" ]

new_state
state=$state/not/yet/there
call k1 "$BODY"
check "a missing state directory is created" expect 200 "$SUCCESS"

echo "$passed passed, $failed failed"
((failed == 0))
