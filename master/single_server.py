"""The single-client server skeleton: one blocking client at a time (prefork services).

SYNOPSIS
    from master import single_server

    single_server.main(service, *, params, pre_init=None, post_init=None,
                       pre_exit=None, argv=None, preload=(),
                       warm_up=())                     # never returns

    def service(conn: socket.socket, ctx: ServerContext) -> None: ...

DESCRIPTION
    The skeleton for services that talk to one client at a time with
    blocking I/O, such as the smtpd test server (Postfix's
    single_server.c).  The master starts up to maxproc of them; each
    waits for its shared listener to become readable, and the one whose
    accept() succeeds serves the client (the others get EAGAIN and wait
    again).

    Called by you: main(), once.  Hooks: pre_init (as root, before the
    jail), post_init (after the drop; may set ctx.max_idle or ctx.max_use
    to 0), pre_exit (before every normal exit); see skeleton.py.
    `preload`: modules the daemon imports lazily, which its spawn server
    imports once for all children (zygote.py); `warm_up`: calls it makes
    once before it forks (a library's one-time set-up).

    Guarantees, per client:
    - TAKEN is written after accept(), service(conn, ctx) runs with a
      blocking socket whose timeout is ipc_timeout (the service may change
      it), the socket is closed, then AVAIL is written and ctx.use_count
      goes up.
    - An OSError escaping the service (the client reset the connection,
      timed out) is logged as a warning naming the peer; the child goes
      on with the next client.  Any other exception ends the process
      (exit 1, traceback logged).
    - TERM or INT during service() interrupts it (events.Interrupted is
      raised inside it; `finally` blocks run): pre_exit, exit 0.
    - Told to leave (EOF on fd 5: the master went away or reloaded; or a
      failed status write): the listeners are no longer watched and are
      closed, the client in hand (if any) is served to its end, then
      pre_exit, exit 0.  A blocking service() cannot see fd 5, so EOF is
      noticed between clients; a status write that fails at accept
      comes with a client, which is served first.
    - Exit 0 after max_idle seconds without a client, and after max_use
      clients (both unless 0).

    With -S, stdin must be a socket: that is the one client.

BUGS
    Transports unix and inet only (not pass).

SEE ALSO
    src/master/single_server.c (Postfix), skeleton.py, multi_server.py
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from master import log, skeleton
from master.config import Param
from master.events import EventLoop, Interrupted
from master.log import msg_error, msg_fatal, msg_info, msg_warn
from master.skeleton import Hook, ServerContext

Service = Callable[[socket.socket, ServerContext], Any]
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def main(
    service: Service,
    *,
    params: Sequence[Param] = (),
    pre_init: Hook | None = None,
    post_init: Hook | None = None,
    pre_exit: Hook | None = None,
    argv: Sequence[str] | None = None,
    preload: Sequence[str] = (),
    warm_up: Sequence[Callable[[], object]] = (),
) -> NoReturn:
    """Run a one-client-at-a-time daemon; see the module docstring."""
    skeleton.server_main(
        lambda ctx: _serve(ctx, service),
        argv=argv,
        params=params,
        pre_init=pre_init,
        post_init=post_init,
        pre_exit=pre_exit,
        transports=("unix", "inet"),
        preload=preload,
        warm_up=warm_up,
    )


def _serve(ctx: ServerContext, service: Service) -> None:
    if ctx.options.stdin_client:
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            msg_fatal("-S: standard input is not a socket")
        conn = socket.socket(fileno=os.dup(0))
        _serve_client(ctx, service, conn, "stdin")
        return
    listeners = {lsock.fileno(): lsock for lsock in ctx.listeners}

    def accept_event(fd: int, _loop: EventLoop) -> None:
        try:
            conn, addr = listeners[fd].accept()
        except (BlockingIOError, ConnectionAbortedError):
            return  # another process took it
        except OSError as err:
            msg_error(f"accept connection: {err.strerror}")
            return
        ctx.cancel_idle_timer()
        _serve_client(ctx, service, conn, skeleton.peer_name(conn, addr))
        ctx.use_count += 1
        ctx.arm_idle_timer()

    def drain() -> None:
        for fd, listener in listeners.items():
            ctx.events.disable(fd)
            listener.close()
        listeners.clear()
        ctx.listeners = []

    def keep_going() -> bool:
        return not ctx.leaving and (ctx.max_use == 0 or ctx.use_count < ctx.max_use)

    for fd in listeners:
        ctx.events.enable_read(fd, accept_event)
    ctx.drain = drain
    skeleton.run_loop(ctx, keep_going, None)


def _serve_client(ctx: ServerContext, service: Service, conn: socket.socket, name: str) -> None:
    ctx.status.busy()
    if log.msg_verbose:
        msg_info(f"connection established {name}")
    conn.setblocking(True)
    conn.settimeout(ctx.ipc_timeout)
    try:
        with ctx.events.signals_interrupt(_STOP_SIGNALS):
            service(conn, ctx)
    except Interrupted as intr:
        conn.close()
        if log.msg_verbose:
            msg_info(f"terminating on signal {intr.signum}")
        ctx.exit(0)
    except OSError as err:
        msg_warn(f"{name}: {err.strerror or err}")
    finally:
        conn.close()
    ctx.status.idle()
    if log.msg_verbose:
        msg_info(f"connection closed {name}")
