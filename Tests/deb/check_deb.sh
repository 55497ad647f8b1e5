#!/usr/bin/env bash
# Checks of the Debian package that `make deb` builds:
#
#   Tests/deb/check_deb.sh wallet_<version>_<arch>.deb     # as root
#
#   1. lintian: no error, and no warning beyond the ones docs/PACKAGING.md
#      explains (EXPECTED_WARNINGS below), so a new one is a decision.
#   2. The control part: version from VERSION, Depends on Debian's libraries
#      and on nginx, the conffiles, the maintainer scripts.
#   3. The packaged units are the repository's, with /usr/bin for
#      /usr/local/bin in ExecStart= and nothing else changed, and pass
#      Tests/systemd/check_units.sh (verify, security scores, contract) as is.
#   4. Install, reinstall, remove and purge with dpkg in a throwaway root:
#      a private mount namespace (unshare) with an overlay whose lower layer
#      is this machine's / and whose upper layer is a tmpfs, chrooted into.
#      dpkg, adduser and the maintainer scripts see this machine's installed
#      packages (nginx, the libraries: no network needed) and write only to
#      the tmpfs, which vanishes with the namespace. No systemd runs there
#      (/run is an empty tmpfs), as in a container. Then once more with a
#      fake /run/systemd/system and a systemctl that logs its calls, for
#      what the scripts ask of systemd.
#
# Prints one line per check (details of a failure go to stderr) and a last
# line "N passed, M failed". Exit status 0 only if nothing failed.
# Needs root (mount, chroot), unshare (util-linux), lintian, dpkg-deb.

set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The lintian warnings docs/PACKAGING.md ("lintian") explains and accepts.
EXPECTED_WARNINGS=(
    initial-upload-closes-no-bugs
    maintainer-script-calls-systemctl
    no-manual-page
    non-standard-file-perm
)
EXECUTABLES=(wallet-fcgi wallet-processor wallet-notifier walletctl)
UNITS=(wallet-fcgi.socket wallet-fcgi.service wallet-processor.service wallet-processor.timer wallet-notifier.service
    wallet-notifier.timer)
PATH_IN_ROOT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat SYSTEMD_LESS=

passed=0
failed=0
pass() { printf 'PASS %s\n' "$1"; passed=$((passed + 1)); }
fail() {
    printf 'FAIL %s\n' "$1"
    if [ -n "${2-}" ]; then printf '%s\n' "$2" | sed 's/^/    /' >&2; fi
    failed=$((failed + 1))
}
# check NAME DETAILS COMMAND...: pass if COMMAND succeeds.
check() {
    local name=$1 details=$2
    shift 2
    if "$@"; then pass "$name"; else fail "$name" "$details"; fi
}
finish() {
    printf '%d passed, %d failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ]
    exit
}

# ------------------------------------------------------------------ inside
# Runs in the private mount namespace (the script re-executes itself under
# unshare): $1 the .deb, $2 an empty directory for the mounts.
inside() {
    local deb=$1 ns=$2 root out rc
    # The upper layer on a tmpfs: a separate file system, so overlayfs does
    # not see it as nested in its lower layer (/), and all of it is freed
    # when the namespace ends.
    mount -t tmpfs -o mode=0755 wallet-deb-test "$ns" || { fail "mount a tmpfs"; finish; }
    mkdir "$ns/upper" "$ns/work" "$ns/root"
    root=$ns/root
    if ! mount -t overlay wallet-deb-test -o "lowerdir=/,upperdir=$ns/upper,workdir=$ns/work" "$root"; then
        fail "mount an overlay of / (needs overlayfs and CAP_SYS_ADMIN)"
        finish
    fi
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    # No /run/systemd/system: "systemd is not running", as in a container.
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    cp "$deb" "$root/tmp/wallet.deb"
    pass "throwaway root: overlay of / with a tmpfs upper layer, chroot"

    # A command in the throwaway root, as root, with a clean environment;
    # its output in $out, its status in $rc.
    run() {
        out=$(chroot "$root" /usr/bin/env -i PATH="$PATH_IN_ROOT" LC_ALL=C DEBIAN_FRONTEND=noninteractive \
            "$@" 2>&1)
        rc=$?
    }
    # A systemctl that logs its arguments, ahead of the real one in PATH.
    # Without /run/systemd/system the scripts must never call it.
    mkdir -p "$root/usr/local/sbin"
    printf '#!/bin/sh\necho "$*" >>/tmp/systemctl.log\n' >"$root/usr/local/sbin/systemctl"
    chmod 0755 "$root/usr/local/sbin/systemctl"
    run getent passwd wallet
    if [ "$rc" -ne 0 ]; then pass "no wallet user before the install"; else fail "no wallet user before the install" "$out"; fi

    # ----------------------------------------------------------- install
    run dpkg -i /tmp/wallet.deb
    if [ "$rc" -eq 0 ]; then pass "dpkg -i (DEBIAN_FRONTEND=noninteractive)"; else fail "dpkg -i" "$out"; finish; fi
    local install_out=$out
    run dpkg-query -W -f='${Status}' wallet
    check "dpkg-query: install ok installed" "$out" test "$out" = "install ok installed"
    check "postinst prints the next steps" "$install_out" grep -q 'WALLET_BANK_URL must be set' <<<"$install_out"

    # Owners and modes: "path user:group mode" for each.
    local want=() have path
    for path in "${EXECUTABLES[@]}"; do want+=("/usr/bin/$path root:root 755"); done
    for path in "${UNITS[@]}"; do want+=("/usr/lib/systemd/system/$path root:root 644"); done
    want+=("/etc/nginx/sites-available/wallet.conf root:root 644"
        "/etc/nginx/snippets/wallet-locations.conf root:root 644"
        "/etc/nginx/snippets/wallet-tls.conf root:root 644"
        "/etc/nginx/snippets/wallet-tls.conf.example root:root 644"
        "/etc/wallet root:root 755"
        "/etc/wallet/wallet.env root:root 640"
        "/etc/wallet/processor.env root:root 640"
        "/etc/wallet/wallet.env.example root:root 644"
        "/etc/wallet/processor.env.example root:root 644"
        "/etc/wallet/webhook-master-key root:root 600"
        "/usr/share/doc/wallet/copyright root:root 644"
        "/usr/share/doc/wallet/changelog.Debian.gz root:root 644"
        "/var/lib/wallet wallet:wallet 700")
    local bad=()
    for path in "${want[@]}"; do
        run stat -c '%n %U:%G %a' "${path%% *}"
        [ "$out" = "$path" ] || bad+=("want '$path', have '$out'")
    done
    if [ "${#bad[@]}" -eq 0 ]; then
        pass "installed files: binaries 0755, units 0644, env files 0640, all root; /var/lib/wallet 0700 wallet"
    else
        fail "installed files, owners and modes" "$(printf '%s\n' "${bad[@]}")"
    fi
    run dpkg-query -W -f='${Conffiles}\n' wallet
    have=$(awk 'NF { print $1 }' <<<"$out" | sort | tr '\n' ' ')
    check "conffiles: the nginx site and snippets, the env files and their examples" "$out" test "$have" = \
        "/etc/nginx/sites-available/wallet.conf /etc/nginx/snippets/wallet-locations.conf /etc/nginx/snippets/wallet-tls.conf /etc/nginx/snippets/wallet-tls.conf.example /etc/wallet/processor.env /etc/wallet/processor.env.example /etc/wallet/wallet.env /etc/wallet/wallet.env.example "
    run dpkg --verify wallet
    check "dpkg --verify: every file matches md5sums" "$out" test "$rc" -eq 0 -a -z "$out"
    run getent passwd wallet
    local uid home shell
    IFS=: read -r _ _ uid _ _ home shell <<<"$out"
    check "wallet user: a system account, home /var/lib/wallet, no login shell" "$out" \
        test -n "$uid" -a "${uid:-1000}" -lt 1000 -a "$home" = /var/lib/wallet -a "$shell" = /usr/sbin/nologin
    run id -gn wallet
    check "wallet user's group: wallet" "$out" test "$out" = wallet
    check "no systemctl call without a running systemd" "$(cat "$root/tmp/systemctl.log" 2>/dev/null)" \
        test ! -e "$root/tmp/systemctl.log"

    # The installed units as they are (real binaries and env files in
    # place, so no rewriting): verify exits 0 on warnings, so any output
    # fails, as in Tests/systemd/check_units.sh.
    run systemd-analyze verify "${UNITS[@]/#//usr/lib/systemd/system/}"
    check "systemd-analyze verify of the installed units: exit 0, no output" "$out" test "$rc" -eq 0 -a -z "$out"

    # A database, made as the units would: the wallet user, the installed
    # settings (read by root, as systemd reads EnvironmentFile=), umask 077.
    # A processor pass with nothing due creates it and calls no bank.
    # shellcheck disable=SC2016 # "$@" expands in that sh
    local as_wallet='set -a; . /etc/wallet/wallet.env; . /etc/wallet/processor.env; set +a; umask 077; exec runuser -u wallet -- "$@"'
    run sh -c "$as_wallet" sh wallet-processor
    check "wallet-processor as wallet with the installed settings creates the database" "$out" test "$rc" -eq 0
    run sh -c "$as_wallet" sh walletctl audit verify
    check "walletctl audit verify as wallet: audit passed" "$out" grep -q 'audit passed' <<<"$out"
    run stat -c '%U:%G %a' /var/lib/wallet/wallet.db
    check "/var/lib/wallet/wallet.db: wallet:wallet 600" "$out" test "$out" = "wallet:wallet 600"

    # ------------------------------------------------ reinstall (upgrade path)
    printf '# edited by the operator\n' >>"$root/etc/wallet/wallet.env"
    run dpkg -i /tmp/wallet.deb
    check "dpkg -i again (the upgrade path of the scripts)" "$out" test "$rc" -eq 0
    check "an edited conffile is kept, without a prompt" "$(tail -n 2 "$root/etc/wallet/wallet.env")" \
        grep -q '^# edited by the operator$' "$root/etc/wallet/wallet.env"
    run stat -c '%U:%G %a' /var/lib/wallet /var/lib/wallet/wallet.db
    check "the data directory and database untouched" "$out" test "$out" = $'wallet:wallet 700\nwallet:wallet 600'

    # ------------------------------------------------------------ remove
    run dpkg -r wallet
    check "dpkg -r" "$out" test "$rc" -eq 0
    local left=()
    for path in "${UNITS[@]/#//usr/lib/systemd/system/}" "${EXECUTABLES[@]/#//usr/bin/}"; do
        [ -e "$root$path" ] && left+=("$path")
    done
    check "remove: units and binaries gone" "${left[*]}" test "${#left[@]}" -eq 0
    check "remove: the database stays" "" test -s "$root/var/lib/wallet/wallet.db"
    check "remove: the conffiles stay (until purge)" "" test -f "$root/etc/wallet/processor.env"
    run dpkg-query -W -f='${Status}' wallet
    check "dpkg-query: deinstall ok config-files" "$out" test "$out" = "deinstall ok config-files"

    # ------------------------------------------------------------- purge
    run dpkg -P wallet
    check "dpkg -P" "$out" test "$rc" -eq 0
    local purge_out=$out
    check "purge: says where the data was left (/var/lib/wallet)" "$out" \
        grep -q 'ledger was left in /var/lib/wallet' <<<"$out"
    check "purge: the database stays" "" test -s "$root/var/lib/wallet/wallet.db"
    left=()
    for path in /etc/wallet/wallet.env /etc/wallet/processor.env /etc/nginx/sites-available/wallet.conf \
        /etc/nginx/snippets/wallet-locations.conf /etc/nginx/snippets/wallet-tls.conf /usr/share/doc/wallet; do
        [ -e "$root$path" ] && left+=("$path")
    done
    check "purge: conffiles and the docs gone" "${left[*]}" test "${#left[@]}" -eq 0
    # The webhook master key stays with the ledger (a reinstall derives the same endpoint
    # secrets), alone in /etc/wallet, and the purge says so.
    local kept
    kept=$(ls -A "$root/etc/wallet" 2>&1)
    check "purge: /etc/wallet keeps the webhook master key alone" "$kept" test "$kept" = webhook-master-key
    check "purge: says where the webhook master key was left" "$purge_out" \
        grep -q 'webhook master key was left in /etc/wallet/webhook-master-key' <<<"$purge_out"
    run getent passwd wallet
    check "purge: the wallet user stays (it owns the database)" "$out" test "$rc" -eq 0
    check "no systemctl call without a running systemd, in the whole cycle" \
        "$(cat "$root/tmp/systemctl.log" 2>/dev/null)" test ! -e "$root/tmp/systemctl.log"

    # -------------------------------------- the same with systemd "running"
    mkdir -p "$root/run/systemd/system"
    run dpkg -i /tmp/wallet.deb
    check "with systemd: dpkg -i" "$out" test "$rc" -eq 0
    run sh -c "$as_wallet" sh walletctl audit verify
    check "a new install after the purge finds the ledger whole (walletctl audit verify)" "$out" \
        grep -q 'audit passed' <<<"$out"
    check "with systemd: install reloads and enables the socket and the timer, starts nothing" \
        "$(cat "$root/tmp/systemctl.log")" test "$(cat "$root/tmp/systemctl.log")" = \
        $'daemon-reload\nenable wallet-fcgi.socket wallet-processor.timer wallet-notifier.timer'
    : >"$root/tmp/systemctl.log"
    run dpkg -i /tmp/wallet.deb
    check "with systemd: upgrade reloads and restarts a running responder, enables nothing" \
        "$(cat "$root/tmp/systemctl.log")" test "$(cat "$root/tmp/systemctl.log")" = \
        $'daemon-reload\ntry-restart wallet-fcgi.service'
    : >"$root/tmp/systemctl.log"
    run dpkg -P wallet
    check "with systemd: dpkg -P" "$out" test "$rc" -eq 0
    check "with systemd: remove stops the timer, then the rest, disables, reloads" \
        "$(cat "$root/tmp/systemctl.log")" test "$(cat "$root/tmp/systemctl.log")" = \
        $'stop wallet-processor.timer wallet-notifier.timer\nstop wallet-processor.service wallet-notifier.service wallet-fcgi.socket wallet-fcgi.service\ndisable wallet-fcgi.socket wallet-processor.timer wallet-notifier.timer\ndaemon-reload'
    check "with systemd: the database stays" "" test -s "$root/var/lib/wallet/wallet.db"
    finish
}

if [ "${1-}" = --inside ]; then
    shift
    inside "$@"
fi

# ------------------------------------------------------------------ outside
deb=${1-}
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    fail "usage: $0 wallet_<version>_<arch>.deb (make deb builds it)"
    finish
fi
deb=$(realpath "$deb")
version=$(sed -n '1p' "$repo/VERSION")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_deb.XXXXXX") || { fail "create a temp dir"; finish; }
trap 'rm -rf "$tmp"' EXIT

# --------------------------------------------------------------- 1. lintian
if ! command -v lintian >/dev/null; then
    fail "lintian is installed" "make deps-deb installs it"
else
    # Root runs it too (it warns about that on stderr, which is dropped).
    lint=$(lintian --tag-display-limit 0 "$deb" 2>/dev/null)
    errors=$(grep '^E:' <<<"$lint")
    check "lintian: no errors" "$errors" test -z "$errors"
    unexpected=$(grep '^W:' <<<"$lint" | grep -vE ": ($(
        IFS='|'
        echo "${EXPECTED_WARNINGS[*]}"
    ))( |$)")
    check "lintian: no warnings but the ones docs/PACKAGING.md explains" "$unexpected" test -z "$unexpected"
    grep '^W:' <<<"$lint" | awk '{ print $3 }' | sort | uniq -c |
        while read -r count tag; do printf '    remaining warning: %s (%d)\n' "$tag" "$count"; done
fi

# ---------------------------------------------------------- 2. control part
field() { dpkg-deb -f "$deb" "$1"; }
check "Version: $version-<revision> (from VERSION)" "$(field Version)" grep -qE "^${version//./\\.}-[0-9]+$" <<<"$(field Version)"
depends=$(field Depends)
missing=()
for dep in libc6 libfcgi0ldbl libsqlite3-0 libpq5 libcurl4 libssl3 nginx adduser systemd ca-certificates ssl-cert; do
    grep -qE "(^|, )$dep( \\(|,|$)" <<<"$depends" || missing+=("$dep")
done
check "Depends: the libraries (dpkg-shlibdeps), nginx, adduser, systemd, ca-certificates, ssl-cert" \
    "missing: ${missing[*]} in: $depends" test "${#missing[@]}" -eq 0
dpkg-deb -e "$deb" "$tmp/DEBIAN"
check "conffiles: /etc/wallet/wallet.env and processor.env among them" "$(cat "$tmp/DEBIAN/conffiles")" \
    test "$(grep -cxF -e /etc/wallet/wallet.env -e /etc/wallet/processor.env "$tmp/DEBIAN/conffiles")" -eq 2
check "md5sums, postinst, prerm, postrm present" "$(ls "$tmp/DEBIAN")" \
    test -s "$tmp/DEBIAN/md5sums" -a -x "$tmp/DEBIAN/postinst" -a -x "$tmp/DEBIAN/prerm" -a -x "$tmp/DEBIAN/postrm"

# ------------------------------------------------------------------ 3. units
dpkg-deb -x "$deb" "$tmp/x"
diffs=()
for unit in "${UNITS[@]}"; do
    expected=$(sed -E 's#^(Exec[A-Za-z]*=[-+!@:]*)/usr/local/bin/#\1/usr/bin/#' "$repo/systemd/$unit")
    [ "$expected" = "$(cat "$tmp/x/usr/lib/systemd/system/$unit" 2>/dev/null)" ] || diffs+=("$unit")
done
check "packaged units: the repository's, /usr/local/bin -> /usr/bin in Exec*= only" "differ: ${diffs[*]}" \
    test "${#diffs[@]}" -eq 0
if out=$(WALLET_UNIT_DIR="$tmp/x/usr/lib/systemd/system" WALLET_UNIT_BIN_DIR=/usr/bin \
    bash "$repo/Tests/systemd/check_units.sh" 2>&1); then
    pass "packaged units pass Tests/systemd/check_units.sh (verify, security <= today's limits, contract)"
else
    fail "packaged units pass Tests/systemd/check_units.sh" "$(grep -A5 FAIL <<<"$out")"
fi
grep 'security .*exposure' <<<"$out" | sed 's/^PASS /    /'

# ------------------------------------------------------- 4. install cycle
if [ "$(id -u)" -ne 0 ]; then
    fail "install in a throwaway root: needs root (run as root, or through sudo as make test-deb does)"
    finish
fi
# What the cycle would change here, were it not thrown away.
host_state() {
    dpkg-query -W -f='${Status}\n' wallet 2>&1
    getent passwd wallet
    ls -ld /var/lib/wallet /etc/wallet /usr/bin/walletctl 2>&1
}
before=$(host_state)
mkdir "$tmp/ns"
echo "--- in a private mount namespace:"
if unshare --mount --propagation private -- bash "${BASH_SOURCE[0]}" --inside "$deb" "$tmp/ns"; then
    pass "install, reinstall, remove, purge in a throwaway root (above)"
else
    fail "install, reinstall, remove, purge in a throwaway root (above)"
fi
echo "---"
after=$(host_state)
check "this machine untouched: its dpkg database, users, /etc/wallet, /var/lib/wallet" \
    "$(diff <(echo "$before") <(echo "$after"))" test "$before" = "$after"
check "no mount left behind" "$(findmnt -rn -o TARGET | grep -F "$tmp")" \
    test -z "$(findmnt -rn -o TARGET | grep -F "$tmp")"
finish
