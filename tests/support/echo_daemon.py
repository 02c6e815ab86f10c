"""The echo daemon: a test service on the multi_server, single_server or trigger_server skeleton.

SYNOPSIS
    from support.echo_daemon import write_daemon_script

    write_daemon_script(inst.bin / "echo", "multi")    # "single", "trigger"; returns the path
    inst.write_master_cf("echo unix - n n - 0 echo\\n")

DESCRIPTION
    write_daemon_script() writes an executable script whose #! line is
    this Python and which runs daemon_main(kind): an echo service with
    its own parameters (ECHO_PARAMS, echo_*) and hooks that leave traces
    in echo_trace_file ("pre_init euid=N PID", "post_init euid=N PID",
    "pre_exit PID", "loop_done PID"; a relative echo_trace_file is a
    ParamError from pre_init).  The script's one sys.path line
    names the tests folder: the master starts its children with a clean
    environment, so nothing else would let the script import this module.

    Echo protocol (one command per line): greeting "$echo_greeting\\n";
    "quit" -> "bye\\n" then close; "big N" -> N bytes of "x" and "\\n";
    "sleep S" -> sleeps S seconds, then "slept\\n"; "later S" (multi
    only) -> "later\\n" after S seconds, from a timer, the lines after it
    answered after it; "crash" -> an unexpected exception; "argv" and
    "environ" -> the process's sys.argv and os.environ as one JSON line;
    "pid" -> the process id that answers; "random" -> 32 hex digits from
    the `random` module (the PRNG state a process has); anything else is
    echoed back echo_count times.  write_daemon_script(..., handover=True)
    makes a multi_server daemon that hands its connections to its
    successor when it drains.  On multi_server, EchoHandler follows the
    skeleton's flow-control contract: it answers lines while the output
    has room (always one) and holds the rest back.

    On trigger_server ("trigger"), each message is traced as
    "trigger uses=N b'DATA' PID" (N: the uses before it); the message
    "crash" raises an unexpected exception.

    Spawn servers: the command name `spawned-echo` is registered in the
    entry-point group minipostfix.spawners by the distribution
    tests/minipostfix_test_daemons-0.dist-info (tests/ is on the venv's
    import path), so the master runs bin/spawned-echo, an echo daemon
    script, through a spawn server, and bin/echo by fork+exec.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

from master.config import Param
from master.errors import ParamError

TESTS = Path(__file__).resolve().parents[1]
SPAWNED_ECHO = "spawned-echo"  # the command name registered for a spawn server

# The echo daemon's own parameters (its "Param table").
ECHO_PARAMS = (
    Param("echo_greeting", "hello", doc="First line sent to each client."),
    Param("echo_count", "1", "int", 1, 1000, doc="Copies of each echoed line."),
    Param("echo_trace_file", "", doc="File (opened before the jail) for hook traces."),
    Param("echo_persistent", "no", "bool", doc="post_init sets max_idle and max_use to 0."),
    Param("echo_loop_work", "0", "int", 0, doc="Loop turns the loop hook asks for at once."),
    Param("echo_pre_exit_crash", "no", "bool", doc="pre_exit raises an exception."),
    Param("echo_drain_time", "0s", "time", 0, doc="post_init sets ctx.drain_time (0: keep it)."),
)


def write_daemon_script(path: Path | str, kind: str = "multi", **options: Any) -> Path:
    """An executable echo daemon at `path` (kind "multi", "single", "trigger"); returns its path."""
    path = Path(path)
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from support import echo_daemon\n"
        f"echo_daemon.daemon_main({kind!r}, **{options!r})\n"
    )
    path.chmod(0o755)
    return path


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
    if line in (b"argv", b"environ"):
        value = sys.argv if line == b"argv" else dict(os.environ)
        return json.dumps(value).encode() + b"\n"
    if line == b"pid":
        return b"%d\n" % os.getpid()
    if line == b"random":
        return b"%032x\n" % random.getrandbits(128)
    if line == b"warmed":  # the process that ran the warm-up, "none" when none did
        return b"%s\n" % str(state["warmed_by"]).lower().encode()
    return (line + b"\n") * state["count"]


def _trace(state: dict[str, Any], text: str) -> None:
    if state.get("trace_fd") is not None:
        os.write(state["trace_fd"], f"{text} {os.getpid()}\n".encode())


def daemon_main(kind: str, solitary: bool = False, handover: bool = False) -> None:
    """The program run by the scripts install_daemon() writes."""
    from master import multi_server, single_server, trigger_server

    state: dict[str, Any] = {"lost": 0, "trace_fd": None, "warmed_by": None}

    def warm_up() -> None:  # a spawn server's, before it forks
        state["warmed_by"] = os.getpid()

    def pre_init(ctx: Any) -> None:
        # Opened as root, before the jail: the path is outside it.
        path = ctx.config.get("echo_trace_file")
        if path and not os.path.isabs(path):
            # A hook's own check: the skeleton reports it at the place that sets the name.
            raise ParamError(f"not an absolute path: {path}", "echo_trace_file")
        if path:
            state["trace_fd"] = os.open(path, os.O_WRONLY | os.O_APPEND)
        state["greeting"] = ctx.config.get("echo_greeting").encode() + b"\n"
        state["count"] = ctx.config.get_int("echo_count")
        state["loop_work"] = ctx.config.get_int("echo_loop_work")
        _trace(state, f"pre_init euid={os.geteuid()}")

    def post_init(ctx: Any) -> None:
        if ctx.config.get_bool("echo_persistent"):
            ctx.max_idle = ctx.max_use = 0
        if ctx.config.get_time("echo_drain_time"):
            ctx.drain_time = ctx.config.get_time("echo_drain_time")
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

    def trigger(data: bytes, ctx: Any) -> None:
        if data == b"crash":
            raise RuntimeError("crash requested by the trigger")
        _trace(state, f"trigger uses={ctx.use_count} {data!r}")

    hooks = {"params": ECHO_PARAMS, "pre_init": pre_init, "post_init": post_init}
    hooks["pre_exit"] = pre_exit
    if kind == "trigger":
        trigger_server.main(trigger, loop=loop, solitary=solitary, **hooks)
    if kind == "multi":
        multi_server.main(
            lambda conn: EchoHandler(conn, state),
            loop=loop,
            solitary=solitary,
            handover=handover,
            warm_up=(warm_up,),
            **hooks,
        )
    elif kind == "single":
        single_server.main(service, **hooks)
    raise SystemExit(f"unknown daemon kind {kind!r}")
