"""master/trigger_server.py through real children: fifo, unix-dgram and unix triggers.

The echo daemon on the trigger skeleton traces every message it gets
("trigger uses=N b'DATA' PID") in the lab's trace file; the fake master places
the listener as the real master does (a bound datagram socket, a fifo opened
read-write, a unix stream socket).
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket

import pytest

from support import procs
from support.procs import proc_ids
from support.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def trigger(lab):
    """Start a trigger_server echo child; returns (instance, fake master, child)."""
    return functools.partial(lab.spawn_echo, "trigger")


def traces(inst, what="trigger"):
    return [line for line in inst.trace_lines() if line.startswith(what)]


def wait_traces(inst, count, what="trigger"):
    return wait_until(
        lambda: len(traces(inst, what)) >= count and traces(inst, what),
        f"{count} {what} trace(s)",
        detail=lambda: f"\ntrace:\n{inst.trace.read_text()}\nlog:\n{inst.log()}",
    )


@pytest.mark.parametrize("transport", ["unix-dgram", "fifo"])
def test_each_message_reaches_the_service_in_order(trigger, transport):
    inst, fm, child = trigger(transport=transport)
    wait_traces(inst, 0, "post_init")
    messages = [b"W", b"second", b"3"]
    for data in messages:
        fm.send(data)
        wait_traces(inst, messages.index(data) + 1)
    got = traces(inst)
    assert got == [f"trigger uses={n} {data!r} {child.pid}" for n, data in enumerate(messages)]


def test_datagrams_are_one_call_each_and_cut_at_4096_bytes(trigger):
    inst, fm, child = trigger(transport="unix-dgram")
    fm.send(b"a" * 5000)
    fm.send(b"b")
    first, second = wait_traces(inst, 2)
    assert f"{b'a' * 4096!r}" in first
    assert "b'b'" in second


def test_a_unix_trigger_is_the_first_read_of_a_connection(trigger):
    inst, fm, child = trigger(transport="unix")
    sock = fm.connect()
    sock.sendall(b"W")
    (line,) = wait_traces(inst, 1)
    assert "b'W'" in line
    assert sock.recv(10) == b""  # no reply; the server closes the connection
    quiet = fm.connect()
    quiet.close()  # a client that leaves without a word: no call
    fm.connect().sendall(b"again")
    assert "b'again'" in wait_traces(inst, 2)[-1]


def test_status_records_taken_then_avail(trigger):
    inst, fm, child = trigger(transport="unix-dgram")
    fm.send(b"W")
    taken, avail = fm.read_status(), fm.read_status()
    assert (taken.pid, taken.generation, taken.avail) == (child.pid, fm.generation, 0)
    assert (avail.pid, avail.avail) == (child.pid, 1)


def test_max_use_counts_messages(trigger):
    inst, fm, child = trigger(transport="unix-dgram", args=["-o", "max_use=2"])
    fm.send(b"one")
    fm.send(b"two")
    assert child.wait() == 0
    assert len(traces(inst)) == 2
    assert traces(inst, "pre_exit")


def test_max_idle_exits_after_the_last_message(trigger):
    inst, fm, child = trigger(transport="fifo", args=["-o", "max_idle=1s"])
    fm.send(b"W")
    wait_traces(inst, 1)
    assert child.wait() == 0
    assert traces(inst, "pre_exit")


@pytest.mark.parametrize("how", ["eof", "term"])
def test_master_eof_or_term_run_pre_exit_and_exit_0(trigger, how):
    inst, fm, child = trigger(transport="unix-dgram")
    fm.send(b"W")
    wait_traces(inst, 1)
    if how == "eof":
        fm.close_status()
    else:
        child.kill(signal.SIGTERM)
    assert child.wait() == 0
    assert traces(inst, "pre_exit")


@pytest.mark.parametrize("transport", ["unix-dgram", "fifo"])
def test_told_to_leave_it_takes_no_more_triggers(trigger, transport):
    # What comes after EOF on fd 5 waits in the master's listener for the successor.
    inst, fm, child = trigger(transport=transport)
    fm.send(b"before")
    wait_traces(inst, 1)
    fm.close_status()
    assert child.wait() == 0
    assert traces(inst, "pre_exit")
    fm.send(b"after")
    assert os.read(fm.listeners[0].fileno(), 100) == b"after"  # still queued
    assert len(traces(inst)) == 1


def test_a_unix_connection_accepted_before_the_drain_gets_its_call(trigger):
    inst, fm, child = trigger(transport="unix")
    early = _accepted(inst, fm, child)
    fm.close_status()
    wait_until(lambda: not procs.holds(child.pid, fm.listeners[0]), "the listener closed")
    queued = fm.connect()  # waits in the listener for a successor
    early.sendall(b"late trigger")
    assert "b'late trigger'" in wait_traces(inst, 1)[0]
    assert child.wait() == 0
    assert len(traces(inst)) == 1
    assert not select.select([queued], [], [], 0)[0]  # no EOF: still in the listen queue


def test_the_drain_deadline_closes_a_silent_unix_connection(trigger):
    inst, fm, child = trigger({"echo_drain_time": "1s"}, transport="unix")
    silent = _accepted(inst, fm, child)
    fm.close_status()
    assert silent.recv(10) == b""
    assert child.wait() == 0
    assert "drain deadline: closing 1 connection(s)" in inst.log()
    assert traces(inst, "pre_exit") and not traces(inst)


def _accepted(inst, fm, child) -> socket.socket:
    """A connection the child has accepted (it holds one more socket) and that is silent."""
    wait_traces(inst, 0, "post_init")
    before = procs.socket_fds(child.pid)
    sock = fm.connect()
    wait_until(lambda: procs.socket_fds(child.pid) > before, "the child to accept")
    return sock


def test_an_exception_in_the_service_is_logged_and_exit_1(trigger):
    inst, fm, child = trigger(transport="unix-dgram")
    fm.send(b"crash")
    assert child.wait() == 1
    log = inst.log()
    assert "error: unexpected exception: RuntimeError: crash requested by the trigger" in log
    assert not traces(inst, "pre_exit")


def test_stream_transports_of_other_skeletons_are_refused(lab):
    inst, fm = lab.echo("trigger", transport="inet")
    child = fm.spawn()
    assert child.wait() == 1
    assert "fatal: unsupported transport type: inet" in inst.log()


def test_stdin_mode_serves_one_read_and_exits(lab):
    inst, fm = lab.echo("trigger")
    reader, writer = os.pipe()
    os.write(writer, b"from stdin")
    os.close(writer)
    child = fm.spawn(argv=["echo", "-S"], stdin=reader)
    os.close(reader)
    assert child.wait() == 0
    assert "b'from stdin'" in traces(inst)[0]


@pytest.mark.root
def test_jail_and_drop_as_root(trigger):
    import pwd

    inst, fm, child = trigger(transport="unix-dgram", unpriv=True, chroot=True)
    fm.send(b"W")
    wait_traces(inst, 1)
    pw = pwd.getpwnam("postfix")
    assert proc_ids(child.pid).uids == (pw.pw_uid,) * 4
    assert child.proc_root() == str(inst.queue)
    fm.send(b"jailed")
    assert "b'jailed'" in wait_traces(inst, 2)[-1]
    assert "warning" not in inst.log()


def test_many_datagrams_in_one_burst_are_all_served(trigger):
    # echo_persistent: max_use 0, as postlogd has it (the default 100 would end it).
    inst, fm, child = trigger({"echo_persistent": "yes"}, transport="unix-dgram")
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(fm.addresses[0])
    sender.settimeout(WAIT)
    for n in range(300):
        sender.send(f"m{n}".encode())  # blocking: waits while the queue is full
    sender.close()
    got = wait_traces(inst, 300)
    assert [line.split()[2] for line in got] == [repr(f"m{n}".encode()) for n in range(300)]
