"""The resident master from the console script: start, status, reload, stop, locks, abort.

Real processes: `minipostfix` (the installed console script) on a temporary
instance under /tmp, with the stdlib test daemon `testd` as the service.
Every test ends with no process of its instance left (MiniInstance.close kills
and checks; the tests also assert it after a clean stop).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from support.instance import MINIPOSTFIX, MiniInstance

ECHO = "echo unix - n n - 0 testd echo 30\n"


@pytest.fixture
def inst():
    with MiniInstance(master_cf=ECHO) as instance:
        yield instance


def ask(inst: MiniInstance, line: bytes = b"ping") -> list[bytes]:
    """One request to private/echo; returns the reply's fields (pid, generation, text)."""
    with inst.connect("private/echo") as sock:
        sock.sendall(line + b"\n")
        return sock.makefile("rb").readline().split()


def test_start_status_reload_stop_cycle(inst):
    assert inst.cli("status").returncode == 1
    start = inst.cli("start").check()
    assert "starting the minipostfix mail system" in start.stderr
    pid = inst.master_pid()
    status = inst.cli("status")
    assert status.returncode == 0
    assert f"the minipostfix mail system is running: PID: {pid}" in status.stderr
    started = rf"postfix/master\[{pid}\]: daemon started -- version .*, configuration {inst.etc}$"
    inst.wait_log(started)

    child_pid, gen, text = ask(inst)
    assert text == b"ping"
    assert int(child_pid) in inst.children()

    reload = inst.cli("reload").check()
    assert "refreshing the minipostfix mail system" in reload.stderr
    inst.wait_log("reload -- version")
    # The old child saw EOF on its status channel and left; a new one serves.
    inst.wait_for(lambda: int(child_pid) not in inst.processes(), "old child to exit")
    new_pid, new_gen, _ = ask(inst)
    assert new_pid != child_pid and int(new_gen) > int(gen)

    stop = inst.cli("stop").check()
    assert "stopping the minipostfix mail system" in stop.stderr
    assert inst.processes() == []
    assert inst.cli("status").returncode == 1
    assert "the minipostfix mail system is not running" in inst.cli("status").stderr
    for command in ("stop", "reload", "abort"):
        result = inst.cli(command)
        assert result.returncode == 1
        assert "fatal: the minipostfix mail system is not running" in result.stderr
    # Postfix keeps the pid file; the lock is what says "running".
    assert (inst.queue / "pid" / "master.pid").exists()


def test_pid_and_lock_files(inst):
    inst.cli("start").check()
    pid = inst.master_pid()
    for path in (inst.queue / "pid" / "master.pid", inst.data / "master.lock"):
        raw = path.read_bytes()
        assert raw == f"{pid:>32}\n".encode()
        assert os.stat(path).st_mode & 0o777 == 0o600
    inst.cli("stop").check()


def test_double_start_refused(inst):
    inst.cli("start").check()
    pid = inst.master_pid()
    again = inst.cli("start")
    assert again.returncode == 1
    assert "fatal: the minipostfix mail system is already running" in again.stderr
    # Going round the CLI's own check: the master itself refuses and says why.
    fg = subprocess.run(
        [MINIPOSTFIX, "-c", str(inst.etc), "start-fg"], capture_output=True, text=True, timeout=30
    )
    assert fg.returncode == 1
    assert "already running" in fg.stderr
    assert inst.master_pid() == pid
    assert inst.cli("status").returncode == 0
    inst.cli("stop").check()


def test_master_refuses_when_lock_held_without_cli_check(inst):
    """Two masters racing past the CLI check: the second one's lock fails."""
    inst.cli("start").check()
    first = inst.master_pid()
    code = "import sys; from master.master import run; sys.exit(run(sys.argv[1], foreground=1))"
    proc = subprocess.run(
        [os.path.join(os.path.dirname(MINIPOSTFIX), "python"), "-c", code, str(inst.etc)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "fatal: the minipostfix mail system is already running" in proc.stderr
    assert inst.master_pid() == first
    inst.cli("stop").check()


def test_stale_lock_from_killed_master_is_recovered(inst):
    inst.cli("start").check()
    old = inst.master_pid()
    ask(inst)
    os.kill(old, signal.SIGKILL)
    inst.wait_for(lambda: old not in inst.processes(), "killed master to vanish")
    # Its child sees EOF on fd 5 and leaves by itself.
    inst.wait_for(lambda: not inst.processes(), "orphaned children to leave")
    assert inst.cli("status").returncode == 1
    inst.cli("start").check()
    new = inst.master_pid()
    assert new != old
    assert (inst.data / "master.lock").read_bytes() == f"{new:>32}\n".encode()
    assert ask(inst)[2] == b"ping"
    inst.cli("stop").check()
    assert inst.processes() == []


def test_abort_terms_children_and_exits_at_once(inst):
    inst.cli("start").check()
    pid = inst.master_pid()
    child = int(ask(inst)[0])
    result = inst.cli("abort").check()
    assert "aborting the minipostfix mail system" in result.stderr
    inst.wait_for(lambda: pid not in inst.processes(), "master to exit")
    inst.wait_for(lambda: child not in inst.processes(), "child to exit")
    inst.wait_log("aborting on signal 3")


def test_connections_never_refused_during_reload(inst):
    inst.cli("start").check()
    ask(inst)
    refused: list[str] = []  # connect() failed: what a reload must never cause
    dropped: list[str] = []  # an accepted connection lost (testd finishes its clients)
    served = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                sock = inst.connect("private/echo")
            except OSError as err:
                refused.append(repr(err))
                continue
            try:
                with sock:
                    sock.sendall(b"x\n")
                    if sock.makefile("rb").readline().split()[2:] == [b"x"]:
                        served[0] += 1
            except OSError as err:
                dropped.append(repr(err))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for _ in range(5):
            inst.cli("reload").check()
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert refused == []
    assert dropped == []
    assert served[0] > 0
    assert "exit status" not in inst.log()  # old children left cleanly on fd 5 EOF
    inst.wait_log("reload -- version", count=5)
    inst.cli("stop").check()


def test_start_fg_stops_cleanly_on_ctrl_c(inst):
    # A session of its own stands for the terminal: Ctrl-C signals the whole
    # foreground process group, the master and its children alike.
    proc = subprocess.Popen(
        [MINIPOSTFIX, "-c", str(inst.etc), "start-fg"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        inst.wait_log("daemon started")
        assert inst.master_pid() == proc.pid  # no detach: the master is this process
        child = int(ask(inst)[0])
        assert os.getpgid(child) == os.getpgid(proc.pid) == proc.pid  # one process group
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert "daemon started" in stderr  # log lines beside maillog_file
    assert "terminating on signal 2" in stderr
    inst.wait_for(lambda: not inst.processes(), "children to exit")
    assert "exit status" not in inst.log() and "killed by" not in inst.log()


def test_bad_master_cf_is_fatal_and_starts_nothing(inst):
    inst.write_master_cf(ECHO + "bogus unix - n n - zero testd echo\n")
    result = inst.cli("start")
    assert result.returncode == 1
    assert 'fatal: master.cf:2: field "maxproc": bad value: "zero"' in result.stderr
    assert not (inst.queue / "private").exists()
    # The master itself refuses just the same when started directly.
    fg = subprocess.run(
        [MINIPOSTFIX, "-c", str(inst.etc), "start-fg"], capture_output=True, text=True, timeout=30
    )
    assert fg.returncode == 1
    assert "master.cf:2" in fg.stderr
    assert inst.processes() == []


def test_master_fatal_error_reaches_start(inst):
    """An error only the running master can meet comes back through the readiness pipe."""
    with socket.socket(socket.AF_INET) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        inst.write_master_cf(ECHO + f"127.0.0.1:{port} inet n n n - 1 testd echo\n")
        result = inst.cli("start")
    assert result.returncode == 1
    assert f"bind 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "mail system startup failed" in result.stderr
    inst.wait_for(lambda: not inst.processes(), "failed master to be gone")


def test_reload_keeps_inet_protocols_until_a_restart(inst):
    inst.cli("start").check()
    pid = inst.master_pid()
    inst.write_main_cf(inet_protocols="ipv4")
    inst.cli("reload").check()
    inst.wait_log("warning: ignoring inet_protocols parameter value change")
    inst.wait_log("warning: to change inet_protocols, stop and start minipostfix")
    inst.wait_log("reload -- version")
    assert ask(inst)[2] == b"ping"
    assert inst.master_pid() == pid
    inst.cli("stop").check()


def test_bad_config_on_hup_keeps_the_running_one(inst):
    inst.cli("start").check()
    pid = inst.master_pid()
    ask(inst)
    inst.write_master_cf(ECHO + "broken unix - n\n")
    refused = inst.cli("reload")
    assert refused.returncode == 1
    assert 'master.cf:2: missing "chroot" field' in refused.stderr
    os.kill(pid, signal.SIGHUP)  # round the CLI's check: the master must cope
    inst.wait_log(r"error: reload: master.cf:2: .*keeping the running configuration")
    assert ask(inst)[2] == b"ping"
    assert inst.master_pid() == pid
    inst.cli("stop").check()
