"""Handing a draining child's connections to its successor, over a unix socket with SCM_RIGHTS.

SYNOPSIS
    from master.handover import Inbox, Outbox, handover_path

    path = handover_path(ctx)               # private/.handover.TYPE.SERVICE.PROGRAM
    inbox = Inbox(path, ctx.events, adopt)  # a serving child: adopt(fd) per connection received
    inbox.close()                           # told to leave: receive no more
    outbox = Outbox(path)                   # a draining child
    outbox.connected() -> bool              # a link to a successor (tries to make one)
    outbox.send(fds) -> bool                # passed on; the caller closes its copies
    outbox.close()

DESCRIPTION
    At a reload the old child of a multi-client service drains (see
    multi_server.py), and its successor starts beside it.  A connection
    that is between requests carries nothing but the socket, so instead
    of closing it (which costs a persistent client a reconnect, and
    Postfix's attr_clnt a one-second sleep when it finds the connection
    closed in the middle of its work) the old child passes the socket
    itself to the successor, which goes on reading it.

    Every child of a service that hands over binds a listening unix
    socket under a temporary name and renames it to `path` (so the
    newest child owns the name), and receives there: a peer must have
    the child's own uid (SO_PEERCRED); each message is one byte with up
    to BATCH descriptors (SCM_RIGHTS, received close-on-exec), and each
    descriptor goes to adopt(), which checks what it is.  Told to leave,
    a child closes its Inbox (the name stays until the next child takes
    it), makes an Outbox and connects to `path`: the peer must have its
    uid and another pid; a refused or missing name means no successor
    yet, and the caller tries again.  send() passes descriptors in
    batches; once it returns True they are the successor's, and the
    caller closes its own copies.

    Nothing is lost when a successor is itself told to leave while a
    predecessor hands over to it (reloads in quick succession): close()
    first accepts the links still queued on its socket, shuts each link
    for reading, so that a send after that fails and the sender keeps
    its descriptors (and hands them on later), and adopts every message
    sent before; only then does it close them.  A message queued on a
    socket that is closed unread would close its descriptors: the
    client's connection, with its request unread (a reset).

    The name: `private/.handover.TYPE.SERVICE.PROGRAM` relative to the
    working directory the skeleton gives (queue_directory, or / in the
    chroot jail, which is the same folder): one per service and program,
    so a connection never goes to another service, nor to another
    program after master.cf changed the service's command.  private/ is
    mail_owner's (mode 0700): only mail_owner and root can connect.

SECURITY
    A peer of another uid is refused on both sides.  A peer of the same
    uid could connect to the service directly anyway, so what it can
    pass (sockets, which adopt() checks) gives it nothing new.

DIAGNOSTICS
    Nothing is raised: a child that cannot bind (no private/ folder, no
    permission) receives nothing, logged when verbose; a link that fails
    is dropped and made again.

SEE ALSO
    multi_server.py (when to hand over), unix(7) SCM_RIGHTS
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from collections.abc import Callable, Sequence

from master import log
from master.events import EventLoop
from master.log import msg_info
from master.skeleton import ServerContext

BATCH = 200  # descriptors per message; the kernel's limit (SCM_MAX_FD) is 253
_MESSAGE = b"H"
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_FD = array.array("i")  # a descriptor in SCM_RIGHTS data


def handover_path(ctx: ServerContext) -> str:
    """Where a service's children meet their successor (relative to queue_directory)."""
    parts = (ctx.options.transport or "", ctx.service_name, ctx.process_name)
    return "private/.handover." + ".".join(p.replace("/", "_") for p in parts)


def peer_ids(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of a unix socket's peer."""
    pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return pid, uid


class Inbox:
    """Where a serving child receives connections from its draining predecessors."""

    def __init__(self, path: str, events: EventLoop, adopt: Callable[[int], None]) -> None:
        self.path = path
        self._events = events
        self._adopt = adopt
        self._links: dict[int, socket.socket] = {}
        self._sock: socket.socket | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = f"{path}.{os.getpid()}"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)  # a pid reused after a kill
            sock.bind(temporary)
            os.rename(temporary, path)
            sock.listen(16)
        except OSError as err:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if log.msg_verbose:
                msg_info(f"no connection handover: bind {path}: {err.strerror}")
            return
        sock.setblocking(False)
        self._sock = sock
        events.enable_read(sock.fileno(), self._accept)

    def close(self) -> None:
        """Receive no more, after adopting what was sent already (see DESCRIPTION); the
        name stays for the next child."""
        if self._sock is not None:
            self._accept(self._sock.fileno(), self._events)  # links still queued
            self._events.disable(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for fd, link in list(self._links.items()):
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RD)  # a send from now on fails: the sender keeps it
            self._receive(fd, self._events)  # what was sent before; drops the link at EOF
            if fd in self._links:
                self._drop(fd, link)

    def _accept(self, _fd: int, _loop: EventLoop) -> None:
        assert self._sock is not None
        while True:
            try:
                link, _addr = self._sock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError:
                return
            _pid, uid = peer_ids(link)
            if uid != os.geteuid():
                link.close()
                continue
            link.setblocking(False)
            self._links[link.fileno()] = link
            self._events.enable_read(link.fileno(), self._receive)

    def _receive(self, fd: int, _loop: EventLoop) -> None:
        """Adopt every message queued on a link; drop the link at its end."""
        link = self._links[fd]
        while True:
            try:
                # Workaround: socket.recv_fds() drops its flags argument (CPython 3.11),
                # and the descriptors must come close-on-exec.
                message, ancillary, _flags, _addr = link.recvmsg(
                    len(_MESSAGE), socket.CMSG_SPACE(BATCH * _FD.itemsize), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                self._drop(fd, link)
                return
            for level, kind, data in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % _FD.itemsize])
                    for received in fds:
                        self._adopt(received)
            if not message:
                self._drop(fd, link)
                return

    def _drop(self, fd: int, link: socket.socket) -> None:
        self._events.disable(fd)
        del self._links[fd]
        link.close()


class Outbox:
    """A draining child's link to its successor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.peer_pid = 0
        self._sock: socket.socket | None = None

    def connected(self) -> bool:
        """True with a link to a successor; otherwise try to make one now."""
        if self._sock is not None:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
            pid, uid = peer_ids(sock)
        except OSError:
            sock.close()
            return False  # no successor yet (missing, refused, its queue full)
        if uid != os.geteuid() or pid == os.getpid():
            sock.close()
            return False
        self._sock, self.peer_pid = sock, pid
        return True

    def send(self, fds: Sequence[int]) -> bool:
        """Pass fds (at most BATCH) to the successor; False when they were not passed."""
        if self._sock is None:
            return False
        try:
            socket.send_fds(self._sock, [_MESSAGE], list(fds))
        except BlockingIOError:
            return False  # its queue is full: later
        except OSError:
            self.close()  # it went away; another may come
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
