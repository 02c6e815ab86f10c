"""The multi-client server skeleton: one process, many clients, one event loop.

SYNOPSIS
    from master import multi_server

    multi_server.main(handler_factory, *, params, pre_init=None,
                      post_init=None, loop=None, pre_exit=None,
                      solitary=False, handover=False, argv=None,
                      preload=(), warm_up=())         # never returns

    class Handler(Protocol):                # what handler_factory(conn) returns
        def connection_made(self) -> bytes: ...        # greeting, may be b""
        def data_received(self, data: bytes) -> bytes: ...   # reply, may be b""
        def resume(self) -> bytes: ...                 # after conn.hold()
        def connection_lost(self) -> None: ...
        between_requests: bool              # no partial request, nothing pending
    conn.peer                  # "127.0.0.1:40000", "[::1]:40000", "local pid 123"
    conn.ctx                   # the ServerContext
    conn.room                  # output bytes that fit below HIGH_WATER (may be <= 0)
    conn.write(data)           # queue a late reply, after all output so far
    conn.hold()                # input kept back: call resume() when there is room
    conn.pause()               # waiting for a late reply: read nothing, call nothing
    conn.close_after_write()   # close once the pending output is written
    conn.between_requests      # the handler's, and no input held back or paused
    conn.received              # bytes read from the client so far

DESCRIPTION
    The skeleton for servers such as tlsmgr (Postfix's multi_server.c).
    Called by you: main(), once, from the daemon's main program.  Hooks
    you may pass, each called with the ServerContext (when each runs:
    docs/skeleton.md, "Hooks and what they are for"): pre_init,
    post_init, loop (every loop turn; returns how long the loop may
    sleep, None for as long as it likes, 0 while it has work left) and
    pre_exit.  `params` are the
    daemon's Param rows, all read and checked before anything is served.
    `solitary` makes the daemon fatal unless master.cf gives it maxproc
    1 (-l).  `preload`: modules the daemon imports lazily, which its
    spawn server imports once for all children (zygote.py); `warm_up`:
    calls it makes once before it forks (a library's one-time set-up).

    Guarantees:
    - handler_factory(conn) is called per accepted connection, only
      after the privilege drop; connection_made()'s bytes are the
      greeting, written at once, before anything else is done for the
      connection.
    - data_received() gets the bytes in order, in chunks of any size (at
      most READ_SIZE); what it returns, resume() returns or conn.write()
      queues is written in that order.  A client that does not read
      stalls only itself: it is not read from while more than
      HIGH_WATER bytes of its output are pending.
    - connection_lost() is called exactly once, after the socket is
      closed: on EOF (after pending output is flushed), on a reset or
      write error, after close_after_write(), and after ipc_timeout
      without a byte in or out (at most 1/IDLE_SWEEPS of it later).
    - Status records: TAKEN before the first data_received() or resume()
      of a busy spell, AVAIL when the loop is about to wait again or after
      skeleton.MAX_BUSY_TURNS busy turns (skeleton.run_loop); with maxproc
      1 the first pair only (skeleton.StatusChannel).
    - Exit 0 (after pre_exit) once drained after EOF on fd 5 (see
      Draining), on TERM or INT, after max_idle seconds without clients,
      once max_use clients have disconnected and none is left (both
      unless 0).  An exception from a handler ends the process (exit 1,
      traceback logged): handlers turn bad input into replies
      themselves.
    - Up to ACCEPT_BURST connections are accepted per turn, while the
      listener has one waiting; the RLIMIT_NOFILE soft limit is raised
      to the hard limit at start.

    The handler contract; its rules, turn by turn and with their
    reasons, are docs/skeleton.md, "Flow control, late replies and
    draining: the handler contract":
    - data_received() and resume() are called only while conn.room >= 0.
      Each may answer one request; it answers another only while
      conn.room, less what it has produced in this call, allows it and
      its own budget for the call lasts.
    - Input it keeps undecoded: conn.hold().  resume() follows on a later
      turn once the pending output is down to LOW_WATER; held connections
      take turns, one resume() each per loop turn.
    - A reply that waits for another server: conn.pause(); once it is
      ready, conn.write(reply) and then conn.hold().
    - between_requests: no partial request, no reply pending and no
      undecoded input.  conn.between_requests adds that nothing is held
      back or paused.

    Draining (told to leave: EOF on fd 5 at a reload, or the master
    gone; why each rule, docs/skeleton.md, "Leaving: the drain"):
    - the listeners are no longer watched and their copies are closed;
    - every request read is answered and its reply written out; a
      connection is closed only when conn.received > 0 and
      conn.between_requests (one that connected just before the reload
      gets its first answer first);
    - the process leaves (pre_exit, exit 0) when its last connection is
      gone, or ctx.drain_time seconds (1 by default) after it was told
      to leave, closing what is left: `drain deadline: closing N
      connection(s)`.
    A handler sees only connection_lost(), as for any close.

    Handing over (main(handover=True)).  Instead of closing them, a
    draining process passes the connections that are between requests
    with nothing left to write (conn.between_requests, whether or not
    they received anything) to its successor, which goes on reading
    them (handover.py: SCM_RIGHTS over private/.handover.TYPE.SERVICE.
    PROGRAM); until a successor is there it looks again every
    HANDOVER_RETRY seconds, and the deadline closes what is left.  The
    successor's handler gets connection_made() as for any connection,
    but its greeting is not sent: the client had it.  Opt in only when
    a connection between requests carries no state of the handler's
    that matters (tlsmgr's does not).  When the last one has gone:
    `drained: N connection(s) handed over to the successor`.

    With -S the one client is stdin/stdout (no master, no listener), and
    the process exits when it disconnects.

DIAGNOSTICS
    `warning: accept connection: REASON` when accept() fails for lack of
    resources; the listener then rests for a second.

BUGS
    Transports unix and inet only (not pass).

SEE ALSO
    src/master/multi_server.c (Postfix), skeleton.py, events.py,
    handover.py
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

from master import log, skeleton
from master.config import Param
from master.events import EventLoop
from master.handover import BATCH, Inbox, Outbox, handover_path
from master.log import msg_info, msg_warn
from master.skeleton import Hook, ServerContext

ACCEPT_BURST = 100  # connections accepted per listener per loop turn
READ_SIZE = 65536
HIGH_WATER = 256 * 1024  # stop reading a client with this much output pending
LOW_WATER = HIGH_WATER // 2  # read it (or resume its handler) again at this much
ACCEPT_PAUSE = 1.0  # rest after accept() ran out of resources
HANDOVER_RETRY = 0.02  # draining: look for a successor this often
IDLE_SWEEPS = 64  # the ipc_timeout sweep runs at most this often per ipc_timeout
_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)

# Connection._input: what the skeleton does with the client's input.
READING, HELD, PAUSED = "reading", "held", "paused"


class Handler(Protocol):
    def connection_made(self) -> bytes: ...

    def data_received(self, data: bytes) -> bytes: ...

    def resume(self) -> bytes: ...

    def connection_lost(self) -> None: ...

    @property
    def between_requests(self) -> bool: ...


HandlerFactory = Callable[["Connection"], Handler]


def main(
    handler_factory: HandlerFactory,
    *,
    params: Sequence[Param] = (),
    pre_init: Hook | None = None,
    post_init: Hook | None = None,
    loop: Callable[[ServerContext], float | None] | None = None,
    pre_exit: Hook | None = None,
    solitary: bool = False,
    handover: bool = False,
    argv: Sequence[str] | None = None,
    preload: Sequence[str] = (),
    warm_up: Sequence[Callable[[], object]] = (),
) -> NoReturn:
    """Run a multi-client daemon; see the module docstring."""
    skeleton.server_main(
        lambda ctx: MultiServer(ctx, handler_factory, loop, handover).serve(),
        argv=argv,
        params=params,
        pre_init=pre_init,
        post_init=post_init,
        pre_exit=pre_exit,
        solitary=solitary,
        transports=("unix", "inet"),
        preload=preload,
        warm_up=warm_up,
    )


def raise_nofile_limit() -> None:
    """Raise the RLIMIT_NOFILE soft limit to the hard limit (Debian's soft 1024 is too few)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Connection:
    """One client: socket, output buffer, last activity and the daemon's handler."""

    __slots__ = (
        "ctx",
        "received",
        "_server",
        "_owned",
        "_family",
        "_addr",
        "_peer",
        "_rfd",
        "_wfd",
        "_handler",
        "_out",
        "_closing",
        "_closed",
        "_reading",
        "_input",
        "_last",
    )

    def __init__(
        self,
        server: MultiServer,
        rfd: int,
        wfd: int,
        peer: str | None = None,
        *,
        owned: bool = True,
        family: int = socket.AF_UNIX,
        addr: Any = None,
    ) -> None:
        """A client on rfd/wfd: a socket of `family` that we close (`owned`), named
        `peer` or, on first use, after accept()'s `addr`; or stdin/stdout (not owned)."""
        self.ctx = server.ctx
        self.received = 0
        self._server = server
        self._owned = owned
        self._family, self._addr, self._peer = family, addr, peer
        self._rfd, self._wfd = rfd, wfd
        self._handler: Handler | None = None
        self._out = bytearray()
        self._closing = self._closed = False
        self._reading = False
        self._input = READING
        self._last = time.monotonic()

    # Called by the handler ----------------------------------------------

    @property
    def peer(self) -> str:
        """The client's name for log lines, found on first use (a unix peer's pid
        costs a system call that most connections never need)."""
        if self._peer is None:
            fd = None if self._closed else self._rfd
            self._peer = skeleton.peer_name_of(fd, self._family, self._addr)
        return self._peer

    @property
    def room(self) -> int:
        """Output bytes that may still be queued before HIGH_WATER (<= 0: none)."""
        return HIGH_WATER - len(self._out)

    def write(self, data: bytes) -> None:
        """Queue data after everything returned or written so far (a late reply)."""
        self._queue(data)

    def hold(self) -> None:
        """Input was kept back: stop reading; resume() once there is room."""
        self._stop_reading()
        if self._input is not HELD and not self._closed:
            self._input = HELD
            self._server.resume_later(self)

    def pause(self) -> None:
        """A reply is pending: read nothing and call nothing until hold()."""
        self._input = PAUSED
        self._stop_reading()

    def close_after_write(self) -> None:
        """Close the connection once everything queued so far is written."""
        self._closing = True
        self._stop_reading()

    @property
    def between_requests(self) -> bool:
        """No request in progress here or in the handler (see the module docstring)."""
        handler = self._handler
        return self._input is READING and handler is not None and handler.between_requests

    # Called by MultiServer ----------------------------------------------

    def start(self, handler: Handler, greet: bool = True) -> None:
        """Greet first (the client waits for it), then watch the socket."""
        self._handler = handler
        greeting = handler.connection_made()
        if greet:
            self._queue(greeting)
        self._start_reading()

    def fileno(self) -> int:
        return self._rfd

    def resume_turn(self) -> None:
        """The handler's turn to go on with the input it held back."""
        if self._input is not HELD or self._closing or self._closed:
            return
        if len(self._out) > LOW_WATER:
            return  # _write_event() brings it back once the output has drained
        self._input = READING
        self.ctx.status.busy()
        assert self._handler is not None
        self._queue(self._handler.resume())
        if len(self._out) <= HIGH_WATER:
            self._start_reading()
        if self._server.draining:
            self._server.connection_done(self)

    def close_if_answered(self) -> None:
        """Draining: close once every request received here is answered (after
        the output is written); a connection that received nothing waits."""
        if self.received and not self._closing and not self._closed and self.between_requests:
            self.close_after_write()
            if not self._out:
                self.close()

    @property
    def can_hand_over(self) -> bool:
        """Between requests with nothing left to write: the socket is all there is."""
        return (
            self._owned
            and not self._closing
            and not self._closed
            and not self._out
            and self.between_requests
        )

    def close(self) -> None:
        if self._closed:
            return
        if self._peer is None and log.msg_verbose:
            self._peer = self.peer  # the "connection closed" line names it
        self._closed = True
        self._reading = False
        events = self.ctx.events
        # Safety: the descriptor number is free for the next accept() from here on;
        # a late call from the handler (hold, pause, write) must not touch it.
        events.disable(self._rfd)
        if self._wfd != self._rfd:
            events.disable(self._wfd)
        if self._owned:
            os.close(self._rfd)
        handler, self._handler = self._handler, None
        if handler is not None:
            # Also breaks the cycle handler <-> connection: both go at once, not at
            # the next garbage collection.
            handler.connection_lost()
        self._server.connection_closed(self)

    # Input --------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._closing and not self._closed and self._input is READING:
            self._reading = True
            self.ctx.events.enable_read(self._rfd, self._read_event)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.ctx.events.disable_read(self._rfd)

    def _read_event(self, _fd: int, _loop: EventLoop) -> None:
        try:
            data = os.read(self._rfd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            self._lost(err)
            return
        if not data:
            self._eof()
            return
        self._last = time.monotonic()
        self.received += len(data)
        self.ctx.status.busy()
        assert self._handler is not None
        self._queue(self._handler.data_received(data))
        if self._server.draining:
            self._server.connection_done(self)

    def _eof(self) -> None:
        if self._out:
            self.close_after_write()
        else:
            self.close()

    # Output -------------------------------------------------------------

    def _queue(self, data: bytes) -> None:
        if self._closed:
            return
        if data:
            if self._out:
                self._out += data
            else:
                # The common case: the whole reply goes out now, no copy.
                written = self._write(data)
                if written < 0:
                    return
                if written < len(data):
                    self._out = bytearray(data[written:])
                    self.ctx.events.enable_write(self._wfd, self._write_event)
            if len(self._out) > HIGH_WATER:
                self._stop_reading()
        if self._closing and not self._out:
            self.close()

    def _write(self, data: bytes | bytearray) -> int:
        """Write what the kernel takes now; -1 (and closed) when the client is gone."""
        try:
            written = os.write(self._wfd, data)
        except BlockingIOError:
            return 0
        except OSError as err:
            self._lost(err)
            return -1
        if written:
            self._last = time.monotonic()
        return written

    def _write_event(self, _fd: int, _loop: EventLoop) -> None:
        written = self._write(self._out)
        if written < 0:
            return
        del self._out[:written]
        if not self._out:
            self.ctx.events.disable_write(self._wfd)
            if self._closing:
                self.close()
                return
            if self._server.draining:
                self._server.connection_done(self)
        if len(self._out) <= LOW_WATER:
            if self._input is HELD:
                self._server.resume_later(self)
            else:
                self._start_reading()

    def _lost(self, err: OSError) -> None:
        if log.msg_verbose and err.errno not in (errno.ECONNRESET, errno.EPIPE):
            msg_info(f"{self.peer}: {err.strerror}")
        self._out.clear()
        self.close()

    # Idle timeout: ipc_timeout, never near a client's 5 s ipc_idle (that would race its reuse)

    def idle_for(self, now: float) -> float:
        """Seconds without a byte in or out."""
        return now - self._last

    def idle_close(self) -> None:
        if log.msg_verbose:
            msg_info(f"{self.peer}: idle for {self.ctx.ipc_timeout}s -- closing")
        self._out.clear()
        self.close()


class MultiServer:
    """The accept loop and the held connections' turns; one instance per process."""

    def __init__(
        self,
        ctx: ServerContext,
        factory: HandlerFactory,
        loop: Callable[[ServerContext], float | None] | None,
        handover: bool = False,
    ) -> None:
        self.ctx = ctx
        self.factory = factory
        self.loop = loop
        self.handover = handover
        self.client_count = 0
        self._listeners = {lsock.fileno(): lsock for lsock in ctx.listeners}
        # Speed: accept() wraps each descriptor in a socket object and converts its family
        # and type to enums; the accept loop takes the bare descriptor (_accept, which
        # accept() calls) and the family read once here.
        self._accept: dict[int, tuple[Callable[[], tuple[int, Any]], int]] = {
            fd: (lsock._accept, lsock.family)  # type: ignore[attr-defined]
            for fd, lsock in self._listeners.items()
        }
        self._connections: set[Connection] = set()
        self._ipc_timer: Any = None  # one ipc_timeout timer for every connection
        self.draining = False
        self._inbox: Inbox | None = None
        self._outbox: Outbox | None = None
        self._settle_timer: Any = None
        self._handed_over = 0
        # Held connections due for resume(), in the order they were held (a dict
        # as an ordered set: holding twice keeps the first place).
        self._resumable: dict[Connection, None] = {}

    def serve(self) -> None:
        raise_nofile_limit()
        if self.ctx.options.stdin_client:
            self._new_connection(Connection(self, 0, 1, "stdin", owned=False))
            skeleton.run_loop(self.ctx, lambda: self.client_count > 0, self.turn)
            return
        for fd in self._listeners:
            self.ctx.events.enable_read(fd, self._accept_event)
        if self.handover:
            self._inbox = Inbox(handover_path(self.ctx), self.ctx.events, self._adopt)
        self.ctx.drain = self.drain
        skeleton.run_loop(self.ctx, self._keep_going, self.turn)

    def resume_later(self, conn: Connection) -> None:
        """Give a held connection a resume() at the start of the next loop turn."""
        self._resumable[conn] = None

    def turn(self, ctx: ServerContext) -> float | None:
        """The loop hook: each held connection that was due resumes once (round-robin:
        one that holds again waits for the next turn), then the daemon's own hook.
        Returns 0 while a connection waits for its turn."""
        if self._resumable:
            due = list(self._resumable)
            self._resumable.clear()
            for conn in due:
                conn.resume_turn()
        timeout = self.loop(ctx) if self.loop is not None else None
        return 0 if self._resumable else timeout

    def _keep_going(self) -> bool:
        ctx = self.ctx
        if self.draining:
            return self.client_count > 0
        return ctx.max_use == 0 or ctx.use_count < ctx.max_use or self.client_count > 0

    # Draining (see the module docstring) ----------------------------------

    def drain(self) -> None:
        """Told to leave: stop accepting now; pass on or close connections as they are done."""
        self.draining = True
        events = self.ctx.events
        for fd, listener in self._listeners.items():
            events.disable(fd)
            listener.close()
        self._listeners.clear()
        self._accept.clear()
        self.ctx.listeners = []
        if self._inbox is not None:
            self._inbox.close()
            self._outbox = Outbox(self._inbox.path)
        events.request_timer(self.ctx.drain_time, self._drain_deadline)
        # From a timer: master_gone() may come from a status write in the middle
        # of a connection's read; settling needs every connection at rest.
        self._settle_soon(0)

    def connection_done(self, conn: Connection) -> None:
        """Draining: a connection may be done (after a reply, or its output written)."""
        if self._outbox is None:
            conn.close_if_answered()
        else:
            self._settle_soon(0)

    def _settle_soon(self, delay: float) -> None:
        if self._settle_timer is None:
            self._settle_timer = self.ctx.events.request_timer(delay, self._settle)

    def _settle(self, _loop: EventLoop) -> None:
        """Close the connections that are done, or pass them to the successor; while
        some wait for one to appear, look again in HANDOVER_RETRY seconds."""
        self._settle_timer = None
        if self._outbox is None:
            for conn in list(self._connections):
                conn.close_if_answered()
            return
        ready = [conn for conn in self._connections if conn.can_hand_over]
        if ready and self._outbox.connected():
            ready = self._pass_on(self._outbox, ready)
        if ready:
            self._settle_soon(HANDOVER_RETRY)

    def _pass_on(self, outbox: Outbox, ready: list[Connection]) -> list[Connection]:
        """Hand connections to the successor in batches; those not passed."""
        while ready:
            batch, rest = ready[:BATCH], ready[BATCH:]
            if not outbox.send([conn.fileno() for conn in batch]):
                return ready
            self._handed_over += len(batch)
            for conn in batch:
                conn.close()  # our copy; the successor reads the socket now
            ready = rest
        return ready

    def _adopt(self, fd: int) -> None:
        """A connection from a draining predecessor: it had its greeting there."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in _FAMILIES:
                raise OSError("not a stream socket")
            sock.setblocking(False)
            peer = skeleton.peer_name(sock, sock.getpeername())
        except OSError:
            sock.close()
            return
        sock.detach()  # the Connection owns fd now
        self._new_connection(Connection(self, fd, fd, peer), greet=False)

    def _drain_deadline(self, _loop: EventLoop) -> None:
        if self._connections:
            msg_info(f"drain deadline: closing {len(self._connections)} connection(s)")
        for conn in list(self._connections):
            conn.close()
        if self._outbox is not None:
            self._outbox.close()

    def _accept_event(self, fd: int, loop: EventLoop) -> None:
        accept, family = self._accept[fd]
        for _ in range(ACCEPT_BURST):
            try:
                client, addr = accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as err:
                msg_warn(f"accept connection: {err.strerror}")
                loop.disable_read(fd)
                loop.request_timer(ACCEPT_PAUSE, lambda _loop: self._accept_again(fd))
                return
            os.set_blocking(client, False)
            self._new_connection(Connection(self, client, client, family=family, addr=addr))
            # Speed: an accept() that finds the listener empty costs ten times this poll.
            if fd not in self._accept or not loop.readable(fd):
                return  # empty, or closed by a drain meanwhile

    def _accept_again(self, fd: int) -> None:
        # Safety: a drain closed the listeners meanwhile, and fd may be a client now.
        if fd in self._listeners:
            self.ctx.events.enable_read(fd, self._accept_event)

    def _new_connection(self, conn: Connection, greet: bool = True) -> None:
        self._connections.add(conn)
        self.client_count += 1
        self.ctx.cancel_idle_timer()
        if log.msg_verbose:
            msg_info(f"connection established {conn.peer}")
        conn.start(self.factory(conn), greet)
        if self._ipc_timer is None:
            self._ipc_timer = self.ctx.events.request_timer(self.ctx.ipc_timeout, self._ipc_sweep)

    def _ipc_sweep(self, loop: EventLoop) -> None:
        """Close the connections idle for ipc_timeout; come back when the next one may be.

        One timer for all connections instead of one each (a timer per accept costs
        more than the greeting); it runs at most IDLE_SWEEPS times per ipc_timeout,
        so a connection is closed after ipc_timeout and less than 1/IDLE_SWEEPS more."""
        self._ipc_timer = None
        limit = self.ctx.ipc_timeout
        now = time.monotonic()
        first: float | None = None
        for conn in list(self._connections):
            idle = conn.idle_for(now)
            if idle >= limit:
                conn.idle_close()
            elif first is None or limit - idle < first:
                first = limit - idle
        if first is not None:
            delay = max(first, limit / IDLE_SWEEPS)
            self._ipc_timer = loop.request_timer(delay, self._ipc_sweep)

    def connection_closed(self, conn: Connection) -> None:
        if log.msg_verbose:
            msg_info(f"connection closed {conn.peer}")
        self._resumable.pop(conn, None)
        self._connections.discard(conn)
        self.client_count -= 1
        self.ctx.use_count += 1
        if self.draining and self.client_count == 0 and self._handed_over:
            msg_info(f"drained: {self._handed_over} connection(s) handed over to the successor")
        if self.client_count == 0:
            self.ctx.arm_idle_timer()
