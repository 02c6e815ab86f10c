"""minipostfix: start, stop and inspect the mail system (Postfix's postfix(1)).

SYNOPSIS
    minipostfix [-c config_dir] command [arguments]

    start            check the configuration, start the master in the background
    start-fg         the same, in the foreground (Ctrl-C stops it)
    stop             stop the master and its children, wait until they are gone
    abort            stop at once, without waiting
    reload           re-read main.cf and master.cf
    status [-v|--json]
                     running or not; -v adds the master's view and status
                     providers' figures, --json the same as a JSON document
    check            configuration syntax, directories, ownership, mail_owner
    logrotate        rename maillog_file, have postlogd reopen it, compress it
    create-instance NAME=VALUE...
                     copy the embedded main.cf and master.cf into config_dir
                     and apply the edits (config_directory is set to config_dir;
                     a maillog_file outside maillog_file_prefixes adds its
                     directory to them, unless the edits set them too);
                     render the systemd unit config_dir/minipostfix.service

DESCRIPTION
    The configuration directory is -c DIR, else $MAIL_CONFIG, else
    /etc/postfix; a relative one is made absolute.  Messages go to stderr
    as `minipostfix: [warning: |fatal: ]text`, and for start, stop,
    abort, reload, status and logrotate also to the mail log (with
    maillog_file set: through postlogd, or appended to the file when
    postlogd cannot take them, as Postfix's postlog(1) does); they follow
    postfix-script's words with "minipostfix" for "Postfix".  A
    maillog_file outside maillog_file_prefixes is fatal, except for stop
    and status, which warn and log on stderr only.  "Running" means that
    the master holds the lock on $queue_directory/pid/master.pid.

    check is also fatal when maillog_file is set and master.cf has no
    public unix-dgram service named $postlog_service_name (postlogd),
    as postfix-script's check-fatal.

    logrotate is `postfix logrotate`: fatal `empty 'NAME' parameter value
    - logfile rotation failed` for an empty maillog_file,
    maillog_file_compressor or maillog_file_rotate_suffix, fatal `not
    rotating 'PATH'` for a name under /dev/; otherwise it renames
    maillog_file to PATH.SUFFIX (maillog_file_rotate_suffix through
    strftime), sends SIGHUP to the master when it runs (postlogd leaves
    and the next record starts one that opens a new file), waits a
    second and then for no process to hold the renamed file open (up to
    ROTATE_WAIT seconds), and runs `maillog_file_compressor PATH.SUFFIX`
    (gzip: PATH.SUFFIX.gz).  Any failure is fatal `logfile 'PATH'
    rotation failed: REASON`.

    start runs `check` first, then starts the master as a subprocess
    (`python -I -m master.control -c DIR master --ready-fd N`, from `/`:
    isolated, so that no file in the caller's current directory and no
    PYTHONPATH is imported by the root master) which detaches
    through python-daemon's DaemonContext (detach_process=True,
    signal_map={}, umask 077, pidfile=None, prevent_core=False so that
    children keep the core limit as under Postfix, files_preserve=[the
    readiness pipe]) before it opens anything else: config files, logs,
    locks, listeners and the event loop are all made after the detach, so
    nothing else needs preserving (DaemonContext closes every descriptor
    not in files_preserve), and the pid in the lock files is the
    daemon's own.
    The master writes one NUL byte on the pipe once it listens, or the
    text of its fatal error.  start exits 0 on the byte; 1 on an error,
    on EOF or after 100 s, saying why.

    start-fg runs the master in this process: no DaemonContext, umask 077,
    log lines on stderr as well as in the mail log, and the caller's
    process group, so the terminal's Ctrl-C (SIGINT) stops it cleanly.
    Under systemd (Type=notify, $NOTIFY_SOCKET set) it tells the service
    manager READY=1 once the master listens, RELOADING=1 and READY=1
    around a reload, STOPPING=1 when it stops (master/sdnotify.py).

    stop sends SIGTERM and waits up to 10 s for the master to be gone
    (the master itself waits 5 s for its children, then kills them); if
    the master is still there it is killed with SIGKILL together with the
    children listed in its state file.  Pids may be reused: stop takes a
    pidfd of each process before the TERM, and only of a process whose
    start time (/proc/PID/stat field 22) is the one the state file
    recorded, so the KILL reaches those processes or none.  abort sends
    SIGQUIT (the master TERMs its children and exits at once) and does
    not wait.  reload checks both files, then sends SIGHUP.

    check refuses (fatal) what make_directories() would refuse: a queue
    directory not owned by root or writable by group or others, or an
    unsafe directory above it or above data_directory (trust.py).  It
    warns, in postfix-script's words (`not owned by root: PATH`, `group
    or other writable: PATH`), about code that root runs and others could
    change: daemon_directory, each master.cf command in it (links
    resolved) and the interpreter of its `#!` line, the directories on
    the import path and the files of this distribution's packages, and
    the directories above each.  When not run as root, whoever runs us
    may own them too.

    status prints on stderr, whether or not it is a terminal (so scripts
    see it too; postfix-script prints only to a terminal), `the
    minipostfix mail system is running: PID: N` (exit 0) or
    `the minipostfix mail system is not running` (exit 1).  status -v
    adds, on stdout, the master's state file (pid/master.state: services,
    children, spawns, throttle state and its reason; as root also the
    children's last stderr lines, from pid/master.stderr) and the figures
    of every status provider registered in the entry point group
    `minipostfix.status`; status --json prints the same report as one JSON
    document (docs/status.schema.json) instead.  Both are renderings of one
    statusreport.StatusReport (statusview.py makes the lines).

    When not run as root, start and start-fg warn once: the master and its
    children keep the caller's identity (no chroot, no privilege drop).

DIAGNOSTICS
    Exit status 0 on success, 1 on failure, as postfix-script.  Errors
    name the file and line (`fatal: master.cf:12: ...`) or the directory.

SEE ALSO
    postfix(1), conf/postfix-script (Postfix); master.py, instance.py,
    statusview.py, docs/operating.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from master import embedded, instance, maillog, privs, trust
from master import master as resident
from master.config import MAIN_CF, Config, config_directory, split_nameval
from master.errors import ConfigError
from master.events import EventLoop
from master.log import log_config, log_init, msg_fatal_lines, msg_info, msg_warn
from master.maillog import MaillogError
from master.mastercf import ServiceEntry
from master.sdnotify import Notifier
from master.statusreport import MasterStatus, StateError, StatusReport, collect_providers
from master.statusview import report_lines

NAME = "minipostfix"
# How `start` runs the master, as root: isolated (-I: neither the current directory
# nor PYTHONPATH and the other PYTHON* variables decide what it imports), from /.
MASTER_PYTHON = (sys.executable, "-I", "-m")
READY_TIMEOUT = 100.0
STOP_TIMEOUT = 10.0
ROTATE_WAIT = 10.0
USAGE = (
    "start, start-fg, stop, abort, reload, status [-v|--json], check, logrotate, "
    "create-instance NAME=VALUE..."
)


class Fatal(Exception):
    """A fatal message for the user: printed as `minipostfix: fatal: TEXT`, exit 1."""


def say(text: str) -> None:
    msg_info(text)


# Whether the master runs ------------------------------------------------


def pid_file(config: Config) -> str:
    return os.path.join(config.get("queue_directory"), instance.PID_FILE)


def running_pid(config: Config) -> int | None:
    """The master's pid while it holds its lock, else None (Postfix's master -t)."""
    path = pid_file(config)
    try:
        return instance.locked_pid(path)
    except OSError as err:
        raise Fatal(f"open {path}: {err.strerror}") from None


def require_running(config: Config) -> int:
    pid = running_pid(config)
    if pid is None:
        raise Fatal("the minipostfix mail system is not running")
    if pid <= 0:
        raise Fatal(f"{pid_file(config)}: no process ID in the locked file")
    return pid


def read_state(config: Config) -> dict[str, Any]:
    return instance.read_state(os.path.join(config.get("queue_directory"), instance.STATE_FILE))


# check -------------------------------------------------------------------


def check(config_dir: str) -> Config:
    """Postfix's check-fatal + check-warn: Fatal on errors, warnings printed."""
    try:
        config, entries = instance.read_configuration(config_dir)
    except ConfigError as err:
        raise Fatal(str(err)) from None
    name = config.get("mail_owner")
    root = os.geteuid() == 0
    try:
        if privs.lookup_user(name, missing_ok=not root) is None:
            msg_warn(f"mail_owner account {name} does not exist")
    except ConfigError as err:
        raise Fatal(str(err)) from None
    check_maillog(config, entries)
    daemon_dir = config.get("daemon_directory")
    if not os.path.isdir(daemon_dir):
        msg_warn(f"daemon_directory does not exist: {daemon_dir}")
    for entry in entries:
        path = os.path.join(daemon_dir, entry.command)
        if not os.access(path, os.X_OK):
            msg_warn(f"{entry.filename}:{entry.lineno}: command not executable: {path}")
    # Code that root runs and others could change: warned about, as postfix-script's
    # check-warn does for daemon_directory.
    for warning in trust.code_warnings(trust.code_paths(daemon_dir, (e.command for e in entries))):
        msg_warn(warning)
    for spec in instance.layout(config, instance.lookup_owner(config)):
        check_directory(spec, modes=root)
    return config


def check_maillog(config: Config, entries: list[ServiceEntry]) -> None:
    """maillog_file inside its prefixes, and a postlogd service to write it."""
    path = config.get("maillog_file")
    if not path:
        return
    try:
        maillog.check_prefixes(path, config.get_list("maillog_file_prefixes"))
    except MaillogError as err:
        raise Fatal(str(err)) from None
    name = config.get("postlog_service_name")
    if not any(entry.identity == (f"public/{name}", "unix-dgram") for entry in entries):
        raise Fatal(
            f"missing '{name}' service in master.cf (maillog_file is set): "
            f"add '{name} unix-dgram n - n - 1 postlogd'"
        )


def check_directory(spec: instance.DirSpec, modes: bool) -> None:
    """instance.check_directory(), with a Fatal for an unsafe directory or a non-directory."""
    try:
        instance.check_directory(spec, modes)
    except ConfigError as err:
        raise Fatal(str(err)) from None


# Commands ----------------------------------------------------------------


def warn_not_root() -> None:
    if os.geteuid() != 0:
        msg_warn(
            "not running as root: the master and its children keep your identity "
            "(no chroot, no privilege drop)"
        )


def cmd_start(config_dir: str, _args: argparse.Namespace) -> int:
    config = _before_start(config_dir)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        launcher = subprocess.Popen(
            [*MASTER_PYTHON, "master.control", "-c", config_dir, "master"]
            + ["--ready-fd", str(write_fd)],
            pass_fds=[write_fd],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    except OSError as err:
        raise Fatal(f"cannot run {sys.executable}: {err.strerror}") from None
    finally:
        os.close(write_fd)
    try:
        answer = wait_ready(read_fd, READY_TIMEOUT)
    finally:
        os.close(read_fd)
        launcher.wait()
    if answer == b"\0":
        return 0
    if answer is None:
        pid = running_pid(config)
        if pid and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise Fatal(f"mail system startup failed: no answer within {READY_TIMEOUT:.0f} s")
    lines = [line.strip() for line in answer.decode("utf-8", "replace").splitlines()]
    lines = [line.removeprefix("fatal: ") for line in lines if line]
    where = config.get("maillog_file") or "syslog"
    lines.append(f"mail system startup failed -- see {where} for details")
    raise Fatal("\n".join(lines))


def wait_ready(fd: int, timeout: float) -> bytes | None:
    """The master's answer: b"\\0", its error text, b"" on EOF, None on timeout."""
    loop = EventLoop()
    got = bytearray()
    state = {"done": False, "timeout": False}

    def readable(_fd: int, _loop: EventLoop) -> None:
        data = os.read(fd, 4096)
        got.extend(data)
        if not data or data == b"\0":
            state["done"] = True

    def expired(_loop: EventLoop) -> None:
        state["done"] = state["timeout"] = True

    loop.enable_read(fd, readable)
    loop.request_timer(timeout, expired)
    try:
        while not state["done"]:
            loop.run_once(None)
    finally:
        loop.close()
    if state["timeout"]:
        return None
    return bytes(got)


def _before_start(config_dir: str) -> Config:
    config = check(config_dir)
    init_log(config)
    warn_not_root()
    if running_pid(config) is not None:
        raise Fatal(instance.ALREADY_RUNNING)
    say("starting the minipostfix mail system")
    return config


def cmd_start_fg(config_dir: str, _args: argparse.Namespace) -> int:
    notifier = Notifier.from_environment()  # systemd's Type=notify; children never see it
    _before_start(config_dir)
    return resident.run(config_dir, foreground=True, notifier=notifier)


def cmd_master(config_dir: str, args: argparse.Namespace) -> int:
    """Internal: the detached master, started by `start`."""
    import daemon  # python-daemon; its single owner (tests/unit/test_layering.py)

    context = daemon.DaemonContext(
        detach_process=True,
        signal_map={},
        umask=0o077,
        pidfile=None,
        prevent_core=False,
        working_directory="/",
        files_preserve=[args.ready_fd],
    )
    with context:
        return resident.run(config_dir, foreground=False, ready_fd=args.ready_fd)


def cmd_stop(config_dir: str, _args: argparse.Namespace) -> int:
    config = _load(config_dir)
    init_log(config, strict=False)
    pid = require_running(config)
    held = hold_processes(pid, read_state(config), lambda: running_pid(config))
    try:
        say("stopping the minipostfix mail system")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        next_note = time.monotonic() + 1
        while running_pid(config) is not None:
            if time.monotonic() > deadline:
                msg_warn("stopping the minipostfix mail system with force")
                for process in held:
                    process.kill()
                break
            if time.monotonic() > next_note:
                say("waiting for the minipostfix mail system to terminate")
                next_note += 1
            time.sleep(0.05)
    finally:
        for process in held:
            process.close()
    return 0


class Held:
    """A process named by pid and start time, held by a pidfd where the system has them.

    kill() reaches that process or nothing: through the pidfd (taken
    while the start time still matched), or, without pidfds, by pid only
    while the start time still matches.  A pid read from a file may have
    been reused by an unrelated process since (instance.process_starttime).
    """

    def __init__(self, pid: int, starttime: int, fd: int | None) -> None:
        self.pid, self.starttime, self.fd = pid, starttime, fd

    @classmethod
    def take(cls, pid: int, starttime: int | None) -> Held | None:
        """Hold pid if it is still the process that started at `starttime`, else None."""
        if starttime is None:
            return None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        except OSError:  # no pidfds here: check again at kill()
            fd = None
        if instance.process_starttime(pid) != starttime:  # after the pidfd: it is that one
            if fd is not None:
                os.close(fd)
            return None
        return cls(pid, starttime, fd)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signal.SIGKILL)
            elif instance.process_starttime(self.pid) == self.starttime:
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def hold_processes(
    master: int, state: dict[str, Any], master_pid: Callable[[], int | None]
) -> list[Held]:
    """The master, the children and spawn servers its state file lists, each still the
    process recorded.

    The master is held only while it still holds its lock afterwards
    (master_pid()); a child only when its start time is the one in the
    state file (entries without one are skipped).
    """
    held = [Held.take(master, instance.process_starttime(master))]
    if held[0] is not None and master_pid() != master:
        held[0].close()
        held = []
    for service in state.get("services", []):
        server = service.get("spawn_server") or {}
        for child in [*service.get("children", []), server]:
            if isinstance(child.get("pid"), int):
                held.append(Held.take(child["pid"], child.get("starttime")))
    return [process for process in held if process is not None]


def cmd_abort(config_dir: str, _args: argparse.Namespace) -> int:
    config = _load(config_dir)
    init_log(config)
    pid = require_running(config)
    say("aborting the minipostfix mail system")
    os.kill(pid, signal.SIGQUIT)
    return 0


def cmd_reload(config_dir: str, _args: argparse.Namespace) -> int:
    config = _load(config_dir)
    init_log(config)
    pid = require_running(config)
    try:
        instance.read_configuration(config_dir)
    except ConfigError as err:
        raise Fatal(f"{err}; not reloading, the running configuration stays") from None
    say("refreshing the minipostfix mail system")
    os.kill(pid, signal.SIGHUP)
    return 0


def cmd_status(config_dir: str, args: argparse.Namespace) -> int:
    config = _load(config_dir)
    init_log(config, strict=False)
    pid = running_pid(config)
    if pid is None:
        say("the minipostfix mail system is not running")
        status = 1
    else:
        say(f"the minipostfix mail system is running: PID: {pid}")
        status = 0
    if args.verbose or args.json:
        report = status_report(config, pid)
        if args.json:
            text = json.dumps(report.to_json(), indent=1) + "\n"
        else:
            text = "".join(line + "\n" for line in report_lines(report))
        sys.stdout.write(text)
        sys.stdout.flush()
    return status


def status_report(config: Config, pid: int | None) -> StatusReport:
    """The report of status -v and --json: the state file while the master runs."""
    master = None
    if pid is not None:
        try:
            queue = config.get("queue_directory")
            stderr = instance.read_state(os.path.join(queue, instance.STDERR_FILE))  # root only
            master = MasterStatus.from_state(read_state(config), stderr)
        except StateError as err:
            msg_warn(f"{instance.STATE_FILE}: {err}")
    return StatusReport(time.time(), pid, master, collect_providers(config.config_dir))


def cmd_check(config_dir: str, _args: argparse.Namespace) -> int:
    try:
        check(config_dir)
    except Fatal as err:
        raise Fatal(f"{err}\nminipostfix integrity check failed!") from None
    return 0


def cmd_logrotate(config_dir: str, _args: argparse.Namespace) -> int:
    config = _load(config_dir)
    init_log(config)
    values = {}
    for name in ("maillog_file", "maillog_file_compressor", "maillog_file_rotate_suffix"):
        values[name] = config.get(name)
        if not values[name]:
            raise Fatal(f"empty '{name}' parameter value - logfile rotation failed")
    path = values["maillog_file"]
    if path.startswith("/dev/"):
        raise Fatal(f"not rotating '{path}'")
    try:
        rotated = maillog.rotate(path, values["maillog_file_rotate_suffix"])
        pid = running_pid(config)
        if pid is not None and pid > 0:
            os.kill(pid, signal.SIGHUP)
        time.sleep(1)
        _wait_closed(rotated, ROTATE_WAIT)
        _compress(values["maillog_file_compressor"], rotated)
    except MaillogError as err:
        raise Fatal(f"logfile '{path}' rotation failed: {err}") from None
    except OSError as err:
        raise Fatal(f"logfile '{path}' rotation failed: {err.strerror or err}") from None
    return 0


def _wait_closed(path: str, timeout: float) -> None:
    """Until no process we can see holds `path` open (the old postlogd), or timeout."""
    deadline = time.monotonic() + timeout
    while _held_open(path) and time.monotonic() < deadline:
        time.sleep(0.1)


def _held_open(path: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                        return True
    return False


def _compress(compressor: str, path: str) -> None:
    """`compressor path`, as postfix-script runs it; MaillogError with its output."""
    try:
        proc = subprocess.run(
            [compressor, path], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
    except OSError as err:
        raise MaillogError(f"{compressor}: {err.strerror}") from None
    if proc.returncode != 0:
        output = " ".join((proc.stderr + proc.stdout).split()) or f"exit status {proc.returncode}"
        raise MaillogError(output)


def cmd_create_instance(config_dir: str, args: argparse.Namespace) -> int:
    edits: list[tuple[str, str]] = []
    for item in args.edits:
        try:
            edits.append(split_nameval(item))
        except ValueError as err:
            raise Fatal(f'bad argument "{item}": {err} (expected NAME=VALUE)') from None
    edits.append(("config_directory", config_dir))
    try:
        source = embedded.embedded_directory()
    except FileNotFoundError as err:
        raise Fatal(str(err)) from None
    try:
        os.makedirs(config_dir, 0o755, exist_ok=True)
        os.chmod(config_dir, 0o755)
        for name in embedded.NAMES:
            target = os.path.join(config_dir, name)
            shutil.copyfile(os.path.join(source, name), target + ".tmp")
            os.chmod(target + ".tmp", 0o644)
            os.replace(target + ".tmp", target)
    except OSError as err:
        raise Fatal(f"{err.filename or config_dir}: {err.strerror}") from None
    from master.postconf_edit import edit_main_cf

    try:
        edit_main_cf(os.path.join(config_dir, MAIN_CF), edits)
        cover = _cover_maillog(config_dir, [name for name, _value in edits])
        if cover:
            edit_main_cf(os.path.join(config_dir, MAIN_CF), cover)
    except (ConfigError, OSError) as err:
        raise Fatal(str(err)) from None
    from master.systemd_unit import write_unit

    try:
        write_unit(config_dir)
    except ValueError as err:
        raise Fatal(f"{embedded.UNIT}: {err}") from None
    except OSError as err:
        raise Fatal(f"{err.filename or embedded.UNIT}: {err.strerror}") from None
    return 0


def _cover_maillog(config_dir: str, edited: list[str]) -> list[tuple[str, str]]:
    """The edit that adds maillog_file's directory to maillog_file_prefixes, when
    the new maillog_file is outside them and the caller did not set them."""
    config = Config.load(config_dir)
    path = config.get("maillog_file")
    if not path or "maillog_file_prefixes" in edited:
        return []
    try:
        maillog.check_prefixes(path, config.get_list("maillog_file_prefixes"))
    except MaillogError:
        prefixes = config.get("maillog_file_prefixes")
        return [("maillog_file_prefixes", f"{prefixes}, {os.path.dirname(path)}")]
    return []


# Plumbing ----------------------------------------------------------------


def _load(config_dir: str) -> Config:
    try:
        return Config.load(config_dir)
    except ConfigError as err:
        raise Fatal(str(err)) from None


def init_log(config: Config, *, strict: bool = True) -> None:
    """Messages on stderr and in the mail log, as postfix-script through postlog.

    A maillog_file outside maillog_file_prefixes is fatal; with strict=False
    (stop, status) it is a warning and messages go to stderr only."""
    try:
        log_config(NAME, config, "fallback", stderr=True, tool=True)
    except (MaillogError, ValueError) as err:
        if strict:
            raise Fatal(str(err)) from None
        log_init(NAME, maillog_file="/dev/stderr", tool=True)
        msg_warn(str(err))


COMMANDS = {
    "start": cmd_start,
    "start-fg": cmd_start_fg,
    "stop": cmd_stop,
    "abort": cmd_abort,
    "reload": cmd_reload,
    "status": cmd_status,
    "check": cmd_check,
    "logrotate": cmd_logrotate,
    "create-instance": cmd_create_instance,
    "master": cmd_master,
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as postfix(1) reports them: one fatal line, exit 1."""

    def error(self, message: str) -> NoReturn:
        if "arguments are required" in message:
            message = "missing command"
        print(f"{NAME}: fatal: {message}. Usage: {NAME} [-c DIR] {USAGE}", file=sys.stderr)
        raise SystemExit(1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog=NAME, description="Control the minipostfix mail system.")
    parser.add_argument("-c", dest="config_dir", metavar="DIR", help="configuration directory")
    parser.add_argument("command", metavar="command", help=USAGE)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sub = _Parser(prog=f"{NAME} {args.command}")
    if args.command == "status":
        sub.add_argument("-v", dest="verbose", action="store_true")
        sub.add_argument("--json", action="store_true")
    elif args.command == "create-instance":
        sub.add_argument("edits", nargs="*", metavar="NAME=VALUE")
    elif args.command == "master":
        sub.add_argument("--ready-fd", type=int, default=None)
    sub.parse_args(args.rest, namespace=args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command != "master":  # the master opens its own log after the detach
        log_init(NAME, stderr=True, tool=True)
    command = COMMANDS.get(args.command)
    if command is None:
        print(
            f"{NAME}: fatal: unknown command: '{args.command}'. Usage: {NAME} {USAGE}",
            file=sys.stderr,
        )
        return 1
    config_dir = os.path.abspath(config_directory(args.config_dir))
    try:
        return command(config_dir, args)
    except Fatal as err:
        msg_fatal_lines(str(err).split("\n"))  # one `fatal:` line per line, exit 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
