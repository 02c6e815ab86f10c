"""master/single_server.py through real children: one blocking client at a time."""

from __future__ import annotations

import functools
import signal
import socket
import struct

import pytest

from support.echo_daemon import write_daemon_script
from support.sockets import recv_all, recv_line
from support.waiting import WAIT


@pytest.fixture
def echo(lab):
    """Start a single_server echo child; returns (instance, fake master, child)."""
    return functools.partial(lab.spawn_echo, "single")


def _serve_one(fm, line=b"once"):
    sock = fm.greeted()
    sock.sendall(line + b"\nquit\n")
    assert recv_all(sock) == line + b"\nbye\n"


@pytest.mark.parametrize("transport", ["unix", "inet"])
def test_one_client_with_status_records(echo, transport):
    inst, fm, child = echo(transport=transport)
    sock = fm.greeted()
    taken = fm.read_status()  # written at accept, before the service ran
    assert (taken.pid, taken.generation, taken.avail) == (child.pid, fm.generation, 0)
    sock.sendall(b"echo me\n")
    assert recv_line(sock) == b"echo me\n"
    assert fm.pending_status() == b""  # still busy with this client
    sock.sendall(b"quit\n")
    assert recv_all(sock) == b"bye\n"
    avail = fm.read_status()
    assert (avail.pid, avail.avail) == (child.pid, 1)
    _serve_one(fm, b"next client")


def test_clients_are_served_one_after_another(echo):
    inst, fm, child = echo()
    first = fm.greeted()
    waiting = fm.connect()  # queued in the listener while the first is served
    waiting.setblocking(False)
    first.sendall(b"quit\n")
    assert recv_all(first) == b"bye\n"
    waiting.setblocking(True)
    waiting.settimeout(WAIT)
    assert recv_line(waiting) == b"hello\n"


def test_max_use(echo):
    inst, fm, child = echo(args=["-o", "max_use=2"])
    _serve_one(fm)
    _serve_one(fm)
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


def test_max_idle(echo):
    inst, fm, child = echo(args=["-o", "max_idle=1s"])
    _serve_one(fm)
    assert child.wait() == 0


def test_master_eof_during_a_client_is_noticed_after_it(echo):
    inst, fm, child = echo()
    sock = fm.greeted()
    fm.close_status()
    sock.sendall(b"still served\n")
    assert recv_line(sock) == b"still served\n"
    sock.sendall(b"quit\n")
    assert recv_all(sock) == b"bye\n"
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_term_interrupts_a_blocked_service(echo, signum):
    inst, fm, child = echo()
    sock = fm.greeted()  # the service now blocks reading from this client
    child.kill(signum)
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"
    assert recv_all(sock) == b""


def test_children_share_a_listener(lab):
    inst = lab.instance()
    write_daemon_script(inst.bin / "echo", "single")
    fm = lab.master(inst, "echo", maxproc=2)
    children = {fm.spawn().pid, fm.spawn().pid}
    clients = [fm.greeted(), fm.greeted()]  # both open: two children serve
    assert {fm.read_status().pid, fm.read_status().pid} == children
    for sock in clients:
        sock.sendall(b"quit\n")
        assert recv_all(sock) == b"bye\n"


def test_client_reset_is_a_warning_not_a_crash(echo):
    inst, fm, child = echo()
    sock = fm.greeted()
    sock.sendall(b"big 20000000\n")
    assert sock.recv(1000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    _serve_one(fm, b"after the reset")
    assert child.alive()
    assert "warning: local pid" in inst.log()


def test_client_timeout_is_a_warning(echo):
    inst, fm, child = echo(main_cf={"ipc_timeout": "1s"})
    silent = fm.greeted()
    assert recv_all(silent) == b""  # closed by the server's timeout
    _serve_one(fm, b"next")
    assert "timed out" in inst.log()


def test_unexpected_exception_exits_1(echo):
    inst, fm, child = echo()
    sock = fm.greeted()
    sock.sendall(b"crash\n")
    assert child.wait() == 1
    assert "unexpected exception: RuntimeError" in inst.log()
