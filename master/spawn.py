"""Child process birth and death: spawn, reap, signal, throttle on a bad start.

SYNOPSIS
    from master.spawn import Spawner
    from master.avail import Service

    spawner = Spawner(loop, env, foreground=False)
    service = Service(entry, path, argv, listen_fds, loop, throttle_delay)
    service.update_listen()
    if service.can_spawn(): spawner.spawn(service)
    spawner.reap()                      # after SIGCHLD was recorded
    spawner.signal_service(service, signal.SIGTERM)
    spawner.signal_all(signal.SIGTERM); spawner.wait_all(timeout)
    describe_status(wait_status) -> "exit status 1" | "killed by signal 9 (SIGKILL)"

DESCRIPTION
    The only module that creates or waits for processes (Postfix's
    master_spawn.c).  What a service counts (status records,
    availability, when to listen, throttling) is master/avail.py.

    spawn() runs $daemon_directory/COMMAND through os.posix_spawn with
    DUP2 file actions that place the descriptors proto.py lists (fd 1: the
    master's own stdout in the foreground, as Postfix's `master -s`, so
    that postlogd can write maillog_file = /dev/stdout; fd 2: a pipe whose
    last lines the master keeps when detached, its own stderr in the
    foreground).  The environment is the master's cleaned one plus
    GENERATION, a counter over all forks, in octal.  Signals the master
    ignores (SIGPIPE, SIGXFSZ) are reset to their defaults in the child.
    A service under stress gets `stress=yes` in argv for STRESS_TIME
    seconds after it reached its process limit.

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
    during shutdown, are not logged.

SECURITY
    Children are started as root with the master's cleaned environment;
    the child skeleton drops privileges itself (privs.py).  A child that
    is a `#!` Python script (a console script, editable or wheel install:
    no interpreter flags) imports first from its own resolved directory,
    never from the current one, and sees no PYTHONPATH or other PYTHON*
    variable unless import_environment names it; `check` warns when
    that directory or the script is not root's alone (trust.py).

DIAGNOSTICS
    Warnings as Postfix words them: `process PATH pid N exit status S`,
    `process PATH pid N killed by signal N`, `PATH: bad command startup
    -- throttling`, `master_spawn: fork: ERROR -- throttling`, followed by
    one line that says why.

BUGS
    The stderr tail exists only for detached masters; in the foreground
    the child's stderr is the terminal and the reason has no last lines.

SEE ALSO
    src/master/master_spawn.c (Postfix); avail.py
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import time

from master import proto
from master.avail import STRESS_TIME, Child, Service
from master.events import EventLoop
from master.log import msg_warn

__all__ = ["STDERR_TAIL", "Spawner", "describe_status"]

STDERR_TAIL = 2048  # bytes of a child's stderr kept for diagnostics


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

    def close(self) -> None:
        for fd in (self.devnull, *self.flow_pipe):
            with contextlib.suppress(OSError):
                os.close(fd)

    # Birth ---------------------------------------------------------------

    def spawn(self, service: Service) -> Child | None:
        """Start one child of `service`; on failure throttle it and return None."""
        service.wanted = False
        if not service.can_spawn():
            return None
        if service.stress and not service.limit_ok(1):
            service.stress_expire = time.monotonic() + STRESS_TIME
        self.generation += 1
        env = dict(self.env)
        env[proto.ENV_GENERATION] = proto.format_generation(self.generation)
        err_r = err_w = None
        if not self.foreground:
            err_r, err_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            pid = self._posix_spawn(service, env, err_w)
        except OSError as err:
            for fd in (err_r, err_w):
                if fd is not None:
                    os.close(fd)
            self._spawn_failed(service, err)
            return None
        if err_w is not None:
            os.close(err_w)
        child = Child(pid, self.generation, service, stderr_fd=err_r, avail=-1)
        self.children[pid] = child
        service.children[pid] = child
        service.spawns += 1
        if err_r is not None:
            self.loop.enable_read(err_r, lambda fd, _loop: self._drain_stderr(child))
        service.avail_more(child)  # a new child counts as available at once
        return child

    def _posix_spawn(self, service: Service, env: dict[str, str], err_w: int | None) -> int:
        argv = list(service.argv)
        if service.stress and "stress=" in argv:
            under = service.stress_expire > time.monotonic()
            argv[argv.index("stress=")] = "stress=yes" if under else "stress="
        # fd n of the child <- sources[n]: 0 /dev/null, 1 /dev/null or
        # (foreground) our own stdout, where postlogd writes maillog_file =
        # /dev/stdout, as under `master -s`; 2 the stderr pipe or (foreground)
        # our own stderr, 3-4 the flow pipe, 5 the status channel, 6.. the
        # listeners.
        status_fd = service.child_status_fd
        if status_fd is None:
            raise OSError(errno.EBADF, f"service {service.name}: no status channel")
        stdout = 1 if self.foreground else self.devnull
        sources = [self.devnull, stdout, 2 if err_w is None else err_w]
        sources += [*self.flow_pipe, status_fd, *service.listen_fds]
        # Sanity check: no source may be overwritten by an earlier DUP2 action.
        # The master reserves fds 0-6, so this only moves the listeners of a
        # service with several addresses, or fds of a process that did not.
        floor = len(sources)
        moved = [fd if fd >= floor else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
                 for fd in sources]  # fmt: skip
        try:
            actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(moved)]
            return os.posix_spawn(
                service.path,
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
            if child is None:
                continue  # not ours (e.g. reaped for posix_spawn by glibc)
            self._child_died(child, status)

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

    def _drain_stderr(self, child: Child, final: bool = False) -> None:
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
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def wait_all(self, timeout: float) -> None:
        """Reap children until none is left or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while self.children and time.monotonic() < deadline:
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


def _tail_lines(tail: bytearray, count: int = 3) -> list[str]:
    text = tail.decode("utf-8", "backslashreplace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-count:]
