"""`make run`: the whole stack in the foreground, stopped by Ctrl-C.

A terminal's Ctrl-C is SIGINT to its foreground process group: make, the
scripts/stack.sh --follow it execs into, and whatever stack.sh started in
that group. Once make has exited, nothing of the run may be left: not the
components, not the processor and notifier loops, not the `tail -F | sed`
pipelines that --follow starts to show the logs.
"""

import os
import signal
import subprocess

from .conftest import REPO, START_TIMEOUT, STOP_TIMEOUT, Stack, _alive, _cmdline, _proc_stat, stop_process, wait_until
from .test_install import MAKE_VARIABLES


def _start_time(pid):
    """The start time of a process (field 22 of /proc/PID/stat), or None if it
    is gone: a pid and its start time name one process, even if the pid is
    reused later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return int(data[data.rfind(")") + 2:].split()[19])


def _processes():
    """{pid: (ppid, pgid)} of every live process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[0] != "Z":
                out[int(entry)] = stat[1:]
    return out


def _descendants(root):
    """{pid: start time} of `root` and every process below it, now."""
    children = {}
    for pid, (ppid, _) in _processes().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        if start is not None:
            out[pid] = start
        todo.extend(children.get(pid, []))
    return out


def _names(pid, text):
    """True if the command line, the working directory or the environment of a
    process mentions `text` (every process of a stack inherits WALLET_RUN_DIR)."""
    if text in _cmdline(pid):
        return True
    try:
        if text in os.readlink(f"/proc/{pid}/cwd"):
            return True
        with open(f"/proc/{pid}/environ", "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def _left_behind(started, pgid, marker):
    """{pid: command line} of the live processes of a run: the ones noted while
    it ran (same pid, same start time), the members of its process group, and
    any process that names its directory."""
    out = {}
    for pid, (_, group) in _processes().items():
        if pid == os.getpid():
            continue
        if started.get(pid) == _start_time(pid) or group == pgid or _names(pid, marker):
            if _alive(pid):
                out[pid] = _cmdline(pid)
    return out


def test_ctrl_c_stops_everything_make_run_started(wallet_bin_dir):
    """`make run` (stack.sh --follow, with the processor and notifier loops) up to
    `stack ready`, then SIGINT to its process group as Ctrl-C in a terminal sends:
    make exits, stack.sh reports a clean stop, and no process of the run is left,
    the log followers included."""
    # Stack only for its settings: private ports, run dir and database.
    settings = Stack(processor=True, notifier=True)
    env = {k: v for k, v in settings.env.items() if k not in MAKE_VARIABLES}
    out, err = settings.base_dir / "make-run.out", settings.base_dir / "make-run.err"
    # The session's binaries are WALLET_BIN_DIR; SWIFT=true turns make's own
    # `swift build` into a no-op.
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        make = subprocess.Popen(["make", "--no-print-directory", "run", "SWIFT=true"], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)
    marker = str(settings.base_dir)
    started = {}
    try:
        def ready():
            assert make.poll() is None, f"make run exited with status {make.returncode}:\n{err.read_text()}"
            return "stack ready" in out.read_text()
        wait_until(ready, START_TIMEOUT, "make run to print `stack ready`")
        started = _descendants(make.pid)
        followers = [_cmdline(pid) for pid in started if _cmdline(pid).startswith("tail ")]
        assert len(followers) == 4, f"--follow should run one tail -F per log: {followers}"

        os.killpg(make.pid, signal.SIGINT)
        make.wait(STOP_TIMEOUT)
        left = _left_behind(started, make.pid, marker)
        assert not left, "processes left behind by make run after Ctrl-C:\n" + "\n".join(
            f"  pid {pid}: {cmdline}" for pid, cmdline in sorted(left.items()))
        text = err.read_text()
        assert "stack: SIGINT received" in text and "stack: stopped\n" in text, text
    finally:
        for pid in _left_behind(started, make.pid, marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_process(make, signal.SIGKILL, group=True)
    settings.remove()
