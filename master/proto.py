"""The master/child contract, as constants and pure functions.

SYNOPSIS
    from master import proto

    proto.MASTER_FLOW_READ, proto.MASTER_FLOW_WRITE     # 3, 4
    proto.MASTER_STATUS_FD, proto.MASTER_LISTEN_FD      # 5, 6
    proto.STATUS_TAKEN, proto.STATUS_AVAIL              # 0, 1
    proto.STATUS_READY, proto.ENV_READY                 # 2, our master's serving signal
    proto.encode_status(pid, generation, avail) -> bytes
    proto.decode_status(record) -> StatusRecord
    proto.child_argv(command, service, transport, ...) -> list[str]
    proto.parse_child_argv(argv) -> ChildOptions
    proto.TRIGGER_REQ_WAKEUP                            # b"W"
    proto.spawner_argv(interpreter, program) -> [*interpreter, -I, program, SPAWNER_FLAG]
    proto.is_spawner_argv(argv) -> bool                  # exec'd as a spawn server

DESCRIPTION
    This module is the one place where the master (master.py, spawn.py)
    and the child skeletons (skeleton.py) agree on what crosses the
    fork/exec boundary, exactly as Postfix 3.7's master_proto.h and
    master_ent.c define it:

    File descriptors: 0 /dev/null, 1 /dev/null (the master's own stdout
    in the foreground, as Postfix's `master -s` gives, so that postlogd
    can write maillog_file = /dev/stdout), 2 a pipe to the master (whose
    last lines it keeps for its diagnostics; the master's own stderr in
    the foreground; Postfix gives /dev/null), 3 and 4 the flow-control
    pipe, 5 the child end of the service's status socketpair, 6 onward
    the service's listeners.

    Status records: 12 bytes in host byte order, struct { int pid;
    unsigned gen; int avail; }, gen being the GENERATION environment
    variable parsed as octal.  Ours alone: with MASTER_STATUS_READY=1 in its
    environment (only our master sets it) a child sends one record with avail
    STATUS_READY when it starts serving (its listeners watched), so that
    at a reload the master tells the old children to leave only once
    their successor takes connections.  Postfix's master would warn about
    an unknown status, so a child never sends it unasked.

    Environment: MAIL_CONFIG, MAIL_LOGTAG, GENERATION (octal); with
    maillog_file set, POSTLOG_SERVICE and POSTLOG_HOSTNAME; from our
    master, MASTER_STATUS_READY.

    Argument vector, in Postfix's order: command [-l|-z] [-n name]
    -t type [-d] [-v] [-u] [-c] [-o stress=] [-s n] args...
    A service's program exec'd as its spawn server (zygote.py) is run
    by its #! interpreter as `PYTHON -I PROGRAM --spawner` instead.

    No sockets, no clock, no third-party imports.

DIAGNOSTICS
    parse_child_argv() and decode_status() raise ValueError with a
    message naming the offending argument or record.

SEE ALSO
    src/master/master_proto.h, master_ent.c, multi_server.c (Postfix)
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from master.config import split_nameval

MASTER_FLOW_READ = 3
MASTER_FLOW_WRITE = 4
MASTER_STATUS_FD = 5
MASTER_LISTEN_FD = 6

STATUS_TAKEN = 0
STATUS_AVAIL = 1
STATUS_READY = 2  # ours: serving now (asked for by ENV_READY)
STATUS_FORMAT = "=iIi"
STATUS_SIZE = struct.calcsize(STATUS_FORMAT)  # 12

ENV_MAIL_CONFIG = "MAIL_CONFIG"
ENV_MAIL_LOGTAG = "MAIL_LOGTAG"
ENV_GENERATION = "GENERATION"
ENV_MAIL_VERBOSE = "MAIL_VERBOSE"
ENV_MAIL_DEBUG = "MAIL_DEBUG"
ENV_READY = "MASTER_STATUS_READY"  # "1": send one STATUS_READY record when serving
# With maillog_file set: where postlogd listens, and the host name of records
# (a child logs there before it has read main.cf).
ENV_POSTLOG_SERVICE = "POSTLOG_SERVICE"
ENV_POSTLOG_HOSTNAME = "POSTLOG_HOSTNAME"

# A wake-up trigger: the master writes TRIGGER_REQ_WAKEUP then b"\0", as
# two separate writes, on a fresh connection (unix, inet, pass); a fifo
# gets the "W" alone.
TRIGGER_REQ_WAKEUP = b"W"

TRANSPORTS = ("inet", "unix", "unix-dgram", "fifo", "pass")

SPAWNER_FLAG = "--spawner"

# Postfix's multi_server getopt string: "cdDi:lm:n:o:s:St:uvVz".
_FLAGS = set("cdDlSuvVz")
_WITH_ARG = set("imnost")


class StatusRecord(NamedTuple):
    """One decoded status record."""

    pid: int
    generation: int
    avail: int


def encode_status(pid: int, generation: int, avail: int) -> bytes:
    """Return the 12-byte record a child writes on MASTER_STATUS_FD."""
    return struct.pack(STATUS_FORMAT, pid, generation & 0xFFFFFFFF, avail)


def decode_status(record: bytes) -> StatusRecord:
    """Decode one 12-byte status record; ValueError on a partial one."""
    if len(record) != STATUS_SIZE:
        raise ValueError(f"partial status update: {len(record)} bytes")
    pid, gen, avail = struct.unpack(STATUS_FORMAT, record)
    return StatusRecord(pid, gen, avail)


def parse_generation(text: str | None) -> int:
    """GENERATION is written with %o by the master; ValueError if not octal digits."""
    if not text or not text.isdigit() or any(c in "89" for c in text):
        raise ValueError(f"bad generation: {text!r}")
    return int(text, 8)


def format_generation(generation: int) -> str:
    return format(generation, "o")


def child_argv(
    command: str,
    service: str,
    transport: str,
    *,
    maxproc: int,
    unpriv: bool,
    chroot: bool,
    verbose: bool = False,
    debug: bool = False,
    stress: str | None = None,
    listen_count: int = 1,
    args: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """Build the argument vector the master gives a child, in Postfix's order.

    argv[0] is the bare command field; the program run is
    $daemon_directory/command.  `-n service` appears only when the
    service name differs from basename(command).
    """
    argv = [command]
    if maxproc == 1:
        argv.append("-l")
    elif maxproc == 0:
        argv.append("-z")
    if service != command.rsplit("/", 1)[-1]:
        argv += ["-n", service]
    argv += ["-t", transport]
    if debug:
        argv.append("-d")
    if verbose:
        argv.append("-v")
    if unpriv:
        argv.append("-u")
    if chroot:
        argv.append("-c")
    if stress is not None:
        argv += ["-o", f"stress={stress}"]
    if listen_count > 1:
        argv += ["-s", str(listen_count)]
    argv += list(args)
    return argv


def spawner_argv(interpreter: list[str], program: str) -> list[str]:
    """The argv the master execs to get a service's spawn server: the program's #!
    interpreter (with its one option, if any), isolated (-I), running the program in
    spawner mode; the program sees sys.argv == [program, SPAWNER_FLAG]."""
    return [*interpreter, "-I", program, SPAWNER_FLAG]


def is_spawner_argv(argv: list[str]) -> bool:
    """True for the argv of a program exec'd as a spawn server (see spawner_argv)."""
    return len(argv) == 2 and argv[1] == SPAWNER_FLAG


class ChildOptions:
    """What a child skeleton learns from its argument vector."""

    __slots__ = (
        "program",
        "service",
        "transport",
        "alone",
        "zero_limit",
        "unprivileged",
        "chroot",
        "debug",
        "verbose",
        "stderr",
        "stdin_client",
        "listen_count",
        "max_idle",
        "max_use",
        "overrides",
        "args",
    )

    def __init__(self, program: str = "") -> None:
        self.program = program
        self.service = ""
        self.transport = ""
        self.alone = False  # -l: maxproc is 1
        self.zero_limit = False  # -z: maxproc is 0
        self.unprivileged = False  # -u: drop to mail_owner
        self.chroot = False  # -c: chroot to queue_directory
        self.debug = False
        self.verbose = 0
        self.stderr = False  # -V: also log to stderr
        self.stdin_client = False  # -S: serve one client on stdin/stdout
        self.listen_count = 1
        self.max_idle: int | None = None  # -i
        self.max_use: int | None = None  # -m
        self.overrides: list[tuple[str, str]] = []
        self.args: list[str] = []

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"ChildOptions({fields})"


def parse_child_argv(argv: list[str]) -> ChildOptions:
    """Parse a child's argv like the multi_server getopt loop.

    Options stop at the first non-option argument (or "--"); the rest are
    the service's own arguments.  Raises ValueError for an unknown option,
    a missing option argument or a bad -o/-s/-i/-m value.
    """
    opts = ChildOptions(program=argv[0].rsplit("/", 1)[-1] if argv else "")
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            flag = arg[j]
            if flag in _WITH_ARG:
                value = arg[j + 1 :]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise ValueError(f"option requires an argument -- '{flag}'")
                    value = argv[i]
                _apply_option(opts, flag, value)
                break
            if flag not in _FLAGS:
                raise ValueError(f"invalid option -- '{flag}'")
            _apply_flag(opts, flag)
            j += 1
        i += 1
    opts.args = list(argv[i:])
    if not opts.service:
        opts.service = opts.program
    return opts


def _apply_flag(opts: ChildOptions, flag: str) -> None:
    attr = {
        "c": "chroot",
        "d": "debug",
        "D": "debug",
        "l": "alone",
        "S": "stdin_client",
        "u": "unprivileged",
        "V": "stderr",
        "z": "zero_limit",
    }.get(flag)
    if attr:
        setattr(opts, attr, True)
    elif flag == "v":
        opts.verbose += 1


def _apply_option(opts: ChildOptions, flag: str, value: str) -> None:
    if flag == "n":
        opts.service = value
    elif flag == "t":
        opts.transport = value
    elif flag == "o":
        try:
            opts.overrides.append(split_nameval(value))
        except ValueError as err:
            raise ValueError(f'invalid "-o {value}" option value: {err}') from None
    elif flag in "ims":
        if not value.isdigit():
            raise ValueError(f"-{flag}: bad number: {value!r}")
        if flag == "s":
            opts.listen_count = int(value)
        elif flag == "i":
            opts.max_idle = int(value)
        else:
            opts.max_use = int(value)
