"""Postfix-style logging: msg_info, msg_warn, msg_error, msg_fatal, msg_panic.

SYNOPSIS
    from master import log

    log.log_init(process_name, syslog_name="postfix", facility="mail",
                 maillog_file="", stderr=False)
    log.msg_info(text); log.msg_warn(text); log.msg_error(text)
    log.msg_fatal(text)          # logs, then raises SystemExit(1)
    log.msg_panic(text)          # logs, then raises SystemExit(2)
    log.msg_verbose              # int, the -v count; callers test it
    log.set_process_name(name)
    log.log_reopen()             # after fork: keep the fd, fix the pid

DESCRIPTION
    Every line is tagged `syslog_name/process_name[pid]: ` as Postfix
    does, followed by `warning: `, `error: `, `fatal: ` or `panic: ` for
    those severities (nothing for info); a text of several lines is
    logged as that many tagged lines, e.g.

        postfix/tlsmgr[4970]: warning: bogus seed length "0" in "seed" request

    Destinations, in this order of preference:

    maillog_file   When set, lines are appended to that file, prefixed with
                   a `Mmm dd hh:mm:ss hostname ` timestamp as postlogd(8)
                   writes them.  The file is opened once, with O_APPEND,
                   by log_init(); the descriptor survives chroot, so a
                   jailed daemon keeps logging.  One write(2) per line.
    syslog         Otherwise, syslog(3) with facility syslog_facility,
                   opened with LOG_NDELAY so the socket is connected
                   before any chroot.
    stderr         In addition, when log_init(stderr=True): `start-fg`,
                   `-V`, and command-line tools.  Command-line tools print
                   `process_name: warning: text` there, as postconf does.

    log_init() may be called again (e.g. after the configuration is read);
    the previous destination is closed.

DIAGNOSTICS
    A maillog_file that cannot be opened is reported on stderr, and
    logging falls back to syslog.

SEE ALSO
    src/util/msg.c, msg_output.c, src/global/maillog_client.c (Postfix)
"""

from __future__ import annotations

import os
import socket
import sys
import syslog
import time
from typing import NoReturn

_FACILITIES: dict[str, int] = {
    "auth": syslog.LOG_AUTH,
    "cron": syslog.LOG_CRON,
    "daemon": syslog.LOG_DAEMON,
    "kern": syslog.LOG_KERN,
    "lpr": syslog.LOG_LPR,
    "mail": syslog.LOG_MAIL,
    "news": syslog.LOG_NEWS,
    "syslog": syslog.LOG_SYSLOG,
    "user": syslog.LOG_USER,
    "uucp": syslog.LOG_UUCP,
    **{f"local{n}": getattr(syslog, f"LOG_LOCAL{n}") for n in range(8)},
}

msg_verbose = 0


class _State:
    process_name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    syslog_name = "postfix"
    maillog_fd: int | None = None
    use_syslog = False
    stderr = True
    stderr_short = True  # "name: text" (tools) rather than the full tag
    hostname = socket.gethostname().split(".")[0]


_state = _State()


def facility_code(name: str) -> int:
    """Map a syslog_facility value to its syslog code; ValueError if unknown."""
    try:
        return _FACILITIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown syslog facility: {name}") from None


def log_init(
    process_name: str | None = None,
    *,
    syslog_name: str = "postfix",
    facility: str = "mail",
    maillog_file: str = "",
    stderr: bool = False,
    tool: bool = False,
) -> None:
    """Choose where lines go; see the module docstring."""
    if process_name:
        _state.process_name = process_name
    _state.syslog_name = syslog_name or "postfix"
    _close()
    _state.stderr = stderr
    _state.stderr_short = tool
    if maillog_file and maillog_file.startswith("/dev/stdout"):
        _state.maillog_fd = os.dup(1)
        return
    if maillog_file and maillog_file.startswith("/dev/stderr"):
        _state.stderr = True
        _state.stderr_short = False
        return
    if maillog_file:
        try:
            _state.maillog_fd = os.open(
                maillog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            return
        except OSError as err:
            sys.stderr.write(
                f"{_state.process_name}: warning: open {maillog_file}: {err.strerror}\n"
            )
    syslog.openlog(_tag(), syslog.LOG_PID | syslog.LOG_NDELAY, facility_code(facility))
    _state.use_syslog = True


def maillog_fd() -> int | None:
    """The open maillog_file descriptor, for callers that must keep it (python-daemon)."""
    return _state.maillog_fd


def set_process_name(name: str) -> None:
    _state.process_name = name
    if _state.use_syslog:
        syslog.openlog(_tag(), syslog.LOG_PID | syslog.LOG_NDELAY)


def log_reopen() -> None:
    """Nothing to reopen for maillog_file; syslog's LOG_PID picks up the new pid."""


def _close() -> None:
    if _state.maillog_fd is not None:
        try:
            os.close(_state.maillog_fd)
        except OSError:
            pass
        _state.maillog_fd = None
    if _state.use_syslog:
        syslog.closelog()
        _state.use_syslog = False


def _tag() -> str:
    return f"{_state.syslog_name}/{_state.process_name}"


def _emit(priority: int, prefix: str, text: str) -> None:
    for line in text.split("\n"):
        _emit_line(priority, f"{prefix}{line}")


def _emit_line(priority: int, body: str) -> None:
    pid = os.getpid()
    if _state.maillog_fd is not None:
        stamp = time.strftime("%b %d %H:%M:%S")
        line = f"{stamp} {_state.hostname} {_tag()}[{pid}]: {body}\n"
        try:
            os.write(_state.maillog_fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass
    elif _state.use_syslog:
        syslog.syslog(priority, body)
    if _state.stderr:
        head = _state.process_name if _state.stderr_short else f"{_tag()}[{pid}]"
        try:
            sys.stderr.write(f"{head}: {body}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def msg_info(text: str) -> None:
    _emit(syslog.LOG_INFO, "", text)


def msg_warn(text: str) -> None:
    _emit(syslog.LOG_WARNING, "warning: ", text)


def msg_error(text: str) -> None:
    _emit(syslog.LOG_ERR, "error: ", text)


def msg_fatal(text: str, status: int = 1) -> NoReturn:
    """Log `fatal: text` and leave with SystemExit(status)."""
    _emit(syslog.LOG_CRIT, "fatal: ", text)
    raise SystemExit(status)


def msg_panic(text: str) -> NoReturn:
    _emit(syslog.LOG_CRIT, "panic: ", text)
    raise SystemExit(2)
