"""The spawn server ("zygote"): a Python service's own program, imported once, forking its children.

SYNOPSIS
    from master import zygote

    # The service's side (skeleton.server_main does this before anything else):
    if proto.is_spawner_argv(sys.argv):
        zygote.serve(preload)       # returns only in a forked child

    # The master's side (spawn.py):
    zygote.registered_commands() -> frozenset[str]   # the SPAWNER_GROUP entry points
    zygote.interpreter(path) -> list[str] | None     # a #! Python program's
    zygote.encode_request(Request(seq, path, argv, env)) -> bytes   # + fds, SCM_RIGHTS
    zygote.decode_reply(data) -> Reply               # ready / forked / failed
    zygote.LINK_FD, zygote.MAX_FDS, zygote.MAX_MESSAGE

DESCRIPTION
    A Python daemon spends some 100 ms importing itself before it can
    serve; Postfix's C daemons start in about 12.  A service whose command
    is registered in the entry-point group `minipostfix.spawners` (and is a
    #! script whose interpreter is a Python named by its path) therefore
    gets a spawn server: the master execs that interpreter isolated,
    `PYTHON -I PROGRAM --spawner` (no PYTHON* variable, no user
    site-packages, not even those import_environment passes on, reach the
    image every child inherits), with fds 0-2 as for a child and LINK_FD
    (3) its end of a private SOCK_SEQPACKET socketpair.
    The program gets as far as skeleton.server_main(), which calls
    serve(): the service's modules are imported by then (plus the
    `preload` modules it imports lazily), so serve() freezes the garbage
    collector's view of them (gc.freeze(): a child's first collection
    would otherwise touch, and copy, every page), says `ready`, and waits
    for requests.  The master never imports a service: it only reads the
    entry points' names.

    One request, one message: `spawn`, a sequence number, the program
    path, argv and the child's environment, with the child's descriptors
    0, 1, 2, 3, 4, 5, 6.. (as the exec path would place them) attached
    with SCM_RIGHTS.  The child is forked before it is asked for: the
    server forks an intermediate process, which forks the child and
    waits; the child reads the next request itself, reports `forked SEQ
    PID` on the link, and tells the intermediate, which exits: the child
    is orphaned to the master, a child subreaper (PR_SET_CHILD_SUBREAPER),
    which waits for it and reads its status records like any child's.  No
    fork is on the way from a connection to its first reply.  The server
    reaps the intermediate and forks the next pair PREFORK_DELAY seconds
    later, when the new child is up (two forks of this whole image would
    compete with it), or at once when a request is already waiting.
    Until the child has its request, it and the intermediate die with
    their parent (PR_SET_PDEATHSIG): killing the server kills what it
    forked ahead.  EOF from the master ends the server (the child waiting
    for a request reads it and exits; the intermediate says so).  A fork
    that fails ends it too (exit 1): the master falls back to fork+exec.

    The child then becomes what an exec'd child is, before returning
    from serve() into the skeleton's normal start-up (which re-reads
    main.cf, runs pre_init as root, enters the jail and drops privileges):
    - descriptors: the link's Python object is detached, the received fds
      are moved above the target range and dup2'd onto 0, 1, 2, ...,
      everything else is closed (nothing of the server stays open);
    - sys.argv is the master's argv with the program path as argv[0], as
      Python sets it for an exec'd #! script; os.environ (and the C
      environment) is replaced by the master's environment for the child
      (GENERATION included), plus what the interpreter added to its own
      at start-up, as it would at an exec (LC_CTYPE=C.UTF-8 under LANG=C);
    - its process name (/proc/PID/comm) the program's base name, as an
      exec names it (the server's too: the kernel named it `python3`);
    - signals as a fresh exec has them (events.reset_signals()); the
      skeleton makes its own event loop: the server never has one;
    - PRNGs: os.fork() runs the at-fork hooks (random's reseed, tlsmgr's
      pool); the server itself draws nothing.

SECURITY
    The server runs no code on anyone's input but the master's: it reads
    only its end of the socketpair, which only the master holds, and exits
    on EOF from it.  It stays root and unjailed (its children drop
    privileges in the skeleton) and holds no secrets: it only imports.
    A message it cannot decode is a bug in the master: it says so on
    stderr and exits 2 (the master falls back to exec and restarts it).

    Every child shares the server's memory layout and hash seed (one
    exec, many forks): a leak of addresses or a hash-collision attack
    found against one child works on its siblings too.  The per-child
    PRNG state is fresh.

BUGS
    A forked child keeps the server's /proc/PID/cmdline and environ (the
    ones the kernel shows: rewriting them needs CAP_SYS_RESOURCE): `ps`
    shows children as `PYTHON -I PROGRAM --spawner`; the master's state file
    (`minipostfix status -v`) tells the server from its children, and
    only the server stays root.

    sys.flags are fixed at the server's exec: a forked child runs
    isolated (sys.flags.isolated, no script directory at the head of
    sys.path, no user site-packages) where the fork+exec fallback runs
    as its #! line says; a service imports nothing from beside its
    script, so only the flags differ.

SEE ALSO
    spawn.py (the master's side), skeleton.py; Android's zygote; CPython's
    multiprocessing.forkserver
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import importlib
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from master import events

__all__ = [
    "LINK_FD",
    "MAX_FDS",
    "MAX_MESSAGE",
    "PREFORK_DELAY",
    "SPAWNER_GROUP",
    "Reply",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "interpreter",
    "prctl",
    "registered_commands",
    "serve",
]

SPAWNER_GROUP = "minipostfix.spawners"
LINK_FD = 3  # the server's end of the socketpair with the master
MAX_FDS = 64  # descriptors per request: 0-5 and up to 58 listeners
MAX_MESSAGE = 256 * 1024  # bytes of one request (argv and environment)
PREFORK_DELAY = 0.05  # seconds between a child taking its request and the next fork ahead

_SPAWN, _READY, _FORKED = b"spawn", b"ready", b"forked"


# The master's side: who gets a spawn server ------------------------------


def registered_commands() -> frozenset[str]:
    """The names in the entry-point group SPAWNER_GROUP (read, never loaded)."""
    from importlib.metadata import entry_points

    return frozenset(point.name for point in entry_points(group=SPAWNER_GROUP))


def interpreter(path: str) -> list[str] | None:
    """The #! line of a Python script (a console script): [interpreter] or
    [interpreter, its one option], as the kernel would split it; None for anything
    else (an ELF program, a shell script, `#!/usr/bin/env python3`), which gets no
    spawn server: the master can run only an interpreter it names isolated."""
    try:
        with open(path, "rb") as fp:
            line = fp.readline(_SHEBANG_MAX)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    program, _sep, option = os.fsdecode(line[2:]).strip(" \t\n").partition(" ")
    if not os.path.isabs(program) or not os.path.basename(program).startswith("python"):
        return None
    return [program, option.strip()] if option.strip() else [program]


_SHEBANG_MAX = 256  # the kernel's BINPRM_BUF_SIZE: no longer #! line is honoured


# Messages ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One child to fork: its descriptors travel beside the message."""

    seq: int
    path: str
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Reply:
    """`ready` (pid: the server's) or `forked` (seq: the request's, pid: the child's)."""

    kind: str
    seq: int = 0
    pid: int = 0


def _join(fields: Iterable[str | bytes | int]) -> bytes:
    parts = []
    for field in fields:
        if isinstance(field, int):
            field = str(field)
        parts.append(os.fsencode(field) if isinstance(field, str) else field)
    return b"\0".join(parts)


def _int(field: bytes) -> int:
    if not field.isdigit():
        raise ValueError(f"bad number in spawn server message: {field[:20]!r}")
    return int(field)


def encode_request(request: Request) -> bytes:
    env = [f"{name}={value}" for name, value in request.env.items()]
    head: list[str | bytes | int] = [_SPAWN, request.seq, request.path, len(request.argv)]
    return _join([*head, *request.argv, *env])


def decode_request(data: bytes) -> Request:
    """ValueError for anything but a well-formed spawn request."""
    fields = data.split(b"\0")
    if len(fields) < 4 or fields[0] != _SPAWN:
        raise ValueError(f"not a spawn request: {data[:40]!r}")
    seq, path, argc = _int(fields[1]), os.fsdecode(fields[2]), _int(fields[3])
    if argc < 1 or len(fields) < 4 + argc:
        raise ValueError("spawn request: bad argument count")
    argv = [os.fsdecode(arg) for arg in fields[4 : 4 + argc]]
    env = {}
    for item in fields[4 + argc :]:
        name, eq, value = os.fsdecode(item).partition("=")
        if not eq or not name:
            raise ValueError(f"spawn request: bad environment entry {item[:40]!r}")
        env[name] = value
    return Request(seq, path, argv, env)


def encode_reply(reply: Reply) -> bytes:
    if reply.kind == "ready":
        return _join([_READY, reply.pid])
    return _join([_FORKED, reply.seq, reply.pid])


def decode_reply(data: bytes) -> Reply:
    """ValueError for anything but a well-formed reply."""
    fields = data.split(b"\0")
    kind = fields[0]
    if kind == _READY and len(fields) == 2:
        return Reply("ready", pid=_int(fields[1]))
    if kind == _FORKED and len(fields) == 3:
        return Reply("forked", seq=_int(fields[1]), pid=_int(fields[2]))
    raise ValueError(f"not a spawn server reply: {data[:40]!r}")


# The server ----------------------------------------------------------------

# How an intermediate ends (its exit status), as the server reads it.
_GO = 0  # its child took a request: fork the next pair
_EOF = 3  # its child read EOF from the master: the server exits 0
_PR_SET_PDEATHSIG = 1


def prctl(option: int, value: int) -> str | None:
    """prctl(2) with one argument, through libc; None, or why it failed."""
    import ctypes

    try:
        if (call := _PRCTL.get("call")) is None:
            call = _PRCTL["call"] = ctypes.CDLL(None, use_errno=True).prctl
            call.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
            call.restype = ctypes.c_int
        if call(option, value, 0, 0, 0) != 0:
            return os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as err:
        return str(err)
    return None


_PRCTL: dict[str, Any] = {}  # libc's prctl, looked up once


def serve(preload: Iterable[str] = (), warm_up: Iterable[Callable[[], object]] = ()) -> None:
    """Be the spawn server: import, say ready, fork on request; returns only in a child."""
    try:
        os.fstat(LINK_FD)
        link = socket.socket(fileno=LINK_FD)
    except OSError:
        _die(f"fd {LINK_FD} is not a socket: a spawn server is started by the master")
    if link.type != socket.SOCK_SEQPACKET:
        _die(f"fd {LINK_FD} is not a SOCK_SEQPACKET socket: started by the master?")
    link.setblocking(True)
    _set_comm(sys.argv[0])  # the kernel named it after its interpreter
    added = _startup_additions()
    for name in preload:
        importlib.import_module(name)
    for call in warm_up:
        call()
    prctl(0, 0)  # loads ctypes and libc here, once, instead of in every child
    gc.collect()
    gc.freeze()
    _send(link, Reply("ready", pid=os.getpid()))
    server = os.getpid()
    while True:
        pid = os.fork()
        if pid == 0:
            if _intermediate(link, server, added):
                return  # in the child, which is now what an exec'd child is
            os._exit(_EOF)  # not reached: _intermediate leaves by os._exit
        _pid, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == _EOF:
            os._exit(0)
        if code != _GO:
            _die(f"intermediate process pid {pid}: exit status {code}", status=1)
        # The child just forked starts up now: fork the next one a little later (two
        # forks of this whole image would compete with it), at once when asked for it.
        select.select([link], [], [], PREFORK_DELAY)


def _intermediate(link: socket.socket, parent: int, added: dict[str, str]) -> bool:
    """Fork the next child ahead of its request and wait: True only in that child.

    The child reads the next request itself.  When it has one, it writes
    GO on a pipe and this process exits at once, orphaning the child to
    the master (the subreaper); without one (EOF from the master, or a
    crash) this process reaps it and says so by its exit status.  Both
    die with their parent until the child has its request
    (PR_SET_PDEATHSIG): killing the server kills what it forked ahead."""
    try:
        _die_with(parent)
        go_r, go_w = os.pipe()
        me = os.getpid()
        child = os.fork()
        if child == 0:
            os.close(go_r)
            _die_with(me)
            return _wait_for_request(link, go_w, added)
        os.close(go_w)
        if os.read(go_r, 1) == _GO_BYTE:
            os._exit(_GO)
        _pid, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(_EOF if code == 0 else 1)
    except BaseException as err:  # nothing of the server's loop may run here
        _die(f"intermediate: {type(err).__name__}: {err}", status=1)


_GO_BYTE = b"g"


def _wait_for_request(link: socket.socket, go_w: int, added: dict[str, str]) -> bool:
    """The child forked ahead: take one request, report, become what it asks for."""
    try:
        request, fds = _receive(link)
        if request is None:
            os._exit(0)
        prctl(_PR_SET_PDEATHSIG, 0)  # from now on it outlives its parent: that is the point
        os.write(go_w, _GO_BYTE)
        os.close(go_w)
        _send(link, Reply("forked", request.seq, pid=os.getpid()))
        _become_child(link, request, fds, added)
    except SystemExit:
        raise
    except BaseException as err:
        _die(f"child set-up: {type(err).__name__}: {err}", status=1)
    return True


def _die_with(parent: int) -> None:
    """SIGKILL when `parent` dies (and at once when it already has)."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _receive(link: socket.socket) -> tuple[Request | None, list[int]]:
    try:
        data, ancdata, flags, _addr = link.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
        )
    except KeyboardInterrupt:  # a terminal's Ctrl-C under start-fg: the master stops us
        return None, []
    except ConnectionResetError:
        return None, []
    fds: list[int] = []
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(blob) - len(blob) % 4
            fds += [int.from_bytes(blob[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    if not data:
        _close_all(fds)
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        _close_all(fds)
        _die("spawn request truncated")
    try:
        return decode_request(data), fds
    except ValueError as err:
        _close_all(fds)
        _die(str(err))


def _become_child(
    link: socket.socket, request: Request, fds: list[int], added: dict[str, str]
) -> None:
    """What posix_spawn and exec would have given: see the module docstring."""
    link.detach()  # its number is closed below; a later finalizer must not close a reused one
    _place(fds)
    events.reset_signals()
    _set_comm(request.path)
    sys.argv = [request.path, *request.argv[1:]]
    os.environ.clear()
    os.environ.update(request.env)
    for name, value in added.items():
        os.environ.setdefault(name, value)


def _set_comm(path: str) -> None:
    """The process name (/proc/self/comm, what `ps -e` and `top` show) that an exec of
    `path` gives: its base name, cut to the kernel's 15 bytes."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "wb") as fp:
        fp.write(os.fsencode(os.path.basename(path))[:15])


def _startup_additions() -> dict[str, str]:
    """What the interpreter added to its own environment at start-up (PEP 538's
    LC_CTYPE coercion under LANG=C): the environment it was exec'd with, which
    /proc/self/environ keeps, against os.environ."""
    try:
        with open("/proc/self/environ", "rb") as fp:
            given = {item.partition(b"=")[0] for item in fp.read().split(b"\0") if item}
    except OSError:
        return {}
    return {k: v for k, v in os.environ.items() if os.fsencode(k) not in given}


def _place(fds: list[int]) -> None:
    """fds[n] becomes fd n (inheritable, as after exec); every other descriptor is closed."""
    count = len(fds)
    # Move every source above the target range first, so no dup2 overwrites a later source.
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, count) for fd in fds]
    for target, fd in enumerate(moved):
        os.dup2(fd, target, inheritable=True)
    os.closerange(count, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def _send(link: socket.socket, reply: Reply) -> None:
    link.sendmsg([encode_reply(reply)])


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError as err:
            if err.errno != errno.EBADF:
                raise


def _die(text: str, status: int = 2) -> NoReturn:
    os.write(2, f"spawn server: {text}\n".encode(errors="replace"))
    os._exit(status)
