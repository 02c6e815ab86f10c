"""Child process birth and death: spawn (fork+exec, or a spawn server), reap, signal, throttle.

SYNOPSIS
    from master.spawn import Spawner, become_subreaper
    from master.avail import Service

    spawner = Spawner(loop, env, foreground=False)
    spawner.subreaper = become_subreaper() is None   # spawn servers need it
    service = Service(entry, path, argv, listen_fds, loop, throttle_delay)
    spawner.start_zygote(service)        # a spawn server for a Python service
    service.update_listen()
    if service.can_spawn(): spawner.spawn(service) -> bool
    spawner.reap()                      # after SIGCHLD was recorded
    spawner.refresh_zygote(service); spawner.stop_zygote(service)    # reload
    spawner.zygote_state(service) -> dict | None     # for status -v
    spawner.signal_service(service, signal.SIGTERM)
    spawner.signal_all(signal.SIGTERM); spawner.wait_all(timeout)
    describe_status(wait_status) -> "exit status 1" | "killed by signal 9 (SIGKILL)"

DESCRIPTION
    The module that creates and waits for the master's processes
    (Postfix's master_spawn.c); the spawn server's own forks are in
    zygote.py.  What a service counts (status records, availability, when
    to listen, throttling) is master/avail.py.

    Fork+exec.  spawn() runs $daemon_directory/COMMAND through
    os.posix_spawn with DUP2 file actions that place the descriptors
    proto.py lists (fd 1: the master's own stdout in the foreground, as
    Postfix's `master -s`, so that postlogd can write maillog_file =
    /dev/stdout; fd 2: a pipe whose last lines the master keeps when
    detached, its own stderr in the foreground).  The environment is
    the master's cleaned one plus
    GENERATION, a counter over all forks, in octal, and
    MASTER_STATUS_READY=1 (a child of ours says when it serves).  Signals the master
    ignores (SIGPIPE, SIGXFSZ) are reset to their defaults in the child.
    A service under stress gets `stress=yes` in argv for STRESS_TIME
    seconds after it reached its process limit.

    Spawn servers.  For a Python service (master.py decides which: a
    command registered in zygote.SPAWNER_GROUP that is a #! Python script),
    start_zygote() execs the service's program as its spawn server, under
    its #! interpreter with -I (proto.spawner_argv()), with
    one end of a SOCK_SEQPACKET socketpair as fd 3, and spawn() then sends
    it a request instead: the same argv, environment and descriptors
    (these with SCM_RIGHTS).  The child is counted from the request on
    (Service.spawn_started) and enters the child table when the server
    reports its pid; as the master is a child subreaper, that child is
    the master's own, reaped, throttled and shown like any other.  A
    child may die before its pid is read: reap() keeps the exit status of
    every pid it does not know for UNCLAIMED_TIME seconds (UNCLAIMED_MAX
    at most: orphans of any descendant come here too) and the report
    picks it up.  Fallbacks, so that no connection waits for a spawn
    server that cannot answer: until the server says `ready`, and while
    it cannot take a request, children are fork+exec'd; a request not
    answered in ZYGOTE_TIMEOUT seconds gets the server killed; when the
    server's end of the socketpair closes (it died, or all it had
    forked ahead is gone), what it left unanswered is fork+exec'd and
    the server is started again: at once when it had been ready, after
    the service's throttle_delay when it never was (a bad start).
    refresh_zygote() (reload) starts a new server when the program file
    (device, inode, size, modification time), its path or the
    environment changed; stop_zygote() closes the master's end for
    writing: the server answers what it was asked and exits.

    Reaping and throttling.  reap() collects every dead child with
    waitpid(-1, WNOHANG).  An abnormal exit (non-zero status or a signal)
    is logged; when the child never completed a TAKEN -> AVAIL cycle it
    is a bad command startup: the service stops forking and listening for
    its throttle_delay, and the reason (exit status or signal, and the
    last lines the child wrote to stderr) is logged and kept for status:
    the reason in the service's snapshot, the stderr lines apart in
    service.last_stderr (they may hold anything a child printed, and the
    snapshot is published to everyone; see master.py).
    A clean exit(0) never throttles.  A failed spawn (fork or exec error)
    throttles too.  SIGTERM deaths of children of a removed service, or
    during shutdown, are not logged.  signal_all() and wait_all() include
    the spawn servers.

SECURITY
    Children are started as root with the master's cleaned environment;
    the child skeleton drops privileges itself (privs.py).  A child that
    is a `#!` Python script (a console script, editable or wheel install:
    no interpreter flags) imports first from its own resolved directory,
    never from the current one, and sees no PYTHONPATH or other PYTHON*
    variable unless import_environment names it; `check` warns when
    that directory or the script is not root's alone (trust.py).  A spawn server
    reads only its socketpair with the master (zygote.py).

DIAGNOSTICS
    Warnings as Postfix words them: `process PATH pid N exit status S`,
    `process PATH pid N killed by signal N`, `PATH: bad command startup
    -- throttling`, `master_spawn: fork: ERROR -- throttling`, followed by
    one line that says why.  Spawn servers: `spawn server PATH pid N
    killed by signal 9 (SIGKILL)` (with its last stderr lines), `... is
    gone -- restarting it`, `... did not start -- fork+exec, and again in
    Ns`, `... no answer after 5s -- killing it`, `... program changed --
    restarting it`.

BUGS
    The stderr tail exists only for detached masters; in the foreground
    the child's stderr is the terminal and the reason has no last lines.

SEE ALSO
    src/master/master_spawn.c (Postfix); avail.py, zygote.py
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import itertools
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from master import proto, zygote
from master.avail import STRESS_TIME, Child, Service
from master.events import EventLoop
from master.instance import process_starttime
from master.log import msg_info, msg_warn

__all__ = [
    "STDERR_TAIL",
    "UNCLAIMED_MAX",
    "UNCLAIMED_TIME",
    "ZYGOTE_TIMEOUT",
    "Spawner",
    "ZygoteLink",
    "become_subreaper",
    "describe_status",
]

STDERR_TAIL = 2048  # bytes of a child's stderr kept for diagnostics
ZYGOTE_TIMEOUT = 5.0  # seconds a spawn server may take to answer a request
UNCLAIMED_TIME = 30.0  # seconds the exit status of an unknown pid is kept
UNCLAIMED_MAX = 1024  # exit statuses of unknown pids kept at most
_PR_SET_CHILD_SUBREAPER = 36
# A program file as reload compares it: device, inode, size, modification time.
FileIdentity = tuple[int, int, int, int]
_REPLY_SIZE = 4096


def become_subreaper() -> str | None:
    """Make this process its descendants' reaper of last resort; None, or why not."""
    return zygote.prctl(_PR_SET_CHILD_SUBREAPER, 1)


@dataclass(eq=False)
class _Pending:
    """A child asked of a spawn server whose pid has not come yet."""

    service: Service
    generation: int
    stderr_fd: int | None
    channel: int  # the service's status channel it was given (Service.channel)
    timer: Any = None


@dataclass(eq=False)
class ZygoteLink:
    """The master's side of one service's spawn server (zygote.py)."""

    service: Service
    path: str
    pid: int
    sock: socket.socket | None
    identity: FileIdentity | None  # the program file's, to see at reload whether it changed
    env: dict[str, str]
    stderr_fd: int | None = None
    stderr_tail: bytearray = field(default_factory=bytearray)
    started: float = field(default_factory=time.time)
    ready: bool = False  # it said `ready`: imports done, forking on request
    closing: bool = False  # asked to stop (EOF sent): answers what it has, then exits
    forks: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)
    # With the pid, names this process even after the pid is reused (instance.py).
    starttime: int | None = None
    restart_timer: Any = None
    last_exit: str = ""

    def __post_init__(self) -> None:
        if self.starttime is None:
            self.starttime = process_starttime(self.pid)

    @property
    def usable(self) -> bool:
        return self.sock is not None and self.ready and not self.closing

    def snapshot(self) -> dict[str, object]:
        """What `minipostfix status -v` shows about the spawn server."""
        state = "ready" if self.usable else "starting" if self.sock is not None else "down"
        return {
            "pid": self.pid,
            "starttime": self.starttime,
            "state": state,
            "started": self.started,
            "forks": self.forks,
            "last_exit": self.last_exit,
        }


class Spawner:
    """The master's child table and what every child inherits."""

    def __init__(self, loop: EventLoop, env: dict[str, str], foreground: bool = False) -> None:
        self.loop = loop
        self.env = env
        self.foreground = foreground
        self.generation = 0
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.flow_pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.zygotes: dict[Service, ZygoteLink] = {}
        self.zygote_pids: dict[int, ZygoteLink] = {}  # started and not reaped yet
        self.unclaimed: dict[int, tuple[int, float]] = {}  # pid -> (wait status, when)
        self._seq = itertools.count(1)
        self.zygotes_changed = False  # a spawn server started, became ready or went
        self.subreaper = False  # spawn servers need it: become_subreaper(), then set

    def close(self) -> None:
        for fd in (self.devnull, *self.flow_pipe):
            with contextlib.suppress(OSError):
                os.close(fd)

    # Birth ---------------------------------------------------------------

    def spawn(self, service: Service) -> bool:
        """Start one child of `service` (through its spawn server when it has a
        ready one, else fork+exec); on failure throttle it and return False."""
        service.wanted = False
        if not service.can_spawn():
            return False
        if service.stress and not service.limit_ok(1):
            service.stress_expire = time.monotonic() + STRESS_TIME
        link = self.zygotes.get(service)
        if link is not None and link.usable and self._ask_zygote(link):
            return True
        return self._exec(service) is not None

    def _exec(self, service: Service) -> Child | None:
        """fork+exec one child (posix_spawn)."""
        self.generation += 1
        err_r, err_w = self._stderr_pipe()
        try:
            pid = self._posix_spawn(
                service.path,
                self._child_argv(service),
                self._child_env(),
                self._fds(service, err_w),
            )
        except OSError as err:
            for fd in (err_r, err_w):
                if fd is not None:
                    os.close(fd)
            self._spawn_failed(service, err)
            return None
        if err_w is not None:
            os.close(err_w)
        return self._register(Child(pid, self.generation, service, stderr_fd=err_r, avail=-1))

    def _register(self, child: Child) -> Child:
        self.children[child.pid] = child
        if child.stderr_fd is not None:
            self.loop.enable_read(child.stderr_fd, lambda fd, _loop: self._drain_stderr(child))
        child.service.add_child(child)  # a new child counts as available at once
        return child

    def _child_argv(self, service: Service) -> list[str]:
        argv = list(service.argv)
        if service.stress and "stress=" in argv:
            under = service.stress_expire > time.monotonic()
            argv[argv.index("stress=")] = "stress=yes" if under else "stress="
        return argv

    def _child_env(self) -> dict[str, str]:
        env = dict(self.env)
        env[proto.ENV_GENERATION] = proto.format_generation(self.generation)
        env[proto.ENV_READY] = "1"  # say when serving: the reload's handoff (avail.py)
        return env

    def _stderr_pipe(self) -> tuple[int | None, int | None]:
        """A pipe for a child's stderr tail; none in the foreground (our own stderr)."""
        if self.foreground:
            return None, None
        return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _fds(self, service: Service, err_w: int | None) -> list[int]:
        """fd n of the child <- result[n]: 0 /dev/null, 1 /dev/null or
        (foreground) our own stdout, where postlogd writes maillog_file =
        /dev/stdout, as under `master -s`; 2 the stderr pipe or (foreground)
        our own stderr, 3-4 the flow pipe, 5 the status channel, 6.. the
        listeners."""
        status_fd = service.child_status_fd
        if status_fd is None:
            raise OSError(errno.EBADF, f"service {service.name}: no status channel")
        stdout = 1 if self.foreground else self.devnull
        sources = [self.devnull, stdout, 2 if err_w is None else err_w]
        return [*sources, *self.flow_pipe, status_fd, *service.listen_fds]

    def _posix_spawn(
        self, path: str, argv: list[str], env: dict[str, str], sources: list[int]
    ) -> int:
        # Sanity check: no source may be overwritten by an earlier DUP2 action.
        # The master reserves fds 0-6, so this only moves the listeners of a
        # service with several addresses, or fds of a process that did not.
        floor = len(sources)
        moved = [fd if fd >= floor else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
                 for fd in sources]  # fmt: skip
        try:
            actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(moved)]
            return os.posix_spawn(
                path,
                argv,
                env,
                file_actions=actions,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        finally:
            for fd, orig in zip(moved, sources, strict=True):
                if fd != orig:
                    os.close(fd)

    def _spawn_failed(self, service: Service, err: OSError) -> None:
        if err.errno in (errno.EAGAIN, errno.ENOMEM):
            msg_warn(f"master_spawn: fork: {err.strerror} -- throttling")
            reason = f"fork failed: {err.strerror}"
        else:
            msg_warn(f"master_spawn: exec {service.path}: {err.strerror} -- throttling")
            reason = f"cannot execute {service.path}: {err.strerror}"
        service.last_exit = reason
        service.throttle(reason)
        msg_warn(f"{service.path}: throttling for {service.throttle_delay}s: {reason}")

    # Spawn servers -------------------------------------------------------

    def start_zygote(self, service: Service) -> ZygoteLink | None:
        """Exec `service`'s program as its spawn server (see zygote.py)."""
        interpreter = zygote.interpreter(service.path)
        if not self.subreaper or self.stopping or interpreter is None:
            return None
        previous = self.zygotes.get(service)
        self.stop_zygote(service)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        err_r, err_w = self._stderr_pipe()
        sources = [self.devnull, self.devnull, 2 if err_w is None else err_w, theirs.fileno()]
        argv = proto.spawner_argv(interpreter, service.path)
        try:
            pid = self._posix_spawn(interpreter[0], argv, dict(self.env), sources)
        except OSError as err:
            mine.close()
            for fd in (err_r, err_w):
                if fd is not None:
                    os.close(fd)
            msg_warn(f"master_spawn: exec {service.path} as spawn server: {err.strerror}")
            return None
        finally:
            theirs.close()
            if err_w is not None:
                os.close(err_w)
        mine.setblocking(False)
        link = ZygoteLink(
            service, service.path, pid, mine, _identity(service.path), dict(self.env), err_r
        )
        if previous is not None:
            link.last_exit = previous.last_exit
        self.zygotes[service] = link
        self.zygote_pids[pid] = link
        self.zygotes_changed = True
        self.loop.enable_read(mine.fileno(), lambda _fd, _loop: self._link_event(link))
        if err_r is not None:
            self.loop.enable_read(err_r, lambda _fd, _loop: self._drain_stderr(link))
        return link

    def refresh_zygote(self, service: Service) -> None:
        """At reload: a new spawn server when the program file, its path or the
        environment changed; the running one otherwise."""
        link = self.zygotes.get(service)
        if link is None or link.sock is None:
            return  # none, or down: a restart is due anyway, and reads the program anew
        if (link.path, link.identity, link.env) != (
            service.path,
            _identity(service.path),
            self.env,
        ):
            msg_info(f"spawn server {link.path} pid {link.pid}: program changed -- restarting it")
            self.start_zygote(service)

    def stop_zygote(self, service: Service) -> None:
        """No more spawn server for `service`: it answers what it was asked, then exits."""
        link = self.zygotes.pop(service, None)
        if link is None:
            return
        self.loop.cancel_timer(link.restart_timer)
        link.restart_timer = None
        if link.sock is not None and not link.closing:
            link.closing = True
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_WR)

    def zygote_state(self, service: Service) -> dict[str, object] | None:
        link = self.zygotes.get(service)
        return None if link is None else link.snapshot()

    def _ask_zygote(self, link: ZygoteLink) -> bool:
        """Send one spawn request; False when it cannot be sent (then exec)."""
        assert link.sock is not None
        service = link.service
        self.generation += 1
        err_r, err_w = self._stderr_pipe()
        seq = next(self._seq)
        request = zygote.Request(seq, service.path, self._child_argv(service), self._child_env())
        try:
            fds = array.array("i", self._fds(service, err_w))
            link.sock.sendmsg(
                [zygote.encode_request(request)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
            )
        except OSError:  # full (it is stuck) or gone: EOF follows, and a restart; or no
            # status channel: then fork+exec fails alike and throttles the service
            if err_r is not None:
                os.close(err_r)
            return False
        finally:
            if err_w is not None:
                os.close(err_w)
        timer = self.loop.request_timer(ZYGOTE_TIMEOUT, lambda _loop: self._zygote_late(link, seq))
        link.pending[seq] = _Pending(service, self.generation, err_r, service.channel, timer)
        service.spawn_started()
        return True

    def _link_event(self, link: ZygoteLink) -> None:
        while link.sock is not None:
            try:
                data = link.sock.recv(_REPLY_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._link_lost(link)
                return
            try:
                reply = zygote.decode_reply(data)
            except ValueError as err:
                msg_warn(f"spawn server {link.path} pid {link.pid}: {err}")
                continue
            self._zygote_reply(link, reply)

    def _zygote_reply(self, link: ZygoteLink, reply: zygote.Reply) -> None:
        if reply.kind == "ready":
            link.ready = True
            self.zygotes_changed = True
            return
        pending = link.pending.pop(reply.seq, None)
        if pending is None:
            msg_warn(
                f"spawn server {link.path} pid {link.pid}: unexpected {reply.kind} {reply.seq}"
            )
            return
        self.loop.cancel_timer(pending.timer)
        service = pending.service
        link.forks += 1
        replaced = pending.channel != service.channel  # a reload came in between
        child = self._register(
            Child(
                reply.pid,
                pending.generation,
                service,
                stderr_fd=pending.stderr_fd,
                avail=-1,
                draining=replaced,
            )
        )
        service.spawn_settled()  # after add_child: the records it wrote early are counted
        early = self.unclaimed.pop(child.pid, None)
        if early is not None:  # it died before its pid came: see reap()
            self.children.pop(child.pid, None)
            self._child_died(child, early[0])

    def _fallback(self, service: Service) -> None:
        """A child asked of a spawn server that did not come: fork+exec it instead."""
        if self.stopping or service.removed or service.throttled:
            service.update_listen()
            return
        if self._exec(service) is None:
            service.update_listen()

    def _zygote_late(self, link: ZygoteLink, seq: int) -> None:
        if seq in link.pending and link.sock is not None:
            msg_warn(
                f"spawn server {link.path} pid {link.pid}: no answer after {ZYGOTE_TIMEOUT:g}s"
                " -- killing it"
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(link.pid, signal.SIGKILL)

    def _link_lost(self, link: ZygoteLink) -> None:
        """EOF from a spawn server: it and every intermediate it forked are gone (or
        it was stopped); what it left unanswered is fork+exec'd, and it is restarted."""
        assert link.sock is not None
        self.loop.disable(link.sock.fileno())
        link.sock.close()
        link.sock = None
        self.zygotes_changed = True
        for pending in link.pending.values():
            self.loop.cancel_timer(pending.timer)
            pending.service.spawn_settled()
            if pending.stderr_fd is not None:
                os.close(pending.stderr_fd)
            self._fallback(pending.service)
        link.pending.clear()
        service = link.service
        if link.closing or self.stopping or self.zygotes.get(service) is not link:
            return
        if link.ready:
            msg_warn(f"spawn server {link.path} pid {link.pid} is gone -- restarting it")
            self.start_zygote(service)
        else:  # a bad start: try again after service_throttle_time, exec meanwhile
            msg_warn(
                f"spawn server {link.path} pid {link.pid} did not start -- fork+exec,"
                f" and again in {service.throttle_delay}s"
            )
            link.restart_timer = self.loop.request_timer(
                service.throttle_delay, lambda _loop: self._restart(link)
            )

    def _restart(self, link: ZygoteLink) -> None:
        link.restart_timer = None
        if self.zygotes.get(link.service) is link and not link.service.removed:
            self.start_zygote(link.service)

    # Death ---------------------------------------------------------------

    def reap(self) -> None:
        """Collect every dead child; log, throttle and update accounting."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            link = self.zygote_pids.pop(pid, None)
            if child is not None:
                self._child_died(child, status)
            elif link is not None:
                self._zygote_died(link, status)
            else:
                self._unclaimed(pid, status)

    def _unclaimed(self, pid: int, status: int) -> None:
        """Keep the exit status of a pid we do not know (yet), for a while.

        As a child subreaper the master inherits every orphaned descendant.
        Among them are the children of spawn servers, which may die before
        the report of their pid is read; the others (a daemon's own orphans)
        are dropped after UNCLAIMED_TIME, or when UNCLAIMED_MAX are kept."""
        now = time.monotonic()
        self.unclaimed[pid] = (status, now)
        for old, (_status, when) in list(self.unclaimed.items()):
            if len(self.unclaimed) <= UNCLAIMED_MAX and now - when < UNCLAIMED_TIME:
                break
            del self.unclaimed[old]

    def _zygote_died(self, link: ZygoteLink, status: int) -> None:
        """A spawn server was reaped; its link's EOF does the rest (see _link_lost)."""
        self._drain_stderr(link, final=True)
        how = describe_status(status)
        link.last_exit = how
        current = self.zygotes.get(link.service)
        if current is not None:  # its successor shows how it ended
            current.last_exit = how
        if link.closing or self.stopping or (os.WIFEXITED(status) and not os.WEXITSTATUS(status)):
            return
        msg_warn(f"spawn server {link.path} pid {link.pid} {how}")
        for line in _tail_lines(link.stderr_tail):
            msg_warn(f"spawn server {link.path} pid {link.pid} stderr: {line}")

    def _child_died(self, child: Child, status: int) -> None:
        service = child.service
        self._drain_stderr(child, final=True)
        service.child_gone(child)
        how = describe_status(status)
        service.last_exit = f"pid {child.pid} {how}"
        sent = (
            (self.stopping or service.removed)
            and os.WIFSIGNALED(status)
            and os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGKILL)
        )
        abnormal = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        if abnormal and not sent:
            msg_warn(f"process {service.path} pid {child.pid} {how}")
            lines = _tail_lines(child.stderr_tail)
            for line in lines:
                msg_warn(f"process {service.path} pid {child.pid} stderr: {line}")
            if lines:  # kept apart from the reason: master.state is readable by anyone
                service.last_stderr = {"pid": child.pid, "lines": lines}
            if child.use_count == 0 and not service.throttled and not self.stopping:
                reason = f"pid {child.pid} {how} before its first request"
                said = f'{reason}; last stderr line: "{lines[-1]}"' if lines else reason
                msg_warn(f"{service.path}: bad command startup -- throttling")
                msg_warn(f"{service.path}: throttling for {service.throttle_delay}s: {said}")
                service.throttle(reason)
        service.update_listen()

    def _drain_stderr(self, child: Child | ZygoteLink, final: bool = False) -> None:
        fd = child.stderr_fd
        if fd is None:
            return
        eof = False
        try:
            while True:
                data = os.read(fd, 4096)
                if not data:
                    eof = True
                    break
                child.stderr_tail += data
                del child.stderr_tail[:-STDERR_TAIL]
        except BlockingIOError:
            pass
        except OSError:
            eof = True
        if eof or final:
            self.loop.disable(fd)
            os.close(fd)
            child.stderr_fd = None

    # Signals -------------------------------------------------------------

    def signal_service(self, service: Service, signum: int) -> None:
        for pid in list(service.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def signal_all(self, signum: int) -> None:
        """Signal every child and every spawn server."""
        for pid in [*self.children, *self.zygote_pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def wait_all(self, timeout: float) -> None:
        """Reap children and spawn servers until none is left or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while (self.children or self.zygote_pids) and time.monotonic() < deadline:
            self.loop.run_once(min(0.1, max(0.0, deadline - time.monotonic())))
            self.reap()


def describe_status(status: int) -> str:
    """`exit status N` or `killed by signal N (NAME)`, from a wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status:#x}"


def _identity(path: str) -> FileIdentity | None:
    """The program file as reload compares it: device, inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _tail_lines(tail: bytearray, count: int = 3) -> list[str]:
    text = tail.decode("utf-8", "backslashreplace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-count:]
