"""The responder's start and stop: where its socket comes from (a path, fd 0 as
systemd's StandardInput=socket hands it over, fd 3 under LISTEN_FDS), and the
configurations it refuses to start with, each with a message naming the cause."""

import os
import signal
import sqlite3
import subprocess

import pytest

from .conftest import REPO, bin_dir, stop_process, wait_until


def run_responder(env_overrides, args=(), timeout=10):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(env_overrides)
    return subprocess.run([str(bin_dir() / "wallet-fcgi"), *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def test_refuses_a_database_directory_that_does_not_exist(tmp_path):
    result = run_responder({"WALLET_DB": str(tmp_path / "missing" / "wallet.db")}, ["--socket", str(tmp_path / "s.sock")])
    assert result.returncode == 2
    assert "not writable" in result.stderr and str(tmp_path / "missing") in result.stderr


@pytest.mark.parametrize("name, value", [
    ("WALLET_MAX_RETRIES", "-1"),
    ("WALLET_BANK_TIMEOUT_MS", "soon"),
    ("WALLET_BANK_URL", "ftp://bank.example/pay"),
    ("WALLET_SYNCHRONOUS", "OFF"),
])
def test_refuses_an_invalid_setting_naming_it(tmp_path, name, value):
    result = run_responder({"WALLET_DB": str(tmp_path / "wallet.db"), name: value}, ["--socket", str(tmp_path / "s.sock")])
    assert result.returncode == 2
    assert name in result.stderr


def test_refuses_a_schema_newer_than_itself_and_leaves_it_alone(tmp_path):
    path = tmp_path / "wallet.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    result = run_responder({"WALLET_DB": str(path)}, ["--socket", str(tmp_path / "s.sock")])
    assert result.returncode == 1
    assert "newer" in result.stderr and "999" in result.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 999
        assert db.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0] == 0


def test_refuses_to_start_without_a_listening_socket(tmp_path):
    result = run_responder({"WALLET_DB": str(tmp_path / "wallet.db")})
    assert result.returncode == 1
    assert "no listening socket" in result.stderr


def test_programs_started_together_migrate_the_database_once(tmp_path):
    """The responder, the processor and walletctl racing on a fresh database all
    start, and the schema ends up at one version with one set of tables."""
    path = tmp_path / "wallet.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update({"WALLET_DB": str(path), "WALLET_BANK_URL": "http://127.0.0.1:9/pay"})
    sock = tmp_path / "s.sock"
    responder = subprocess.Popen([str(bin_dir() / "wallet-fcgi"), "--socket", str(sock)], env=env,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
    others = []
    try:
        for _ in range(3):
            others.append(subprocess.Popen([str(bin_dir() / "wallet-processor")], env=env, stderr=subprocess.DEVNULL,
                                           start_new_session=True))
        for process in others:
            assert process.wait(timeout=30) == 0
        wait_until(lambda: sock.exists(), 10, "the responder's socket")
        stats = subprocess.run([str(bin_dir() / "walletctl"), "stats", "--json"], env=env, capture_output=True, text=True)
        assert stats.returncode == 0, stats.stderr
    finally:
        for process in others:
            stop_process(process)
        returncode = stop_process(responder, signal.SIGTERM, timeout=15)
    assert returncode == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
    assert tables == sorted(["admin_actions", "api_keys", "idempotency", "ledger", "ledger_checkpoints", "processor_passes",
                             "transactions", "wallets", "events", "webhook_endpoints", "webhook_deliveries",
                             "api_key_changes", "sqlite_sequence"])
    assert not sock.exists(), "the responder removes the socket it created"


@pytest.mark.parametrize("mode", ["fd0", "listen_fds"])
def test_serves_a_socket_handed_in_by_the_service_manager(stack, mode):
    """systemd's StandardInput=socket puts the listening socket on fd 0 (emulated
    with systemd-socket-activate --inetd); its LISTEN_FDS protocol on fd 3. The
    responder serves either through the stack's nginx, and on SIGTERM exits 0
    without removing a socket it does not own."""
    activate = "/usr/bin/systemd-socket-activate"
    if not os.path.exists(activate):
        pytest.fail("systemd-socket-activate is missing: install the systemd package (make deps does)")
    stack.kill_responder(signal.SIGTERM)
    sock = stack.run_dir / "fcgi.sock"
    if sock.exists():
        sock.unlink()
    args = [activate, "-l", str(sock)]
    if mode == "fd0":
        args.append("--inetd")
    args += ["-E", "WALLET_DB", str(bin_dir() / "wallet-fcgi")]
    env = dict(os.environ, WALLET_DB=str(stack.db_path))
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    (stack.run_dir / "wallet-fcgi.pid").write_text(f"{process.pid}\n")
    try:
        wait_until(lambda: sock.exists(), 10, "systemd-socket-activate's socket")
        # systemd-socket-activate creates the socket 0644 whatever the umask
        # (systemd itself would use SocketMode=); nginx's workers need to connect.
        os.chmod(sock, 0o666)
        # The responder starts on the first connection; the first request waits for it.
        created = stack.request("POST", "/wallets/")
        assert created.status == 201, created.body
        wallet = created.json()["uuid"]
        assert stack.request("GET", f"/wallets/{wallet}/").json()["balance"] == 0
    finally:
        returncode = stop_process(process, signal.SIGTERM, timeout=15, group=True)
    assert returncode == 0, process.stderr.read()
    assert sock.exists(), "an inherited socket is not the responder's to remove"
    log = process.stderr.read()
    assert '"event": "stopped"' in log and "inherited fd" in log
