"""Create and close a service's listeners; send wake-up triggers to them.

SYNOPSIS
    from master import listen

    fds = listen.open_listeners(entry, config, as_owner=ctx_factory)
    listen.close_listeners(fds)
    listen.inet_addresses(entry, config) -> list[(family, sockaddr)]
    listen.send_wakeup(entry, addresses, loop, as_owner=ctx_factory)

DESCRIPTION
    open_listeners() makes the endpoints of one master.cf service, as
    Postfix's master_listen_init() does, relative to the current
    directory (the master has done chdir(queue_directory)):

    unix, pass     a SOCK_STREAM socket bound to private/NAME or
                   public/NAME (an old socket file is removed first),
                   mode 0666, listening with a backlog of
                   max(maxproc, default_process_limit), non-blocking.
    unix-dgram     a SOCK_DGRAM socket, same path rules, mode 0666.
    fifo           mkfifo(path, 0622) unless it exists, opened O_RDWR
                   and non-blocking (so it never reads EOF), mode 0622.
    inet           one socket per address: [host]:port from master.cf,
                   else inet_interfaces for a bare port ("all" is the
                   wildcard per inet_protocols; "loopback-only" is
                   127.0.0.1, and ::1 when the host has IPv6 loopback),
                   SO_REUSEADDR, IPV6_V6ONLY, the same backlog.

    The local kinds are created inside `as_owner()` (the master passes a
    context that sets euid/egid to mail_owner when it runs as root), so
    the files belong to mail_owner; inet sockets are made with the
    master's own privileges.  Every descriptor is close-on-exec in the
    master; spawn.py duplicates them onto fd 6 onward in each child.
    Listeners are made once, when a service starts, and kept across
    reloads while the service's identity is unchanged.

    send_wakeup() sends the master's wake-up trigger (Postfix's
    master_wakeup.c): unix, pass and inet get a connection carrying "W"
    then "\\0" in two writes, closed when the server closes it (it becomes
    readable) or after 100 s; a fifo gets "W" (opened as mail_owner,
    without following symbolic links); unix-dgram has no wake-ups (a
    warning, as in Postfix).

SECURITY
    Local endpoints are created and fifo triggers written as mail_owner,
    never root, so a compromised mail_owner account cannot make the
    master write through a planted link.

DIAGNOSTICS
    open_listeners() raises OSError whose text names the endpoint, e.g.
    "bind private/tlsmgr: Address already in use"; the caller reports it
    as fatal at startup, or as an error for a service added by reload.
    send_wakeup() raises OSError naming the service and the reason.

BUGS
    Host names in inet services are resolved once, at service start.

SEE ALSO
    src/master/master_listen.c, master_wakeup.c, src/util/unix_listen.c,
    fifo_listen.c, inet_listen.c (Postfix)
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from master.builtin import inet_families
from master.config import Config
from master.events import EventLoop, Timer
from master.mastercf import ServiceEntry
from master.proto import TRIGGER_REQ_WAKEUP

OwnerContext = Callable[[], AbstractContextManager[None]]
TRIGGER_TIMEOUT = 100  # seconds a trigger connection may stay open
CONNECT_TIMEOUT = 1.0  # Postfix's BRIEFLY
SOCKET_MODE = 0o666
FIFO_MODE = 0o622

# A socket module address: (host, port) or (host, port, flowinfo, scope_id).
SockAddr = tuple[Any, ...]
Address = tuple[int, SockAddr]  # (family, sockaddr)


def _nullcontext() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def backlog(entry: ServiceEntry, config: Config) -> int:
    """max(maxproc, default_process_limit), as master_listen_init()."""
    return max(entry.maxproc, config.get_int("default_process_limit"))


def open_listeners(
    entry: ServiceEntry, config: Config, as_owner: OwnerContext = _nullcontext
) -> list[int]:
    """Create the listeners of one service; OSError names the endpoint."""
    if entry.type == "inet":
        return _open_inet(entry, config)
    with as_owner():
        if entry.type in ("unix", "pass"):
            return [_open_local(entry.socket_path, socket.SOCK_STREAM, backlog(entry, config))]
        if entry.type == "unix-dgram":
            return [_open_local(entry.socket_path, socket.SOCK_DGRAM, 0)]
        if entry.type == "fifo":
            return [_open_fifo(entry.socket_path)]
    raise ValueError(f"unknown service type: {entry.type}")


def close_listeners(fds: list[int]) -> None:
    """Close a service's listeners (socket files are left in place, as Postfix does)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _open_local(path: str, kind: int, queue: int) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise OSError(err.errno, f"remove {path}: {err.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
        os.chmod(path, SOCKET_MODE)
        if kind == socket.SOCK_STREAM:
            sock.listen(queue)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"bind {path}: {err.strerror}") from None
    return sock.detach()


def _open_fifo(path: str) -> int:
    try:
        os.mkfifo(path, FIFO_MODE)
    except FileExistsError:
        pass
    except OSError as err:
        raise OSError(err.errno, f"create fifo {path}: {err.strerror}") from None
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise OSError(err.errno, f"open fifo {path}: {err.strerror}") from None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a fifo: {path}")
    os.fchmod(fd, FIFO_MODE)
    return fd


# inet ------------------------------------------------------------------


def _resolve(host: str, port: str, families: set[int]) -> list[Address]:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        raise OSError(errno.EINVAL, f"host {host!r}: {err.strerror}") from None
    out: list[Address] = []
    for family, _kind, _proto, _name, sockaddr in infos:
        if family in families and (family, sockaddr) not in out:
            out.append((family, sockaddr))
    if not out:
        raise OSError(errno.EADDRNOTAVAIL, f"host {host!r}: no address for inet_protocols")
    return out


def inet_addresses(entry: ServiceEntry, config: Config) -> list[tuple[Address, bool]]:
    """(address, optional) pairs to listen on; optional ones may fail quietly.

    Optional means "::1 or the IPv6 wildcard, implied by a bare port on a
    host that may have no IPv6": they are skipped when unavailable.
    """
    families = set(inet_families(config.get_list("inet_protocols")))
    host, port = entry.inet_address
    if host:
        return [(addr, False) for addr in _resolve(host.strip("[]"), port, families)]
    out: list[tuple[Address, bool]] = []
    interfaces = [w.lower() for w in config.get_list("inet_interfaces")] or ["all"]
    for iface in interfaces:
        if iface in ("all", "loopback-only"):
            v4, v6 = ("0.0.0.0", "::") if iface == "all" else ("127.0.0.1", "::1")
            if socket.AF_INET in families:
                out.append(((socket.AF_INET, (v4, int(port))), False))
            if socket.AF_INET6 in families:
                out.append(((socket.AF_INET6, (v6, int(port), 0, 0)), True))
        else:
            out += [(addr, False) for addr in _resolve(iface.strip("[]"), port, families)]
    return out


def _open_inet(entry: ServiceEntry, config: Config) -> list[int]:
    fds: list[int] = []
    try:
        for (family, sockaddr), optional in inet_addresses(entry, config):
            fd = _open_inet_one(family, sockaddr, backlog(entry, config), optional)
            if fd is not None:
                fds.append(fd)
    except OSError:
        close_listeners(fds)
        raise
    if not fds:
        raise OSError(errno.EADDRNOTAVAIL, f"service {entry.name}: no address to listen on")
    return fds


def _open_inet_one(family: int, sockaddr: SockAddr, queue: int, optional: bool) -> int | None:
    where = _format(family, sockaddr)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        if optional:
            return None
        raise OSError(err.errno, f"socket {where}: {err.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(queue)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        if optional and err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return None
        raise OSError(err.errno, f"bind {where}: {err.strerror}") from None
    return sock.detach()


def _format(family: int, sockaddr: SockAddr) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def listener_addresses(fds: list[int]) -> list[Address]:
    """The bound (family, sockaddr) of each inet listener, for triggers and status."""
    out: list[Address] = []
    for fd in fds:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            out.append((sock.family, sock.getsockname()))
        finally:
            sock.close()
    return out


# wake-up triggers ------------------------------------------------------


def send_wakeup(
    entry: ServiceEntry,
    addresses: list[Address],
    loop: EventLoop,
    as_owner: OwnerContext = _nullcontext,
) -> None:
    """Send one wake-up trigger to a service; OSError says why it failed."""
    if entry.type == "unix-dgram":
        raise OSError(errno.EOPNOTSUPP, "wakeup is not supported for unix-dgram services")
    if entry.type == "fifo":
        with as_owner():
            _fifo_trigger(entry.socket_path)
        return
    peer: SockAddr | str
    if entry.type == "inet":
        family, listening = addresses[0]
        peer = _connectable(family, listening)
        sock = socket.socket(family, socket.SOCK_STREAM)
        where = _format(family, peer)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer, where = entry.socket_path, entry.socket_path
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(peer)
        sock.send(TRIGGER_REQ_WAKEUP)
        sock.send(b"\0")
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"connect to {where}: {err.strerror or err}") from None
    _close_when_done(sock, loop)


def _connectable(family: int, sockaddr: SockAddr) -> SockAddr:
    """A wildcard listener is reached through the loopback address."""
    if sockaddr[0] == "0.0.0.0":
        return ("127.0.0.1", sockaddr[1])
    if sockaddr[0] == "::":
        return ("::1", *sockaddr[1:])
    return sockaddr


def _close_when_done(sock: socket.socket, loop: EventLoop) -> None:
    fd = sock.fileno()
    timers: list[Timer] = []

    def done(*_args: object) -> None:
        if sock.fileno() < 0:
            return
        loop.disable(fd)
        for timer in timers:
            loop.cancel_timer(timer)
        sock.close()

    timers.append(loop.request_timer(TRIGGER_TIMEOUT, done))
    loop.enable_read(fd, done)


def _fifo_trigger(path: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise OSError(err.errno, f"open fifo {path}: {err.strerror}") from None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"not a fifo: {path}")
        os.write(fd, TRIGGER_REQ_WAKEUP)
    finally:
        os.close(fd)
