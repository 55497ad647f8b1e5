#!/usr/bin/env bash
# Static checks of openapi.yaml against the implementation (no running
# service needed).
#
#   Tests/openapi/check_openapi.sh
#   WALLET_OPENAPI=/path/openapi.yaml Tests/openapi/check_openapi.sh
#
# Checks:
#   1. openapi.yaml is a valid OpenAPI document (openapi-spec-validator);
#      a deliberately broken copy must be rejected, which shows the
#      validator really ran.
#   2. Every route template of Sources/WalletHTTP/Router.swift (the
#      strings of `Route.template`) is a key of openapi.yaml's `paths`.
#   3. Every error code of Sources/WalletHTTP/APIError.swift, of the
#      responder's own errors in Sources/wallet-fcgi/ and
#      Sources/WalletHTTP/FastCGIRequest.swift and of nginx's JSON
#      error pages in nginx/wallet-locations.conf and nginx/wallet.conf
#      (https_required) is listed in the `code` enum of the `Error` schema.
#
# Prints one line per check (details of a failure go to stderr) and a last
# line "N passed, M failed". Exit status 0 only if nothing failed.
# Needs bash, python3 with PyYAML and openapi-spec-validator; when the
# validator is missing it tries `python3 -m pip install --quiet` once.

set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
spec=${WALLET_OPENAPI:-$repo/openapi.yaml}
router=$repo/Sources/WalletHTTP/Router.swift
api_error=$repo/Sources/WalletHTTP/APIError.swift
fcgi_dir=$repo/Sources/wallet-fcgi
fastcgi_request=$repo/Sources/WalletHTTP/FastCGIRequest.swift
nginx_locations=$repo/nginx/wallet-locations.conf
nginx_site=$repo/nginx/wallet.conf

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

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$spec" ]; then
    fail "openapi.yaml exists ($spec)"
    finish
fi

# --- 1. Validity --------------------------------------------------------------

have_validator() {
    python3 -c 'import yaml, openapi_spec_validator' >/dev/null 2>&1
}
if ! have_validator; then
    printf 'note: installing openapi-spec-validator and PyYAML with pip\n' >&2
    python3 -m pip install --quiet openapi-spec-validator pyyaml >&2 || true
fi
if ! have_validator; then
    fail "openapi-spec-validator and PyYAML are available to python3" \
         "pip install openapi-spec-validator pyyaml"
    finish
fi

validate() {
    python3 - "$1" <<'EOF'
import sys, yaml
from openapi_spec_validator import validate
with open(sys.argv[1], encoding="utf-8") as f:
    document = yaml.safe_load(f)
validate(document)
EOF
}

if out=$(validate "$spec" 2>&1); then
    pass "openapi.yaml is a valid OpenAPI document"
else
    fail "openapi.yaml is a valid OpenAPI document" "$(printf '%s\n' "$out" | tail -n 15)"
fi

# A copy whose Transaction schema has an invalid `type` must be refused.
python3 - "$spec" "$tmp/broken.yaml" <<'EOF'
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    document = yaml.safe_load(f)
document["components"]["schemas"]["Transaction"]["type"] = "no-such-type"
with open(sys.argv[2], "w", encoding="utf-8") as f:
    yaml.safe_dump(document, f)
EOF
if validate "$tmp/broken.yaml" >/dev/null 2>&1; then
    fail "the validator rejects a deliberately broken copy" "a copy with an invalid schema type passed validation"
else
    pass "the validator rejects a deliberately broken copy"
fi

# The path keys and the Error code enum, one per line, for the checks below.
python3 - "$spec" "$tmp/paths" "$tmp/codes" <<'EOF'
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    document = yaml.safe_load(f)
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for path in (document.get("paths") or {}):
        f.write(path + "\n")
try:
    codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
except (KeyError, TypeError):
    codes = []
with open(sys.argv[3], "w", encoding="utf-8") as f:
    for code in codes:
        f.write(str(code) + "\n")
EOF

# --- 2. Routes ------------------------------------------------------------------

# The string literals of `public var template: String { switch self { ... } }`.
templates=$(awk '
    /var template: String/ { inside = 1; next }
    inside && /^    }/      { inside = 0 }
    inside                  { if (match($0, /"[^"]*"/)) print substr($0, RSTART + 1, RLENGTH - 2) }
' "$router")
count=$(printf '%s\n' "$templates" | grep -c . || true)
if [ "$count" -ge 9 ]; then
    pass "Router.swift: found $count route templates"
else
    fail "Router.swift: found $count route templates (expected at least 9)" "$templates"
fi
while IFS= read -r template; do
    [ -n "$template" ] || continue
    if grep -qxF -- "$template" "$tmp/paths"; then
        pass "route $template is in paths"
    else
        fail "route $template is in paths" "paths in openapi.yaml: $(tr '\n' ' ' <"$tmp/paths")"
    fi
done <<<"$templates"

# --- 3. Error codes ---------------------------------------------------------------

check_codes() {
    local source=$1 minimum=$2 codes count
    codes=$3
    count=$(printf '%s\n' "$codes" | grep -c . || true)
    if [ "$count" -ge "$minimum" ]; then
        pass "$source: found $count error codes"
    else
        fail "$source: found $count error codes (expected at least $minimum)"
    fi
    while IFS= read -r code; do
        [ -n "$code" ] || continue
        if grep -qxF -- "$code" "$tmp/codes"; then
            pass "$source: error code $code is in the Error schema"
        else
            fail "$source: error code $code is in the Error schema" "codes in openapi.yaml: $(tr '\n' ' ' <"$tmp/codes")"
        fi
    done <<<"$codes"
}

check_codes "APIError.swift" 10 \
    "$(grep -o 'code: "[a-z_]*"' "$api_error" | sed 's/^code: "//; s/"$//' | sort -u)"
check_codes "wallet-fcgi" 1 \
    "$(cat "$fcgi_dir"/*.swift "$fastcgi_request" | grep -o 'code: "[a-z_]*"' | sed 's/^code: "//; s/"$//' | sort -u)"
check_codes "wallet-locations.conf" 5 \
    "$(grep -o '"code": "[a-z_]*"' "$nginx_locations" | sed 's/^"code": "//; s/"$//' | sort -u)"
check_codes "wallet.conf" 1 \
    "$(grep -o '"code": "[a-z_]*"' "$nginx_site" | sed 's/^"code": "//; s/"$//' | sort -u)"

finish
