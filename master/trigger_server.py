"""The trigger server skeleton: fifo, unix-dgram and unix services whose handler gets each trigger.

SYNOPSIS
    from master import trigger_server

    trigger_server.main(service, *, params=(), pre_init=None, post_init=None,
                        loop=None, pre_exit=None, solitary=False,
                        argv=None)      # never returns

    def service(data: bytes, ctx: ServerContext) -> None: ...

DESCRIPTION
    The skeleton for services that wake up on a short message and act on
    it without talking back: a pickup-style daemon woken through a fifo
    or a unix socket, or a log server such as postlogd fed datagrams
    (Postfix's trigger_server.c and dgram_server.c, in one module).
    Called by you: main(), once.  Hooks as in skeleton.py: pre_init (as
    root, before the jail), post_init (after the drop; may set
    ctx.max_idle or ctx.max_use to 0), loop (every loop turn; returns how
    long the loop may sleep), pre_exit (before every normal exit).

    service(data, ctx) is called once per message, with the privileges
    already dropped:
    fifo        the bytes one read(2) found in the fifo, at most
                TRIGGER_BUF_SIZE (1024): one or more triggers, such as
                the master's wake-up "W".
    unix-dgram  one datagram, at most DGRAM_BUF_SIZE (4096) bytes (a
                longer one is cut, as Postfix's recv() into its buffer
                does).  Up to DGRAM_BURST queued datagrams are handled
                per loop turn, each with its own call.
    unix        one connection: the bytes of its first read(2), at most
                TRIGGER_BUF_SIZE, waited for up to TRIGGER_READ_TIMEOUT
                (10 s); then the connection is closed.  No reply is
                sent.  A client that closes or stays silent gets no call.
    With -S, one read of standard input is the one message (fatal
    `read: end of file` when there is none), then the process exits.

    Guarantees:
    - Each message counts as one use (ctx.use_count); exit 0 after
      max_use messages and after max_idle seconds without one (both
      unless 0), and on TERM or INT; pre_exit runs first in every case.
    - Told to leave (EOF on fd 5: the master went away or reloaded; or
      a failed status write), the process stops taking triggers: its
      listeners are no longer watched and it closes its copies at once,
      so what arrives next waits in the master's listener for the
      successor.  A unix connection already accepted still gets its
      call when its trigger comes, until ctx.drain_time seconds after
      the drain began (`drain deadline: closing N connection(s)`); then
      pre_exit, exit 0.
    - Status records as the other skeletons send them (skeleton.run_loop):
      TAKEN with the first message of a busy spell, AVAIL when the loop
      is about to wait again (Postfix sends a pair per message).  TAKEN
      goes out after the message is handled: when the master has
      reloaded, that write fails and the process leaves as above, and
      the message it had read is not lost.
    - Several processes of one service (maxproc > 1) may share a
      listener: reads are non-blocking, and the one that finds the
      message handles it.
    - An exception from the service ends the process (exit 1, traceback
      logged): a service turns bad input into a log line itself.

BUGS
    Postfix serializes the processes of a service with a lock file
    (pid/TRANSPORT.SERVICE) around select(); we rely on non-blocking
    reads instead, so several idle processes may wake for one message.

SEE ALSO
    src/master/trigger_server.c, dgram_server.c (Postfix); skeleton.py,
    postlogd.py, docs/skeleton.md
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from master import log, skeleton
from master.config import Param
from master.events import EventLoop
from master.log import msg_error, msg_fatal, msg_info
from master.skeleton import Hook, ServerContext

Service = Callable[[bytes, ServerContext], Any]
TRANSPORTS = ("fifo", "unix-dgram", "unix")
TRIGGER_BUF_SIZE = 1024  # Postfix's TRIGGER_BUF_SIZE
DGRAM_BUF_SIZE = 4096  # Postfix's DGRAM_BUF_SIZE
DGRAM_BURST = 100  # datagrams handled per listener per loop turn
TRIGGER_READ_TIMEOUT = 10.0  # seconds a unix client has to send its trigger


def main(
    service: Service,
    *,
    params: Sequence[Param] = (),
    pre_init: Hook | None = None,
    post_init: Hook | None = None,
    loop: Callable[[ServerContext], float | None] | None = None,
    pre_exit: Hook | None = None,
    solitary: bool = False,
    argv: Sequence[str] | None = None,
) -> NoReturn:
    """Run a triggered daemon; see the module docstring."""
    skeleton.server_main(
        lambda ctx: TriggerServer(ctx, service, loop).serve(),
        argv=argv,
        params=params,
        pre_init=pre_init,
        post_init=post_init,
        pre_exit=pre_exit,
        solitary=solitary,
        transports=TRANSPORTS,
    )


class TriggerServer:
    """The listeners' events and the service calls; one instance per process."""

    def __init__(
        self,
        ctx: ServerContext,
        service: Service,
        loop: Callable[[ServerContext], float | None] | None,
    ) -> None:
        self.ctx = ctx
        self.service = service
        self.loop = loop
        self._active = False  # a message since the idle timer was last armed
        self._sockets = {lsock.fileno(): lsock for lsock in ctx.listeners}
        # unix connections accepted and waiting for their trigger: fd -> close it
        self._pending: dict[int, Callable[[], None]] = {}

    def serve(self) -> None:
        ctx = self.ctx
        if ctx.options.stdin_client:
            data = os.read(0, TRIGGER_BUF_SIZE)
            if not data:
                msg_fatal("read: end of file")
            self._wakeup(data)
            return
        reader = {
            "fifo": self._fifo_event,
            "unix-dgram": self._dgram_event,
            "unix": self._accept_event,
        }[ctx.options.transport]
        for fd in ctx.listen_fds:
            ctx.events.enable_read(fd, reader)
        ctx.drain = self.drain
        skeleton.run_loop(ctx, self._keep_going, self._turn)

    def _keep_going(self) -> bool:
        ctx = self.ctx
        if ctx.leaving:
            return bool(self._pending)
        return ctx.max_use == 0 or ctx.use_count < ctx.max_use

    def drain(self) -> None:
        """Told to leave: take no more triggers; accepted connections get until the deadline."""
        ctx = self.ctx
        for fd in ctx.listen_fds:
            ctx.events.disable(fd)
        for listener in ctx.listeners:
            listener.close()
        for fd in ctx.fifos:
            os.close(fd)
        self._sockets.clear()
        ctx.listeners, ctx.fifos = [], []
        if self._pending:
            ctx.events.request_timer(ctx.drain_time, self._drain_deadline)

    def _drain_deadline(self, _loop: EventLoop) -> None:
        if self._pending:
            msg_info(f"drain deadline: closing {len(self._pending)} connection(s)")
        for close in list(self._pending.values()):
            close()

    def _turn(self, ctx: ServerContext) -> float | None:
        """Re-arm max_idle once per turn that had messages, then the daemon's hook."""
        if self._active:
            self._active = False
            ctx.arm_idle_timer()
        return self.loop(ctx) if self.loop is not None else None

    def _wakeup(self, data: bytes) -> None:
        """One message: the service, one use, then TAKEN (once per busy spell).

        The message is handled before the status record goes out: a record
        that fails (the master reloaded) ends the process, and what was
        read must not be lost with it (Postfix's dgram_server likewise
        serves the request whatever its TAKEN record did)."""
        self.service(data, self.ctx)
        self.ctx.use_count += 1
        self._active = True
        self.ctx.status.busy()

    # fifo ------------------------------------------------------------------

    def _fifo_event(self, fd: int, _loop: EventLoop) -> None:
        if log.msg_verbose:
            msg_info("trigger_server_accept_fifo: trigger arrived")
        try:
            data = os.read(fd, TRIGGER_BUF_SIZE)
        except BlockingIOError:
            return  # another process of the service read it
        if data:
            self._wakeup(data)

    # unix-dgram ------------------------------------------------------------

    def _dgram_event(self, fd: int, _loop: EventLoop) -> None:
        if log.msg_verbose:
            msg_info("dgram_server_accept: request arrived")
        for _ in range(DGRAM_BURST):
            if self.ctx.leaving or not self._keep_going():
                return  # leaving: the drain has closed fd
            try:
                data = os.read(fd, DGRAM_BUF_SIZE)
            except BlockingIOError:
                return
            self._wakeup(data)

    # unix ------------------------------------------------------------------

    def _accept_event(self, fd: int, loop: EventLoop) -> None:
        if log.msg_verbose:
            msg_info("trigger_server_accept_local: trigger arrived")
        try:
            conn, _addr = self._sockets[fd].accept()
        except (BlockingIOError, ConnectionAbortedError):
            return  # another process took it
        except OSError as err:
            msg_error(f"accept connection: {err.strerror}")
            return
        conn.setblocking(False)
        self._await_trigger(conn, loop)

    def _await_trigger(self, conn: socket.socket, loop: EventLoop) -> None:
        """Read the connection's first bytes when they come, or give up after the timeout."""
        cfd = conn.fileno()
        timer: Any = None

        def done() -> None:
            del self._pending[cfd]
            loop.disable(cfd)
            loop.cancel_timer(timer)
            conn.close()

        def readable(_fd: int, _loop: EventLoop) -> None:
            try:
                data = conn.recv(TRIGGER_BUF_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            done()
            if data:
                self._wakeup(data)

        timer = loop.request_timer(TRIGGER_READ_TIMEOUT, lambda _loop: done())
        self._pending[cfd] = done
        loop.enable_read(cfd, readable)
