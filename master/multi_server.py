"""The multi-client server skeleton: one process, many clients, one event loop.

SYNOPSIS
    from master import multi_server

    multi_server.main(handler_factory, *, params, pre_init=None,
                      post_init=None, loop=None, pre_exit=None,
                      solitary=False, argv=None)      # never returns

    class Handler(Protocol):                # what handler_factory(conn) returns
        def connection_made(self) -> bytes: ...        # greeting, may be b""
        def data_received(self, data: bytes) -> bytes: ...   # reply, may be b""
        def connection_lost(self) -> None: ...
    conn.peer                  # "127.0.0.1:40000", "[::1]:40000", "local pid 123"
    conn.ctx                   # the ServerContext
    conn.close_after_write()   # close once the pending output is written

DESCRIPTION
    The skeleton for servers such as tlsmgr (Postfix's multi_server.c).
    Called by you: main(), once, from the daemon's main program.  Hooks
    you may pass (each takes the ServerContext, see skeleton.py):
    pre_init (as root, before the jail: open files), post_init (after the
    privilege drop; may set ctx.max_idle / ctx.max_use to 0), loop
    (called every loop turn; returns how long the loop may sleep, None
    for as long as it likes, 0 while it has work left), pre_exit (before
    every normal exit).  `params` are the daemon's Param rows: all read
    and checked before anything is served.  `solitary` makes the daemon
    fatal unless master.cf gives it maxproc 1 (-l).

    Guarantees:
    - handler_factory is called per accepted connection, only after the
      privilege drop; connection_made() runs at once, its bytes are the
      greeting (the server speaks first when it likes).
    - data_received() gets the bytes in the order they came, in chunks of
      any size; what it returns is written in order.  The skeleton owns
      sockets, output buffers and partial writes: a client that does not
      read stalls only itself (it is not read from while more than
      256 KiB of its output is pending), and a half-written request
      delays nobody else.
    - connection_lost() is called exactly once, after the socket is
      closed: on EOF (after pending output is flushed), on a reset or
      write error, after close_after_write(), and when the connection
      has been idle (no byte in or out) for longer than ipc_timeout.
    - Status records: TAKEN before the first data_received() of a busy
      spell, AVAIL when the loop is about to wait again or after
      skeleton.MAX_BUSY_TURNS busy turns; none for a turn that only
      accepts, greets or disconnects (skeleton.run_loop).
    - Exit 0 (after pre_exit) when the master goes away or reloads (EOF
      on fd 5), on TERM or INT, after max_idle seconds without clients,
      and once max_use clients have disconnected and none is left (both
      unless 0).  An exception from a handler ends the process (exit 1,
      traceback logged): handlers turn bad input into replies themselves.
    - Accepts up to 100 connections per turn, until EAGAIN; the
      RLIMIT_NOFILE soft limit is raised to the hard limit at start.

    With -S the one client is stdin/stdout (no master, no listener), and
    the process exits when it disconnects.

DIAGNOSTICS
    `warning: accept connection: REASON` when accept() fails for lack of
    resources; the listener then rests for a second.

BUGS
    Transports unix and inet only (not pass).

SEE ALSO
    src/master/multi_server.c (Postfix), skeleton.py, events.py
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
from master.log import msg_info, msg_warn
from master.skeleton import Hook, ServerContext

ACCEPT_BURST = 100  # connections accepted per listener per loop turn
READ_SIZE = 65536
HIGH_WATER = 256 * 1024  # stop reading a client with this much output pending
ACCEPT_PAUSE = 1.0  # rest after accept() ran out of resources


class Handler(Protocol):
    def connection_made(self) -> bytes: ...

    def data_received(self, data: bytes) -> bytes: ...

    def connection_lost(self) -> None: ...


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
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """Run a multi-client daemon; see the module docstring."""
    skeleton.server_main(
        lambda ctx: MultiServer(ctx, handler_factory, loop).serve(),
        argv=argv,
        params=params,
        pre_init=pre_init,
        post_init=post_init,
        pre_exit=pre_exit,
        solitary=solitary,
        transports=("unix", "inet"),
    )


def raise_nofile_limit() -> None:
    """Raise the RLIMIT_NOFILE soft limit to the hard limit (decisions.md, 18)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Connection:
    """One client: socket, output buffer, idle timer and the daemon's handler."""

    __slots__ = (
        "peer",
        "ctx",
        "_server",
        "_sock",
        "_rfd",
        "_wfd",
        "_handler",
        "_out",
        "_closing",
        "_closed",
        "_reading",
        "_last",
        "_timer",
    )

    def __init__(
        self, server: MultiServer, sock: socket.socket | None, rfd: int, wfd: int, peer: str
    ) -> None:
        self.peer = peer
        self.ctx = server.ctx
        self._server = server
        self._sock = sock
        self._rfd, self._wfd = rfd, wfd
        self._handler: Handler | None = None
        self._out = bytearray()
        self._closing = self._closed = False
        self._reading = False
        self._last = time.monotonic()
        self._timer: Any = None

    def close_after_write(self) -> None:
        """Close the connection once everything queued so far is written."""
        self._closing = True
        self._stop_reading()

    # Called by MultiServer ----------------------------------------------

    def start(self, handler: Handler) -> None:
        self._handler = handler
        self._arm_timer(self.ctx.ipc_timeout)
        self._start_reading()
        self._queue(handler.connection_made())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        events = self.ctx.events
        events.disable(self._rfd)
        events.disable(self._wfd)
        events.cancel_timer(self._timer)
        if self._sock is not None:
            self._sock.close()
        if self._handler is not None:
            self._handler.connection_lost()
        self._server.connection_closed(self)

    # Input --------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._closing:
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
        self.ctx.status.busy()
        assert self._handler is not None
        self._queue(self._handler.data_received(data))

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
        if len(self._out) <= HIGH_WATER // 2:
            self._start_reading()

    def _lost(self, err: OSError) -> None:
        if log.msg_verbose and err.errno not in (errno.ECONNRESET, errno.EPIPE):
            msg_info(f"{self.peer}: {err.strerror}")
        self._out.clear()
        self.close()

    # Idle timeout (decisions.md, 18) ------------------------------------

    def _arm_timer(self, delay: float) -> None:
        self._timer = self.ctx.events.request_timer(delay, self._timer_event)

    def _timer_event(self, _loop: EventLoop) -> None:
        # One live timer per connection: re-armed for the time left, not per byte.
        idle = time.monotonic() - self._last
        if idle < self.ctx.ipc_timeout:
            self._arm_timer(self.ctx.ipc_timeout - idle)
            return
        if log.msg_verbose:
            msg_info(f"{self.peer}: idle for {self.ctx.ipc_timeout}s -- closing")
        self._out.clear()
        self.close()


class MultiServer:
    """The accept loop; one instance per process."""

    def __init__(
        self,
        ctx: ServerContext,
        factory: HandlerFactory,
        loop: Callable[[ServerContext], float | None] | None,
    ) -> None:
        self.ctx = ctx
        self.factory = factory
        self.loop = loop
        self.client_count = 0
        self._listeners = {lsock.fileno(): lsock for lsock in ctx.listeners}

    def serve(self) -> None:
        raise_nofile_limit()
        if self.ctx.options.stdin_client:
            self._new_connection(Connection(self, None, 0, 1, "stdin"))
            skeleton.run_loop(self.ctx, lambda: self.client_count > 0, self.loop)
            return
        for fd in self._listeners:
            self.ctx.events.enable_read(fd, self._accept_event)
        skeleton.run_loop(self.ctx, self._keep_going, self.loop)

    def _keep_going(self) -> bool:
        ctx = self.ctx
        return ctx.max_use == 0 or ctx.use_count < ctx.max_use or self.client_count > 0

    def _accept_event(self, fd: int, loop: EventLoop) -> None:
        listener = self._listeners[fd]
        for _ in range(ACCEPT_BURST):
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as err:
                msg_warn(f"accept connection: {err.strerror}")
                loop.disable_read(fd)
                loop.request_timer(ACCEPT_PAUSE, lambda lp: lp.enable_read(fd, self._accept_event))
                return
            sock.setblocking(False)
            self._new_connection(
                Connection(self, sock, sock.fileno(), sock.fileno(), skeleton.peer_name(sock, addr))
            )

    def _new_connection(self, conn: Connection) -> None:
        self.client_count += 1
        self.ctx.cancel_idle_timer()
        if log.msg_verbose:
            msg_info(f"connection established {conn.peer}")
        conn.start(self.factory(conn))

    def connection_closed(self, conn: Connection) -> None:
        if log.msg_verbose:
            msg_info(f"connection closed {conn.peer}")
        self.client_count -= 1
        self.ctx.use_count += 1
        if self.client_count == 0:
            self.ctx.arm_idle_timer()
