# shellcheck shell=bash
# scripts/lib.sh: process helpers shared by stack.sh and bench.sh (sourced,
# not run). Everything here stays inside bash builtins: the stop loops call
# these many times a second.

# Microseconds since the epoch, without forking (bash 5's EPOCHREALTIME).
now_us() {
    local t=${EPOCHREALTIME/[.,]/}
    printf '%s\n' "$((10#$t))"
}

# True if the process exists and is not a zombie (an exited child that has
# not been reaped yet still has a /proc entry).
alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# Prints the pid in file $1 (nothing if missing or malformed).
read_pid_file() {
    local pid=""
    if [[ -r $1 ]]; then read -r pid <"$1" 2>/dev/null || true; fi
    if [[ $pid =~ ^[0-9]+$ ]]; then printf '%s\n' "$pid"; fi
    return 0
}
