"""Test plumbing for child processes: a fake master and tiny echo daemons.

SYNOPSIS
    import harness

    with harness.Lab() as lab:
        inst = lab.instance(max_idle="100s")          # config, queue, data, daemon dirs
        inst.install_daemon("echo", kind="multi")     # $daemon_directory/echo
        fm = lab.master(inst, "echo", maxproc=1)      # listener, status pair, flow pipe
        # or both at once: inst, fm = lab.echo("single", {"max_use": "2"}, transport="inet")
        child = fm.spawn()                            # posix_spawn, fds 3-6
        sock = fm.greeted()                           # connected, greeting b"hello\\n" read
        fm.read_status()                              # StatusRecord(pid, gen, avail)
        child.wait()                                  # exit status, or -signal
    # every child is killed and reaped, every directory removed

DESCRIPTION
    FakeMaster places a child's descriptors as Postfix's master does: 3 and
    4 a flow-control pipe, 5 the child end of a status socketpair, 6.. the
    listeners, with os.posix_spawn and POSIX_SPAWN_DUP2; 0 is /dev/null
    (or a given tty), 1 and 2 a file (Child.stderr_text()).  Environment:
    MAIL_CONFIG, MAIL_LOGTAG=postfix, GENERATION (octal).  argv comes from
    master.proto.child_argv(), so it is exactly what the real master gives.

    Instance is a temporary installation under /tmp (mode 0755, so that
    mail_owner can search it): etc/main.cf, queue/ (with private/),
    data/, libexec/ (daemon_directory) and the maillog file.

    install_daemon() (or write_daemon_script(path, kind) for any folder)
    writes an executable script into daemon_directory
    whose #! line is this Python, and which runs daemon_main() below: an
    echo service on the multi_server or single_server skeleton, with test
    parameters (echo_*) and hooks that leave traces in echo_trace_file.
    The master's own tests reuse these scripts.

    Echo protocol (one command per line): greeting "$echo_greeting\\n";
    "quit" -> "bye\\n" then close; "big N" -> N bytes of "x" and "\\n";
    "sleep S" -> sleeps S seconds, then "slept\\n"; "later S" (multi
    only) -> "later\\n" after S seconds, from a timer, the lines after it
    answered after it; "crash" -> an unexpected exception; anything else
    is echoed back.

    Hang guards: every wait has a generous deadline (WAIT seconds) and
    fails the test with a message instead of hanging; nothing asserts on
    how long something took.
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
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from master import proto
from master.config import Param

WAIT = 20.0  # seconds: a hang guard, never a measurement
HERE = os.path.dirname(os.path.abspath(__file__))
SETPRIV = shutil.which("setpriv")

# The echo daemon's own parameters (its "Param table").
ECHO_PARAMS = (
    Param("echo_greeting", "hello", doc="First line sent to each client."),
    Param("echo_count", "1", "int", 1, 1000, doc="Copies of each echoed line."),
    Param("echo_trace_file", "", doc="File (opened before the jail) for hook traces."),
    Param("echo_persistent", "no", "bool", doc="post_init sets max_idle and max_use to 0."),
    Param("echo_loop_work", "0", "int", 0, doc="Loop turns the loop hook asks for at once."),
    Param("echo_pre_exit_crash", "no", "bool", doc="pre_exit raises an exception."),
)


def write_daemon_script(path: str, kind: str = "multi", **options: Any) -> str:
    """An executable echo daemon at `path` (kind "multi" or "single"); returns path."""
    with open(path, "w") as fp:
        fp.write(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {HERE!r})\n"
            "import harness\n"
            f"harness.daemon_main({kind!r}, **{options!r})\n"
        )
    os.chmod(path, 0o755)
    return path


class Instance:
    """A temporary configuration + queue + data + daemon directory tree."""

    def __init__(self, **main_cf: str) -> None:
        self.root = tempfile.mkdtemp(prefix="mpfx-child-", dir="/tmp")
        os.chmod(self.root, 0o755)
        self.config_dir = os.path.join(self.root, "etc")
        self.queue_dir = os.path.join(self.root, "queue")
        self.data_dir = os.path.join(self.root, "data")
        self.daemon_dir = os.path.join(self.root, "libexec")
        self.maillog = os.path.join(self.root, "maillog")
        self.trace = os.path.join(self.root, "trace")
        for path in (self.config_dir, self.queue_dir, self.data_dir, self.daemon_dir):
            os.mkdir(path, 0o755)
        os.mkdir(os.path.join(self.queue_dir, "private"), 0o755)
        for path in (self.maillog, self.trace):
            open(path, "w").close()
            os.chmod(path, 0o666)
        self.main_cf = {
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "daemon_directory": self.daemon_dir,
            "mail_owner": "postfix",
            "maillog_file": self.maillog,
            "echo_trace_file": self.trace,
        }
        self.write_main_cf(**main_cf)

    def write_main_cf(self, **params: str) -> None:
        self.main_cf.update(params)
        text = "".join(f"{name} = {value}\n" for name, value in self.main_cf.items())
        with open(os.path.join(self.config_dir, "main.cf"), "w") as fp:
            fp.write(text)

    def install_daemon(self, name: str = "echo", kind: str = "multi", **options: Any) -> str:
        """Write $daemon_directory/name running daemon_main(kind, **options)."""
        return write_daemon_script(os.path.join(self.daemon_dir, name), kind, **options)

    def log_text(self) -> str:
        with open(self.maillog, errors="replace") as fp:
            return fp.read()

    def trace_lines(self) -> list[str]:
        with open(self.trace) as fp:
            return fp.read().splitlines()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def can_run_as(user: str) -> bool:
    """Whether this Python can import the skeleton as `user` (needs root and setpriv)."""
    if os.geteuid() != 0 or SETPRIV is None:
        return False
    pw = pwd.getpwnam(user)
    argv = [SETPRIV, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    argv += [sys.executable, "-c", "import master.skeleton"]
    return os.waitstatus_to_exitcode(os.waitpid(os.posix_spawn(argv[0], argv, {}), 0)[1]) == 0


def daemon_env(inst: Instance) -> dict[str, str]:
    """The environment the master gives a child (GENERATION aside)."""
    env = {
        "PATH": "/usr/bin:/bin",
        proto.ENV_MAIL_CONFIG: inst.config_dir,
        proto.ENV_MAIL_LOGTAG: "postfix",
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
        inst: Instance,
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

    def _listen(self, n: int) -> socket.socket:
        if self.transport == "inet":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.addresses.append(sock.getsockname())
        else:
            path = os.path.join(self.inst.queue_dir, "private", f"{self.service}{n or ''}")
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
        path = os.path.join(self.inst.daemon_dir, self.command)
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


class Lab:
    """Owns instances and fake masters; closing it kills and reaps every child."""

    def __init__(self) -> None:
        self._instances: list[Instance] = []
        self._masters: list[FakeMaster] = []

    def instance(self, **main_cf: str) -> Instance:
        inst = Instance(**main_cf)
        self._instances.append(inst)
        return inst

    def master(self, inst: Instance, command: str = "echo", **options: Any) -> FakeMaster:
        fm = FakeMaster(inst, command, **options)
        self._masters.append(fm)
        return fm

    def echo(
        self, kind: str = "multi", main_cf: dict[str, str] | None = None, **options: Any
    ) -> tuple[Instance, FakeMaster]:
        """An instance with the echo daemon installed, and its fake master (not started)."""
        inst = self.instance(**(main_cf or {}))
        inst.install_daemon("echo", kind)
        return inst, self.master(inst, "echo", **options)

    def spawn_echo(
        self, kind: str, main_cf: dict[str, str] | None = None, **options: Any
    ) -> tuple[Instance, FakeMaster, Child]:
        """echo(), then its first child: (instance, fake master, child)."""
        inst, fm = self.echo(kind, main_cf, **options)
        return inst, fm, fm.spawn()

    def close(self) -> None:
        for fm in self._masters:
            fm.close()
        for inst in self._instances:
            inst.cleanup()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def recv_line(sock: socket.socket) -> bytes:
    """Read up to and including the next newline (or EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    """Read until EOF."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# The echo daemon -------------------------------------------------------


class EchoHandler:
    """multi_server handler: line-based echo with a few test commands, on the
    skeleton's flow-control contract: it answers lines while the output has
    room (always one), holds the rest back, and "later S" is a late reply."""

    def __init__(self, conn: Any, state: dict[str, Any]) -> None:
        self.conn = conn
        self.state = state
        self.buffer = b""
        self.waiting = False

    def connection_made(self) -> bytes:
        return self.state["greeting"]

    def data_received(self, data: bytes) -> bytes:
        self.buffer += data
        return self.resume()

    def resume(self) -> bytes:
        out = []
        room = self.conn.room
        closing: list[int] = []
        while b"\n" in self.buffer and not closing:
            if out and room <= 0:
                self.conn.hold()
                break
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.startswith(b"later "):
                self._later(float(line.split()[1]))
                break
            reply = echo_command(line, self.state, lambda: closing.append(1))
            out.append(reply)
            room -= len(reply)
        if closing:
            self.conn.close_after_write()
        return b"".join(out)

    def _later(self, delay: float) -> None:
        """Reply "later" after `delay` seconds; the lines after it wait."""
        self.waiting = True
        self.conn.pause()

        def reply(_loop: Any) -> None:
            self.waiting = False
            self.conn.write(b"later\n")
            self.conn.hold()

        self.conn.ctx.events.request_timer(delay, reply)

    @property
    def between_requests(self) -> bool:
        return not self.buffer and not self.waiting

    def connection_lost(self) -> None:
        self.state["lost"] += 1


def echo_command(line: bytes, state: dict[str, Any], close: Any) -> bytes:
    words = line.split()
    if line == b"quit":
        close()
        return b"bye\n"
    if words[:1] == [b"big"]:
        return b"x" * int(words[1]) + b"\n"
    if words[:1] == [b"sleep"]:
        time.sleep(float(words[1]))
        return b"slept\n"
    if line == b"crash":
        raise RuntimeError("crash requested by the client")
    return (line + b"\n") * state["count"]


def _trace(state: dict[str, Any], text: str) -> None:
    if state.get("trace_fd") is not None:
        os.write(state["trace_fd"], f"{text} {os.getpid()}\n".encode())


def daemon_main(kind: str, solitary: bool = False) -> None:
    """The program run by the scripts install_daemon() writes."""
    from master import multi_server, single_server

    state: dict[str, Any] = {"lost": 0, "trace_fd": None}

    def pre_init(ctx: Any) -> None:
        # Opened as root, before the jail: the path is outside it.
        path = ctx.config.get("echo_trace_file")
        if path:
            state["trace_fd"] = os.open(path, os.O_WRONLY | os.O_APPEND)
        state["greeting"] = ctx.config.get("echo_greeting").encode() + b"\n"
        state["count"] = ctx.config.get_int("echo_count")
        state["loop_work"] = ctx.config.get_int("echo_loop_work")
        _trace(state, f"pre_init euid={os.geteuid()}")

    def post_init(ctx: Any) -> None:
        if ctx.config.get_bool("echo_persistent"):
            ctx.max_idle = ctx.max_use = 0
        _trace(state, f"post_init euid={os.geteuid()}")

    def pre_exit(ctx: Any) -> None:
        _trace(state, "pre_exit")
        if ctx.config.get_bool("echo_pre_exit_crash"):
            raise RuntimeError("pre_exit crash requested")

    def loop(ctx: Any) -> float | None:
        if state["loop_work"] > 0:
            state["loop_work"] -= 1
            if state["loop_work"] == 0:
                _trace(state, "loop_done")
            return 0
        return None

    def service(conn: socket.socket, ctx: Any) -> None:
        conn.sendall(state["greeting"])
        rfile = conn.makefile("rb")
        closed = []
        for line in rfile:
            conn.sendall(echo_command(line.rstrip(b"\n"), state, lambda: closed.append(1)))
            if closed:
                break

    hooks = {"params": ECHO_PARAMS, "pre_init": pre_init, "post_init": post_init}
    hooks["pre_exit"] = pre_exit
    if kind == "multi":
        multi_server.main(
            lambda conn: EchoHandler(conn, state), loop=loop, solitary=solitary, **hooks
        )
    elif kind == "single":
        single_server.main(service, **hooks)
    raise SystemExit(f"unknown daemon kind {kind!r}")
