"""The child skeleton: start-up, jail, status records and exit of every daemon the master runs.

SYNOPSIS
    from master import skeleton

    skeleton.server_main(serve, argv=None, params=(), pre_init=None,
                         post_init=None, pre_exit=None, solitary=False,
                         transports=("unix", "inet"), preload=(),
                         warm_up=())                     # never returns
    ctx: skeleton.ServerContext
        ctx.config, ctx.options, ctx.events, ctx.service_name,
        ctx.max_idle, ctx.max_use, ctx.daemon_timeout, ctx.ipc_timeout,
        ctx.mail_owner, ctx.uid, ctx.gid, ctx.queue_directory,
        ctx.data_directory, ctx.generation, ctx.listeners, ctx.fifos,
        ctx.listen_fds, ctx.use_count
        ctx.drain_time                          # seconds a drain may last (1)
        ctx.leaving                             # told to leave: draining
        ctx.status.busy(); ctx.status.idle()    # TAKEN / AVAIL, coalesced
        ctx.arm_idle_timer(); ctx.cancel_idle_timer()
        ctx.exit(status=0)                      # pre_exit once, then exit
    skeleton.run_loop(ctx, keep_going, loop_hook)
    skeleton.peer_name(sock, addr) -> str       # "1.2.3.4:25", "local pid 42"
    skeleton.peer_name_of(fd, family, addr) -> str   # the same from a descriptor
    skeleton.SKELETON_PARAMS                    # the Param rows read here

DESCRIPTION
    multi_server.py, single_server.py and trigger_server.py call
    server_main(); a daemon never calls it directly.  It does what
    Postfix's *_server_main() do, in the order docs/skeleton.md gives step
    by step ("Start-up, in order"): first, when the master exec'd the
    program as a spawn server (`PYTHON -I PROGRAM --spawner`, zygote.py), become
    one: import the `preload` modules (those the daemon imports lazily),
    make the `warm_up` calls (one-time set-up of libraries: the name
    service modules and Postfix's defaults table always, the daemon's own
    besides) and fork children on the master's request, each of which returns here
    as what an exec'd child is (fds, sys.argv, os.environ, signals) and
    goes on; then read argv, $MAIL_CONFIG and main.cf and check all of
    it, every Param row of the skeleton and of the daemon included, and
    the listeners on fds 6.. (sockets; fifos for -t fifo, in ctx.fifos)
    (each failure is fatal, exit 1, which the master throttles, before
    anything is served); logging as main.cf says (log.log_config, mode
    "daemon": postlogd's socket, connected before the jail, when
    maillog_file is set; a daemon never opens maillog_file); pre_init(ctx)
    as root; the jail (privs.chroot_uid) when started as root;
    post_init(ctx); serve(ctx), the skeleton's own accept loop; pre_exit
    and exit 0.  A daemon's own check that spans parameters raises
    ParamError(what, name) (master/errors.py) from pre_init or post_init:
    fatal, at the place that sets `name`.

    An exception that escapes a hook, a handler or the loop is caught once,
    here: logged with its traceback, exit 1 (pre_exit is not run: the
    daemon's state is unknown).

    Status records (12 bytes on fd 5) go out through ctx.status: busy()
    writes TAKEN unless already sent, idle() writes AVAIL if TAKEN was
    sent; run_loop() calls idle() when the loop is about to wait for
    work, or after MAX_BUSY_TURNS busy turns in a row, and at its end.
    Nothing is written at start-up, at accept or for greetings, nor, for
    a service whose maxproc is 1, after its first TAKEN/AVAIL pair; under
    our master (MASTER_STATUS_READY=1) one READY record goes out when
    run_loop() starts, the listeners watched.

    Leaving.  EOF on fd 5 (a reload gave the service a new status
    channel, or the master stopped or died) and a failed status write
    both mean "leave": ctx.leaving becomes true, fd 5 is closed (no
    more records: nobody reads them) and the skeleton's drain hook runs
    (ctx.drain, set by multi_server.py, single_server.py and
    trigger_server.py): stop accepting, finish the requests in hand,
    exit 0 with pre_exit; the multi-client drain and the trigger
    server's wait for accepted connections last at most ctx.drain_time
    seconds, which post_init may change (docs/skeleton.md, "Leaving: the
    drain").
    Without a drain hook: pre_exit, exit 0 at once.

SECURITY
    After the jail nothing outside queue_directory can be opened or
    imported: pre_init and module level import, open and look up what the
    daemon needs (docs/skeleton.md, "The jail: open and import before
    it").  pre_init runs as root: open there, parse untrusted data only
    after the drop.  The time zone is loaded before the jail.

DIAGNOSTICS
    Fatal errors are logged as `fatal: ...` and end the process with exit
    status 1.  A configuration error names its place: a main.cf line with
    the configuration directory (`/etc/postfix/main.cf:7: ...`), an -o
    override with its service (`service tlsmgr: -o max_idle=x: ...`);
    one without a place names the directory (`configuration /etc/postfix:
    ...`).  An unexpected exception logs `error: unexpected exception`,
    the traceback, and `fatal: ...`.

BUGS
    The `pass` transport (descriptor passing) and -D (debugger) are not
    supported; -D is taken as -d.  MAIL_DEBUG is ignored.

SEE ALSO
    multi_server.c, single_server.c, trigger_server.c, mail_params.c,
    chroot_uid.c (Postfix); docs/skeleton.md; multi_server.py,
    single_server.py, trigger_server.py, privs.py, events.py, log.py
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from master import log, privs, proto
from master.builtin import builtin_defaults
from master.config import Config, Param, config_directory
from master.errors import ConfigError
from master.events import EventLoop
from master.log import msg_error, msg_fatal, msg_info, msg_warn
from master.maillog import MaillogError

Hook = Callable[["ServerContext"], Any]
# How long an old child may finish its requests after it was told to leave: long
# enough for a request in hand, and far below the 10 s a successor may wait for a
# resource the old one still holds.
DRAIN_TIME = 1.0

# The main.cf parameters the skeleton itself reads (rows in MASTER_PARAMS).
_STRINGS = ("queue_directory", "data_directory", "mail_owner")
_TIMES = ("max_idle", "daemon_timeout", "ipc_timeout")
SKELETON_PARAMS = (
    *_STRINGS,
    *_TIMES,
    "max_use",
    "syslog_name",
    "syslog_facility",
    "maillog_file",
    "maillog_file_prefixes",
    "postlog_service_name",
    "smtputf8_enable",
)
_PEERCRED = (socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))


class StatusChannel:
    """TAKEN/AVAIL records on fd 5, alternating; see run_loop for when.

    With alone (master.cf's maxproc is 1, `-l`) the records stop after the
    first TAKEN/AVAIL pair: the master can never start a second child of the
    service, so they would tell it nothing, and the one pair shows it that
    this child started well (it never takes a healthy child for a bad start).
    busy() and idle() still keep `taken`, which run_loop reads.

    With asked (our master set MASTER_STATUS_READY=1), ready() sends one
    READY record when run_loop first turns: at a reload the master tells
    this process's predecessors to leave once it serves."""

    def __init__(
        self,
        fd: int | None,
        pid: int,
        generation: int,
        lost: Callable[[], Any],
        alone: bool = False,
        asked: bool = False,
    ) -> None:
        self.fd = fd
        self.taken = False
        self._alone = alone
        self._quiet = False  # alone, and the first pair went out
        self._lost = lost
        self._taken = proto.encode_status(pid, generation, proto.STATUS_TAKEN)
        self._avail = proto.encode_status(pid, generation, proto.STATUS_AVAIL)
        self._ready = proto.encode_status(pid, generation, proto.STATUS_READY) if asked else b""

    def ready(self) -> None:
        """Tell our master that this process serves now (once, and only when asked)."""
        record, self._ready = self._ready, b""
        if record:
            self._write(record)

    def busy(self) -> None:
        """Tell the master this process is busy (once per turn)."""
        if not self.taken:
            self.taken = True
            if not self._quiet:
                self._write(self._taken)

    def idle(self) -> None:
        """Tell the master this process is available again, if it said busy."""
        if self.taken:
            self.taken = False
            if not self._quiet:
                self._write(self._avail)
                self._quiet = self._alone

    def close(self) -> None:
        """Write no more records; close fd 5."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def _write(self, record: bytes) -> None:
        if self.fd is None:
            return
        try:
            written = os.write(self.fd, record)
        except OSError:
            written = -1
        if written != len(record):
            self._lost()


class ServerContext:
    """What hooks and skeletons share; see the module docstring."""

    def __init__(
        self,
        *,
        config: Config,
        options: proto.ChildOptions,
        events: EventLoop,
        service_name: str,
        process_name: str,
        generation: int,
        max_idle: int,
        max_use: int,
        daemon_timeout: int,
        ipc_timeout: int,
        mail_owner: str,
        uid: int | None,
        gid: int | None,
        queue_directory: str,
        data_directory: str,
        listeners: list[socket.socket],
        status_fd: int | None,  # fd 5, None with -S
        pre_exit: Hook | None,
        fifos: list[int] | None = None,  # fifo listeners (-t fifo)
    ) -> None:
        self.config = config
        self.options = options
        self.events = events
        self.service_name = service_name
        self.process_name = process_name
        self.generation = generation
        self.max_idle = max_idle
        self.max_use = max_use
        self.daemon_timeout = daemon_timeout
        self.ipc_timeout = ipc_timeout
        self.mail_owner = mail_owner
        self.uid = uid
        self.gid = gid
        self.queue_directory = queue_directory
        self.data_directory = data_directory
        self.listeners = listeners
        self.status_fd = status_fd
        self.pre_exit = pre_exit
        self.fifos = [] if fifos is None else fifos
        self.use_count = 0
        self.drain_time = DRAIN_TIME
        self.leaving = False
        # The skeleton's drain: stop accepting, finish, end the loop (see "Leaving").
        self.drain: Callable[[], Any] | None = None
        asked = os.environ.get(proto.ENV_READY) == "1"
        self.status = StatusChannel(
            status_fd, os.getpid(), generation, self.master_gone, options.alone, asked
        )
        self._idle_timer: Any = None
        self._exiting = False

    @property
    def listen_fds(self) -> list[int]:
        """Every listener's descriptor: the sockets', then the fifos'."""
        return [lsock.fileno() for lsock in self.listeners] + self.fifos

    def exit(self, status: int = 0) -> NoReturn:
        """Run pre_exit (once) and leave with `status`."""
        if not self._exiting:
            self._exiting = True
            if self.pre_exit is not None:
                try:
                    self.pre_exit(self)
                except Exception as exc:
                    _log_exception(exc)
                    status = 1
        raise SystemExit(status)

    def master_gone(self, *_args: Any) -> None:
        """Told to leave (EOF on fd 5, or a status write failed): drain, or exit."""
        if self.leaving:
            return
        self.leaving = True
        if self.status.fd is not None:
            self.events.disable(self.status.fd)
        self.status.close()
        if self.drain is None:
            if log.msg_verbose:
                msg_info("master disconnect -- exiting")
            self.exit(0)
        if log.msg_verbose:
            msg_info("master disconnect -- draining")
        self.drain()

    def arm_idle_timer(self) -> None:
        """(Re)start the max_idle countdown; nothing when max_idle is 0."""
        self.cancel_idle_timer()
        if self.max_idle > 0:
            self._idle_timer = self.events.request_timer(self.max_idle, self._idle_event)

    def cancel_idle_timer(self) -> None:
        self.events.cancel_timer(self._idle_timer)
        self._idle_timer = None

    def _idle_event(self, _loop: EventLoop) -> NoReturn:
        if log.msg_verbose:
            msg_info("idle timeout -- exiting")
        self.exit(0)


def server_main(
    serve: Callable[[ServerContext], Any],
    *,
    argv: Sequence[str] | None = None,
    params: Sequence[Param] = (),
    pre_init: Hook | None = None,
    post_init: Hook | None = None,
    pre_exit: Hook | None = None,
    solitary: bool = False,
    transports: Sequence[str] = ("unix", "inet"),
    preload: Sequence[str] = (),
    warm_up: Sequence[Callable[[], object]] = (),
) -> NoReturn:
    """Start up as described in the module docstring, run serve(ctx), exit."""
    if argv is None and proto.is_spawner_argv(sys.argv):
        from master import zygote  # only a spawn server needs it

        # Postfix's defaults table is packaged data: parsed once, by the spawn server;
        # and each child's initgroups() finds the name service modules loaded.
        warm = (builtin_defaults, privs.warm_up, *warm_up)
        zygote.serve(preload, warm_up=warm)  # returns in a forked child
    events = EventLoop()
    try:
        args = list(sys.argv if argv is None else argv)
        ctx = _start(args, events, params, solitary, transports, pre_exit)
        _run_hook(pre_init, ctx)
        _enter_jail(ctx)
        _run_hook(post_init, ctx)
        _prepare_loop(ctx)
        serve(ctx)
        ctx.exit(0)
    except Exception as exc:
        _log_exception(exc)
        raise SystemExit(1) from None


# AVAIL goes out at the latest after this many busy turns (see run_loop).
MAX_BUSY_TURNS = 32


def run_loop(ctx: ServerContext, keep_going: Callable[[], bool], loop: Hook | None) -> None:
    """Turn the event loop while keep_going().

    AVAIL follows TAKEN when the process is about to wait for work, or
    after MAX_BUSY_TURNS turns in a row with requests (why: docs/skeleton.md,
    "Status records")."""
    status, events = ctx.status, ctx.events
    status.ready()
    busy_turns = 0
    while keep_going():
        timeout = loop(ctx) if loop is not None else None
        if not status.taken:
            busy_turns = 0
            events.run_once(timeout)
        elif busy_turns < MAX_BUSY_TURNS:
            busy_turns += 1
            events.run_once(timeout, before_wait=status.idle)
        else:
            busy_turns = 0
            status.idle()
            events.run_once(timeout)
    status.idle()


def peer_name(sock: socket.socket, addr: Any) -> str:
    """A printable name for the other end of an accepted connection."""
    return peer_name_of(sock.fileno(), sock.family, addr)


def peer_name_of(fd: int | None, family: int, addr: Any) -> str:
    """peer_name() of a socket descriptor of `family` (borrowed, left open); a unix
    peer of a descriptor already closed (None) is just "local"."""
    if family == socket.AF_INET:
        return f"{addr[0]}:{addr[1]}"
    if family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}"
    if fd is None:
        return "local"
    sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
    try:
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(*_PEERCRED))
    except (OSError, struct.error):
        return "local"
    finally:
        sock.detach()
    return f"local pid {pid}"


def _log_exception(exc: BaseException) -> None:
    msg_error(f"unexpected exception: {type(exc).__name__}: {exc}")
    for line in _traceback_lines(exc):
        msg_error(f"traceback: {line}")


def _traceback_lines(exc: BaseException) -> list[str]:
    """traceback.format_exception()'s lines for exc and its chain, without source text.

    The traceback module (with linecache, tokenize and textwrap) would cost an exec'd
    child some 3 ms on its way to its first request, for source lines that a jailed
    child cannot read anyway.
    """
    lines: list[str] = []
    cause = exc.__cause__
    context = None if exc.__suppress_context__ else exc.__context__
    if cause is not None:
        lines += _traceback_lines(cause)
        lines += ["", "The above exception was the direct cause of the following exception:"]
    elif context is not None:
        lines += _traceback_lines(context)
        lines += ["", "During handling of the above exception, another exception occurred:"]
    lines.append("Traceback (most recent call last):")
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    text = str(exc)
    lines.append(f"{name}: {text}" if text else name)
    return lines


def _start(
    argv: list[str],
    events: EventLoop,
    params: Sequence[Param],
    solitary: bool,
    transports: Sequence[str],
    pre_exit: Hook | None,
) -> ServerContext:
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        events.ignore_signal(signum)
    for signum in (signal.SIGTERM, signal.SIGINT):
        events.default_signal(signum)
    process_name = os.path.basename(argv[0]) if argv else "daemon"
    log.log_init(
        process_name,
        syslog_name=os.environ.get(proto.ENV_MAIL_LOGTAG, "postfix"),
        postlog=os.environ.get(proto.ENV_POSTLOG_SERVICE, ""),
        hostname=os.environ.get(proto.ENV_POSTLOG_HOSTNAME, ""),
        stderr=True,
    )
    try:
        opts, bad_argv = proto.parse_child_argv(argv), None
    except ValueError as err:
        opts, bad_argv = proto.ChildOptions(program=process_name), err
    # Read main.cf even after a bad option, so that the complaint reaches maillog_file.
    config = _load_config(opts, params)
    if bad_argv is not None:
        msg_fatal(f"{bad_argv}; this program is started by the master (see master.cf)")
    log.msg_verbose = opts.verbose + (1 if os.environ.get(proto.ENV_MAIL_VERBOSE) else 0)
    _check_invocation(opts, solitary, transports)
    try:
        generation = proto.parse_generation(os.environ.get(proto.ENV_GENERATION) or "0")
    except ValueError:
        msg_fatal(f"bad generation: {os.environ.get(proto.ENV_GENERATION)}")
    values = _read_params(config, params)
    uid, gid = _mail_owner(values["mail_owner"])
    listeners, fifos = ([], []) if opts.stdin_client else _check_fds(opts)
    ctx = ServerContext(
        config=config,
        options=opts,
        events=events,
        service_name=opts.service,
        process_name=process_name,
        generation=generation,
        max_idle=values["max_idle"] if opts.max_idle is None else opts.max_idle,
        max_use=values["max_use"] if opts.max_use is None else opts.max_use,
        daemon_timeout=values["daemon_timeout"],
        ipc_timeout=values["ipc_timeout"],
        mail_owner=values["mail_owner"],
        uid=uid,
        gid=gid,
        queue_directory=values["queue_directory"],
        data_directory=values["data_directory"],
        listeners=listeners,
        status_fd=None if opts.stdin_client else proto.MASTER_STATUS_FD,
        pre_exit=pre_exit,
        fifos=fifos,
    )
    if log.msg_verbose:
        msg_info("daemon started")
    try:
        os.chdir(ctx.queue_directory)
    except OSError as err:
        msg_fatal(f"chdir {ctx.queue_directory}: {err.strerror}")
    return ctx


def _check_invocation(opts: proto.ChildOptions, solitary: bool, transports: Sequence[str]) -> None:
    """Postfix's checks of how the program was started; each failure is fatal."""
    if not (opts.debug or opts.stdin_client) and os.isatty(0):
        msg_fatal("do not run this command by hand")
    if not opts.stdin_client:
        if not opts.transport:
            msg_fatal("no transport type specified")
        if opts.transport not in transports:
            msg_fatal(f"unsupported transport type: {opts.transport}")
    if solitary and not opts.alone:
        msg_fatal(f"service {opts.service} requires a process limit of 1")


def _load_config(opts: proto.ChildOptions, params: Sequence[Param]) -> Config:
    """Read main.cf with the -o overrides, then log where main.cf says."""
    config_dir = config_directory(None)
    try:
        config = Config.load(config_dir, params, warn=msg_warn).with_overrides(
            opts.overrides, origin=f"service {opts.service}"
        )
        log.log_config(opts.program, config, "daemon", stderr=opts.stderr)
    except MaillogError as err:
        msg_fatal(str(err))
    except (ConfigError, ValueError) as err:
        _config_fatal(config_dir, err)
    return config


def _read_params(config: Config, params: Sequence[Param]) -> dict[str, Any]:
    """Read and check every row the skeleton and the daemon use; the first bad one is fatal."""
    try:
        config.check([*SKELETON_PARAMS, *(row.name for row in params)])
        values: dict[str, Any] = {name: config.get(name) for name in _STRINGS}
        values.update((name, config.get_time(name)) for name in _TIMES)
        values["max_use"] = config.get_int("max_use")
    except ConfigError as err:
        _config_fatal(config.config_dir, err)
    return values


def _run_hook(hook: Hook | None, ctx: ServerContext) -> None:
    """pre_init or post_init; a ConfigError it raises is fatal at the place of its parameter."""
    if hook is None:
        return
    try:
        hook(ctx)
    except ConfigError as err:
        _config_fatal(ctx.config.config_dir, ctx.config.located(err))


def _config_fatal(config_dir: str, err: Exception) -> NoReturn:
    """`/etc/postfix/main.cf:7: ...`, `service NAME: -o ...: ...`, else the directory."""
    if isinstance(err, ConfigError) and err.located:
        if err.filename and not os.path.isabs(err.filename):
            err = ConfigError(
                err.message,
                filename=os.path.join(config_dir, err.filename),
                lineno=err.lineno,
                origin=err.origin,
            )
        msg_fatal(str(err))
    msg_fatal(f"configuration {config_dir}: {err}")


def _mail_owner(name: str) -> tuple[int | None, int | None]:
    try:
        return privs.lookup_user(name)
    except ConfigError as err:
        if os.geteuid() == 0:
            msg_fatal(str(err))
        return None, None


def _check_fds(opts: proto.ChildOptions) -> tuple[list[socket.socket], list[int]]:
    """fd 5 must be open and fds 6.. must be sockets (fifos for -t fifo); the
    socket listeners, wrapped, and the fifo ones."""
    hint = "start this program through the master (master.cf), or use -S"
    try:
        os.fstat(proto.MASTER_STATUS_FD)
    except OSError:
        msg_fatal(f"status channel (fd {proto.MASTER_STATUS_FD}) is not open: {hint}")
    fifo = opts.transport == "fifo"
    listeners, fifos = [], []
    for fd in range(proto.MASTER_LISTEN_FD, proto.MASTER_LISTEN_FD + opts.listen_count):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            msg_fatal(f"listener (fd {fd}) is not open: {hint}")
        if fifo and stat.S_ISFIFO(mode):
            os.set_blocking(fd, False)
            fifos.append(fd)
            continue
        if not stat.S_ISSOCK(mode):
            msg_fatal(f"listener (fd {fd}) is not a {'fifo' if fifo else 'socket'}: {hint}")
        listener = socket.socket(fileno=fd)
        listener.setblocking(False)
        listeners.append(listener)
    return listeners, fifos


def _enter_jail(ctx: ServerContext) -> None:
    opts = ctx.options
    root = ctx.queue_directory if opts.chroot else None
    user = ctx.mail_owner if opts.unprivileged else None
    # Workaround: load the time zone now; /etc/localtime is outside the jail.
    time.tzset()
    time.localtime()
    if os.geteuid() == 0:
        privs.chroot_uid(root, user)
    elif root or user:
        skipped = [f"chroot to {root}"] if root else []
        skipped += [f"drop to {user}"] if user else []
        msg_warn(f"not started as root: no {' and no '.join(skipped)}")


def _prepare_loop(ctx: ServerContext) -> None:
    fds = [fd for fd in (3, 4, proto.MASTER_STATUS_FD) if _is_open(fd)]
    for fd in fds + ctx.listen_fds:
        os.set_inheritable(fd, False)
    if ctx.status.fd is not None:
        ctx.events.enable_read(ctx.status.fd, ctx.master_gone)
    for signum in (signal.SIGTERM, signal.SIGINT):
        ctx.events.on_signal(signum, _terminate(ctx))
    ctx.events.set_watchdog(ctx.daemon_timeout)
    ctx.arm_idle_timer()


def _terminate(ctx: ServerContext) -> Callable[[int, EventLoop], NoReturn]:
    def terminate(signum: int, _loop: EventLoop) -> NoReturn:
        if log.msg_verbose:
            msg_info(f"terminating on signal {signum}")
        ctx.exit(0)

    return terminate


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
