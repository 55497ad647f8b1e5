#!/usr/bin/env bash
# scripts/fuzz.sh: build and run the libFuzzer targets (docs/FUZZING.md).
#
#   scripts/fuzz.sh build                    build every target, nothing else
#   scripts/fuzz.sh run SECONDS [TARGET...]  build, then fuzz each target (default:
#                                            all) for SECONDS seconds, one after
#                                            the other
#
# Targets: request, bank-answer. Each is the core's modules compiled with
# `-sanitize=fuzzer,address` (coverage instrumentation and AddressSanitizer)
# plus one file of Tests/fuzz/, built with swiftc into .build-fuzz/, apart
# from SwiftPM's builds.
#
# A run first replays the target's seed corpus (Tests/fuzz/corpus/TARGET/,
# read only), then mutates. New corpus entries go to a temporary directory
# that is removed afterwards; the repository's corpus only changes by hand.
# A crash, a failed property or a hang stops the target: its input is kept
# in .build-fuzz/crashes/TARGET/ and the script says how to reproduce it.
# Each target's full libFuzzer log is .build-fuzz/logs/TARGET.log; the
# script prints one line per target: runs, executions per second, coverage
# (libFuzzer's cov: edges and ft: features) and the corpus size.
#
# Exit status: 0 when every target ran its time without a finding.
#
# Environment: SWIFTC [swiftc], FUZZ_FLAGS (extra libFuzzer flags, e.g.
# -seed=1 or -jobs=2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

swiftc="${SWIFTC:-swiftc}"
build_dir=.build-fuzz
targets_all=(request bank-answer)
# The fuzzers' own flags. -O: the fuzzer's speed is its reach (Swift's
# overflow and bounds checks stay on; only -Ounchecked drops them). lld:
# gold prints a warning per ASan symbol.
# The C modules the core imports, with libpq's header directory from pkg-config
# (it lives in /usr/include/postgresql).
read -r -a libpq_cflags <<<"$(pkg-config --cflags libpq)"
swift_flags=("-sanitize=fuzzer,address" -O -g -use-ld=lld -I Sources/CSQLite -I Sources/CCrypto -I Sources/CPostgres)
for flag in "${libpq_cflags[@]}"; do swift_flags+=(-Xcc "$flag"); done

# The temporary directory of the target being fuzzed (its new corpus entries and
# its scratch database), removed however the script ends.
current_work=""
trap '[[ -z "$current_work" ]] || rm -rf "$current_work"' EXIT

usage() {
    sed -n '3,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# The source file of a target: Tests/fuzz/<CamelCase>Fuzzer.swift.
target_source() {
    case "$1" in
        request) echo Tests/fuzz/RequestFuzzer.swift ;;
        bank-answer) echo Tests/fuzz/BankAnswerFuzzer.swift ;;
        *) echo "unknown fuzz target: $1 (targets: ${targets_all[*]})" >&2; exit 2 ;;
    esac
}

# True when $1 is missing or older than any of the other files.
stale() {
    local output="$1"; shift
    [[ -e "$output" ]] || return 0
    local file
    for file in "$@"; do [[ "$file" -nt "$output" ]] && return 0; done
    return 1
}

# The core's modules once each, in the order they import one another, as
# static libraries with their modules; then each target. The targets import
# them as the executables do: they reach only their public API.
core_modules=(WalletJSON WalletDomain WalletPlatform WalletStore WalletHTTP WalletServices)

build() {
    mkdir -p "$build_dir"
    local module sources=() libraries=() changed=0
    for module in "${core_modules[@]}"; do
        mapfile -t sources < <(find "Sources/$module" -name '*.swift' | sort)
        local library="$build_dir/lib$module.a"
        if (( changed )) || stale "$library" "${sources[@]}" "${BASH_SOURCE[0]}"; then
            echo "==> fuzz: building $module with -sanitize=fuzzer,address"
            "$swiftc" -emit-library -static -parse-as-library -module-name "$module" \
                -emit-module -emit-module-path "$build_dir/$module.swiftmodule" -I "$build_dir" \
                "${swift_flags[@]}" "${sources[@]}" -o "$library"
            # Every module above one that changed is built again.
            changed=1
        fi
        libraries=("$library" "${libraries[@]}")
    done
    local target source
    for target in "${targets_all[@]}"; do
        source="$(target_source "$target")"
        if stale "$build_dir/$target" "$source" "${libraries[@]}"; then
            echo "==> fuzz: building $target"
            "$swiftc" -parse-as-library -warnings-as-errors "${swift_flags[@]}" -I "$build_dir" \
                "$source" "${libraries[@]}" -lsqlite3 -lpq -lcrypto -o "$build_dir/$target"
        fi
    done
}

# Fuzzes one target for $2 seconds; prints its summary line.
run_target() {
    local target="$1" seconds="$2"
    local work log crashes
    work="$(mktemp -d "${TMPDIR:-/tmp}/wallet-fuzz-$target.XXXXXX")"
    current_work="$work"
    log="$root/$build_dir/logs/$target.log"
    crashes="$root/$build_dir/crashes/$target"
    mkdir -p "$work/corpus" "$(dirname "$log")" "$crashes"
    local flags=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
                 -artifact_prefix="$crashes/")
    [[ -f "Tests/fuzz/$target.dict" ]] && flags+=(-dict="Tests/fuzz/$target.dict")
    # FUZZ_FLAGS is split into words on purpose: it holds several flags.
    # shellcheck disable=SC2206
    flags+=(${FUZZ_FLAGS:-})

    local status=0 started=$SECONDS
    # Swift's own backtracer would fight ASan over the crash (it reads memory ASan
    # guards); with it off, libFuzzer and ASan report the crash and keep the input.
    SWIFT_BACKTRACE=enable=no TMPDIR="$work" "$build_dir/$target" "${flags[@]}" "$work/corpus" "Tests/fuzz/corpus/$target" >"$log" 2>&1 \
        || status=$?
    local elapsed=$((SECONDS - started))

    # libFuzzer's last status line, e.g. "#1234 DONE cov: 1803 ft: 3027 corp: 34/5215b ...".
    local last runs rate cov ft corpus
    last="$(grep -E '^#[0-9]+[[:space:]]+[A-Z]+[[:space:]]+cov: ' "$log" | tail -n 1 || true)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corpus="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")"
    printf '%-12s %4ss  runs %-9s exec/s %-7s cov %-5s ft %-6s corpus %s (seed %s)\n' \
        "$target" "$elapsed" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" \
        "$(find "Tests/fuzz/corpus/$target" -type f | wc -l)"
    if (( status != 0 )); then
        echo "==> fuzz: $target FAILED (exit $status); the end of $log:" >&2
        grep -v -E '^#[0-9]+[[:space:]]|Uses: ' "$log" | tail -n 40 >&2
        local artifact
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        if [[ -n "$artifact" ]]; then
            echo "==> fuzz: the input is $artifact" >&2
            echo "    reproduce: SWIFT_BACKTRACE=enable=no $build_dir/$target $artifact" >&2
            echo "    once fixed, keep it: cp $artifact Tests/fuzz/corpus/$target/<what-it-tests>" >&2
        fi
        status=1
    fi
    rm -rf "$work"
    current_work=""
    return "$status"
}

main() {
    (( $# >= 1 )) || usage
    case "$1" in
        build) build ;;
        run)
            if (( $# < 2 )) || ! [[ "$2" =~ ^[0-9]+$ ]]; then usage; fi
            local seconds="$2"; shift 2
            local targets=("$@")
            (( ${#targets[@]} )) || targets=("${targets_all[@]}")
            local target
            for target in "${targets[@]}"; do target_source "$target" >/dev/null; done
            build
            local failed=()
            for target in "${targets[@]}"; do
                run_target "$target" "$seconds" || failed+=("$target")
            done
            if (( ${#failed[@]} )); then
                echo "==> fuzz: findings in: ${failed[*]}" >&2
                exit 1
            fi
            ;;
        *) usage ;;
    esac
}

main "$@"
