"""The minipostfix command: check, create-instance, status -v, stop with force, usage.

Real console script (`.venv/bin/minipostfix`) on temporary instances; the
status provider test loads entry points through importlib.metadata from a
temporary distribution on sys.path, in process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap

import pytest

from master import control, embedded, statusreport, statusview
from support.instance import MINIPOSTFIX, MiniInstance
from support.procs import proc_stat

ECHO = "echo unix - n n - 0 testd echo 30\n"


@pytest.fixture
def inst():
    with MiniInstance(master_cf=ECHO) as instance:
        yield instance


def test_check_good_configuration(inst):
    result = inst.cli("check")
    assert result.returncode == 0, result


def test_check_reports_main_cf_errors_with_file_and_line(inst):
    (inst.etc / "main.cf").write_text((inst.etc / "main.cf").read_text() + "max_idle = soon\n")
    result = inst.cli("check")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    fatal = [line for line in lines if line.startswith("minipostfix: fatal: main.cf:")]
    assert fatal and "max_idle" in fatal[0]
    assert lines[-1] == "minipostfix: fatal: minipostfix integrity check failed!"
    assert "Traceback" not in result.stderr


def test_check_missing_master_cf_and_missing_command(inst):
    inst.write_master_cf(ECHO + "ghost unix - n n - 1 nosuchdaemon\n")
    result = inst.cli("check")
    assert result.returncode == 0
    assert f"warning: master.cf:2: command not executable: {inst.bin}/nosuchdaemon" in result.stderr
    os.unlink(inst.etc / "master.cf")
    result = inst.cli("check")
    assert result.returncode == 1
    assert "master.cf" in result.stderr and "No such file or directory" in result.stderr


@pytest.mark.root
def test_check_unknown_mail_owner_is_fatal_as_root(inst):
    inst.write_main_cf(mail_owner="no-such-user-mpfx")
    result = inst.cli("check")
    assert result.returncode == 1
    assert "parameter mail_owner: unknown user name value: no-such-user-mpfx" in result.stderr
    assert inst.cli("start").returncode == 1
    assert inst.processes() == []


def test_create_instance_from_the_embedded_files(inst):
    target = inst.root / "new" / "etc"
    result = subprocess.run(
        [MINIPOSTFIX, "-c", str(target), "create-instance", f"queue_directory={inst.root}/q",
         "maillog_file = /dev/null"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result
    assert os.stat(target).st_mode & 0o777 == 0o755
    main = (target / "main.cf").read_text()
    assert f"queue_directory = {inst.root}/q\n" in main
    assert f"config_directory = {target}\n" in main
    assert "maillog_file = /dev/null\n" in main
    source = embedded.embedded_directory()
    assert (target / "master.cf").read_text() == open(os.path.join(source, "master.cf")).read()
    # Comments and order of the embedded file are kept (postconf -e style edits).
    assert main.splitlines()[0] == open(os.path.join(source, "main.cf")).read().splitlines()[0]
    bad = subprocess.run(
        [MINIPOSTFIX, "-c", str(target), "create-instance", "novalue"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1
    assert (
        "fatal: bad argument \"novalue\": missing '=' after attribute name (expected NAME=VALUE)"
        in bad.stderr
    )


def test_embedded_files_are_found_in_the_checkout():
    folder = embedded.embedded_directory()
    assert os.path.isfile(os.path.join(folder, "main.cf"))
    assert embedded.embedded_file("master.cf") == os.path.join(folder, "master.cf")
    with pytest.raises(ValueError):
        embedded.embedded_file("passwd")


def test_status_verbose_shows_the_masters_view(inst):
    inst.cli("start").check()
    with inst.connect("private/echo") as sock:
        sock.sendall(b"hi\n")
        child = int(sock.makefile("rb").readline().split()[0])
    result = inst.wait_for(
        lambda: (r := inst.cli("status", "-v")).stdout.count(f"pid {child} idle, 1 use(s)") and r,
        "status -v to show the child",
    )
    assert result.returncode == 0
    assert f"the minipostfix mail system is running: PID: {inst.master_pid()}" in result.stderr
    assert f"master: pid {inst.master_pid()}, version " in result.stdout
    assert f"service echo (unix private/echo): {inst.bin}/testd, maxproc unlimited" in result.stdout
    inst.cli("stop").check()
    stopped = inst.cli("status", "-v")
    assert stopped.returncode == 1 and "master:" not in stopped.stdout


def test_status_providers_from_entry_points(tmp_path, monkeypatch):
    dist = tmp_path / "mpfx_probe-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mpfx-probe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[minipostfix.status]\nzgood = mpfx_probe:good\nzbad = mpfx_probe:bad\n"
        "zdown = mpfx_probe:down\nzodd = mpfx_probe:odd\n"
    )
    (tmp_path / "mpfx_probe.py").write_text(
        textwrap.dedent(
            """
            from master.statusreport import StatusUnavailable

            class Good:
                def collect(self, config_dir):
                    return {"entries": 3, "seen": config_dir}
                def lines(self, data):
                    return [f"cache smtpd: {data['entries']} entries", "seen " + data["seen"]]
            class Bad(Good):
                def collect(self, config_dir):
                    raise OSError("connect to private/tlsmgr: No such file or directory")
            class Down(Good):
                def collect(self, config_dir):
                    raise StatusUnavailable("not reachable: no socket private/x")
            class Odd(Good):
                def collect(self, config_dir):
                    return {"when": object()}
            good, bad, down, odd = Good(), Bad(), Down(), Odd()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {p.name: p for p in statusreport.collect_providers("/etc/x")}
    assert found["zgood"].data == {"entries": 3, "seen": "/etc/x"}
    assert found["zgood"].error is None
    assert found["zbad"].data is None
    assert found["zbad"].error == (
        "status unavailable: OSError: connect to private/tlsmgr: No such file or directory"
    )
    assert found["zdown"].error == "not reachable: no socket private/x"
    assert found["zodd"].error.startswith("status unavailable: TypeError: Object of type object")
    report = statusreport.StatusReport(0.0, None, None, tuple(found.values()))
    lines = statusview.report_lines(report)
    assert "zgood: cache smtpd: 3 entries" in lines
    assert "zgood: seen /etc/x" in lines
    assert [line for line in lines if line.startswith("zbad:")] == [
        "zbad: status unavailable: OSError: connect to private/tlsmgr: No such file or directory"
    ]
    assert "zdown: not reachable: no socket private/x" in lines
    document = report.to_json()["providers"]
    assert document["zgood"] == {"data": {"entries": 3, "seen": "/etc/x"}, "error": None}
    assert document["zdown"] == {"data": None, "error": "not reachable: no socket private/x"}


def test_master_view_formats_throttle_and_exits():
    state = {
        "pid": 10,
        "version": "0.1.0",
        "config_directory": "/etc/minipostfix",
        "started": 1000.0,
        "forks": 3,
        "services": [
            {
                "name": "bad", "type": "unix", "endpoint": "private/bad", "command": "/x/bad",
                "maxproc": 1, "spawns": 3, "throttles": 2, "avail": 0, "throttled": True,
                "throttle_until": 1130.0, "throttle_reason": "pid 7 exit status 1 before its first "
                "request", "last_exit": "pid 7 exit status 1", "children": [],
                "spawn_server": {"pid": 8, "state": "ready", "started": 1095.0, "forks": 2,
                                 "last_exit": ""},
            },
            {
                "name": "exec", "type": "unix", "endpoint": "private/exec", "command": "/x/exec",
                "maxproc": 1, "spawns": 0, "throttles": 0, "avail": 0, "throttled": False,
                "throttle_until": 0,
                "throttle_reason": "", "last_exit": "", "children": [], "spawn_server": None,
            },
        ],
    }  # fmt: skip
    lines = statusview.master_view(statusreport.MasterStatus.from_state(state), now=1100.0)
    assert lines[0] == (
        "master: pid 10, version 0.1.0, configuration /etc/minipostfix, up 1m40s, 3 fork(s)"
    )
    assert "  throttled for 30s more: pid 7 exit status 1 before its first request" in lines
    assert "  last exit: pid 7 exit status 1" in lines
    assert "  spawn server pid 8 ready, up 5s, 2 fork(s)" in lines
    assert sum("spawn server" in line for line in lines) == 1  # none for a fork+exec service
    assert not any("stderr" in line for line in lines)
    stderr = {"bad/unix": {"pid": 7, "lines": ["Traceback ...", "ImportError: x"]}}
    master = statusreport.MasterStatus.from_state(state, stderr)
    lines = statusview.master_view(master, now=1100.0)
    assert '  last stderr line (pid 7): "ImportError: x"' in lines


def test_master_view_shows_draining_children():
    child = {"generation": 1, "use_count": 5, "started": 1000.0}
    state = {
        "pid": 10, "version": "0.1.0", "config_directory": "/etc/minipostfix",
        "started": 1000.0, "forks": 2,
        "services": [
            {
                "name": "tlsmgr", "type": "unix", "endpoint": "private/tlsmgr",
                "command": "/x/tlsmgr", "maxproc": 1, "spawns": 2, "throttles": 0, "avail": 1,
                "throttled": False, "throttle_until": 0, "throttle_reason": "", "last_exit": "",
                "children": [{**child, "pid": 7, "state": "draining"},
                             {**child, "pid": 8, "state": "idle"}],
            }
        ],
    }  # fmt: skip
    lines = statusview.master_view(statusreport.MasterStatus.from_state(state), now=1100.0)
    assert lines[1].endswith("maxproc 1, 2 child(ren) (1 idle, 1 draining), 2 spawn(s)")
    assert lines[2:] == ["  pid 7 draining, 5 use(s), up 1m40s", "  pid 8 idle, 5 use(s), up 1m40s"]


@pytest.mark.slow
def test_stop_kills_a_master_that_does_not_exit_and_only_its_own_children(inst):
    """The forced stop kills the master and the children its state file lists, each only
    while its start time (/proc/PID/stat field 22) is still the one recorded: a listed
    pid that now belongs to another process (pids are reused) is left alone."""
    inst.cli("start").check()
    with inst.connect("private/echo") as sock:
        sock.sendall(b"hi\n")
        child = int(sock.makefile("rb").readline().split()[0])
    state_file = inst.queue / "pid" / "master.state"
    inst.wait_for(lambda: f'"pid": {child}' in state_file.read_text(),
                  "the state file to list the child")  # fmt: skip
    master = inst.master_pid()
    os.kill(master, signal.SIGSTOP)  # it cannot act on TERM now, nor rewrite its state
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        state = json.loads(state_file.read_text())
        listed = state["services"][0]["children"]
        assert [c["starttime"] for c in listed if c["pid"] == child] == [start_time(child)]
        reused = dict(listed[0], pid=bystander.pid, starttime=start_time(bystander.pid) - 1)
        unknown = {k: v for k, v in reused.items() if k != "starttime"}
        listed += [reused, unknown]
        state_file.write_text(json.dumps(state))
        result = inst.cli("stop")
        assert result.returncode == 0
        assert "waiting for the minipostfix mail system to terminate" in result.stderr
        assert "stopping the minipostfix mail system with force" in result.stderr
        inst.wait_for(lambda: {master, child}.isdisjoint(inst.processes()), "master and child gone")
        assert bystander.poll() is None, "an unrelated process was killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGCONT)
        bystander.kill()
        bystander.wait()


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot."""
    return int(proc_stat(pid)[19])


def test_usage_and_unknown_command(inst):
    result = inst.cli("fly")
    assert result.returncode == 1
    assert "fatal: unknown command: 'fly'. Usage: minipostfix start" in result.stderr


def test_config_directory_from_mail_config(inst):
    env = dict(os.environ, MAIL_CONFIG=str(inst.etc))
    result = subprocess.run([MINIPOSTFIX, "status"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "the minipostfix mail system is not running" in result.stderr


def _nobody_can_run_python() -> bool:
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/bin/sh", "-c",
         f"exec {sys.executable} -c pass"],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not _nobody_can_run_python(), reason="this Python is not executable by nobody")
def test_not_root_runs_with_one_warning(inst):
    """Without root: no chroot, no drop, one warning; sockets in our own directories."""
    prefix = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        for path in (inst.root, inst.etc, inst.bin):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    run = lambda *a: subprocess.run(  # noqa: E731
        [*prefix, MINIPOSTFIX, "-c", str(inst.etc), *a], capture_output=True, text=True, timeout=60
    )
    started = run("start")
    assert started.returncode == 0, started
    assert started.stderr.count("warning:") == 1
    assert "not running as root" in started.stderr
    with inst.connect("private/echo") as sock:
        sock.sendall(b"hi\n")
        assert sock.makefile("rb").readline().split()[2] == b"hi"
    assert run("stop").returncode == 0
    assert inst.processes() == []


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "no-pidfd"])
def test_held_process_is_killed_only_while_it_is_the_one_recorded(monkeypatch, pidfds):
    """Held: a pid and its start time; kill() reaches that process or nothing, through a
    pidfd, or (a system without pidfds) by pid after the start time was checked again."""
    if not pidfds:
        monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert control.Held.take(sleeper.pid, start_time(sleeper.pid) + 1) is None
        assert control.Held.take(sleeper.pid, None) is None
        held = control.Held.take(sleeper.pid, start_time(sleeper.pid))
        assert held is not None and (held.fd is not None) == pidfds
        held.kill()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        held.kill()  # gone: nothing happens
        held.close()
    finally:
        sleeper.kill()
        sleeper.wait()


def no_pidfds(_pid: int) -> int:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
