"""Spawning as the master does it: fds, argv, environment, throttling, maxproc, wake-ups.

Real master from the console script, real children (the stdlib test daemon
`testd`, or the project's own single_server skeleton through support/echo_daemon.py).
"""

from __future__ import annotations

import os
import signal
import socket
import stat

import pytest

from support.echo_daemon import write_daemon_script
from support.instance import MiniInstance
from support.sockets import free_port


@pytest.fixture
def inst():
    with MiniInstance(main_cf={"service_throttle_time": "2s"}) as instance:
        yield instance


def spawns(inst: MiniInstance, name: str) -> int:
    for svc in inst.state()["services"]:
        if svc["name"] == name:
            return svc["spawns"]
    raise AssertionError(f"no service {name} in {inst.state()}")


def service_state(inst: MiniInstance, name: str) -> dict:
    return next(s for s in inst.state()["services"] if s["name"] == name)


def test_child_fds_argv_and_environment(inst):
    trace = inst.root / "rec"
    inst.write_master_cf(f"rec unix - n n - 1 testd record {trace}\n")
    os.environ["MPFX_NOT_IMPORTED"] = "1"
    try:
        inst.cli("start").check()
    finally:
        del os.environ["MPFX_NOT_IMPORTED"]
    with inst.connect("private/rec") as sock:
        sock.sendall(b"hello\0")
    starts = lambda: [r for r in inst.records("rec") if r["event"] == "start"]  # noqa: E731
    start = inst.wait_for(starts, "a start")[0]
    # argv: the script sees its full path as argv[0] (#! exec); then Postfix's options.
    assert start["argv"] == [str(inst.bin / "testd"), "-l", "-n", "rec", "-t", "unix", "record",
                             str(trace)]  # fmt: skip
    env = start["env"]
    assert env["MAIL_CONFIG"] == str(inst.etc)
    assert env["MAIL_LOGTAG"] == "postfix"
    assert env["LANG"] == "C"  # import_environment forces LANG=C
    assert env["GENERATION"] in ("1", "2")  # one counter for all forks: postlogd's may be first
    assert env["POSTLOG_SERVICE"] == str(inst.queue / "public" / "postlog")
    assert "MPFX_NOT_IMPORTED" not in env and "PATH" not in env
    fds = start["fds"]
    assert fds["0"] == fds["1"] == "/dev/null"
    assert fds["2"].startswith("pipe:")  # detached: the master keeps the child's stderr tail
    assert fds["3"].startswith("pipe:") and fds["3"] == fds["4"]
    assert fds["5"].startswith("socket:") and fds["6"].startswith("socket:")
    assert sorted(fds, key=int) == ["0", "1", "2", "3", "4", "5", "6"]
    inst.cli("stop").check()


def test_bad_command_startup_is_throttled_with_its_reason_and_retried(inst):
    inst.write_master_cf("bad unix - n n - 1 testd fail\n")
    inst.cli("start").check()
    path = inst.bin / "testd"
    with inst.connect("private/bad"):  # waits in the backlog while throttled
        inst.wait_log(rf"warning: {path}: bad command startup -- throttling")
        log = inst.log()
        assert f"warning: process {path} pid " in log and " exit status 1" in log
        assert "stderr: testd: deliberate startup failure" in log
        assert "before its first request" in log
        # status -v shows it too (the state files follow within a second): the
        # stderr line, to root only, from a file apart from the world-readable state.
        status = inst.wait_for(
            lambda: (r := inst.cli("status", "-v")).stdout.count("last stderr line") and r,
            "status -v to show the throttle and the stderr line",
        )
        assert "before its first request" in status.stdout
        assert "last stderr line (pid " in status.stdout
        assert '): "testd: deliberate startup failure"' in status.stdout
        state, stderr = inst.queue / "pid" / "master.state", inst.queue / "pid" / "master.stderr"
        assert "deliberate" not in state.read_text()
        assert "deliberate startup failure" in stderr.read_text()
        assert (os.stat(state).st_mode & 0o777, os.stat(stderr).st_mode & 0o777) == (0o644, 0o600)
        # After service_throttle_time the master tries again (and fails again).
        inst.wait_log("throttle released for command")
        inst.wait_log(r"bad command startup -- throttling", count=2)
    lines = inst.log().splitlines()
    released = next(i for i, line in enumerate(lines) if "throttle released" in line)
    second = [i for i, line in enumerate(lines) if "bad command startup" in line][1]
    assert released < second
    inst.cli("stop").check()


def test_signal_before_first_request_throttles(inst):
    inst.write_master_cf("echo unix - n n - 1 testd echo\n")
    inst.cli("start").check()
    with inst.connect("private/echo"):
        child = inst.wait_for(lambda: inst.children(), "a child")[0]
        os.kill(child, signal.SIGKILL)
        inst.wait_log(rf"process .*testd pid {child} killed by signal 9")
        inst.wait_log("bad command startup -- throttling")
        assert "killed by signal 9 (SIGKILL) before its first request" in inst.log()
    inst.cli("stop").check()


def test_exit_zero_is_never_throttled(inst):
    inst.write_master_cf("quit unix - n n - 1 testd exit0\n")
    inst.cli("start").check()
    with inst.connect("private/quit"):
        # Each child exits 0 without taking the connection: the master forks again.
        inst.wait_for(lambda: spawns(inst, "quit") >= 3, "three spawns")
    inst.cli("stop").check()
    assert "throttling" not in inst.log()
    assert "exit status" not in inst.log()


def test_death_after_serving_is_logged_not_throttled(inst):
    inst.write_master_cf("echo unix - n n - 1 testd echo\n")
    inst.cli("start").check()
    with inst.connect("private/echo") as sock:
        sock.sendall(b"one\n")
        pid = int(sock.makefile("rb").readline().split()[0])
        inst.wait_for(
            lambda: [c for c in service_state(inst, "echo")["children"] if c["use_count"] == 1],
            "the use to be counted",
        )
        os.kill(pid, signal.SIGKILL)
        inst.wait_log(rf"pid {pid} killed by signal 9")
    with inst.connect("private/echo") as sock:  # served by a new child at once
        sock.sendall(b"two\n")
        assert int(sock.makefile("rb").readline().split()[0]) != pid
    assert "throttling" not in inst.log()
    inst.cli("stop").check()


def test_maxproc_concurrency_and_idle_exit(inst):
    """maxproc 3 on the project's single_server skeleton (the echo daemon)."""
    write_daemon_script(inst.bin / "secho", "single")
    inst.write_master_cf("secho unix - n n - 3 secho -o max_idle=2s\n")
    inst.cli("start").check()
    clients = []
    try:
        for _ in range(3):
            sock = inst.connect("private/secho")
            assert sock.makefile("rb").readline() == b"hello\n"  # taken by its own child
            clients.append(sock)
        pids = set(inst.children())
        assert len(pids) == 3
        # A fourth client waits: maxproc is reached.
        extra = inst.connect("private/secho", timeout=0.5)
        with pytest.raises(socket.timeout):
            extra.recv(10)
        clients[0].close()  # one child becomes free and takes the waiting client
        extra.settimeout(10)
        assert extra.makefile("rb").readline() == b"hello\n"
        clients[0] = extra
    finally:
        for sock in clients:
            sock.close()
    # Idle children leave after max_idle (2 s); the master reaps them quietly.
    inst.wait_for(lambda: not inst.children(), "idle children to exit")
    inst.wait_for(lambda: service_state(inst, "secho")["children"] == [], "state to show none")
    assert "exit status" not in inst.log()
    inst.cli("stop").check()


def test_wakeups_unconditional_and_conditional(inst):
    ticks, cond = inst.root / "ticks", inst.root / "cond"
    inst.write_master_cf(
        f"ticks unix - n n 1 1 testd record {ticks}\ncond unix - n n 1? 1 testd record {cond}\n"
    )
    inst.cli("start").check()
    data = lambda name: [r for r in inst.records(name) if r["event"] == "data"]  # noqa: E731
    # N: a trigger at start (which starts the service) and then every N seconds.
    inst.wait_for(lambda: len(data("ticks")) >= 3, "three wake-ups")
    assert {r["data"] for r in data("ticks")} == {"W\0"}
    # N?: nothing until the service is used once.
    assert spawns(inst, "cond") == 0 and inst.records("cond") == []
    with inst.connect("private/cond") as sock:
        sock.sendall(b"use\0")
    inst.wait_for(lambda: len(data("cond")) >= 3, "conditional wake-ups after first use")
    assert data("cond")[0]["data"] == "use\0"
    inst.cli("stop").check()


def test_fifo_listener_and_wakeup(inst):
    rec = inst.root / "fifo"
    inst.write_master_cf(f"pickup fifo n n n 1 1 testd record {rec}\n")
    inst.cli("start").check()
    path = inst.queue / "public" / "pickup"
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert os.stat(path).st_mode & 0o777 == 0o622
    inst.wait_for(lambda: [r for r in inst.records("fifo") if r.get("data") == "W"], "a trigger")
    inst.cli("stop").check()


def test_unix_dgram_listener(inst):
    rec = inst.root / "dgram"
    inst.write_master_cf(f"postlog unix-dgram n n n - 1 testd record {rec}\n")
    inst.cli("start").check()
    path = inst.queue / "public" / "postlog"
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert os.stat(path).st_mode & 0o777 == 0o666
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"a log line", str(path))
    inst.wait_for(
        lambda: [r for r in inst.records("dgram") if r.get("data") == "a log line"], "datagram"
    )
    inst.cli("stop").check()


def test_inet_listener_and_wakeup(inst):
    rec = inst.root / "inet"
    port = free_port()
    inst.write_master_cf(f"127.0.0.1:{port} inet n n n 1 1 testd record {rec}\n")
    inst.cli("start").check()
    inst.wait_for(lambda: [r for r in inst.records("inet") if r.get("data") == "W\0"], "trigger")
    start = next(r for r in inst.records("inet") if r["event"] == "start")
    assert start["argv"][1:6] == ["-l", "-n", f"127.0.0.1:{port}", "-t", "inet"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"tcp\0")
    inst.wait_for(lambda: [r for r in inst.records("inet") if r.get("data") == "tcp\0"], "data")
    inst.cli("stop").check()


def test_reload_plan(inst):
    """Kept, removed, changed and new services across one reload."""
    inst.write_master_cf(
        "keep unix - n n - 0 testd echo\n"
        "gone unix - n n - 0 testd echo\n"
        "change unix - n n - 0 testd echo\n"
    )
    inst.cli("start").check()

    def ask(name: str) -> list[bytes]:
        with inst.connect(f"private/{name}") as sock:
            sock.sendall(b"hi\n")
            return sock.makefile("rb").readline().split()

    keep_pid = int(ask("keep")[0])
    gone_pid = int(ask("gone")[0])
    ask("change")
    keep_inode = os.stat(inst.queue / "private" / "keep").st_ino
    inst.write_master_cf(
        "keep unix - n n - 0 testd echo\n"
        "change unix - n n - 0 testd single\n"
        "new unix - n n - 0 testd echo\n"
    )
    inst.cli("reload").check()
    inst.wait_log("reload -- version")
    inst.wait_for(lambda: gone_pid not in inst.processes(), "removed service's child to end")
    inst.wait_for(lambda: keep_pid not in inst.processes(), "kept service's old child to leave")
    # Kept: same listener (same socket file), a new child.
    assert os.stat(inst.queue / "private" / "keep").st_ino == keep_inode
    assert int(ask("keep")[0]) != keep_pid
    # Removed: nobody listens any more (the file stays, as in Postfix).
    with pytest.raises(ConnectionRefusedError):
        inst.connect("private/gone")
    # New service runs; changed one uses its new arguments.
    assert ask("new")[2] == b"hi"
    assert ask("change")[2] == b"hi"
    start = inst.state()
    assert [s["name"] for s in start["services"] if s["name"] != "postlog"] == [
        "keep",
        "change",
        "new",
    ]
    assert "single" in open(f"/proc/{inst.children()[0]}/cmdline").read() or any(
        "single" in open(f"/proc/{p}/cmdline").read() for p in inst.children()
    )
    # The TERM sent to the removed service's child is not reported as a failure.
    assert f"pid {gone_pid} killed" not in inst.log()
    inst.cli("stop").check()
