#!/usr/bin/env bash
# Static checks of the systemd units in systemd/ (no running systemd needed:
# works in a container or CI job where PID 1 is not systemd).
#
#   Tests/systemd/check_units.sh            # checks ./systemd of this repo
#   WALLET_UNIT_DIR=/path Tests/systemd/check_units.sh
#   WALLET_UNIT_DIR=/path WALLET_UNIT_BIN_DIR=/usr/bin Tests/systemd/check_units.sh
#                                           # units installed with another prefix
#                                           # (the Debian package's: Tests/deb/check_deb.sh)
#
# Checks:
#   1. systemd-analyze verify on all four units, on copies whose Exec*=
#      binaries point at /bin/true (verify insists that they exist). verify
#      exits 0 on warnings (unknown keys, unparsable values are "ignoring"),
#      so ANY output counts as a failure. A deliberately broken copy must
#      produce output, which shows the check can fail at all.
#   2. systemd-analyze security --offline=yes on each service: the
#      "Overall exposure level" must be <= 2.0 for the responder and <= 2.5
#      for the processor; the same limits are checked again through
#      --threshold= (which uses a 0-100 scale: 20 means 2.0).
#   3. Timer sanity: its time spans parse (systemd-analyze timespan), the
#      interval is 10 s, the accuracy is not coarser than the interval.
#   4. The contract the binaries rely on (socket on fd 0, journal output,
#      socket path and permissions, oneshot processor).
#   5. Every block of directives is preceded by a comment.
#   6. The example drop-ins in systemd/examples/ (the responder on TCP; not
#      installed): verify with them applied, a broken drop-in is reported
#      (so they are read at all), the socket's only listener is the TCP
#      address, and their directives are commented too.
#
# Prints one line per check (details of a failure go to stderr) and a last
# line "N passed, M failed". Exit status 0 only if nothing failed.
# Needs bash and systemd-analyze (Debian package "systemd").

set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit_dir=${WALLET_UNIT_DIR:-$here/../../systemd}
# Where the units' ExecStart= binaries are (make install's PREFIX/bin).
bin_dir=${WALLET_UNIT_BIN_DIR:-/usr/local/bin}

responder_max=2.0
processor_max=2.5
notifier_max=2.5

socket_unit=wallet-fcgi.socket
responder=wallet-fcgi.service
processor=wallet-processor.service
timer=wallet-processor.timer
notifier=wallet-notifier.service
notifier_timer=wallet-notifier.timer
units=("$socket_unit" "$responder" "$processor" "$timer" "$notifier" "$notifier_timer")

# Plain, uncoloured, unpaged output whatever the caller's environment says.
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat SYSTEMD_LESS=
unset SYSTEMD_LOG_LEVEL SYSTEMD_LOG_TARGET

passed=0
failed=0
pass() { printf 'PASS %s\n' "$1"; passed=$((passed + 1)); }
fail() {
    printf 'FAIL %s\n' "$1"
    if [ -n "${2-}" ]; then printf '%s\n' "$2" | sed 's/^/    /' >&2; fi
    failed=$((failed + 1))
}
finish() {
    printf '%d passed, %d failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ]
    exit
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    fail "systemd-analyze is installed" "install the Debian package 'systemd'"
    finish
fi

missing=()
for u in "${units[@]}"; do [ -f "$unit_dir/$u" ] || missing+=("$u"); done
if [ "${#missing[@]}" -ne 0 ]; then
    fail "units present in $unit_dir" "missing: ${missing[*]}"
    finish
fi
pass "units present: ${units[*]}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_units.XXXXXX") || { fail "create a temp dir"; finish; }
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/units" "$tmp/broken"

# Copies for systemd-analyze: every Exec*= command (with any of systemd's
# prefixes such as "-" or "+") becomes /bin/true, and EnvironmentFile= gets the
# "-" (optional) prefix so the result does not depend on this host's /etc.
# The hardening settings, which are what is being checked, are untouched.
for u in "${units[@]}"; do
    sed -E \
        -e 's#^(Exec[A-Za-z]*=).*#\1/bin/true#' \
        -e 's#^EnvironmentFile=([^-])#EnvironmentFile=-\1#' \
        "$unit_dir/$u" >"$tmp/units/$u"
done
rewritten=$(cat "$tmp/units/"*.service | grep -c '^ExecStart=/bin/true$')
if [ "$rewritten" -eq 3 ]; then
    pass "copies made, ExecStart= of the three services replaced by /bin/true"
else
    fail "copies made, ExecStart= of the three services replaced by /bin/true" \
        "expected 3 rewritten ExecStart= lines, found $rewritten"
fi

# ---------------------------------------------------------------- 1. verify
verify() { (cd "$1" && systemd-analyze verify "${units[@]/#/./}" 2>&1); }

out=$(verify "$tmp/units")
rc=$?
if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
    pass "systemd-analyze verify: ${#units[@]} units, exit 0, no output"
else
    fail "systemd-analyze verify: ${#units[@]} units, exit 0, no output (exit $rc)" "$out"
fi

cp "$tmp/units/"* "$tmp/broken/"
printf 'NoSuchDirectiveForTheSelfTest=yes\n' >>"$tmp/broken/$responder"
out=$(verify "$tmp/broken")
if [ -n "$out" ]; then
    pass "systemd-analyze verify self-test: a broken copy produces output"
else
    fail "systemd-analyze verify self-test: a broken copy produces output" \
        "an unknown directive went unreported; the verify check above proves nothing"
fi

# -------------------------------------------------------------- 2. security
# $1 unit, $2 maximum exposure (0.0-10.0)
check_security() {
    local unit=$1 max=$2 out score threshold rc
    out=$(systemd-analyze security --offline=yes --no-pager "$tmp/units/$unit" 2>&1)
    score=$(printf '%s\n' "$out" |
        sed -n -E "s/.*Overall exposure level for ${unit//./\\.}: ([0-9]+(\.[0-9]+)?).*/\1/p")
    if [ -z "$score" ]; then
        fail "security $unit: exposure <= $max (no score found)" "$out"
    elif awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
        pass "security $unit: exposure $score <= $max"
    else
        fail "security $unit: exposure $score <= $max" \
            "$(printf '%s\n' "$out" | grep -v '^✓')"
    fi

    # Same limit through --threshold=, which is on a 0-100 scale and fails
    # (exit 1) when the exposure is above it.
    threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')
    systemd-analyze security --offline=yes --no-pager --threshold="$threshold" \
        "$tmp/units/$unit" >/dev/null 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        pass "security $unit: --threshold=$threshold accepts it"
    else
        fail "security $unit: --threshold=$threshold accepts it (exit $rc)"
    fi
}
check_security "$responder" "$responder_max"
check_security "$processor" "$processor_max"
check_security "$notifier" "$notifier_max"

# ----------------------------------------------------------------- 3. timer
# Prints the value of the last "Key=" line of a unit file.
value() { sed -n -E "s/^$2=(.*)/\1/p" "$unit_dir/$1" | tail -n 1; }
# Prints a time span in microseconds, or nothing if systemd cannot parse it.
usec() { systemd-analyze timespan "$1" 2>/dev/null | sed -n -E 's/^ *μs: ([0-9]+)$/\1/p'; }

bad=""
for key in OnBootSec OnUnitActiveSec AccuracySec; do
    v=$(value "$timer" "$key")
    if [ -z "$v" ]; then bad+="$key= missing; "
    elif [ -z "$(usec "$v")" ]; then bad+="$key=$v does not parse; "
    fi
done
while IFS= read -r spec; do
    [ -n "$spec" ] || continue
    systemd-analyze calendar "$spec" >/dev/null 2>&1 || bad+="OnCalendar=$spec does not parse; "
done < <(value "$timer" OnCalendar)
if [ -z "$bad" ]; then
    pass "timer: OnBootSec=, OnUnitActiveSec=, AccuracySec= parse"
else
    fail "timer: OnBootSec=, OnUnitActiveSec=, AccuracySec= parse" "$bad"
fi

bad=""
for key in OnBootSec OnUnitActiveSec AccuracySec; do
    v=$(value "$notifier_timer" "$key")
    if [ -z "$v" ]; then bad+="$key= missing; "
    elif [ -z "$(usec "$v")" ]; then bad+="$key=$v does not parse; "
    fi
done
notify_interval=$(usec "$(value "$notifier_timer" OnUnitActiveSec)")
notify_accuracy=$(usec "$(value "$notifier_timer" AccuracySec)")
if [ -z "$bad" ] && [ "${notify_interval:-0}" -eq 2000000 ] && [ -n "$notify_accuracy" ] && [ "$notify_accuracy" -le "$notify_interval" ]; then
    pass "notifier timer: every 2 s (OnUnitActiveSec=), AccuracySec= not coarser"
else
    fail "notifier timer: every 2 s (OnUnitActiveSec=), AccuracySec= not coarser" \
        "${bad}OnUnitActiveSec=${notify_interval:-?}us AccuracySec=${notify_accuracy:-?}us"
fi

interval=$(usec "$(value "$timer" OnUnitActiveSec)")
accuracy=$(usec "$(value "$timer" AccuracySec)")
if [ "${interval:-0}" -eq 10000000 ] && [ -n "$accuracy" ] && [ "$accuracy" -le "$interval" ]; then
    pass "timer: every 10 s (OnUnitActiveSec=), AccuracySec= not coarser"
else
    fail "timer: every 10 s (OnUnitActiveSec=), AccuracySec= not coarser" \
        "OnUnitActiveSec=${interval:-?}us AccuracySec=${accuracy:-?}us"
fi

# -------------------------------------------------------------- 4. contract
# $1 unit, then exact "Key=Value" lines that must be present.
require() {
    local unit=$1 line missing=()
    shift
    for line in "$@"; do
        grep -qxF -- "$line" "$unit_dir/$unit" || missing+=("$line")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        pass "contract $unit: $*"
    else
        fail "contract $unit: $*" "missing: ${missing[*]}"
    fi
}
require "$socket_unit" ListenStream=/run/wallet/fcgi.sock Accept=no \
    SocketGroup=www-data SocketMode=0660
require "$responder" "ExecStart=$bin_dir/wallet-fcgi" StandardInput=socket \
    StandardOutput=journal StandardError=journal Requires=wallet-fcgi.socket \
    User=wallet
require "$processor" Type=oneshot "ExecStart=$bin_dir/wallet-processor" User=wallet
# The settings every program reads, then the bank's (processor only, read
# last so they win), and the bank token as a credential, never a variable.
require "$responder" EnvironmentFile=/etc/wallet/wallet.env
require "$processor" EnvironmentFile=/etc/wallet/wallet.env EnvironmentFile=/etc/wallet/processor.env \
    LoadCredential=bank-token:/etc/wallet/bank-token "SetCredential=bank-token:no bank token"
order=$(sed -n -E 's#^EnvironmentFile=##p' "$unit_dir/$processor" | tr '\n' ' ')
if [ "$order" = "/etc/wallet/wallet.env /etc/wallet/processor.env " ]; then
    pass "contract $processor: wallet.env, then processor.env"
else
    fail "contract $processor: wallet.env, then processor.env" "EnvironmentFile= lines: $order"
fi
# $1 unit, then extended regular expressions no line may match.
forbid() {
    local unit=$1 pattern found=()
    shift
    for pattern in "$@"; do
        grep -qE -- "$pattern" "$unit_dir/$unit" && found+=("$pattern")
    done
    if [ "${#found[@]}" -eq 0 ]; then
        pass "contract $unit: none of $*"
    else
        fail "contract $unit: none of $*" "found: ${found[*]}"
    fi
}
# The responder faces the Internet: it never sees the bank's settings or token.
forbid "$responder" '^EnvironmentFile=.*processor\.env' '^(Load|Set|Import)Credential=bank-token' '^Environment=.*WALLET_BANK'
forbid "$processor" '^Environment=.*WALLET_BANK_TOKEN'
require "$timer" WantedBy=timers.target
# The notifier: one pass per timer run, the shared settings only (never the
# bank's), and the webhook master key as a credential, as the responder has it.
require "$notifier" Type=oneshot "ExecStart=$bin_dir/wallet-notifier" User=wallet EnvironmentFile=/etc/wallet/wallet.env \
    LoadCredential=webhook-master-key:/etc/wallet/webhook-master-key "SetCredential=webhook-master-key:no webhook master key"
require "$responder" LoadCredential=webhook-master-key:/etc/wallet/webhook-master-key
forbid "$notifier" '^EnvironmentFile=.*processor\.env' '^(Load|Set|Import)Credential=bank-token' '^Environment=.*WALLET_BANK'
require "$notifier_timer" WantedBy=timers.target

# -------------------------------------------------------------- 5. comments
# Every run of consecutive directive lines must follow a comment line: each
# setting is explained where it is made.
# $1 file, $2 its name in the report.
check_comments() {
    local out
    out=$(awk '
        /^[ \t]*$/                 { prev = "blank"; next }
        /^[ \t]*[#;]/              { prev = "comment"; next }
        /^\[/                      { prev = "section"; next }
        /^[A-Za-z][A-Za-z0-9]*=/   { if (prev != "comment" && prev != "directive")
                                         printf "line %d: %s\n", NR, $0
                                     prev = "directive"; next }
                                   { prev = "other" }
    ' "$1")
    if [ -z "$out" ]; then
        pass "comments $2: every directive block is explained"
    else
        fail "comments $2: every directive block is explained" "$out"
    fi
}
for u in "${units[@]}"; do check_comments "$unit_dir/$u" "$u"; done

# -------------------------------------------------------------- 6. examples
examples=${WALLET_UNIT_EXAMPLES_DIR:-$here/../../systemd/examples}
tcp_dropins=(wallet-fcgi.socket.d/tcp.conf wallet-fcgi.service.d/tcp.conf)
if [ -d "$examples" ]; then
    mkdir "$tmp/examples" "$tmp/examples-broken"
    cp "$tmp/units/$socket_unit" "$tmp/units/$responder" "$tmp/examples/"
    for d in "${tcp_dropins[@]}"; do
        mkdir -p "$tmp/examples/$(dirname "$d")"
        # As for the units, a command becomes /bin/true; the empty ExecStart=
        # that resets the list stays empty.
        sed -E -e 's#^(Exec[A-Za-z]*=).+#\1/bin/true#' "$examples/$d" >"$tmp/examples/$d"
    done
    cp -r "$tmp/examples/." "$tmp/examples-broken/"
    printf 'NoSuchDirectiveForTheSelfTest=yes\n' >>"$tmp/examples-broken/${tcp_dropins[0]}"
    verify_pair() { (cd "$1" && systemd-analyze verify "./$socket_unit" "./$responder" 2>&1); }
    out=$(verify_pair "$tmp/examples")
    rc=$?
    if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
        pass "examples: verify with the TCP drop-ins, exit 0, no output"
    else
        fail "examples: verify with the TCP drop-ins, exit 0, no output (exit $rc)" "$out"
    fi
    if [ -n "$(verify_pair "$tmp/examples-broken")" ]; then
        pass "examples: verify reads the drop-ins (a broken one produces output)"
    else
        fail "examples: verify reads the drop-ins (a broken one produces output)" \
            "an unknown directive in a drop-in went unreported"
    fi
    listeners=$(sed -n 's/^ListenStream=//p' "$examples/${tcp_dropins[0]}" | tr '\n' ' ')
    if [ "$listeners" = " 10.0.0.5:9000 " ] &&
        grep -qxF 'ExecStart=' "$examples/${tcp_dropins[1]}" &&
        grep -qE '^ExecStart=/usr/local/bin/wallet-fcgi --allow [0-9.,]+$' "$examples/${tcp_dropins[1]}"; then
        pass "examples: the socket's one listener is 10.0.0.5:9000, the service adds --allow"
    else
        fail "examples: the socket's one listener is 10.0.0.5:9000, the service adds --allow" \
            "ListenStream= values: '$listeners'"
    fi
    for d in "${tcp_dropins[@]}"; do check_comments "$examples/$d" "examples/$d"; done
fi

finish
