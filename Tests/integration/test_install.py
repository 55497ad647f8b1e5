"""`make install` and `make uninstall` into a staging root (DESTDIR).

The module's first install runs the real `make install DESTDIR=...`, which
builds the release binaries (`make release`: swift build -c release
--static-swift-stdlib). That takes a minute or two on a cold build tree and
a few seconds on a warm one; it happens once per session. Every later
install reuses those binaries through RELEASE_BIN_DIR, so it is instant.
Set WALLET_RELEASE_BIN_DIR to a directory of already-built release binaries
to skip the build altogether (e.g. in a CI job that built them before).

Never runs `make install` without a DESTDIR: as root that would install
into this machine and create the `wallet` user.
"""

import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import stop_process

REPO = Path(__file__).resolve().parents[2]
EXECUTABLES = ("wallet-fcgi", "wallet-processor", "wallet-notifier", "walletctl")
UNITS = ("wallet-fcgi.socket", "wallet-fcgi.service", "wallet-processor.service", "wallet-processor.timer",
         "wallet-notifier.service", "wallet-notifier.timer")
# The release build on a cold tree (dependencies included) on a 2-core machine.
BUILD_TIMEOUT = 1200
# Variables the Makefile reads that must come from our command line only.
MAKE_VARIABLES = ("DESTDIR", "PREFIX", "INSTALL_MOCK_BANK", "RELEASE_BIN_DIR", "SYSTEMD_UNIT_DIR",
                  "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def make(target, destdir, timeout=120, **variables):
    """Runs `make TARGET DESTDIR=destdir VAR=value...` in the repository and
    returns the CompletedProcess; fails the test (with the output) on a
    non-zero exit."""
    destdir = str(destdir)
    assert destdir and destdir != "/", "refusing to run make install/uninstall on the real root"
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
    args = ["make", "--no-print-directory", target, f"DESTDIR={destdir}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    # umask 022, as for a package build: the modes checked below must not
    # depend on the caller's umask (install -D creates parent directories
    # with the umask applied). A process group of its own, so that a timeout
    # stops the build make runs too, not make alone.
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, umask=0o022, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc, signal.SIGKILL, group=True)
    result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    assert result.returncode == 0, (f"{' '.join(args)} exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
    return result


def tree(root):
    """{relative path: (kind, mode)} of everything under root; kind is
    'f', 'd' or 'l'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            out[str(path.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode))
    return out


def files(root):
    return {path: mode for path, (kind, mode) in tree(root).items() if kind != "d"}


def expected_files(prefix="/usr/local", mock_bank=False):
    """{path under DESTDIR: mode} that install must create."""
    p = prefix.strip("/")
    out = {f"{p}/bin/{exe}": 0o755 for exe in EXECUTABLES}
    out.update({f"etc/systemd/system/{unit}": 0o644 for unit in UNITS})
    out.update({
        "etc/nginx/sites-available/wallet.conf": 0o644,
        "etc/nginx/snippets/wallet-locations.conf": 0o644,
        "etc/nginx/snippets/wallet-tls.conf": 0o644,
        "etc/nginx/snippets/wallet-tls.conf.example": 0o644,
        "etc/wallet/wallet.env": 0o640,
        "etc/wallet/wallet.env.example": 0o644,
        "etc/wallet/processor.env": 0o640,
        "etc/wallet/processor.env.example": 0o644,
    })
    if mock_bank:
        out[f"{p}/share/wallet/bank.cgi"] = 0o755
    return out


def passwd_entry():
    return subprocess.run(["getent", "passwd", "wallet"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def host_wallet_user():
    """The host's `wallet` account before any install ran (to prove that an
    install under DESTDIR never creates it)."""
    return passwd_entry()


@pytest.fixture(scope="module")
def installed(tmp_path_factory, host_wallet_user):
    """One real `make install DESTDIR=...` with the default PREFIX, release
    build included (unless WALLET_RELEASE_BIN_DIR is set). Returns
    (destdir, bin_dir), bin_dir a private copy of the installed binaries for
    the later installs."""
    destdir = tmp_path_factory.mktemp("install-default")
    variables = {}
    if os.environ.get("WALLET_RELEASE_BIN_DIR"):
        variables["RELEASE_BIN_DIR"] = os.environ["WALLET_RELEASE_BIN_DIR"]
    make("install", destdir, timeout=BUILD_TIMEOUT, **variables)
    bin_dir = tmp_path_factory.mktemp("release-bin")
    for exe in EXECUTABLES:
        shutil.copy2(destdir / "usr/local/bin" / exe, bin_dir / exe)
    return destdir, bin_dir


@pytest.fixture
def install(installed, tmp_path):
    """install(name, **make variables) -> a fresh DESTDIR with the module's
    binaries installed (no build)."""
    _, bin_dir = installed

    def run(name="root", **variables):
        destdir = tmp_path / name
        destdir.mkdir(exist_ok=True)
        run.output = make("install", destdir, RELEASE_BIN_DIR=bin_dir, **variables).stdout
        return destdir

    return run


# --- the installed tree ------------------------------------------------------------

def test_install_lays_out_the_tree(installed):
    destdir, _ = installed
    assert files(destdir) == expected_files(), "installed files and modes"
    data = destdir / "var/lib/wallet"
    assert data.is_dir() and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert list(data.iterdir()) == []
    # Everything is a copy of the repository's file, unchanged with the default prefix.
    same = {
        "etc/nginx/sites-available/wallet.conf": "nginx/wallet.conf",
        "etc/nginx/snippets/wallet-locations.conf": "nginx/wallet-locations.conf",
        "etc/nginx/snippets/wallet-tls.conf": "nginx/wallet-tls.conf",
        "etc/nginx/snippets/wallet-tls.conf.example": "nginx/wallet-tls.conf",
        "etc/wallet/wallet.env": "packaging/wallet.env.example",
        "etc/wallet/wallet.env.example": "packaging/wallet.env.example",
        "etc/wallet/processor.env": "packaging/processor.env.example",
        "etc/wallet/processor.env.example": "packaging/processor.env.example",
    }
    same.update({f"etc/systemd/system/{unit}": f"systemd/{unit}" for unit in UNITS})
    for installed_path, source in same.items():
        assert (destdir / installed_path).read_bytes() == (REPO / source).read_bytes(), installed_path
    # Directories are traversable (0755), except the data directory.
    for path, (kind, mode) in tree(destdir).items():
        if kind == "d" and path != "var/lib/wallet":
            assert mode == 0o755, f"{path} has mode {mode:o}"


def test_install_under_destdir_creates_no_user(installed, host_wallet_user):
    assert passwd_entry() == host_wallet_user


def test_installed_binaries_run(installed, tmp_path):
    destdir, _ = installed
    bin_dir = destdir / "usr/local/bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    result = subprocess.run([bin_dir / "walletctl", "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "USAGE: walletctl" in result.stdout, result
    result = subprocess.run([bin_dir / "wallet-fcgi", "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "usage: wallet-fcgi" in (result.stdout + result.stderr), result
    # A processor pass with nothing due creates the database and exits 0
    # (no bank call: the URL is a closed loopback port), and walletctl reads it.
    db = tmp_path / "wallet.db"
    env.update(WALLET_DB=str(db), WALLET_BANK_URL="http://127.0.0.1:9/pay")
    result = subprocess.run([bin_dir / "wallet-processor"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result
    result = subprocess.run([bin_dir / "walletctl", "audit", "verify"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and "audit passed" in result.stdout, result


def test_installed_binaries_carry_the_swift_runtime(installed):
    """--static-swift-stdlib: only Debian's system libraries are needed."""
    destdir, _ = installed
    for exe in EXECUTABLES:
        out = subprocess.run(["ldd", destdir / "usr/local/bin" / exe], capture_output=True, text=True).stdout
        assert "not found" not in out, out
        assert not re.search(r"libswift|libFoundation|libdispatch|/opt/swift", out), f"{exe} links the Swift runtime:\n{out}"


def systemd_verify(unit_dir, copies):
    """systemd-analyze verify on copies (in the new directory `copies`) of
    the units, the way Tests/systemd/check_units.sh does it: every Exec*=
    runs /bin/true (verify insists the binary exists) and EnvironmentFile= is
    optional (it must not depend on this host's /etc). Returns (exit status,
    output); verify exits 0 on mere warnings, so a pass is exit 0 and no
    output."""
    copies.mkdir()
    for unit in UNITS:
        text = (unit_dir / unit).read_text()
        text = re.sub(r"(?m)^(Exec[A-Za-z]*=).*$", r"\1/bin/true", text)
        text = re.sub(r"(?m)^EnvironmentFile=([^-])", r"EnvironmentFile=-\1", text)
        (copies / unit).write_text(text)
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="cat")
    result = subprocess.run(["systemd-analyze", "verify", *[f"./{u}" for u in UNITS]], cwd=copies, env=env,
                            capture_output=True, text=True, timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def exec_starts(unit_dir):
    out = {}
    for unit in UNITS:
        for line in (unit_dir / unit).read_text().splitlines():
            if line.startswith("ExecStart="):
                out[unit] = line.split("=", 1)[1]
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_installed_units_verify(installed, tmp_path):
    destdir, _ = installed
    unit_dir = destdir / "etc/systemd/system"
    rc, output = systemd_verify(unit_dir, tmp_path / "verify")
    assert rc == 0 and output == "", output
    assert exec_starts(unit_dir) == {"wallet-fcgi.service": "/usr/local/bin/wallet-fcgi",
                                     "wallet-processor.service": "/usr/local/bin/wallet-processor",
                                     "wallet-notifier.service": "/usr/local/bin/wallet-notifier"}
    # The check can fail at all: an unknown directive is reported.
    broken = tmp_path / "broken"
    broken.mkdir()
    for unit in UNITS:
        shutil.copy(unit_dir / unit, broken / unit)
    with open(broken / "wallet-fcgi.service", "a") as f:
        f.write("NoSuchDirectiveForTheSelfTest=yes\n")
    rc, output = systemd_verify(broken, tmp_path / "verify-broken")
    assert "NoSuchDirectiveForTheSelfTest" in output, output


# --- other prefixes, the mock bank ---------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_install_with_another_prefix_and_the_mock_bank(install, tmp_path):
    destdir = install(PREFIX="/opt/wallet", INSTALL_MOCK_BANK="1")
    assert files(destdir) == expected_files("/opt/wallet", mock_bank=True)
    assert not (destdir / "usr").exists()
    assert (destdir / "opt/wallet/share/wallet/bank.cgi").read_bytes() == (REPO / "bank/bank.cgi").read_bytes()
    unit_dir = destdir / "etc/systemd/system"
    starts = exec_starts(unit_dir)
    assert starts == {"wallet-fcgi.service": "/opt/wallet/bin/wallet-fcgi",
                      "wallet-processor.service": "/opt/wallet/bin/wallet-processor",
                      "wallet-notifier.service": "/opt/wallet/bin/wallet-notifier"}
    for path in starts.values():
        assert os.access(destdir / path.lstrip("/"), os.X_OK), f"ExecStart {path} is not installed"
    # Only the ExecStart= lines differ from the repository's units.
    for unit in UNITS:
        ours = (REPO / "systemd" / unit).read_text().splitlines()
        theirs = (unit_dir / unit).read_text().splitlines()
        assert len(ours) == len(theirs)
        assert [(a, b) for a, b in zip(ours, theirs) if a != b] == \
            [(a, a.replace("/usr/local/bin/", "/opt/wallet/bin/")) for a in ours if a.startswith("ExecStart=")]
    rc, output = systemd_verify(unit_dir, tmp_path / "verify")
    assert rc == 0 and output == "", output


def test_install_without_mock_bank_by_default(installed):
    destdir, _ = installed
    assert not (destdir / "usr/local/share").exists()


# --- the environment file ---------------------------------------------------------------

# The settings table of the README ("Configuration").
API_SETTINGS = ("WALLET_HTTP_PORT", "WALLET_DB", "WALLET_BANK_URL", "WALLET_PROCESS_INTERVAL", "WALLET_MAX_RETRIES",
                "WALLET_RETRY_BASE_SECONDS", "WALLET_BANK_TIMEOUT_MS", "WALLET_BANK_CONCURRENCY",
                "WALLET_UNKNOWN_RECHECK_SECONDS")


def program_settings():
    """The WALLET_* names the programs read (Settings.swift), so that the
    example keeps up with the code."""
    source = (REPO / "Sources/WalletPlatform/Settings.swift").read_text()
    return set(re.findall(r'"(WALLET_[A-Z_]+)"', source))


def example_settings(name):
    """{NAME: (value, active)} of one packaging example, checking its shape."""
    lines = (REPO / "packaging" / name).read_text().splitlines()
    settings = {}
    for i, line in enumerate(lines):
        m = re.match(r"^#?(WALLET_[A-Z_]+)=(.*)$", line)
        if m:
            settings[m.group(1)] = (m.group(2), not line.startswith("#"))
            # Each setting is explained by the comment right above it.
            assert i > 0 and lines[i - 1].startswith("#") and len(lines[i - 1]) > 2, f"no comment above {line}"
        else:
            assert line == "" or line.startswith("#"), f"{name}: not a setting or a comment: {line!r}"
    return settings


# The bank's settings: in processor.env, which only the processor's unit reads.
BANK_SETTINGS = ("WALLET_BANK_URL", "WALLET_MAX_RETRIES", "WALLET_RETRY_BASE_SECONDS", "WALLET_BANK_TIMEOUT_MS",
                 "WALLET_BANK_CONCURRENCY", "WALLET_UNKNOWN_RECHECK_SECONDS", "WALLET_LEASE_GRACE_SECONDS",
                 "WALLET_BANK_ALLOW_HTTP", "WALLET_BANK_TOKEN_FILE")


def test_env_examples_document_every_setting_in_its_file(installed, tmp_path):
    common = example_settings("wallet.env.example")
    bank = example_settings("processor.env.example")
    assert not set(common) & set(bank), "a setting in both files"
    wanted = set(API_SETTINGS) | program_settings()
    assert wanted <= set(common) | set(bank), f"missing from the examples: {sorted(wanted - set(common) - set(bank))}"
    assert set(BANK_SETTINGS) == set(bank), "processor.env holds the bank's settings, and only them"
    assert common["WALLET_DB"] == ("/var/lib/wallet/wallet.db", True)
    assert bank["WALLET_BANK_URL"] == ("https://bank.example/payouts", True)
    assert re.search(r"(?i)must be set", (REPO / "packaging/processor.env.example").read_text())
    # No token in a file of variables: it comes from the credential.
    assert "install -m 0600 /dev/stdin /etc/wallet/bank-token" in (REPO / "packaging/processor.env.example").read_text()
    # The active settings are valid for the programs: walletctl starts with them.
    destdir, _ = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update({name: value for name, (value, active) in {**common, **bank}.items() if active})
    missing_db = tmp_path / "none.db"
    result = subprocess.run([destdir / "usr/local/bin/walletctl", "stats", "--database", missing_db], env=env,
                            capture_output=True, text=True, timeout=30)
    # It gets as far as opening the database: the settings were accepted
    # (an invalid one stops it before, naming the variable).
    assert "cannot open the database" in result.stderr, result
    env["WALLET_MAX_RETRIES"] = "three"
    result = subprocess.run([destdir / "usr/local/bin/walletctl", "stats", "--database", missing_db], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "WALLET_MAX_RETRIES" in result.stderr, result


def test_only_the_processor_unit_reads_the_bank_settings():
    responder = (REPO / "systemd/wallet-fcgi.service").read_text()
    processor = (REPO / "systemd/wallet-processor.service").read_text()
    files = lambda text: re.findall(r"(?m)^EnvironmentFile=(.*)$", text)
    assert files(responder) == ["/etc/wallet/wallet.env"]
    assert files(processor) == ["/etc/wallet/wallet.env", "/etc/wallet/processor.env"]
    assert "LoadCredential=bank-token:/etc/wallet/bank-token" in processor.splitlines()
    # The responder's only credential is the webhook master key, never the bank token.
    assert not re.search(r"(?m)^(Load|Set|Import)Credential=bank-token", responder)
    assert re.findall(r"(?m)^LoadCredential=(.*)$", responder) == ["webhook-master-key:/etc/wallet/webhook-master-key"]
    notifier = (REPO / "systemd/wallet-notifier.service").read_text()
    assert files(notifier) == ["/etc/wallet/wallet.env"]
    assert not re.search(r"(?m)^(Load|Set|Import)Credential=bank-token", notifier)


@pytest.mark.parametrize("name", ["wallet.env", "processor.env"])
def test_reinstall_keeps_an_edited_env(install, name):
    destdir = install()
    env = destdir / "etc/wallet" / name
    edited = env.read_text() + "# edited by the operator\n"
    env.write_text(edited)
    os.chmod(env, 0o600)
    assert install() == destdir     # the same DESTDIR again
    assert f"keeping the existing {env}" in install.output
    assert env.read_text() == edited
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert (destdir / "etc/wallet" / f"{name}.example").read_bytes() == \
        (REPO / "packaging" / f"{name}.example").read_bytes()


def test_reinstall_keeps_the_operators_certificate(install):
    """wallet-tls.conf names the certificate: the operator's once edited,
    kept by install and uninstall alike; the example beside it refreshed."""
    destdir = install()
    tls = destdir / "etc/nginx/snippets/wallet-tls.conf"
    edited = tls.read_text().replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/letsencrypt/live/x/fullchain.pem")
    tls.write_text(edited)
    (destdir / "etc/nginx/snippets/wallet-tls.conf.example").write_text("old\n")
    install()
    assert f"keeping the existing {tls}" in install.output
    assert tls.read_text() == edited
    assert (destdir / "etc/nginx/snippets/wallet-tls.conf.example").read_bytes() == \
        (REPO / "nginx/wallet-tls.conf").read_bytes()
    result = make("uninstall", destdir)
    assert "etc/nginx/snippets/wallet-tls.conf" in leftovers(destdir) and tls.read_text() == edited
    assert "the operator's certificate" in result.stdout


# --- uninstall ----------------------------------------------------------------------------

def leftovers(destdir):
    """Everything but directories left under destdir (files and links)."""
    return {path for path, (kind, _) in tree(destdir).items() if kind != "d"}


def test_uninstall_removes_everything_but_the_data(installed, tmp_path):
    destdir = tmp_path / "root"
    shutil.copytree(installed[0], destdir, symlinks=True)
    (destdir / "var/lib/wallet/wallet.db").write_bytes(b"the ledger")
    make("uninstall", destdir)
    assert leftovers(destdir) == {"var/lib/wallet/wallet.db"}
    assert stat.S_IMODE((destdir / "var/lib/wallet").stat().st_mode) == 0o700
    assert not (destdir / "etc/wallet").exists(), "the empty /etc/wallet should go"
    # Twice is fine.
    make("uninstall", destdir)


def test_uninstall_with_another_prefix(install):
    destdir = install(PREFIX="/opt/wallet", INSTALL_MOCK_BANK="1")
    make("uninstall", destdir, PREFIX="/opt/wallet")
    assert leftovers(destdir) == set()
    assert not (destdir / "opt/wallet/share/wallet").exists()
    assert not (destdir / "etc/wallet").exists()


@pytest.mark.parametrize("name", ["wallet.env", "processor.env"])
def test_uninstall_keeps_an_edited_env(install, name):
    destdir = install()
    env = destdir / "etc/wallet" / name
    env.write_text(env.read_text() + "WALLET_MAX_RETRIES=5\n")
    result = make("uninstall", destdir)
    assert leftovers(destdir) == {f"etc/wallet/{name}"}
    assert env.read_text().endswith("WALLET_MAX_RETRIES=5\n")
    assert "keeping" in result.stdout


def test_uninstall_warns_about_the_operators_links(install):
    destdir = install()
    enabled = destdir / "etc/nginx/sites-enabled"
    enabled.mkdir(parents=True)
    (enabled / "wallet.conf").symlink_to("../sites-available/wallet.conf")
    wants = destdir / "etc/systemd/system/sockets.target.wants"
    wants.mkdir()
    (wants / "wallet-fcgi.socket").symlink_to("/etc/systemd/system/wallet-fcgi.socket")
    result = make("uninstall", destdir)
    # Not ours to remove, but named.
    assert leftovers(destdir) == {"etc/nginx/sites-enabled/wallet.conf",
                                  "etc/systemd/system/sockets.target.wants/wallet-fcgi.socket"}
    assert "sites-enabled/wallet.conf" in result.stdout and "sockets.target.wants/wallet-fcgi.socket" in result.stdout
