"""master/skeleton.py through real children: start-up checks, status records, exit paths, jail.

Each test starts the echo daemon (support/echo_daemon.py) under the fake master, with fds 3-6
placed as Postfix's master places them.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from master import proto
from support.echo_daemon import write_daemon_script
from support.fake_master import can_run_as, daemon_env
from support.sockets import recv_all, recv_line
from support.waiting import WAIT


def _wait_for_trace(inst, entry):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if any(line.startswith(entry) for line in inst.trace_lines()):
            return
        time.sleep(0.02)
    raise AssertionError(f"no {entry!r} in {inst.trace_lines()}")


def _fatal(inst, child, text, where="maillog"):
    assert child.wait() == 1
    log = inst.log() if where == "maillog" else child.stderr_text()
    assert f"fatal: {text}" in log, log
    assert "Traceback" not in log + child.stderr_text()


# Status records -------------------------------------------------------------


def test_status_records_carry_pid_generation_and_availability(lab):
    inst, fm = lab.echo(generation=0o1234)
    child = fm.spawn()
    sock = fm.greeted()
    sock.sendall(b"one\n")
    assert recv_line(sock) == b"one\n"
    taken, avail = fm.read_status(), fm.read_status()
    assert taken == proto.StatusRecord(child.pid, 0o1234, proto.STATUS_TAKEN)
    assert avail == proto.StatusRecord(child.pid, 0o1234, proto.STATUS_AVAIL)


def test_no_status_record_at_startup_accept_or_greeting(lab):
    inst, fm = lab.echo()
    fm.spawn()
    fm.greeted()  # a connection that only accepts and greets
    second = fm.greeted()
    second.sendall(b"x\n")
    assert recv_line(second) == b"x\n"
    # Anything written for the first connection would come before these.
    assert [fm.read_status().avail, fm.read_status().avail] == [0, 1]
    assert fm.pending_status() == b""


# Exit paths -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multi", "single"])
def test_master_eof_runs_pre_exit_and_exits_0(lab, kind):
    inst, fm = lab.echo(kind)
    child = fm.spawn()
    sock = fm.greeted()
    if kind == "single":  # between clients
        sock.sendall(b"quit\n")
        assert recv_all(sock) == b"bye\n"
        fm.read_status(), fm.read_status()
    fm.close_status()
    assert child.wait() == 0
    assert [line.split()[0] for line in inst.trace_lines()] == ["pre_init", "post_init", "pre_exit"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_run_pre_exit_and_exit_0(lab, signum):
    inst, fm = lab.echo()
    child = fm.spawn()
    fm.greeted()  # the loop is running
    child.kill(signum)
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


def test_max_idle_exits_0(lab):
    inst, fm = lab.echo(args=["-o", "max_idle=1s"])
    child = fm.spawn()
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


def test_idle_option_overrides_main_cf(lab):
    inst, fm = lab.echo(main_cf={"max_idle": "3600s"}, args=["-i", "1"])
    assert fm.spawn().wait() == 0


def test_max_use_exits_after_that_many_clients(lab):
    inst, fm = lab.echo(args=["-o", "max_use=2"])
    child = fm.spawn()
    for _ in range(2):
        sock = fm.greeted()
        sock.sendall(b"quit\n")
        assert recv_all(sock) == b"bye\n"
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


def test_post_init_may_turn_off_max_use_and_max_idle(lab):
    inst, fm = lab.echo(main_cf={"echo_persistent": "yes"}, args=["-o", "max_use=1"])
    child = fm.spawn()
    for _ in range(3):
        sock = fm.greeted()
        sock.sendall(b"quit\n")
        assert recv_all(sock) == b"bye\n"
    assert child.alive()
    fm.close_status()
    assert child.wait() == 0


def test_loop_hook_runs_every_turn_and_sets_the_sleep(lab):
    # The hook returns 0 for 200 turns: the loop must not sleep meanwhile.
    inst, fm = lab.echo(main_cf={"echo_loop_work": "200"})
    fm.spawn()
    _wait_for_trace(inst, "loop_done")


def test_unexpected_exception_is_logged_with_traceback_exit_1(lab):
    inst, fm = lab.echo()
    child = fm.spawn()
    sock = fm.greeted()
    sock.sendall(b"crash\n")
    assert child.wait() == 1
    log = inst.log()
    assert "error: unexpected exception: RuntimeError: crash requested by the client" in log
    assert "error: traceback: Traceback (most recent call last):" in log
    assert "pre_exit" not in " ".join(inst.trace_lines())


def test_exception_in_pre_exit_exits_1(lab):
    inst, fm = lab.echo(main_cf={"echo_pre_exit_crash": "yes"})
    child = fm.spawn()
    fm.greeted()
    fm.close_status()
    assert child.wait() == 1
    assert "error: unexpected exception: RuntimeError: pre_exit crash requested" in (inst.log())


def test_watchdog_kills_a_stuck_request(lab):
    inst, fm = lab.echo(main_cf={"daemon_timeout": "1s"})
    child = fm.spawn()
    sock = fm.greeted()
    sock.sendall(b"sleep 30\n")
    assert child.wait() == -signal.SIGALRM


# Start-up checks: fatal, exit 1, nothing served ----------------------------


def test_bad_main_cf_value_is_fatal_before_serving(lab):
    inst, fm = lab.echo(main_cf={"echo_count": "many"})
    early = fm.connect()  # waits in the listener's backlog
    child = fm.spawn()
    _fatal(inst, child, f"{inst.etc}/main.cf:8: bad numerical configuration: echo_count")
    early.setblocking(False)
    with pytest.raises(BlockingIOError):
        early.recv(10)  # never greeted
    assert inst.trace_lines() == []  # not even pre_init ran


def test_value_out_of_bounds_is_fatal(lab):
    inst, fm = lab.echo(main_cf={"echo_count": "5000"})
    _fatal(inst, fm.spawn(), f"{inst.etc}/main.cf:8: invalid echo_count: 5000 (max 1000)")


def test_bad_skeleton_parameter_is_fatal(lab):
    inst, fm = lab.echo(main_cf={"ipc_timeout": "soon"})
    text = f"{inst.etc}/main.cf:8: parameter ipc_timeout: bad time value or unit: soon"
    _fatal(inst, fm.spawn(), text)


def test_bad_override_names_the_service_and_option(lab):
    inst, fm = lab.echo(args=["-o", "max_use=x"])
    _fatal(inst, fm.spawn(), "service echo: -o max_use=x: bad numerical configuration")


def test_main_cf_syntax_error_names_file_and_line(lab):
    inst, fm = lab.echo()
    with open(os.path.join(inst.etc, "main.cf"), "a") as fp:
        fp.write("this line has no equals sign\n")
    # No logging configuration yet: the complaint goes to stderr (and syslog).
    text = f"{inst.etc}/main.cf:8: missing '=' after attribute name"
    _fatal(inst, fm.spawn(), text, where="stderr")


def test_a_hooks_own_check_is_fatal_at_the_place_of_its_parameter(lab):
    # pre_init raises ParamError naming echo_trace_file: at the line of main.cf that sets it.
    inst, fm = lab.echo(main_cf={"echo_trace_file": "trace"})
    with open(os.path.join(inst.etc, "main.cf")) as fp:
        line = next(n for n, text in enumerate(fp, 1) if text.startswith("echo_trace_file"))
    what = "parameter echo_trace_file: not an absolute path: trace"
    _fatal(inst, fm.spawn(), f"{inst.etc}/main.cf:{line}: {what}")
    inst, fm = lab.echo(args=["-o", "echo_trace_file=trace"])
    _fatal(inst, fm.spawn(), f"service echo: -o echo_trace_file=trace: {what}")


def test_unknown_option_is_fatal(lab):
    inst, fm = lab.echo()
    child = fm.spawn(argv=["echo", "-l", "-t", "unix", "-Q"])
    _fatal(inst, child, "invalid option -- 'Q'")


def test_malformed_override_is_fatal_as_in_postfix(lab):
    inst, fm = lab.echo()
    child = fm.spawn(argv=["echo", "-l", "-t", "unix", "-o", "max_use 5"])
    _fatal(inst, child, "invalid \"-o max_use 5\" option value: missing '=' after attribute name")


def test_missing_transport_is_fatal(lab):
    inst, fm = lab.echo()
    _fatal(inst, fm.spawn(argv=["echo", "-l"]), "no transport type specified")


def test_unsupported_transport_is_fatal(lab):
    inst, fm = lab.echo()
    _fatal(inst, fm.spawn(argv=["echo", "-t", "fifo"]), "unsupported transport type: fifo")


def test_solitary_service_requires_process_limit_1(lab):
    inst = lab.instance()
    write_daemon_script(inst.bin / "echo", "multi", solitary=True)
    fm = lab.master(inst, "echo", maxproc=2)
    _fatal(inst, fm.spawn(), "service echo requires a process limit of 1")
    ok = lab.master(inst, "echo", service="echo1", maxproc=1)
    ok.spawn()
    ok.greeted()


def test_bad_generation_is_fatal(lab):
    inst, fm = lab.echo()
    _fatal(inst, fm.spawn(env={"GENERATION": "9z"}), "bad generation: 9z")


def test_refuses_to_run_by_hand_on_a_tty(lab):
    inst, fm = lab.echo()
    controller, terminal = pty.openpty()
    try:
        _fatal(inst, fm.spawn(stdin=terminal), "do not run this command by hand")
        debug = fm.spawn(stdin=terminal, argv=[*fm.argv, "-d"])
        fm.greeted()
        fm.close_status()
        assert debug.wait() == 0
    finally:
        os.close(controller)
        os.close(terminal)


def test_without_the_master_fds_is_fatal(lab):
    inst = lab.instance()
    path = write_daemon_script(inst.bin / "echo", "multi")
    result = subprocess.run(
        [path, "-l", "-t", "unix"],
        env=daemon_env(inst),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "fatal: status channel (fd 5) is not open" in inst.log()


@pytest.mark.root
def test_unknown_or_privileged_mail_owner_is_fatal_as_root(lab):
    inst, fm = lab.echo(main_cf={"mail_owner": "nosuchuser-mpfx"})
    _fatal(inst, fm.spawn(), "parameter mail_owner: unknown user name value: nosuchuser-mpfx")
    inst.write_main_cf(mail_owner="root")
    _fatal(inst, fm.spawn(), "parameter mail_owner: user root has privileged user ID: 0")


# The jail -------------------------------------------------------------------


@pytest.mark.root
def test_jail_and_privilege_drop_as_root(lab):
    import pwd

    pw = pwd.getpwnam("postfix")
    inst, fm = lab.echo(unpriv=True, chroot=True)
    child = fm.spawn()
    fm.greeted()  # post_init has run
    status = child.proc_status()
    assert status["Uid"].split() == [str(pw.pw_uid)] * 4
    assert status["Gid"].split() == [str(pw.pw_gid)] * 4
    assert sorted(map(int, status["Groups"].split())) == sorted(
        set(os.getgrouplist("postfix", pw.pw_gid))
    )
    assert child.proc_root() == str(inst.queue)
    assert inst.trace_lines()[:2] == [
        f"pre_init euid=0 {child.pid}",
        f"post_init euid={pw.pw_uid} {child.pid}",
    ]
    assert "warning" not in inst.log()


@pytest.mark.root
def test_drop_without_chroot(lab):
    inst, fm = lab.echo(unpriv=True, chroot=False)
    child = fm.spawn()
    fm.greeted()
    assert child.proc_root() == "/"
    assert child.proc_status()["Uid"].split()[0] != "0"


@pytest.mark.root
def test_neither_flag_stays_root_unjailed(lab):
    inst, fm = lab.echo()
    child = fm.spawn()
    fm.greeted()
    assert child.proc_root() == "/"
    assert child.proc_status()["Uid"].split() == ["0"] * 4


def test_not_root_gives_one_warning_and_no_jail(lab):
    run_as = None
    if os.geteuid() == 0:
        if not can_run_as("nobody"):
            pytest.skip("needs setpriv, and this Python runnable by nobody")
        run_as = "nobody"
    inst, fm = lab.echo(unpriv=True, chroot=True)
    child = fm.spawn(run_as=run_as)
    sock = fm.greeted()
    sock.sendall(b"still serving\n")
    assert recv_line(sock) == b"still serving\n"
    assert child.proc_root() == "/"
    assert child.proc_status()["Uid"].split()[0] == str(os.geteuid() if run_as is None else 65534)
    warnings = [line for line in inst.log().splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert f"not started as root: no chroot to {inst.queue} and no drop to postfix" in (warnings[0])


def test_daemon_script_uses_this_python():
    # The echo daemon's scripts must run the interpreter that has the package installed.
    assert os.access(sys.executable, os.X_OK)
