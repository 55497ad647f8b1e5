#!/bin/bash
# Mock bank: a CGI script run by fcgiwrap behind nginx.
#
# It answers like the real bank the withdrawal processor pays out through:
#
#   POST {"reference": "...", "wallet": "<uuid>", "amount": N}
#   Idempotency-Key: <stable per withdrawal>
#
#   paid or replayed:  200 {"data": "success", "status": 200}
#   not paid:          503 {"data": "failed", "status": 503}
#   malformed request: 400 {"data": "bad_request", "status": 400}
#   simulated outage:  500 {"error": "internal"}
#
# Its whole state lives in one directory, BANK_STATE_DIR (a FastCGI parameter,
# which fcgiwrap hands over as an environment variable), or the directory
# state/ next to this script when that is unset:
#
#   mode    one line choosing the behaviour (a missing or empty file means
#           success):
#             success                       pay every new key
#             fail                          answer failed, pay nothing
#             random PERCENT_FAILED DELAY_MS
#                                           wait DELAY_MS, then fail with that
#                                           probability, else pay
#             fail-first N                  the first N well-formed calls of each
#                                           key fail, later ones pay
#             http500                       answer HTTP 500, pay nothing
#             slow DELAY_MS                 wait DELAY_MS, then pay
#           Anything else is answered as an internal error (HTTP 500) and
#           pays nothing, so that a typo cannot pass for a working bank.
#   ledger  append-only TSV, one line per payout:
#           paid_at_unix, idempotency_key, wallet, amount, reference
#   calls   append-only TSV, one line per call:
#           unix_time, idempotency_key, answer
#           where answer is paid, replayed, failed, http500 or bad_request
#   lock    the file that serialises every decision about a key
#
# Each key is paid at most once. A key that is already in the ledger gets the
# replayed success in every mode that answers at all (everything but http500
# and an unknown mode): the failed answer promises that nothing was paid, and a
# real bank that had paid would not say so.
#
# fcgiwrap forks this script for every request, so the hot path stays inside
# bash builtins. The only other programs it runs are flock, one grep over the
# ledger (and, in fail-first mode, one over the calls), sleep in the modes
# that delay, and mkdir when the state directory does not exist yet.

# Byte semantics everywhere: CONTENT_LENGTH counts bytes, and the key and JSON
# patterns below are byte ranges.
export LC_ALL=C

readonly TAB=$'\t'
readonly MAX_BODY=16384
readonly MAX_AMOUNT=1000000000000000

if [[ -n ${BANK_STATE_DIR-} ]]; then
    state_dir=$BANK_STATE_DIR
elif [[ ${BASH_SOURCE[0]} == */* ]]; then
    state_dir=${BASH_SOURCE[0]%/*}/state
else
    state_dir=state
fi
ledger_file=$state_dir/ledger
calls_file=$state_dir/calls

printf -v now '%(%s)T' -1

# respond STATUS_LINE BODY [EXTRA_HEADER]
respond() {
    local extra=${3:+$3$'\r\n'}
    printf 'Status: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s' \
        "$1" "${#2}" "$extra" "$2"
}

answer_success() { respond '200 OK' '{"data": "success", "status": 200}'; }
answer_failed() { respond '503 Service Unavailable' '{"data": "failed", "status": 503}'; }
answer_internal() { respond '500 Internal Server Error' '{"error": "internal"}'; }

# log_call ANSWER: one line in the calls file. The key is made safe for a TSV
# field first, because a rejected key may contain tabs or control characters.
log_call() {
    local key=${idem_key:0:255}
    printf '%s\t%s\t%s\n' "$now" "${key//[^ -~]/?}" "$1" >>"$calls_file"
}

# reject HTTP_STATUS [EXTRA_HEADER]: every malformed request ends here. It is
# logged as bad_request whatever the HTTP status, and it never pays.
reject() {
    log_call bad_request
    drain_body
    local status
    case $1 in
        405) status='405 Method Not Allowed' ;;
        413) status='413 Payload Too Large' ;;
        *) status='400 Bad Request' ;;
    esac
    respond "$status" "{\"data\": \"bad_request\", \"status\": ${status%% *}}" "${2-}"
    exit 0
}

# drain_body: read and drop a request body that has not been read yet.
# fcgiwrap writes the whole body into the script's stdin before it forwards
# the answer; if the script has already exited, that write fails and fcgiwrap
# answers 502 itself instead of the answer the script gave.
drain_body() {
    ((body_read)) && return 0
    body_read=1
    local length=${CONTENT_LENGTH-}
    is_uint "$length" 12 || return 0
    length=$((10#$length))
    if ((length > MAX_BODY)); then
        # Too big to read byte by byte, which is how bash reads a pipe.
        head -c "$length" >/dev/null 2>&1
    elif ((length > 0)); then
        IFS= read -r -N "$length" -t 10 _
    fi
}

# internal_error MESSAGE: a bank that cannot work answers like an outage. The
# message goes to stderr, which fcgiwrap forwards to nginx's error log.
internal_error() {
    printf 'bank.cgi: %s\n' "$1" >&2
    drain_body
    log_call http500 2>/dev/null
    answer_internal
    exit 0
}

# is_uint TEXT MAX_DIGITS: TEXT is a decimal number of 1 to MAX_DIGITS digits.
is_uint() {
    [[ -n $1 && $1 != *[!0-9]* ]] && ((${#1} <= $2))
}

idem_key=${HTTP_IDEMPOTENCY_KEY-}
body_read=0

if [[ ! -d $state_dir ]] && ! mkdir -p -- "$state_dir" 2>/dev/null; then
    internal_error "cannot create the state directory $state_dir"
fi

# --- The request -------------------------------------------------------------

[[ ${REQUEST_METHOD-} == POST ]] || reject 405 'Allow: POST'

# Keys are 1 to 255 printable ASCII characters, the same rule the wallet API
# applies to its own clients. A tab or newline would also break the TSV files.
# (A glob rather than the regex ^[ -~]{1,255}$, which takes bash over a
# millisecond to compile on every request.)
[[ -n $idem_key && ${#idem_key} -le 255 && $idem_key != *[^\ -~]* ]] || reject 400

length=${CONTENT_LENGTH-}
is_uint "$length" 9 || reject 400
length=$((10#$length))
((length <= MAX_BODY)) || reject 413
((length > 0)) || reject 400

# read -N counts characters, which are bytes under LC_ALL=C. bash drops NUL
# bytes, so a body that contained one comes back short and is rejected along
# with a body that ended early.
IFS= read -r -N "$length" -t 10 body
body_read=1
((${#body} == length)) || reject 400

# --- A minimal JSON reader ---------------------------------------------------
#
# jq or python may be missing on a minimal system, so the body is checked here
# in bash. The reader consumes the text from the front of $rest. It accepts any
# JSON value for members it does not know, so that a client sending extra
# members is treated as a real bank would treat it.
#
# Patterns are globs and parameter expansions where they can be: bash compiles
# a regular expression again at every use, which costs tens of microseconds
# each, and the common bodies never need one.

readonly SPACE=$' \t\n\r'
# Anything a JSON string may not hold raw (control characters), plus the
# backslash, whose escapes the slow path checks.
readonly NOT_PLAIN=$'*[\\\\\x01-\x1f]*'
# A JSON string with escapes: only the escapes JSON defines.
# shellcheck disable=SC1003 # The backslashes are part of the pattern.
readonly RE_STRING='^"([^"\\'$'\x01''-'$'\x1f'']|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
readonly RE_NUMBER='^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$'
readonly HEX='[0-9a-fA-F]'
readonly HEX4=$HEX$HEX$HEX$HEX
readonly UUID=$HEX4$HEX4-$HEX4-$HEX4-$HEX4-$HEX4$HEX4$HEX4
readonly MAX_DEPTH=32

skip_space() {
    [[ ${rest:0:1} == ["$SPACE"] ]] || return 0
    local lead=${rest%%[!"$SPACE"]*}
    rest=${rest:${#lead}}
}

# take_string: consume one JSON string into $token, quotes included.
take_string() {
    [[ ${rest:0:1} == '"' ]] || return 1
    local tail=${rest:1}
    local content=${tail%%'"'*}
    ((${#content} < ${#tail})) || return 1
    # shellcheck disable=SC2053 # NOT_PLAIN is a pattern.
    if [[ $content != $NOT_PLAIN ]]; then
        token=\"$content\"
        rest=${tail:${#content}+1}
        return 0
    fi
    # The string holds a backslash (its closing quote may lie further on, after
    # an escaped one) or a control character.
    [[ $rest =~ $RE_STRING ]] || return 1
    token=${BASH_REMATCH[0]}
    rest=${rest:${#token}}
}

# take_number: consume one JSON number into $token.
take_number() {
    token=${rest%%[!0-9eE.+-]*}
    rest=${rest:${#token}}
    if [[ -n $token && $token != *[!0-9]* ]]; then
        [[ $token == 0 || $token != 0* ]]
    else
        [[ $token =~ $RE_NUMBER ]]
    fi
}

# value DEPTH: consume one JSON value. A scalar leaves its text in $token and
# its kind in $kind; an object or an array leaves kind=container.
value() {
    skip_space
    case $rest in
        '"'*) take_string && kind=string ;;
        [-0-9]*) take_number && kind=number ;;
        true* | null*) token=${rest:0:4} rest=${rest:4} kind=literal ;;
        false*) token=false rest=${rest:5} kind=literal ;;
        '{'* | '['*) container "$1" && kind=container ;;
        *) return 1 ;;
    esac
}

# container DEPTH: consume an object or an array. The members of the body's
# own object (depth 0) go to note_member; deeper values are only checked.
container() {
    local depth=$(($1 + 1)) close name
    ((depth <= MAX_DEPTH)) || return 1
    [[ ${rest:0:1} == '{' ]] && close='}' || close=']'
    rest=${rest:1}
    skip_space
    if [[ ${rest:0:1} == "$close" ]]; then
        rest=${rest:1}
        return 0
    fi
    while :; do
        if [[ $close == '}' ]]; then
            skip_space
            take_string || return 1
            name=$token
            skip_space
            [[ ${rest:0:1} == : ]] || return 1
            rest=${rest:1}
        fi
        value "$depth" || return 1
        if ((depth == 1)); then
            note_member "$name" || return 1
        fi
        skip_space
        case ${rest:0:1} in
            ,) rest=${rest:1} ;;
            "$close") rest=${rest:1}; return 0 ;;
            *) return 1 ;;
        esac
    done
}

# note_member NAME: check one member of the body's object, just read into
# $kind and $token, and keep the three the bank needs.
note_member() {
    case $1 in
        '"reference"' | '"wallet"' | '"amount"')
            # A repeated member is ambiguous: parsers disagree on which copy
            # wins, so the bank refuses to guess.
            [[ $seen != *"$1"* ]] || return 1
            seen+=$1
            ;;
    esac
    case $1 in
        '"reference"')
            [[ $kind == string ]] || return 1
            reference=${token:1:${#token}-2}
            ;;
        '"wallet"')
            [[ $kind == string ]] || return 1
            wallet=${token:1:${#token}-2}
            # shellcheck disable=SC2053 # UUID is a pattern.
            [[ $wallet == $UUID ]] || return 1
            ;;
        '"amount"')
            # Plain digits only: 1.5, 1.0, 1e3, -5 and 0 are all refused.
            [[ $kind == number && $token == [1-9]* && $token != *[!0-9]* ]] || return 1
            ((${#token} <= 16 && 10#$token <= MAX_AMOUNT)) || return 1
            amount=$token
            ;;
    esac
}

# parse_body: the body must be one object holding a string "reference", a
# UUID string "wallet" and an integer "amount" in 1..10^15, each exactly once.
# Sets reference (its JSON text with the escapes kept, so it never holds a tab
# or a newline), wallet and amount.
parse_body() {
    seen='' reference='' wallet='' amount=''
    rest=$body
    skip_space
    [[ ${rest:0:1} == '{' ]] || return 1
    container 0 || return 1
    skip_space
    [[ -z $rest && $seen == *'"reference"'* && $seen == *'"wallet"'* && $seen == *'"amount"'* ]]
}

parse_body || reject 400

# --- The mode ----------------------------------------------------------------

mode=success mode_a='' mode_b='' mode_extra=''
if [[ -e $state_dir/mode ]]; then
    IFS=$' \t\r' read -r mode mode_a mode_b mode_extra <"$state_dir/mode"
    mode=${mode:-success}
fi

delay_ms=0 fail_percent=0 fail_first=0
case $mode in
    success | fail | http500)
        [[ -z $mode_a ]] || mode=invalid
        ;;
    random)
        if is_uint "$mode_a" 3 && ((10#$mode_a <= 100)) && is_uint "$mode_b" 7 && [[ -z $mode_extra ]]; then
            fail_percent=$((10#$mode_a)) delay_ms=$((10#$mode_b))
        else
            mode=invalid
        fi
        ;;
    fail-first)
        if is_uint "$mode_a" 9 && [[ -z $mode_b ]]; then
            fail_first=$((10#$mode_a))
        else
            mode=invalid
        fi
        ;;
    slow)
        if is_uint "$mode_a" 7 && [[ -z $mode_b ]]; then
            delay_ms=$((10#$mode_a))
        else
            mode=invalid
        fi
        ;;
    *)
        mode=invalid
        ;;
esac

if [[ $mode == invalid ]]; then
    internal_error "unknown mode in $state_dir/mode"
fi

if [[ $mode == http500 ]]; then
    log_call http500
    answer_internal
    exit 0
fi

# The delay comes before the lock, so slow calls overlap as they would at a
# real bank instead of queueing behind each other. In slow mode the client is
# expected to give up before the answer: the payout still happens, and the next
# call with the same key gets the replayed success.
if ((delay_ms > 0)); then
    printf -v seconds '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000))
    sleep "$seconds"
    printf -v now '%(%s)T' -1
fi

# The dice are thrown outside the lock too; 30 random bits make the bias of
# the modulo negligible.
random_failure=0
if ((fail_percent > 0)); then
    roll=$((((RANDOM << 15) | RANDOM) % 100))
    ((roll < fail_percent)) && random_failure=1
fi

# --- The decision, under the lock --------------------------------------------

# Everything from here on reads and appends the shared files, so concurrent
# calls with one key must take turns: otherwise two of them could both find
# the key unpaid and both pay it.
exec {lock_fd}>>"$state_dir/lock" || internal_error "cannot open $state_dir/lock"
flock -x "$lock_fd" || internal_error "cannot lock $state_dir/lock"

# key_lines FILE: the lines of FILE whose second field is exactly the key, in
# the array matches. grep -F finds the candidates without reading the
# key as a pattern; the loop then keeps only whole-field matches, since the
# key could also appear inside another field or be part of a longer key.
key_lines() {
    local found line field
    matches=()
    [[ -s $1 ]] || return 0
    found=$(grep -F -e "$TAB$idem_key$TAB" -- "$1")
    # grep answers 1 when nothing matched and 2 when it could not read.
    (($? <= 1)) || return 1
    [[ -n $found ]] || return 0
    while IFS= read -r line; do
        field=${line#*"$TAB"}
        field=${field%%"$TAB"*}
        [[ $field == "$idem_key" ]] && matches+=("$line")
    done <<<"$found"
    return 0
}

key_lines "$ledger_file" || internal_error "cannot read $ledger_file"
if ((${#matches[@]} > 0)); then
    log_call replayed
    answer=success
else
    answer=pay
    case $mode in
        fail)
            answer=failed
            ;;
        random)
            ((random_failure)) && answer=failed
            ;;
        fail-first)
            key_lines "$calls_file" || internal_error "cannot read $calls_file"
            earlier=0
            for line in "${matches[@]}"; do
                [[ $line == *"${TAB}bad_request" ]] || ((earlier++))
            done
            ((earlier < fail_first)) && answer=failed
            ;;
    esac
    if [[ $answer == pay ]]; then
        # The ledger line is written before the answer: if the client never
        # sees the answer, the money has still left, exactly as at a real bank.
        printf '%s\t%s\t%s\t%s\t%s\n' "$now" "$idem_key" "$wallet" "$amount" "$reference" \
            >>"$ledger_file" || internal_error "cannot append to $ledger_file"
        log_call paid
        answer=success
    else
        log_call failed
    fi
fi

exec {lock_fd}>&-

if [[ $answer == success ]]; then
    answer_success
else
    answer_failed
fi
