# shellcheck shell=bash
# scripts/bench/lib.sh: what scripts/bench.sh and scripts/bench-postgres.sh
# both need (sourced, not run): float arithmetic and number formatting, free
# loopback ports, fields of report.lua's JSON summary, and the check that
# nothing is left running. Each script defines its own `die` and `warn`
# (with its own prefix) before calling these.

# Floating-point helpers (bash has integers only; awk is everywhere).
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# pct A B: A as a percentage of B ("12.3 %"), or "—" without a B.
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else printf "—" }'; }
# ge A B: A >= B (floats).
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
# Thousands separators for a whole number ("12,345"), after rounding.
thousands() { awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } printf "%s%s", s, r }'; }

# free_port VAR: sets VAR to a free loopback port (nothing listens on it
# now, and we have not chosen it before). A variable, not output: the list
# of chosen ports must survive the call. stack.sh checks again and refuses
# a port in use.
# The ports come from below the kernel's ephemeral range, where wrk, curl and
# the processor take the local ports of their connections: a port in that
# range can refuse connect() (nothing listens) and still be taken for
# nginx's bind() by a connection that uses it as its own end.
TAKEN_PORTS=" "
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
PORT_LOW=10000
PORT_SPAN=$((EPHEMERAL_LOW - PORT_LOW))
((PORT_SPAN >= 1000)) || PORT_LOW=20000 PORT_SPAN=40000
# (Its own variable has a name no caller uses: printf -v would set a local.)
free_port() {
    local candidate_port
    for _ in {1..200}; do
        candidate_port=$((PORT_LOW + RANDOM % PORT_SPAN))
        [[ $TAKEN_PORTS != *" $candidate_port "* ]] || continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate_port") 2>/dev/null; then
            TAKEN_PORTS+="$candidate_port "
            printf -v "$1" '%s' "$candidate_port"
            return 0
        fi
    done
    die "no free loopback port found"
}

# json_field NAME JSON: the number NAME in a summary line of report.lua.
json_field() {
    local re="\"$1\": (-?[0-9]+(\.[0-9]+)?)"
    [[ $2 =~ $re ]] || die "no field $1 in: $2"
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# report_leftovers DIR: warns of every process (but this shell) whose command
# line names DIR, the run's temporary directory, and fails if there is one.
# A report, never a kill by name.
report_leftovers() {
    local dir=$1 proc pid args=() leftovers=()
    [[ -n $dir ]] || return 0
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ $pid != "$$" ]] || continue
        args=()
        { mapfile -d '' -t args <"$proc/cmdline"; } 2>/dev/null || continue
        if [[ " ${args[*]} " == *"$dir"* ]]; then leftovers+=("$pid"); fi
    done
    ((${#leftovers[@]} == 0)) && return 0
    warn "processes left behind: ${leftovers[*]}"
    return 1
}
