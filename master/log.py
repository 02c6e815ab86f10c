"""Postfix-style logging: msg_info, msg_warn, msg_error, msg_fatal, msg_panic; the postlog client.

SYNOPSIS
    from master import log

    log.log_init(process_name, syslog_name="postfix", facility="mail",
                 maillog_file="", postlog="", fallback=False, hostname="",
                 stderr=False, tool=False, utf8=False)
    log.log_config(process_name, config, mode, stderr=False, tool=False)
    log.msg_info(text); log.msg_warn(text); log.msg_error(text)
    log.msg_fatal(text)          # logs, then raises SystemExit(1)
    log.msg_fatal_lines(lines)   # one fatal record per line, then SystemExit(1)
    log.msg_panic(text)          # logs, then raises SystemExit(2)
    log.msg_verbose              # int, the -v count; callers test it
    log.fallback_only()          # a fallback process stops using postlogd
    log.maillog_fd()             # the descriptor of a direct maillog_file
    log.dropped_records()        # records a daemon could not hand to postlogd
    log.printable(data, utf8) -> bytes; log.text_bytes(text) -> bytes

DESCRIPTION
    Every record is tagged `syslog_name/process_name[pid]: ` as Postfix
    does, followed by `warning: `, `error: `, `fatal: ` or `panic: ` for
    those severities (nothing for info), e.g.

        postfix/tlsmgr[4970]: warning: bogus seed length "0" in "seed" request

    One call is one record.  Its text first goes through printable(), as
    Postfix's msg_text() does, on the text's bytes (text_bytes(): UTF-8,
    with the bytes a client sent that were not UTF-8 restored as they
    came): every ASCII byte that is not printable (a newline, a carriage
    return, a tab, an escape, DEL, NUL) becomes "?", so no text, whatever
    a client put in it, can start a line of its own.  With `utf8` on
    (Postfix's util_utf8_enable, which follows smtputf8_enable, on from
    compatibility_level 1) a byte from 194 to 254 followed by bytes from
    128 to 191 is kept with them, as Postfix 3.7's lenient test does
    (so an encoded surrogate stays, a lone 0xff does not); with it off,
    every byte from 128 up is "?".

    Destinations, as Postfix 3.7's maillog_client_init() chooses them:

    postlogd    With maillog_file set, a record is one datagram,
                `Mmm dd hh:mm:ss host syslog_name/process_name[pid]:
                text` with no newline (text cut at 2000 bytes, as
                msg_logger does), sent to the unix-dgram socket
                $queue_directory/public/$postlog_service_name, where
                postlogd appends it to maillog_file.  The socket is
                connected at log_init() time, before any jail, and
                written with MSG_DONTWAIT: a record never blocks its
                process (the kernel queues only about ten datagrams).
                When the socket cannot take a record (full, absent, no
                longer bound), `fallback` processes (the master and the
                control commands) append it to maillog_file themselves
                (maillog.append_once(), open-append-close); daemons count
                it as dropped and, once the socket takes records again,
                log one warning saying how many were lost.  A record that
                found no socket reconnects first, so the master's
                records go to postlogd once its service listens.
    maillog_file, directly
                With maillog_file and no postlog socket (postlogd itself,
                tests): one descriptor, opened by log_init() with
                maillog.open_maillog(), one write(2) per record plus its
                newline.  MaillogError when it cannot be opened safely.
    syslog      Otherwise, syslog(3) with facility syslog_facility,
                opened with LOG_NDELAY so the socket is connected before
                any chroot.  With postlog alone (a daemon before main.cf
                is read, from POSTLOG_SERVICE) records go to postlogd and
                are dropped when it cannot take them.
    stderr      In addition, when stderr=True: `start-fg`, `-V`, and
                command-line tools (tool=True: `process_name: warning:
                text`, as postconf prints).

    maillog_file "/dev/stderr" means stderr only (no syslog, the full
    tag); "/dev/stdout" is this process's descriptor 1 (maillog.py).

    log_config() is log_init() from a configuration: syslog_name,
    syslog_facility, smtputf8_enable, myhostname (its first label is the
    record's host), maillog_file (checked against maillog_file_prefixes
    first: MaillogError), queue_directory and postlog_service_name.
    `mode` says which process logs: "fallback" (the master, control
    commands), "daemon" (a child skeleton) or "writer" (postlogd: the
    file directly).

    A log call costs nothing until a record is made: nothing is looked
    up, formatted or sent for a text that is not logged.

DIAGNOSTICS
    A fallback append that fails is reported once on stderr
    (`warning: cannot write logfile ...`); logging goes on.  Postfix's
    master would exit instead.

SEE ALSO
    src/util/msg.c, msg_output.c, msg_logger.c, printable.c,
    src/global/maillog_client.c (Postfix); maillog.py, postlogd.py
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
import syslog
import time
from collections.abc import Iterable
from typing import NoReturn, Protocol

from master import maillog
from master.maillog import MaillogError

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

DROPPED_WHY = "the postlog service was busy or absent"
_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")
RECORD_LIMIT = 2000  # bytes of text per record (Postfix's MSG_LOGGER_RECLEN)
MODES = ("fallback", "daemon", "writer")

msg_verbose = 0


class Settings(Protocol):
    """What log_config() reads: a Config, or anything with its get/get_bool/get_list."""

    def get(self, name: str) -> str: ...

    def get_bool(self, name: str) -> bool: ...

    def get_list(self, name: str) -> list[str]: ...


class _Postlog:
    """The client side of postlogd: one connected datagram socket."""

    def __init__(self, path: str, fallback: str) -> None:
        self.path = path
        self.fallback = fallback  # maillog_file, or "" to count drops
        self.sock: socket.socket | None = None
        self.dropped = 0  # since start
        self.unreported = 0  # since the last warning about them
        self.fallback_failed = False
        self.only_fallback = False
        self.connect()

    def connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return False
        self.sock = sock
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, record: bytes) -> bool:
        """Hand one record to postlogd; False when it could not take it."""
        for _attempt in range(2):
            if self.sock is None and not self.connect():
                return False
            assert self.sock is not None
            try:
                self.sock.send(record, socket.MSG_DONTWAIT)
                return True
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    return False
                self.close()  # no longer bound (ECONNREFUSED, ...): connect again once
        return False

    def deliver(self, record: bytes) -> None:
        if not self.only_fallback and self.send(record):
            if self.unreported:
                count, self.unreported = self.unreported, 0
                text = f"{count} earlier log record(s) dropped: {DROPPED_WHY}"
                self.send(_record("warning: ", text.encode()))
            return
        if self.fallback:
            self.append(record)
        else:
            self.dropped += 1
            self.unreported += 1

    def append(self, record: bytes) -> None:
        try:
            maillog.append_once(self.fallback, record + b"\n")
        except MaillogError as err:
            if not self.fallback_failed:
                self.fallback_failed = True
                _stderr_line(f"warning: cannot write logfile: {err}")


class _State:
    process_name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    syslog_name = "postfix"
    tag = "postfix/python"
    hostname = socket.gethostname().split(".")[0]
    utf8 = False
    maillog_fd: int | None = None  # the direct maillog_file
    postlog: _Postlog | None = None
    use_syslog = False
    stderr = True
    stderr_short = True  # "name: text" (tools) rather than the full tag


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
    postlog: str = "",
    fallback: bool = False,
    hostname: str = "",
    stderr: bool = False,
    tool: bool = False,
    utf8: bool = False,
) -> None:
    """Choose where records go; see the module docstring.  MaillogError when a
    direct maillog_file cannot be opened safely."""
    if process_name:
        _state.process_name = process_name
    _state.syslog_name = syslog_name or "postfix"
    _state.tag = f"{_state.syslog_name}/{_state.process_name}"
    if hostname:
        _state.hostname = hostname.split(".")[0]
    _state.utf8 = utf8
    _close()
    _state.stderr = stderr
    _state.stderr_short = tool
    if maillog_file == "/dev/stderr":
        _state.stderr = True
    elif postlog:
        _state.postlog = _Postlog(postlog, maillog_file if fallback else "")
    elif maillog_file:
        _state.maillog_fd = maillog.open_maillog(maillog_file)
    else:
        syslog.openlog(_state.tag, syslog.LOG_PID | syslog.LOG_NDELAY, facility_code(facility))
        _state.use_syslog = True


def log_config(
    process_name: str, config: Settings, mode: str, *, stderr: bool = False, tool: bool = False
) -> None:
    """log_init() as `config` says, for a process of `mode` (MODES); MaillogError
    for a maillog_file outside maillog_file_prefixes or one that cannot be opened,
    ValueError for an unknown syslog_facility."""
    if mode not in MODES:
        raise ValueError(f"unknown logging mode: {mode}")
    path = config.get("maillog_file")
    if path:
        maillog.check_prefixes(path, config.get_list("maillog_file_prefixes"))
    log_init(
        process_name,
        syslog_name=config.get("syslog_name"),
        facility=config.get("syslog_facility"),
        maillog_file=path,
        postlog=postlog_path(config) if path and mode != "writer" else "",
        fallback=mode == "fallback",
        hostname=config.get("myhostname"),
        stderr=stderr,
        tool=tool,
        utf8=config.get_bool("smtputf8_enable"),
    )


def postlog_path(config: Settings) -> str:
    """$queue_directory/public/$postlog_service_name, where postlogd listens."""
    return os.path.join(config.get("queue_directory"), "public", config.get("postlog_service_name"))


def fallback_only() -> None:
    """From now on a fallback process writes maillog_file itself, never to postlogd
    (the master once it stops its children, postlogd among them)."""
    if _state.postlog is not None and _state.postlog.fallback:
        _state.postlog.close()
        _state.postlog.only_fallback = True


def maillog_fd() -> int | None:
    """The direct maillog_file descriptor (postlogd writes its records there)."""
    return _state.maillog_fd


def dropped_records() -> int:
    """Records this process could not hand to postlogd, since it started."""
    return _state.postlog.dropped if _state.postlog is not None else 0


def set_process_name(name: str) -> None:
    _state.process_name = name
    _state.tag = f"{_state.syslog_name}/{name}"
    if _state.use_syslog:
        syslog.openlog(_state.tag, syslog.LOG_PID | syslog.LOG_NDELAY)


def _close() -> None:
    if _state.maillog_fd is not None:
        try:
            os.close(_state.maillog_fd)
        except OSError:
            pass
        _state.maillog_fd = None
    if _state.postlog is not None:
        _state.postlog.close()
        _state.postlog = None
    if _state.use_syslog:
        syslog.closelog()
        _state.use_syslog = False


# Making a record ------------------------------------------------------------


def printable(data: bytes, utf8: bool) -> bytes:
    """Postfix 3.7's printable(data, '?') on the bytes of a text: see the module docstring."""
    if _UNPRINTABLE.search(data) is None:
        return data
    out = bytearray(data)
    i, end = 0, len(out)
    while i < end:
        ch = out[i]
        if 0x20 <= ch < 0x7F:
            i += 1
        elif utf8 and 194 <= ch <= 254 and i + 1 < end and 128 <= out[i + 1] < 192:
            i += 2  # a UTF-8 leader: skip it and every continuation byte after it
            while i < end and 128 <= out[i] < 192:
                i += 1
        else:
            out[i] = 0x3F  # "?"
            i += 1
    return bytes(out)


def text_bytes(text: str) -> bytes:
    """The bytes of a text; bytes a client sent that were not UTF-8 come back as they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _record(prefix: str, text: bytes) -> bytes:
    """The datagram postlogd writes: `Mmm dd hh:mm:ss host tag[pid]: prefixtext`."""
    stamp = time.strftime("%b %d %H:%M:%S")
    head = f"{stamp} {_state.hostname} {_state.tag}[{os.getpid()}]: {prefix}"
    return head.encode("utf-8") + text[:RECORD_LIMIT]


def _emit(priority: int, prefix: str, text: str) -> None:
    if text.isascii() and text.isprintable():
        shown = text.encode("ascii")
    else:
        shown = printable(text_bytes(text), _state.utf8)
    if _state.postlog is not None:
        _state.postlog.deliver(_record(prefix, shown))
    elif _state.maillog_fd is not None:
        try:
            os.write(_state.maillog_fd, _record(prefix, shown) + b"\n")
        except OSError:
            pass
    elif _state.use_syslog:
        syslog.syslog(priority, prefix + shown.decode("utf-8", "replace"))
    if _state.stderr:
        head = _state.process_name if _state.stderr_short else f"{_state.tag}[{os.getpid()}]"
        _stderr_line(f"{head}: {prefix}{shown.decode('utf-8', 'backslashreplace')}")


def _stderr_line(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
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


def msg_fatal_lines(lines: Iterable[str], status: int = 1) -> NoReturn:
    """One `fatal:` record per line (postfix-script's several $FATAL lines), then exit."""
    for line in lines:
        _emit(syslog.LOG_CRIT, "fatal: ", line)
    raise SystemExit(status)


def msg_panic(text: str) -> NoReturn:
    _emit(syslog.LOG_CRIT, "panic: ", text)
    raise SystemExit(2)
