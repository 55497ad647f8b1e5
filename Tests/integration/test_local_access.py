"""What the development stack leaves on the machine is not for other local users: the
run directory and its sockets are shared only with nginx's workers, the database, the
logs and the bank's files are the stack's own. Started as root (as CI does), nginx's
workers run as nobody:nogroup; another user (here `daemon`) must not be able to reach the
responder's socket, nor make fcgiwrap run a script, nor read the database."""

import grp
import os
import pwd
import stat
import subprocess

import pytest

from . import helpers as h

AS_ROOT = os.geteuid() == 0
# Debian's own interpreter: the other user cannot enter a toolchain under /root.
SYSTEM_PYTHON = "/usr/bin/python3"


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def as_other_user(code):
    """Runs Python `code` as the unprivileged user `daemon`; returns (status, output)."""
    result = subprocess.run(
        ["setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups", SYSTEM_PYTHON, "-c", code],
        capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout + result.stderr


def test_the_run_dir_and_sockets_are_shared_only_with_nginx_workers(stack):
    # The stack works: nginx's workers reach the responder and the bank.
    h.create_wallet(stack)
    assert stack.bank_request("POST", "/pay", body={}).status in (400, 409, 200, 503)

    run_dir = stack.run_dir
    if AS_ROOT:
        workers = pwd.getpwnam("nobody").pw_gid
        assert os.stat(run_dir).st_gid == workers
        assert mode(run_dir) == 0o2750, oct(mode(run_dir))
        for sock in ("fcgi.sock", "bank.sock"):
            assert os.stat(run_dir / sock).st_gid == workers, sock
            assert mode(run_dir / sock) == 0o660, (sock, oct(mode(run_dir / sock)))
    else:
        assert mode(run_dir) == 0o700
    assert mode(run_dir / "bank") == 0o700
    for name in ("wallet-fcgi.log", "nginx-error.log", "fcgiwrap.log"):
        assert mode(run_dir / name) & 0o077 == 0, (name, oct(mode(run_dir / name)))
    for suffix in ("", "-wal", "-shm"):
        path = f"{stack.db_path}{suffix}"
        if os.path.exists(path):
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
    for path in (run_dir / "bank").rglob("*"):
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


@pytest.mark.skipif(not AS_ROOT, reason="needs root to act as another user")
def test_another_local_user_reaches_nothing(stack):
    assert "nogroup" != grp.getgrgid(pwd.getpwnam("daemon").pw_gid).gr_name
    for sock in ("fcgi.sock", "bank.sock"):
        status, output = as_other_user(
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({str(stack.run_dir / sock)!r})\n"
            "except PermissionError:\n    sys.exit(3)\n")
        assert status == 3, f"{sock}: another user connected or failed otherwise ({status}): {output}"
    status, output = as_other_user(f"open({str(stack.db_path)!r}, 'rb').read(1)")
    assert status != 0 and "PermissionError" in output, output
