"""Helpers for the master's process tests: a temporary instance and a tiny test daemon.

SYNOPSIS
    from test_master_helpers import Instance, free_port, wait_until

    with Instance(master_cf="...", main_cf={"service_throttle_time": "2s"}) as inst:
        inst.cli("start").check()          # the real console script
        inst.wait_log("daemon started")
        inst.connect("private/echo")       # a socket in the queue directory

DESCRIPTION
    Instance makes a world-searchable temporary root under /tmp (etc/,
    queue/, data/, bin/, maillog) with a main.cf and master.cf, and writes
    the test daemon `testd` into bin/ (daemon_directory) with a shebang
    naming this interpreter (-S: standard library only, fast start).
    Leaving the `with` block kills every process that belongs to the
    instance (found through /proc: MAIL_CONFIG in its environment, or the
    root in its command line), waits until they are gone, and removes the
    root.  processes() is what the tests check with at the end.

    testd speaks the master's contract directly (fd 5 status records,
    GENERATION, fds 6.. listeners), without the project's skeleton, so
    these tests exercise the master alone.  Its mode is its first
    master.cf argument:

    echo [IDLE]      multi-client: each request line gets "PID GEN LINE";
                     TAKEN before, AVAIL after each; on fd 5 EOF stops
                     accepting and exits 0 once its clients are gone; exits
                     0 after IDLE seconds without clients.
    single [IDLE]    one client at a time (TAKEN at accept, AVAIL when the
                     client leaves), like single_server.
    record FILE      appends one JSON line per event (start, with argv,
                     environment and open descriptors; each trigger or
                     datagram received).
    fail             writes a line to stderr and exits 1 at once.
    exit0            exits 0 at once.

    This file has no tests of its own; pytest collects nothing from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
MINIPOSTFIX = str(VENV_BIN / "minipostfix")
WAIT = 20.0  # seconds: a hang guard, never a measurement

TESTD = r'''#!PYTHON -S
"""testd: a test service speaking the master's fd-5 contract directly."""
import json, os, select, signal, socket, struct, sys, time

WITH_ARG = ("-n", "-t", "-o", "-s", "-i", "-m")


def parse(argv):
    opts, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in WITH_ARG:
            opts.setdefault(argv[i], []).append(argv[i + 1])
            i += 2
        else:
            opts.setdefault(argv[i], []).append("")
            i += 1
    return opts, argv[i:]


# Like the project's skeleton: INT (a terminal's Ctrl-C) is handled as TERM.
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
OPTS, ARGS = parse(sys.argv[1:])
MODE = ARGS[0] if ARGS else "echo"
PID = os.getpid()
GEN = int(os.environ.get("GENERATION", "0"), 8)
TRANSPORT = OPTS.get("-t", ["unix"])[0]
COUNT = int(OPTS.get("-s", ["1"])[0])


def status(avail):
    try:
        os.write(5, struct.pack("=iIi", PID, GEN, avail))
    except OSError:
        pass  # the master went away or reloaded: fd 5 reads EOF, handled there


def master_gone():
    # Readable fd 5 means the master went away or reloaded: EOF, or a reset
    # when it closed its end with our last status records still unread.
    try:
        return os.read(5, 1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def serve_echo(idle):
    listeners = [socket.socket(fileno=6 + n) for n in range(COUNT)]
    for s in listeners:
        s.setblocking(False)
    clients, last, gone = {}, time.monotonic(), False
    while True:
        fds = ([] if gone else [5] + listeners) + list(clients)
        if gone and not clients:
            sys.exit(0)
        ready, _, _ = select.select(fds, [], [], 0.2)
        if not clients and time.monotonic() - last > idle:
            sys.exit(0)
        if 5 in ready and master_gone():
            gone = True  # stop accepting; finish the clients we have
            continue
        for r in ready:
            if r in listeners:
                try:
                    conn, _ = r.accept()
                except BlockingIOError:
                    continue
                clients[conn] = b""
            else:
                data = r.recv(4096)
                if not data:
                    del clients[r]
                    r.close()
                    last = time.monotonic()
                    continue
                status(0)
                clients[r] += data
                while b"\n" in clients[r]:
                    line, clients[r] = clients[r].split(b"\n", 1)
                    r.sendall(b"%d %d %s\n" % (PID, GEN, line))
                if clients[r] == b"W\0" or clients[r] == b"W":
                    clients[r] = b""
                    del clients[r]
                    r.close()
                status(1)
                last = time.monotonic()


def serve_single(idle):
    listener = socket.socket(fileno=6)
    listener.setblocking(False)
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([5, listener], [], [], 0.2)
        if time.monotonic() - last > idle:
            sys.exit(0)
        if 5 in ready and master_gone():
            sys.exit(0)
        if listener not in ready:
            continue
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            continue
        conn.setblocking(True)
        status(0)
        with conn:
            buf = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    conn.sendall(b"%d %d %s\n" % (PID, GEN, line))
        status(1)
        last = time.monotonic()


def serve_record(path):
    def note(event, **kw):
        with open(path, "a") as fp:
            fp.write(json.dumps(dict(event=event, pid=PID, time=time.time(), **kw)) + "\n")

    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass  # the directory listing's own descriptor
    note("start", argv=sys.argv, env=dict(os.environ), transport=TRANSPORT, fds=fds)
    listen = 6
    if TRANSPORT in ("unix", "inet", "pass"):
        listen = socket.socket(fileno=6)
        listen.setblocking(False)
    elif TRANSPORT == "unix-dgram":
        listen = socket.socket(fileno=6)
    while True:
        ready, _, _ = select.select([5, listen], [], [])
        if 5 in ready and master_gone():
            sys.exit(0)
        if listen not in ready:
            continue
        if TRANSPORT == "fifo":
            data = os.read(6, 4096)
        elif TRANSPORT == "unix-dgram":
            data = listen.recv(4096)
        else:
            try:
                conn, _ = listen.accept()
            except BlockingIOError:
                continue
            conn.settimeout(5)
            data = b""
            while True:
                chunk = conn.recv(16)
                data += chunk
                if not chunk or data.endswith(b"\0"):
                    break
            conn.close()
        status(0)
        note("data", data=data.decode("latin-1"))
        status(1)


if MODE == "fail":
    sys.stderr.write("testd: deliberate startup failure\n")
    sys.exit(1)
elif MODE == "exit0":
    sys.exit(0)
elif MODE == "echo":
    serve_echo(float(ARGS[1]) if len(ARGS) > 1 else 100)
elif MODE == "single":
    serve_single(float(ARGS[1]) if len(ARGS) > 1 else 100)
elif MODE == "record":
    serve_record(ARGS[1])
else:
    sys.stderr.write("testd: unknown mode %r\n" % MODE)
    sys.exit(2)
'''


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = WAIT,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll predicate() every 50 ms until it returns something true, and return that.

    A hang guard, never a measurement: after `timeout` seconds the test
    fails with "timed out waiting for WHAT" (and detail(), when given).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}{detail() if detail else ''}")
        time.sleep(0.05)


def processes_of(root: Path) -> list[int]:
    """Live processes (not zombies) of the instance under `root`: MAIL_CONFIG in
    their environment, or the root in their command line, names it."""
    mine = os.getpid()
    marker = str(root).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if marker in cmdline or b"MAIL_CONFIG=" + marker in environ:
            found.append(int(entry))
    return found


def free_port() -> int:
    """A TCP port that was free a moment ago (no fixed ports in tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Result:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def check(self) -> Result:
        assert self.returncode == 0, f"rc {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self

    def __repr__(self) -> str:
        return f"Result(rc={self.returncode}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class Instance:
    """A temporary minipostfix instance; see the module docstring."""

    def __init__(self, master_cf: str = "", main_cf: dict[str, str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mpfx-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.etc = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.bin = self.root / "bin"
        self.maillog = self.root / "maillog"
        for folder in (self.etc, self.bin):
            folder.mkdir(mode=0o755)
        self.main = {
            "compatibility_level": "3.6",
            "config_directory": str(self.etc),
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "daemon_directory": str(self.bin),
            "mail_owner": "postfix",
            "maillog_file": str(self.maillog),
            "inet_interfaces": "loopback-only",
        }
        self.main.update(main_cf or {})
        self.write_main_cf()
        self.write_master_cf(master_cf)
        testd = self.bin / "testd"
        testd.write_text(TESTD.replace("PYTHON", sys.executable))
        testd.chmod(0o755)

    # Configuration -----------------------------------------------------

    def write_main_cf(self, **changes: str) -> None:
        self.main.update(changes)
        text = "".join(f"{k} = {v}\n" for k, v in self.main.items())
        (self.etc / "main.cf").write_text(text)

    def write_master_cf(self, text: str) -> None:
        (self.etc / "master.cf").write_text(text)

    # Commands ------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> Result:
        proc = subprocess.run(
            [MINIPOSTFIX, "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(proc)

    def master_pid(self) -> int:
        return int((self.queue / "pid" / "master.pid").read_text().strip())

    def state(self) -> dict:
        return json.loads((self.queue / "pid" / "master.state").read_text())

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = WAIT, count: int = 1) -> list[str]:
        """Wait until `pattern` (a regex) matches `count` log lines; return them."""

        def found() -> list[str] | None:
            lines = [line for line in self.log().splitlines() if re.search(pattern, line)]
            return lines if len(lines) >= count else None

        return self.wait_for(found, f"{count} log line(s) matching {pattern!r}", timeout)

    def records(self, name: str) -> list[dict]:
        """The events a `testd record ROOT/name` service wrote."""
        try:
            text = (self.root / name).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        """wait_until(), with the instance's log in the failure message."""
        return wait_until(predicate, what, timeout, detail=lambda: f"\nlog:\n{self.log()}")

    def connect(self, name: str, timeout: float = 10) -> socket.socket:
        """A connection to a unix service (path relative to the queue directory)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(self.queue / name))
        return sock

    def children(self) -> list[int]:
        """Processes of this instance other than the master."""
        try:
            master = self.master_pid()
        except (OSError, ValueError):
            master = -1
        return [pid for pid in self.processes() if pid != master]

    # Cleanup -------------------------------------------------------------

    def processes(self) -> list[int]:
        """Every live process that belongs to this instance (not zombies)."""
        return processes_of(self.root)

    def kill_all(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"processes survive SIGKILL: {pids}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.kill_all()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
