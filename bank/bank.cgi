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
#   key in progress:   409 {"data": "in_progress", "status": 409}
#   malformed request: 400 {"data": "bad_request", "status": 400}
#                      (405 for a method other than POST, 413 for a body
#                      over 16 KiB, with the same body and that status)
#   simulated outage:  500 {"error": "internal"} (http500, an unknown mode),
#                      500 {"error": "timeout"} (hang), or any status with a
#                      body that is no bank body (status CODE)
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
#             fail-first N                  fail each key until it has been
#                                           answered failed N times (in any
#                                           mode), then pay
#             slow DELAY_MS                 wait DELAY_MS, then pay
#             pay-then-hang DELAY_MS        pay first, then wait DELAY_MS
#                                           before answering success (the
#                                           client times out after the money
#                                           left)
#             hang DELAY_MS                 wait DELAY_MS, pay nothing, answer
#                                           500 {"error": "timeout"} (the client
#                                           is expected to have given up long
#                                           before)
#             status CODE                   answer HTTP CODE (200-599, not 204,
#                                           205 or 304) with a body that is no
#                                           bank body: an HTML page for 404,
#                                           {"error": "status CODE"} otherwise;
#                                           pay nothing
#             http500                       answer 500 {"error": "internal"},
#                                           pay nothing
#           Anything else is answered as an internal error (HTTP 500) and
#           pays nothing, so that a typo cannot pass for a working bank.
#   ledger  append-only TSV, one line per payout, each key at most once:
#           paid_at_unix, idempotency_key, wallet, amount, reference
#           (the reference as its JSON string text without the quotes, escapes
#           kept, so it never holds a tab or a newline)
#   calls   append-only TSV, one line per call:
#           unix_time, idempotency_key, answer
#           where answer is paid, replayed, failed, in_progress, hang, status,
#           http500 or bad_request. The line is written when the call's
#           outcome is decided: for pay-then-hang at the payout, before its
#           wait; for hang after its wait.
#   keys/   one set of files per key, named by the key in hexadecimal (see
#           key_files below):
#             HEX.lock    the key's lock (flock), one per key ever called
#             HEX.paid    the key's payout marker: it exists once the key is
#                         paid, and holds the key's ledger line
#             HEX.failed  how many calls of the key were answered failed
#                         (read by fail-first)
#
# Per-key serialisation. A call takes its key's lock before anything else it
# does for the key (delay, dice, decision, answer) and holds it until it
# exits. A second call with a key whose lock is held does not wait: it gets
# 409 in_progress at once, as from the real bank, and changes nothing. So a
# failed answer is final for the key at the moment it is given: no earlier
# call of the key can still pay after it. (Waiting for the lock instead would
# park a retry behind a slow call until the client's own timeout, and the
# client would learn nothing; the 409 tells it "unknown, ask again".) Calls
# with different keys take different locks and run side by side.
#
# Each key is paid at most once: the payout marker is created with O_EXCL
# under the key's lock, and its existence alone means "paid". A key that has
# a marker gets the replayed success in every mode that looks at the key
# (success, fail, random, fail-first, slow, pay-then-hang; in the delaying
# modes after the delay): the failed answer promises that nothing was paid,
# and a real bank that had paid would not say so. The modes that simulate a
# broken path in front of the bank (status, http500, hang) answer as they
# say without looking at the key: a proxy answering 404 does not know it.
# hang still takes the key's lock, as a bank stuck on the call would.
#
# Durability. A payout is on disk before its answer leaves: the marker (with
# the ledger line in it) is created first, then the line is appended to the
# ledger, then `sync --data` flushes both files and the directories that
# name them, and only then is success written. An answer the client saw is
# therefore never undone by a crash of this machine; a crash before it
# leaves either nothing (the key is unpaid and a retry pays it) or a marker
# whose line may be missing from the ledger (the key replays success and its
# line is in its marker), never a key paid twice.
#
# Malformed requests are refused in every mode, before the mode is read.
#
# fcgiwrap forks this script for every request. Besides bash it runs jq (the
# body, unless it has the processor's own shape), flock (the key's lock), and
# on a payout cat and sync; sleep in the modes that delay, and mkdir the
# first time a directory is needed.

# Byte semantics everywhere: CONTENT_LENGTH counts bytes, and the key and the
# patterns below are byte ranges.
export LC_ALL=C

readonly MAX_BODY=16384
readonly MAX_AMOUNT=1000000000000000
# The key's file names are its bytes in hexadecimal, cut into directory levels
# of this many digits, so that no name comes near NAME_MAX (255 bytes) with
# its suffix: a 255-byte key is 510 digits, two directories and a file name.
readonly KEY_HEX_PER_LEVEL=200
# flock's exit status when the key's lock is held by another call (EX_TEMPFAIL),
# told apart from its failures.
readonly LOCK_BUSY=75

if [[ -n ${BANK_STATE_DIR-} ]]; then
    state_dir=$BANK_STATE_DIR
elif [[ ${BASH_SOURCE[0]} == */* ]]; then
    state_dir=${BASH_SOURCE[0]%/*}/state
else
    state_dir=state
fi
ledger_file=$state_dir/ledger
calls_file=$state_dir/calls
keys_dir=$state_dir/keys

printf -v now '%(%s)T' -1

# respond STATUS_LINE BODY [EXTRA_HEADER [CONTENT_TYPE]]
respond() {
    local extra=${3:+$3$'\r\n'}
    printf 'Status: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s' \
        "$1" "${4:-application/json}" "${#2}" "$extra" "$2"
}

answer_success() { respond '200 OK' '{"data": "success", "status": 200}'; }
answer_failed() { respond '503 Service Unavailable' '{"data": "failed", "status": 503}'; }
answer_in_progress() { respond '409 Conflict' '{"data": "in_progress", "status": 409}'; }
answer_internal() { respond '500 Internal Server Error' '{"error": "internal"}'; }
answer_timeout() { respond '500 Internal Server Error' '{"error": "timeout"}'; }

# answer_status CODE: an answer from something in front of the bank, which
# knows nothing of bank bodies. 404 gets the HTML page a web server shows.
answer_status() {
    local reason
    case $1 in
        200) reason='OK' ;;
        400) reason='Bad Request' ;;
        401) reason='Unauthorized' ;;
        403) reason='Forbidden' ;;
        404) reason='Not Found' ;;
        405) reason='Method Not Allowed' ;;
        409) reason='Conflict' ;;
        410) reason='Gone' ;;
        413) reason='Payload Too Large' ;;
        422) reason='Unprocessable Content' ;;
        425) reason='Too Early' ;;
        429) reason='Too Many Requests' ;;
        500) reason='Internal Server Error' ;;
        502) reason='Bad Gateway' ;;
        503) reason='Service Unavailable' ;;
        504) reason='Gateway Timeout' ;;
        *) reason='Status' ;;
    esac
    if (($1 == 404)); then
        respond '404 Not Found' $'<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n' \
            '' 'text/html'
    else
        respond "$1 $reason" "{\"error\": \"status $1\"}"
    fi
}

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

# pause MILLISECONDS
pause() {
    (($1 > 0)) || return 0
    local seconds
    printf -v seconds '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
    sleep "$seconds"
    printf -v now '%(%s)T' -1
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

# --- The body ----------------------------------------------------------------
#
# The body must be one JSON object holding a string "reference", a UUID string
# "wallet" and an integer "amount" in 1..10^15, each exactly once; other
# members may hold any JSON value. jq checks that the text is JSON (fromjson),
# but its parser cannot say everything the bank needs: it keeps only the last
# of two members with one name, reads numbers as doubles (1.0 and 1e3 would
# pass for integers) and lets through a few forms JSON does not have (01, +1,
# .5, NaN, infinity). So the program also cuts the text, once jq has accepted
# it, into JSON tokens (strings, punctuation, bare words) and walks the top
# level object's members, giving the literal text of each member's value:
# that is how a repeated "amount" is seen, escaped names included
# ("am\u006funt" is "amount"), and the amount is checked as written. Bare words
# must be JSON numbers or true, false, null; nesting is at most 32 deep.
#
# It prints the literal texts of reference, wallet and amount, one per line
# (a JSON string literal never holds a raw newline), or nothing at all when
# the body is refused. Member names are compared decoded, values as written.
# shellcheck disable=SC2016 # A jq program: its $names are jq's, not the shell's.
readonly BODY_PROGRAM='
def is_json_number: test("^-?(0|[1-9][0-9]*)([.][0-9]+)?([eE][+-]?[0-9]+)?$");
(fromjson | type) as $type
| [scan("\"(?:[^\"\\\\]|\\\\.)*\"|[{}\\[\\]:,]|[^ \t\r\n\"{}\\[\\]:,]+")]
| reduce .[] as $t ({depth: 0, deepest: 0, at: "name", name: "", members: [], bad: false};
    if $t == "{" or $t == "[" then
      (if .depth == 1 and .at == "value" then .members += [[.name, $t]] | .at = "next" else . end)
      | .depth += 1
      | .deepest = ([.deepest, .depth] | max)
    elif $t == "}" or $t == "]" then .depth -= 1
    elif .depth != 1 then .
    elif $t == "," then .at = "name"
    elif $t == ":" then .at = "value"
    elif .at == "name" then .name = ($t | fromjson) | .at = "colon"
    else .members += [[.name, $t]] | .at = "next"
    end
    | if ($t | test("^[^\"{}\\[\\]:,]")) and $t != "true" and $t != "false" and $t != "null"
         and ($t | is_json_number | not)
      then .bad = true else . end)
| select($type == "object" and (.bad | not) and .deepest <= 32)
| .members as $members
| ["reference", "wallet", "amount"]
| map(. as $name | [$members[] | select(.[0] == $name) | .[1]])
| select(all(length == 1))
| .[][0]
'
readonly HEX='[0-9a-fA-F]'
readonly HEX4=$HEX$HEX$HEX$HEX
readonly UUID=\"$HEX4$HEX4-$HEX4-$HEX4-$HEX4-$HEX4$HEX4$HEX4\"

# jq's exit status for an error raised by the program (here: fromjson on text
# that is not JSON). Any other failure (127: jq is missing) is the bank's
# own, not the client's.
readonly JQ_ERROR=5

# The one shape the processor (compact) and the benchmarks (a space after
# each colon and comma) send: the three members in this order, a reference
# without escapes or quotes, a plain positive amount. Such a body is one JSON
# object holding each member once by construction, so it needs no parser;
# every other body goes to jq. (jq 1.6 spends about 20 ms of CPU starting,
# four times all the rest of a call, and this bank is the ceiling of the
# processor's benchmark.)
readonly CANONICAL_BODY='^\{"reference": ?"([] !#-[^-~]*)", ?"wallet": ?"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})", ?"amount": ?([1-9][0-9]{0,15})\}$'

# parse_body_with_jq: sets reference, wallet and amount as parse_body does,
# for any body, or fails.
parse_body_with_jq() {
    local fields status
    # jq's message is of no use to the client, who only learns "bad_request".
    fields=$(jq -r -R -s "$BODY_PROGRAM" <<<"$body" 2>/dev/null)
    status=$?
    ((status == JQ_ERROR)) && return 1
    ((status == 0)) || internal_error "jq failed with exit status $status"
    [[ $fields == *$'\n'*$'\n'* ]] || return 1
    reference=${fields%%$'\n'*}
    fields=${fields#*$'\n'}
    wallet=${fields%%$'\n'*}
    amount=${fields#*$'\n'}
    [[ $reference == \"*\" ]] || return 1
    reference=${reference:1:${#reference}-2}
    # shellcheck disable=SC2053 # UUID is a pattern.
    [[ $wallet == $UUID ]] || return 1
    wallet=${wallet:1:${#wallet}-2}
    # Plain digits only: 1.5, 1.0, 1e3, -5 and 0 are all refused.
    [[ $amount == [1-9]* && $amount != *[!0-9]* ]]
}

# parse_body: sets reference (its JSON text with the escapes kept, without
# the quotes), wallet and amount, or fails.
parse_body() {
    if [[ $body =~ $CANONICAL_BODY ]]; then
        reference=${BASH_REMATCH[1]} wallet=${BASH_REMATCH[2]} amount=${BASH_REMATCH[3]}
    else
        parse_body_with_jq || return 1
    fi
    ((${#amount} <= 16 && 10#$amount <= MAX_AMOUNT))
}

parse_body || reject 400

# --- The mode ----------------------------------------------------------------

mode=success mode_a='' mode_b='' mode_extra=''
if [[ -e $state_dir/mode ]]; then
    IFS=$' \t\r' read -r mode mode_a mode_b mode_extra <"$state_dir/mode"
    mode=${mode:-success}
fi

delay_ms=0 fail_percent=0 fail_first=0 status_code=0
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
    slow | hang | pay-then-hang)
        if is_uint "$mode_a" 7 && [[ -z $mode_b ]]; then
            delay_ms=$((10#$mode_a))
        else
            mode=invalid
        fi
        ;;
    status)
        # 204, 205 and 304 carry no body, and 1xx is no final answer.
        if is_uint "$mode_a" 3 && [[ -z $mode_b ]]; then
            status_code=$((10#$mode_a))
        fi
        if ((status_code < 200 || status_code > 599 || status_code == 204 ||
            status_code == 205 || status_code == 304)); then
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

# The broken paths in front of the bank answer without looking at the key.
if [[ $mode == http500 ]]; then
    log_call http500
    answer_internal
    exit 0
fi
if [[ $mode == status ]]; then
    log_call status
    answer_status "$status_code"
    exit 0
fi

# --- The key's lock ----------------------------------------------------------

# key_files: sets key_path, the key's files without their suffix, and
# key_dirs, the directories from the state directory down to the one holding
# them. A key cannot name a file as it is ('/', "..", NAME_MAX), so the name
# is the key's bytes in lower-case hexadecimal, which no two keys share. Keys
# over KEY_HEX_PER_LEVEL / 2 bytes are cut into directory levels; a level is
# named by bare digits and a file always ends in a suffix with a dot, so a
# level never meets a file of the same name.
key_files() {
    local -a codes=()
    local i hex
    # printf repeats its format for every argument; "'c" is the code of c.
    for ((i = 0; i < ${#idem_key}; i++)); do
        codes+=("'${idem_key:i:1}")
    done
    printf -v hex '%02x' "${codes[@]}"
    key_dirs=("$state_dir" "$keys_dir")
    key_path=$keys_dir
    while ((${#hex} > KEY_HEX_PER_LEVEL)); do
        key_path+=/${hex:0:KEY_HEX_PER_LEVEL}
        key_dirs+=("$key_path")
        hex=${hex:KEY_HEX_PER_LEVEL}
    done
    key_path+=/$hex
}

key_files
if [[ ! -d ${key_dirs[-1]} ]] && ! mkdir -p -- "${key_dirs[-1]}" 2>/dev/null; then
    internal_error "cannot create ${key_dirs[-1]}"
fi
exec {lock_fd}>>"$key_path.lock" || internal_error "cannot open $key_path.lock"
flock --nonblock --conflict-exit-code "$LOCK_BUSY" --exclusive "$lock_fd"
lock_status=$?
if ((lock_status == LOCK_BUSY)); then
    log_call in_progress
    answer_in_progress
    exit 0
fi
((lock_status == 0)) || internal_error "cannot lock $key_path.lock"
# From here on the lock is held until the script exits, answer included.

if [[ $mode == hang ]]; then
    pause "$delay_ms"
    log_call hang
    answer_timeout
    exit 0
fi

# --- The decision, under the key's lock ----------------------------------------

if [[ $mode == slow || $mode == random ]]; then
    pause "$delay_ms"
fi

# pay: the payout, on disk before this returns (see Durability above). The
# marker is created with O_EXCL (noclobber), so even a bug that let two calls
# of one key get here could not pay it twice. The line reaches the ledger in
# one write(2) by cat: bash's printf writes a line longer than its 4 KiB
# buffer in pieces, which a payout of another key, appending at the same
# moment without this key's lock, could split. sync also flushes the
# directories, so that the marker's and the ledger's names survive a crash
# with their contents.
pay() {
    local marker=$key_path.paid
    local created
    set -C
    printf '%s\t%s\t%s\t%s\t%s\n' "$now" "$idem_key" "$wallet" "$amount" "$reference" >"$marker"
    created=$?
    set +C
    ((created == 0)) || internal_error "cannot create $marker"
    cat -- "$marker" >>"$ledger_file" || internal_error "cannot append to $ledger_file"
    sync --data -- "$marker" "$ledger_file" "${key_dirs[@]}" || internal_error "cannot sync $ledger_file"
}

# count_failed: one more failed answer for the key, in its .failed file.
count_failed() {
    printf '%d\n' $((failed_before + 1)) >"$key_path.failed" ||
        internal_error "cannot write $key_path.failed"
}

if [[ -e $key_path.paid ]]; then
    log_call replayed
    answer=success
else
    failed_before=0
    if [[ -s $key_path.failed ]]; then
        read -r failed_before <"$key_path.failed"
        is_uint "$failed_before" 9 || internal_error "unreadable $key_path.failed"
        failed_before=$((10#$failed_before))
    fi
    answer=pay
    case $mode in
        fail)
            answer=failed
            ;;
        random)
            # 30 random bits make the bias of the modulo negligible.
            (((((RANDOM << 15) | RANDOM) % 100) < fail_percent)) && answer=failed
            ;;
        fail-first)
            ((failed_before < fail_first)) && answer=failed
            ;;
    esac
    if [[ $answer == pay ]]; then
        pay
        log_call paid
        answer=success
    else
        count_failed
        log_call failed
    fi
fi

if [[ $mode == pay-then-hang ]]; then
    pause "$delay_ms"
fi

if [[ $answer == success ]]; then
    answer_success
else
    answer_failed
fi
