"""A fake master: places a child's descriptors as Postfix's master does, and reads its status.

SYNOPSIS
    from support.fake_master import FakeMaster

    fm = FakeMaster(inst, "echo", maxproc=1)   # inst: a LabInstance with bin/echo
    child = fm.spawn()                          # posix_spawn, fds 3-6
    fm.reload()                                 # a new status channel: old children drain
    sock = fm.greeted()                         # connected, greeting b"hello\\n" read
    fm.send(b"W")                               # a datagram, or a write to the fifo
    fm.read_status()                            # StatusRecord(pid, gen, avail)
    child.wait()                                # exit status, or -signal
    fm.close()                                  # every child killed and reaped

DESCRIPTION
    FakeMaster places a child's descriptors as Postfix's master does: 3
    and 4 a flow-control pipe, 5 the child end of a status socketpair,
    6.. the listeners (unix sockets in queue/private/, 127.0.0.1 with
    transport="inet", a datagram socket in queue/public/ with
    transport="unix-dgram", a fifo in queue/public/ opened read-write as
    the master opens it with transport="fifo"), with os.posix_spawn and
    POSIX_SPAWN_DUP2; 0 is
    /dev/null (or a given tty), 1 and 2 a file (Child.stderr_text()).
    Environment: daemon_env() (PATH, MAIL_CONFIG, MAIL_LOGTAG=postfix,
    POSTLOG_SERVICE=queue/public/postlog), and GENERATION (octal).  argv
    comes from master.proto.child_argv(), so it is exactly what the real
    master gives.  spawn(run_as=USER) runs the
    child through setpriv as that user (root only); can_run_as() says
    whether that user can run this Python at all.

    Child is one spawned process: wait() (a hang guard: fails after
    WAIT seconds), alive(), kill(), and its /proc status and root.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import select
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from master import proto
from support.instance import LabInstance
from support.sockets import recv_line
from support.waiting import WAIT

SETPRIV = shutil.which("setpriv")


def can_run_as(user: str) -> bool:
    """Whether this Python can import the skeleton as `user` (needs root and setpriv)."""
    if os.geteuid() != 0 or SETPRIV is None:
        return False
    pw = pwd.getpwnam(user)
    argv = [SETPRIV, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    argv += [sys.executable, "-c", "import master.skeleton"]
    return os.waitstatus_to_exitcode(os.waitpid(os.posix_spawn(argv[0], argv, {}), 0)[1]) == 0


def daemon_env(inst: LabInstance) -> dict[str, str]:
    """The environment the master gives a child (GENERATION aside)."""
    env = {
        "PATH": "/usr/bin:/bin",
        proto.ENV_MAIL_CONFIG: str(inst.etc),
        proto.ENV_MAIL_LOGTAG: "postfix",
        proto.ENV_POSTLOG_SERVICE: str(inst.queue / "public" / "postlog"),
    }
    if "PYTHONPATH" in os.environ:  # children import what the tests import
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


class Child:
    """One spawned child: pid, pidfd, exit status, /proc views."""

    def __init__(self, pid: int, stderr_path: str) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.stderr_path = stderr_path
        self.returncode: int | None = None

    def wait(self, timeout: float = WAIT) -> int:
        """Exit status (negative: killed by that signal); fails after `timeout`."""
        if self.returncode is None:
            ready, _, _ = select.select([self.pidfd], [], [], timeout)
            if not ready:
                raise AssertionError(f"child {self.pid} still running after {timeout}s")
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def alive(self) -> bool:
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            self._reap()
        return self.returncode is None

    def _reap(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self.pidfd)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def proc_status(self) -> dict[str, str]:
        with open(f"/proc/{self.pid}/status") as fp:
            return dict(line.rstrip("\n").split(":\t", 1) for line in fp if ":\t" in line)

    def proc_root(self) -> str:
        return os.readlink(f"/proc/{self.pid}/root")

    def stderr_text(self) -> str:
        with open(self.stderr_path, errors="replace") as fp:
            return fp.read()


class FakeMaster:
    """The master's side of one service: listeners, status channel, flow pipe."""

    def __init__(
        self,
        inst: LabInstance,
        command: str = "echo",
        *,
        service: str | None = None,
        transport: str = "unix",
        maxproc: int = 1,
        unpriv: bool = False,
        chroot: bool = False,
        listen_count: int = 1,
        args: Sequence[str] = (),
        generation: int = 0o17,
    ) -> None:
        self.inst = inst
        self.command = command
        self.service = service or command
        self.transport = transport
        self.generation = generation
        self.children: list[Child] = []
        self.addresses: list[Any] = []
        self.listeners = [self._listen(n) for n in range(listen_count)]
        self.status, self._status_child = socket.socketpair()
        self.status.setblocking(False)
        self._flow = os.pipe()
        self.argv = proto.child_argv(
            command,
            self.service,
            transport,
            maxproc=maxproc,
            unpriv=unpriv,
            chroot=chroot,
            listen_count=listen_count,
            args=list(args),
        )

    def _listen(self, n: int) -> Any:
        """A listener: a socket, or (fifo) a file object; both have fileno() and close()."""
        if self.transport == "inet":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.addresses.append(sock.getsockname())
        elif self.transport == "fifo":
            path = os.path.join(self.inst.queue, "public", f"{self.service}{n or ''}")
            os.mkfifo(path, 0o622)
            self.addresses.append(path)
            return open(os.open(path, os.O_RDWR | os.O_NONBLOCK), "rb", buffering=0)
        elif self.transport == "unix-dgram":
            path = os.path.join(self.inst.queue, "public", f"{self.service}{n or ''}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            os.chmod(path, 0o666)
            self.addresses.append(path)
            sock.setblocking(False)
            return sock
        else:
            path = os.path.join(self.inst.queue, "private", f"{self.service}{n or ''}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            os.chmod(path, 0o666)
            self.addresses.append(path)
        sock.listen(4096)
        sock.setblocking(False)
        return sock

    def spawn(
        self,
        *,
        argv: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: int | None = None,
        run_as: str | None = None,
    ) -> Child:
        """Start the child with fds 3-6 in place; run_as needs root and setpriv."""
        path = str(self.inst.bin / self.command)
        argv = list(self.argv if argv is None else argv)
        program = path
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            assert SETPRIV, "setpriv is needed to run a child as another user"
            program = SETPRIV
            argv = [
                "setpriv",
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--clear-groups",
                "--",
                path,
                *argv[1:],
            ]
        base_env = daemon_env(self.inst)
        base_env[proto.ENV_GENERATION] = proto.format_generation(self.generation)
        base_env.update(env or {})
        stderr_path = os.path.join(self.inst.root, f"stderr.{len(self.children)}")
        targets = [
            (self._flow[0], proto.MASTER_FLOW_READ),
            (self._flow[1], proto.MASTER_FLOW_WRITE),
            (self._status_child.fileno(), proto.MASTER_STATUS_FD),
        ]
        targets += [(s.fileno(), proto.MASTER_LISTEN_FD + n) for n, s in enumerate(self.listeners)]
        if stdin is not None:
            targets.append((stdin, 0))
        # Workaround: a source may sit on another's target number (the test
        # process has no reserved fds 3-6); move every source above them first.
        high = [fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 64) for src, _ in targets]
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_OPEN, 1, stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        if stdin is None:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        for fd, (_, dst) in zip(high, targets, strict=True):
            actions.append((os.POSIX_SPAWN_DUP2, fd, dst))
        try:
            pid = os.posix_spawn(program, argv, base_env, file_actions=actions)
        finally:
            for fd in high:
                os.close(fd)
        child = Child(pid, stderr_path)
        self.children.append(child)
        return child

    def connect(self, n: int = 0, timeout: float = WAIT) -> socket.socket:
        family = socket.AF_INET if self.transport == "inet" else socket.AF_UNIX
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.addresses[n])
        return sock

    def send(self, data: bytes, n: int = 0) -> None:
        """One message to a unix-dgram or fifo listener, as a client sends it."""
        if self.transport == "fifo":
            fd = os.open(self.addresses[n], os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, self.addresses[n])

    def greeted(self, n: int = 0, greeting: bytes = b"hello\n") -> socket.socket:
        """Connect to listener n and check the echo daemon's greeting."""
        sock = self.connect(n)
        assert recv_line(sock) == greeting
        return sock

    def read_status(self, timeout: float = WAIT) -> proto.StatusRecord:
        """The next 12-byte record; fails after `timeout` without one."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < proto.STATUS_SIZE:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.status], [], [], left)[0]:
                raise AssertionError(f"no status record within {timeout}s (have {data!r})")
            chunk = self.status.recv(proto.STATUS_SIZE - len(data))
            if not chunk:
                raise AssertionError(f"status channel closed (have {data!r})")
            data += chunk
        return proto.decode_status(data)

    def pending_status(self) -> bytes:
        """Whatever status bytes are waiting now, without blocking."""
        try:
            return self.status.recv(4096)
        except BlockingIOError:
            return b""

    def close_status(self) -> None:
        """What a master exit or reload looks like to the child: EOF on fd 5."""
        self.status.close()
        self._status_child.close()

    def reload(self) -> None:
        """What the master does at a reload: a new status channel (EOF on the old one's fd 5)
        and a new generation, for the children spawned from now on."""
        self.close_status()
        self.status, self._status_child = socket.socketpair()
        self.status.setblocking(False)
        self.generation += 1

    def close(self) -> None:
        for child in self.children:
            if child.alive():
                child.kill()
            child.wait()
        for sock in (*self.listeners, self.status, self._status_child):
            sock.close()
        for fd in self._flow:
            os.close(fd)
        for path in self.addresses:
            if isinstance(path, str) and os.path.exists(path):
                os.unlink(path)
