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
    'slow -5' 'success now' 'fail-first 2 3'; do
    new_state "$bad_mode"
    call key-1 "$BODY"
    check "mode '$bad_mode': internal error" expect 500 "$INTERNAL"
    check "mode '$bad_mode': pays nothing" expect_ledger 0
    check "mode '$bad_mode': the reason goes to stderr" grep -q "unknown mode" "$stderr_file"
done

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

# --- concurrency ---------------------------------------------------------------

# burst N KEY: N calls with one key that reach the bank at the same moment.
# Each CGI starts reading its body from its own FIFO (opened read-write, so the
# open does not wait for a writer) and blocks there; once all of them are up,
# the bodies are written one after the other, so the calls race for the key
# instead of arriving one at a time behind bash's start-up. The answers land
# in $work/burst.N.
burst() {
    local n=$1 key=$2 i
    local -a pids=()
    rm -f "$work"/burst.* "$work"/fifo.*
    for ((i = 1; i <= n; i++)); do
        mkfifo "$work/fifo.$i"
        env REQUEST_METHOD=POST CONTENT_LENGTH=${#BODY} BANK_STATE_DIR="$state" \
            HTTP_IDEMPOTENCY_KEY="$key" "$cgi" <>"$work/fifo.$i" >"$work/burst.$i" \
            2>>"$stderr_file" &
        pids+=($!)
    done
    sleep 0.5
    for ((i = 1; i <= n; i++)); do
        printf '%s' "$BODY" >"$work/fifo.$i"
    done
    wait "${pids[@]}"
}

# burst_answers: "STATUS_LINE BODY" of every call of the last burst, one a line.
burst_answers() {
    local f out
    for f in "$work"/burst.*; do
        out=$(<"$f")
        printf '%s %s\n' "${out%%$'\r\n'*}" "${out#*$'\r\n\r\n'}"
    done
}

new_state
burst 20 same-key
check "20 concurrent calls with one key: exactly one ledger line" expect_ledger 1
ok_answers=$(burst_answers | grep -c -F -x "Status: 200 OK $SUCCESS")
check "20 concurrent calls with one key: all 20 answered success ($ok_answers)" \
    [ "$ok_answers" = 20 ]
answers=$(calls_for same-key | tr ' ' '\n' | sort | uniq -c | tr -s ' \n' ' ')
check "20 concurrent calls with one key: 1 paid and 19 replayed in calls" \
    [ "$answers" = " 1 paid 19 replayed " ]

new_state 'fail-first 3'
burst 10 ff-key
check "fail-first 3 with 10 concurrent calls: exactly one payout" expect_ledger 1
ff_failed=$(calls_for ff-key | tr " " "\n" | grep -c failed)
check "fail-first 3 with 10 concurrent calls: 3 failed before it ($ff_failed)" \
    [ "$ff_failed" = 3 ]

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
