"""minipostfix under systemd: the rendered unit, and start-fg's Type=notify messages.

The service manager's side is a real unix datagram socket the test binds and names
in $NOTIFY_SOCKET (support.notify), given to the real `minipostfix start-fg`.  The
unit that create-instance renders is checked with `systemd-analyze verify` where
systemd is installed (it needs no running systemd); the test is skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import pytest

from master import embedded
from master.systemd_unit import PLACEHOLDERS
from support import procs
from support.instance import MINIPOSTFIX, VENV_BIN, MiniInstance
from support.notify import NotifyListener
from support.sockets import free_port

ECHO = "echo unix - n n - 0 testd echo 30\n"


@pytest.fixture
def inst():
    port = free_port()
    master_cf = ECHO + f"127.0.0.1:{port} inet n n n - 1 testd echo 30\n"
    with MiniInstance(master_cf=master_cf) as instance:
        instance.port = port
        yield instance


def start_fg(inst: MiniInstance, manager: NotifyListener | None, stderr=subprocess.DEVNULL):
    """`minipostfix start-fg` with NOTIFY_SOCKET naming the manager's socket (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    if manager is not None:
        env["NOTIFY_SOCKET"] = manager.address
    return subprocess.Popen(
        [MINIPOSTFIX, "-c", str(inst.etc), "start-fg"],
        stdin=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
        start_new_session=True,
        text=True,
    )


def ask(inst: MiniInstance) -> int:
    """One echo request over private/echo; returns the pid of the child that answered."""
    with inst.connect("private/echo") as sock:
        sock.sendall(b"ping\n")
        return int(sock.makefile("rb").readline().split()[0])


def stopped(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_start_fg_tells_systemd_ready_reloading_stopping(inst, tmp_path, abstract):
    with NotifyListener(tmp_path, abstract=abstract) as manager:
        proc = start_fg(inst, manager)
        try:
            ready = manager.next()
            # READY=1 comes only once every listener exists: both connect at once.
            assert inst.connect("private/echo")
            socket.create_connection(("127.0.0.1", inst.port), timeout=5).close()
            assert ready == {"READY": "1", "MAINPID": str(proc.pid)}
            assert inst.master_pid() == proc.pid
            # Children never see the socket: it left the environment before they exist.
            child = ask(inst)
            assert "NOTIFY_SOCKET" not in procs.environ(child)

            inst.cli("reload").check()
            reloading = manager.next()
            assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
            assert manager.next() == {"READY": "1", "MAINPID": str(proc.pid)}
            inst.wait_log("reload -- version")

            proc.send_signal(signal.SIGTERM)
            assert manager.next() == {"STOPPING": "1"}
            assert proc.wait(timeout=30) == 0
            assert manager.pending() == []
        finally:
            stopped(proc)
    inst.wait_for(lambda: not inst.processes(), "children to exit")


def test_a_failed_reload_is_still_followed_by_ready(inst, tmp_path):
    with NotifyListener(tmp_path) as manager:
        proc = start_fg(inst, manager)
        try:
            assert manager.next()["READY"] == "1"
            inst.write_master_cf(ECHO + "bogus unix - n n - zero testd echo\n")
            os.kill(proc.pid, signal.SIGHUP)  # `minipostfix reload` would refuse this file
            assert manager.next()["RELOADING"] == "1"
            assert manager.next()["READY"] == "1"
            inst.wait_log("keeping the running configuration")
            assert ask(inst)  # the running configuration still serves
        finally:
            assert stopped(proc) == 0


def test_a_startup_failure_sends_nothing_and_exits_1(inst, tmp_path):
    inst.write_master_cf(ECHO + "bogus unix - n n - zero testd echo\n")
    with NotifyListener(tmp_path) as manager:
        proc = start_fg(inst, manager)
        assert proc.wait(timeout=30) == 1
        assert manager.pending() == []


def test_without_notify_socket_start_fg_runs_as_before(inst):
    proc = start_fg(inst, None, stderr=subprocess.PIPE)
    try:
        inst.wait_log("daemon started")
        assert ask(inst)
    finally:
        assert stopped(proc) == 0
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert "notify" not in stderr


# The unit ------------------------------------------------------------------------


def create_instance(inst: MiniInstance) -> str:
    target = inst.root / "new" / "etc"
    subprocess.run(
        [MINIPOSTFIX, "-c", str(target), "create-instance", f"queue_directory={inst.root}/q",
         f"data_directory={inst.root}/d", f"maillog_file={inst.root}/maillog"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return str(target)


def test_create_instance_renders_the_unit_with_the_real_paths(inst):
    target = create_instance(inst)
    unit = open(os.path.join(target, embedded.UNIT)).read()
    lines = unit.splitlines()
    program = str(VENV_BIN / "minipostfix")
    assert f"ExecStart={program} -c {target} start-fg" in lines
    assert f"ExecReload={program} -c {target} reload" in lines
    assert "Type=notify" in lines and "NotifyAccess=main" in lines
    assert f"ConditionPathExists={target}/main.cf" in lines
    assert not any(placeholder in unit for placeholder in PLACEHOLDERS)
    assert os.stat(os.path.join(target, embedded.UNIT)).st_mode & 0o777 == 0o644
    # The rendered ExecStart is a command that works: it names this installation.
    check = subprocess.run(
        [program, "-c", target, "check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_the_rendered_unit_passes_systemd_analyze_verify(inst):
    target = create_instance(inst)
    result = subprocess.run(
        ["systemd-analyze", "verify", os.path.join(target, embedded.UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # ... and it is a real check: a broken copy of the unit fails it.
    broken = inst.root / embedded.UNIT
    broken.write_text(
        open(os.path.join(target, embedded.UNIT)).read().replace("Type=notify", "Type=notifx")
    )
    failed = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "Failed to parse service type" in failed.stderr
