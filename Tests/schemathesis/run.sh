#!/usr/bin/env bash
# Property-based tests of the running service against openapi.yaml, with
# Schemathesis, through nginx.
#
#   Tests/schemathesis/run.sh            (or: make test-schemathesis)
#
# Starts a development stack (scripts/stack.sh --no-processor --no-notifier: nginx, the
# responder and the mock bank) on free loopback ports with a fresh database
# in a temporary directory, then runs Schemathesis against openapi.yaml and
# that stack with these checks on every response:
#   not_a_server_error           no 5xx
#   status_code_conformance      every status is documented for its operation
#   content_type_conformance     every Content-Type is documented
#   response_schema_conformance  every body matches its documented schema
#   ignored_auth                 an operation that declares bearerAuth refuses
#                                requests without the key or with a wrong one
# Every request carries the stack's development API key (WALLET_DEV_API_KEY,
# made here); the stack runs without rate limits (WALLET_RATE_LIMIT=0).
# over all of Schemathesis' phases (the spec's examples, coverage of each
# schema's edges, random fuzzing, and stateful sequences that follow the
# links it infers: create a wallet, deposit into it, read it back, ...).
# The stack is stopped by its pid at the end, whatever happened.
#
# First, the same checks run against a deliberately broken copy of the spec
# (a wallet's `balance` declared a string) and must fail: that shows the
# checks really look at the answers.
#
# Bounded: at most WALLET_SCHEMATHESIS_EXAMPLES (100) test cases per
# operation and phase, about half a minute here; the seed is fixed
# (WALLET_SCHEMATHESIS_SEED, 1) so a failure replays. No check is timed.
#
# Environment:
#   WALLET_BIN_DIR                the executables [swift build --show-bin-path]
#   WALLET_SCHEMATHESIS_EXAMPLES  max examples per operation [100]
#   WALLET_SCHEMATHESIS_SEED      the random seed [1]
#   PYTHON                        the Python that makes the virtualenv [python3]
#
# Schemathesis (pinned below) is installed with pip into .build-venv/ in the
# repository (ignored by git) when it is missing. The last line is
# "N passed, M failed"; the exit status is 0 only if nothing failed.

set -euo pipefail

# The version this suite was written against; its CLI changed across majors.
SCHEMATHESIS_VERSION=4.32.5

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=$repo/.build-venv
examples=${WALLET_SCHEMATHESIS_EXAMPLES:-100}
seed=${WALLET_SCHEMATHESIS_SEED:-1}
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth

passed=0
failed=0
pass() { printf 'PASS %s\n' "$1"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s\n' "$1"; failed=$((failed + 1)); }

# --- Schemathesis in the virtualenv --------------------------------------------

installed_version() {
    "$venv/bin/schemathesis" --version 2>/dev/null | awk '{ print $NF }'
}
if [ "$(installed_version)" != "$SCHEMATHESIS_VERSION" ]; then
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    # A venv whose Python is gone (or another version) is made anew.
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [ "$(installed_version)" != "$SCHEMATHESIS_VERSION" ]; then
    echo "schemathesis $SCHEMATHESIS_VERSION could not be installed into $venv" >&2
    exit 1
fi

# --- The stack -----------------------------------------------------------------

bin_dir=${WALLET_BIN_DIR:-$(cd "$repo" && swift build --show-bin-path)}
for exe in wallet-fcgi wallet-processor walletctl; do
    if [ ! -x "$bin_dir/$exe" ]; then
        echo "missing $bin_dir/$exe: run swift build (or set WALLET_BIN_DIR)" >&2
        exit 1
    fi
done

# 0755: when run as root, nginx's workers run as `nobody` and must reach the
# sockets in the run dir (see nginx/dev.conf.template).
work=$(mktemp -d /tmp/wallet-schemathesis.XXXXXX)
api_key="wsk_$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
chmod 0755 "$work"
mkdir "$work/run"
stack_pid=

stop_stack() {
    if [ -n "$stack_pid" ] && kill -0 "$stack_pid" 2>/dev/null; then
        # stack.sh stops everything it started on SIGTERM, within its own deadline.
        kill -TERM "$stack_pid" 2>/dev/null || true
        wait "$stack_pid" 2>/dev/null || true
    fi
    stack_pid=
}
cleanup() {
    stop_stack
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two free loopback ports, chosen by the kernel. Another process could take
# one before nginx binds it; stack.sh then fails to start and so does this run.
read -r http_port bank_port < <("${PYTHON:-python3}" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# Loopback traffic never goes through a proxy.
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost

(
    cd "$repo"
    exec env WALLET_RUN_DIR="$work/run" WALLET_HTTP_PORT="$http_port" WALLET_BANK_PORT="$bank_port" \
        WALLET_DB="$work/wallet.db" WALLET_BIN_DIR="$bin_dir" WALLET_BANK_MODE=success \
        WALLET_BANK_URL="http://127.0.0.1:$bank_port/pay" WALLET_DEV_API_KEY="$api_key" WALLET_RATE_LIMIT=0 \
        bash scripts/stack.sh --no-processor --no-notifier >"$work/stack.out" 2>"$work/stack.err" </dev/null
) &
stack_pid=$!

# stack.sh prints `stack ready URL` once /healthz answers (it waits up to
# 10 s for that itself); it exits if something fails to start.
for _ in $(seq 300); do
    if grep -q '^stack ready' "$work/stack.out" 2>/dev/null; then break; fi
    if ! kill -0 "$stack_pid" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! grep -q '^stack ready' "$work/stack.out" 2>/dev/null; then
    echo "the stack did not start:" >&2
    tail -n 30 "$work/stack.err" >&2
    fail "the stack starts"
    printf '%d passed, %d failed\n' "$passed" "$failed"
    exit 1
fi
url=http://127.0.0.1:$http_port

# --- Runs ----------------------------------------------------------------------

# Schemathesis keeps its state (.hypothesis/, .schemathesis/) in the working
# directory: the temporary one, not the repository. One worker: with
# several, Python 3.11's ast.parse, which Hypothesis calls to describe its
# filters, fails now and then from concurrent threads ("AST constructor
# recursion depth mismatch"). too_slow is Hypothesis' timing health check;
# on a shared machine it would fail by the clock, not by the service.
schemathesis() {
    (cd "$work" && "$venv/bin/schemathesis" run --url "$url" --checks "$checks" --workers 1 \
        --header "Authorization: Bearer $api_key" \
        --seed "$seed" --suppress-health-check too_slow "$@")
}

# The broken copy: a wallet's balance declared a string. Creating a wallet
# (the spec's own example request) must then be reported as not matching
# its schema.
"$venv/bin/python" - "$repo/openapi.yaml" "$work/broken.yaml" <<'EOF'
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    document = yaml.safe_load(f)
document["components"]["schemas"]["Wallet"]["properties"]["balance"] = {"type": "string"}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    yaml.safe_dump(document, f)
EOF
if schemathesis "$work/broken.yaml" --include-operation-id createWallet --phases examples \
        --max-examples 5 >"$work/broken.log" 2>&1; then
    fail "a deliberately broken spec is caught (schemathesis passed it)"
elif grep -q 'Response violates schema' "$work/broken.log"; then
    pass "a deliberately broken spec is caught"
else
    tail -n 30 "$work/broken.log" >&2
    fail "a deliberately broken spec is caught (schemathesis failed for another reason)"
fi

echo "==> schemathesis $SCHEMATHESIS_VERSION: openapi.yaml against $url (max $examples examples per operation, seed $seed)"
if schemathesis "$repo/openapi.yaml" --max-examples "$examples"; then
    pass "openapi.yaml and the service agree ($checks)"
else
    fail "openapi.yaml and the service agree ($checks)"
fi

stop_stack
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
