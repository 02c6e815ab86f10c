"""multi_server's handler contract, turn by turn, with a real EventLoop and real sockets.

A handler may keep input back (conn.hold(): resumed on a later turn once the output has
drained, round-robin), may leave a reply pending (conn.pause(), then conn.write() and
conn.hold()), and says whether it is between requests.  LineHandler below is the smallest
handler that uses all of it: one line per call (its whole budget), "big N" for an N-byte
reply, "later" for a reply the test gives later.
"""

from __future__ import annotations

import gc
import os
import socket
import types
import weakref

import pytest

from master import multi_server
from master.events import EventLoop
from master.multi_server import HIGH_WATER, LOW_WATER, Connection, MultiServer
from support.sockets import recv_exactly


class LineHandler:
    def __init__(self, conn: Connection, calls: list[tuple[str, bytes]]) -> None:
        self.conn = conn
        self.calls = calls
        self.buffer = b""
        self.waiting = False

    def connection_made(self) -> bytes:
        return b""

    def data_received(self, data: bytes) -> bytes:
        self.buffer += data
        return self.resume()

    def resume(self) -> bytes:
        if b"\n" not in self.buffer:
            return b""
        line, self.buffer = self.buffer.split(b"\n", 1)
        self.calls.append((self.conn.peer, line))
        if line == b"later":
            self.waiting = True
            self.conn.pause()
            return b""
        if b"\n" in self.buffer:
            self.conn.hold()  # budget: one line per call
        if line.startswith(b"big "):
            return b"x" * int(line.split()[1]) + b"\n"
        return line + b"\n"

    def late_reply(self, data: bytes) -> None:
        self.waiting = False
        self.conn.write(data)
        self.conn.hold()

    @property
    def between_requests(self) -> bool:
        return not self.buffer and not self.waiting

    def connection_lost(self) -> None:
        pass


class Status:
    def __init__(self) -> None:
        self.busy_calls = 0

    def busy(self) -> None:
        self.busy_calls += 1


class Server:
    """A MultiServer with LineHandlers on socketpairs, turned one loop turn at a time."""

    def __init__(self) -> None:
        self.events = EventLoop()
        self.ctx = types.SimpleNamespace(
            events=self.events,
            status=Status(),
            ipc_timeout=3600,
            use_count=0,
            listeners=[],
            cancel_idle_timer=lambda: None,
            arm_idle_timer=lambda: None,
        )
        self.calls: list[tuple[str, bytes]] = []
        self.handlers: dict[str, LineHandler] = {}
        self.conns: dict[str, Connection] = {}
        self.server = MultiServer(self.ctx, self._factory, None)  # type: ignore[arg-type]
        self.socks: list[socket.socket] = []

    def _factory(self, conn: Connection) -> LineHandler:
        handler = self.handlers[conn.peer] = LineHandler(conn, self.calls)
        self.conns[conn.peer] = conn
        return handler

    def client(self, peer: str) -> socket.socket:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.settimeout(5)
        self.socks.append(theirs)
        fd = ours.detach()  # the Connection closes it
        self.server._new_connection(Connection(self.server, fd, fd, peer))
        return theirs

    def turn(self, timeout: float = 0.05) -> None:
        wanted = self.server.turn(self.ctx)
        self.events.run_once(timeout if wanted is None else min(wanted, timeout))

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        for sock in self.socks:
            sock.close()
        self.events.close()


@pytest.fixture
def srv():
    server = Server()
    yield server
    server.close()


def test_held_input_is_resumed_round_robin_one_call_per_turn(srv):
    a, b = srv.client("a"), srv.client("b")
    a.sendall(b"a1\na2\na3\n")
    b.sendall(b"b1\nb2\nb3\n")
    srv.turn()  # both reads: one line each, the rest held back
    assert srv.calls == [("a", b"a1"), ("b", b"b1")]
    srv.turn()  # one resume() each, in the order they were held
    assert srv.calls[2:] == [("a", b"a2"), ("b", b"b2")]
    srv.turn()
    assert srv.calls[4:] == [("a", b"a3"), ("b", b"b3")]
    assert recv_exactly(a, 9) == b"a1\na2\na3\n"
    assert recv_exactly(b, 9) == b"b1\nb2\nb3\n"


def test_a_held_connection_is_not_read_and_reads_again_when_done(srv):
    a = srv.client("a")
    a.sendall(b"1\n2\n")
    srv.turn()
    a.sendall(b"3\n")  # waits in the kernel while 2 is held back
    srv.events.run_once(0.05)  # a turn of I/O alone: the held connection is not read
    assert srv.handlers["a"].buffer == b"2\n"
    srv.turn()  # resume: 2; nothing held back any more: read again, and 3 comes in
    assert [line for _, line in srv.calls] == [b"1", b"2", b"3"]
    assert recv_exactly(a, 6) == b"1\n2\n3\n"


def test_no_resume_while_the_output_is_past_the_low_water_mark(srv):
    a = srv.client("a")
    a.sendall(b"big %d\nnext\n" % (2 * HIGH_WATER))  # far more than the socket takes
    srv.turn()
    conn = srv.conns["a"]
    assert conn.room < 0
    for _ in range(5):  # the client does not read: "next" stays undecoded
        srv.turn(0.01)
    assert [line for _, line in srv.calls] == [b"big %d" % (2 * HIGH_WATER)]
    assert not conn.between_requests
    # The client reads; once the output is down to LOW_WATER, "next" is answered.
    a.settimeout(0.01)
    got = b""
    while b"next\n" not in got:
        try:
            got += a.recv(1 << 20)
        except TimeoutError:
            pass
        srv.turn(0.01)
        if len(conn._out) > LOW_WATER:  # white box: still draining
            assert [line for _, line in srv.calls][-1] != b"next"
    assert got == b"x" * (2 * HIGH_WATER) + b"\nnext\n"


def test_a_pending_reply_keeps_later_requests_behind_it(srv):
    a, b = srv.client("a"), srv.client("b")
    a.sendall(b"first\nlater\nafter\n")
    srv.turn()
    srv.turn()  # "first", then "later": paused
    conn = srv.conns["a"]
    assert [line for _, line in srv.calls] == [b"first", b"later"]
    assert not conn.between_requests
    b.sendall(b"meanwhile\n")
    for _ in range(3):  # others are served; "after" is neither read nor resumed
        srv.turn()
    assert [line for _, line in srv.calls] == [b"first", b"later", b"meanwhile"]
    assert recv_exactly(b, 10) == b"meanwhile\n"
    srv.handlers["a"].late_reply(b"LATE\n")
    srv.turn()
    assert [line for _, line in srv.calls][-1] == b"after"
    assert recv_exactly(a, 17) == b"first\nLATE\nafter\n"
    assert conn.between_requests


def test_between_requests_and_received(srv):
    a = srv.client("a")
    conn = srv.conns["a"]
    assert conn.between_requests and conn.received == 0  # nothing asked yet
    a.sendall(b"half")
    srv.turn()
    assert not conn.between_requests and conn.received == 4
    a.sendall(b"\n")
    srv.turn()
    # Bytes received and between requests: every request it sent was answered.
    assert conn.between_requests and conn.received == 5
    a.sendall(b"x\ny\n")
    srv.turn()
    assert not conn.between_requests  # "y" held back
    srv.turn()
    assert conn.between_requests


def test_resume_counts_as_busy(srv):
    a = srv.client("a")
    a.sendall(b"1\n2\n")
    srv.turn()
    before = srv.ctx.status.busy_calls
    srv.turn()
    assert srv.ctx.status.busy_calls == before + 1


def test_the_constants_of_the_contract():
    assert multi_server.LOW_WATER < multi_server.HIGH_WATER
    assert multi_server.READ_SIZE <= multi_server.HIGH_WATER


def test_a_client_gone_while_its_input_is_held(srv):
    a = srv.client("a")
    a.sendall(b"1\n2\n")
    srv.turn()  # 1 answered, 2 held back
    a.close()  # gone without reading: answering 2 meets a closed socket
    srv.turn()
    assert srv.conns["a"]._closed  # white box
    b = srv.client("b")
    b.sendall(b"still served\n")
    srv.turn()
    assert recv_exactly(b, 13) == b"still served\n"


def test_calls_on_a_closed_connection_leave_its_descriptor_number_alone(srv):
    a = srv.client("a")
    a.close()
    srv.turn()  # EOF: closed; its descriptor number is free for the next client
    old = srv.conns["a"]
    b = srv.client("b")  # most likely the same number
    old.pause()  # a late call from a handler that has not noticed
    old.hold()
    old.close_after_write()
    old.write(b"late\n")
    b.sendall(b"still served\n")
    srv.turn()
    assert recv_exactly(b, 13) == b"still served\n"


# What a connection costs: nothing that nobody asks for -------------------------------


def _unnamed_client(srv: Server) -> tuple[Connection, socket.socket]:
    """A client whose handler does not ask for its peer's name (the skeleton's accept path)."""
    srv.server.factory = lambda conn: LineHandler(conn, srv.calls)
    ours, theirs = socket.socketpair()
    theirs.settimeout(5)
    srv.socks.append(theirs)
    fd = ours.detach()
    os.set_blocking(fd, False)
    conn = Connection(srv.server, fd, fd)
    srv.server._new_connection(conn)
    return conn, theirs


def test_the_peer_is_named_when_asked(srv):
    conn, theirs = _unnamed_client(srv)
    assert conn.peer == f"local pid {os.getpid()}"  # the socket pair's creator: us
    theirs.close()
    srv.turn()
    assert conn.peer == f"local pid {os.getpid()}"  # kept after the close


def test_a_peer_nobody_asked_for_before_the_close_is_just_local(srv):
    conn, theirs = _unnamed_client(srv)
    theirs.close()
    srv.turn()  # EOF: closed; the descriptor is gone, and with it the peer's pid
    assert conn.peer == "local"


def test_a_closed_connection_s_handler_is_freed_at_once(srv):
    """The handler holds its connection and the connection its handler until the
    close: after it, both go by reference counting, not at a later collection."""
    conn, theirs = _unnamed_client(srv)
    handler = weakref.ref(conn._handler)  # white box
    del conn
    gc.disable()
    try:
        theirs.close()
        srv.turn()
        assert handler() is None
    finally:
        gc.enable()
