"""The skeletons' drain: a child told to leave (EOF on fd 5, as at a reload) loses no request.

A real echo daemon under the fake master; fm.close_status() is what a reload looks
like to the old child.  multi_server stops accepting and closes its copies of the
listeners at once, answers every request it has read, closes each connection only
between requests and only once it has answered one there, and leaves when the last
one is closed or at the drain deadline.  single_server finishes its client, then
leaves.
"""

from __future__ import annotations

import functools
import select
import socket

import pytest

from support import procs
from support.sockets import recv_all, recv_line
from support.waiting import wait_until


@pytest.fixture
def multi(lab):
    """A multi_server echo child: (instance, fake master, child)."""
    return functools.partial(lab.spawn_echo, "multi")


def _exchange(sock: socket.socket, line: bytes) -> None:
    sock.sendall(line + b"\n")
    assert recv_line(sock) == line + b"\n"


def _nothing_yet(sock: socket.socket) -> bool:
    """True when nothing has come, not even EOF: the other end has not closed."""
    return not select.select([sock], [], [], 0)[0]


def test_a_client_that_connected_just_before_gets_its_first_answer(multi):
    inst, fm, child = multi()
    sock = fm.greeted()  # connected, nothing sent yet
    fm.close_status()
    wait_until(lambda: not procs.holds(child.pid, fm.listeners[0]), "the listener closed")
    assert _nothing_yet(sock)
    _exchange(sock, b"first request")
    assert recv_all(sock) == b""  # closed right after its first answer
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


def test_answered_idle_connections_close_at_once_and_nothing_is_accepted(multi):
    inst, fm, child = multi(main_cf={"echo_drain_time": "60s"})
    answered = fm.greeted()
    _exchange(answered, b"before the reload")
    waiting = fm.greeted()
    fm.close_status()
    assert recv_all(answered) == b""  # idle and answered: nothing to wait for
    wait_until(lambda: not procs.holds(child.pid, fm.listeners[0]), "the listener closed")
    late = fm.connect()  # queued in the master's listener for a successor
    _exchange(waiting, b"after the reload")
    assert recv_all(waiting) == b""
    assert child.wait() == 0  # its last connection closed: no wait for the deadline
    assert _nothing_yet(late)  # no greeting, no close: still in the listen queue


def test_late_replies_and_pipelined_requests_are_answered_first(multi):
    inst, fm, child = multi()
    sock = fm.greeted()
    sock.sendall(b"later 0.3\nafter\nand after\n")
    fm.close_status()
    assert recv_all(sock) == b"later\nafter\nand after\n"
    assert child.wait() == 0


def test_a_big_reply_is_written_out_before_the_close(multi):
    inst, fm, child = multi()
    sock = fm.greeted()
    sock.sendall(b"big 3000000\n")
    fm.close_status()
    assert recv_all(sock) == b"x" * 3000000 + b"\n"
    assert child.wait() == 0


def test_the_deadline_closes_the_stragglers(multi):
    """A client that never sends, one that sent half a request, one that does not read
    its reply: each keeps the old child only until the drain deadline."""
    inst, fm, child = multi(main_cf={"echo_drain_time": "2s"})
    answered = fm.greeted()
    _exchange(answered, b"done")
    silent = fm.greeted()
    half = fm.greeted()
    half.sendall(b"half a requ")
    unread = fm.greeted()
    unread.sendall(b"big 8000000\n")
    fm.close_status()
    assert recv_all(answered) == b""
    assert _nothing_yet(silent) and _nothing_yet(half)  # the deadline is later
    assert recv_all(silent) == b""
    assert recv_all(half) == b""
    assert child.wait() == 0
    assert "drain deadline: closing 3 connection(s)" in inst.log()
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"


def test_single_server_finishes_its_client_then_leaves(lab):
    inst, fm, child = lab.spawn_echo("single")
    sock = fm.greeted()
    _exchange(sock, b"before")
    queued = fm.connect()  # waits in the listener behind the client in hand
    fm.close_status()
    _exchange(sock, b"after the reload")
    sock.sendall(b"quit\n")
    assert recv_all(sock) == b"bye\n"
    assert child.wait() == 0
    assert inst.trace_lines()[-1] == f"pre_exit {child.pid}"
    assert _nothing_yet(queued)  # left in the listener for a successor, not taken and dropped


# Handing over (multi_server.main(handover=True)) -----------------------------


def _pid_of_server(sock: socket.socket) -> int:
    sock.sendall(b"pid\n")
    return int(recv_line(sock))


def test_connections_between_requests_go_to_the_successor(lab):
    inst, fm, old = lab.spawn_echo("multi", handover=True)
    answered = fm.greeted()
    assert _pid_of_server(answered) == old.pid
    silent = fm.greeted()  # greeted, nothing sent yet
    fm.reload()
    new = fm.spawn()
    assert old.wait() == 0  # it left once both were passed on
    # Each goes on where it was: no second greeting, the successor answers.
    assert _pid_of_server(answered) == new.pid
    assert _pid_of_server(silent) == new.pid
    assert "drained: 2 connection(s) handed over to the successor" in inst.log()
    assert new.alive()


def test_a_request_in_progress_is_answered_before_the_handover(lab):
    inst, fm, old = lab.spawn_echo("multi", handover=True)
    sock = fm.greeted()
    sock.sendall(b"later 0.5\n")
    fm.reload()
    new = fm.spawn()
    assert recv_line(sock) == b"later\n"
    assert old.wait() == 0
    assert _pid_of_server(sock) == new.pid


def test_without_a_successor_the_deadline_closes_them(lab):
    inst, fm, old = lab.spawn_echo("multi", handover=True)
    sock = fm.greeted()
    _exchange(sock, b"answered")
    fm.reload()  # and no child is started
    assert recv_all(sock) == b""
    assert old.wait() == 0
    assert "drain deadline: closing 1 connection(s)" in inst.log()
