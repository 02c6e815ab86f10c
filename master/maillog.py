"""maillog_file as a file: the prefix check, the safe open, one-shot appends and rotation.

SYNOPSIS
    from master import maillog

    maillog.check_prefixes(path, prefixes)    # MaillogError outside them
    fd = maillog.open_maillog(path)           # append-only descriptor; MaillogError
    maillog.append_once(path, data)           # open, write, close; MaillogError
    rotated = maillog.rotate(path, suffix, now)   # rename to PATH.SUFFIX; MaillogError
    maillog.STDOUT                            # "/dev/stdout"

DESCRIPTION
    Whoever writes maillog_file itself goes through this module: postlogd
    (one descriptor opened before its jail, kept for its life), and the
    master and the control commands when postlogd cannot take a record
    (append_once: open, append, close, as Postfix's logwriter_one_shot()).
    Daemons never open the file: they send their records to postlogd
    (log.py).

    check_prefixes() is Postfix's maillog_client_init() test: the value
    must begin with one of maillog_file_prefixes (a plain string-prefix
    test, so "/var" admits "/variable/x" as Postfix does).

    open_maillog() opens for writing in append mode, creating the file
    (mode 0644, less the umask) when it does not exist, and then checks
    what it opened:
    - "/dev/stdout" is not opened: it is a duplicate of this process's
      descriptor 1 (under start-fg, the master's standard output, which
      every child inherits).  Reopening the name would fail when that
      output is a socket, as under systemd or some container runtimes.
    - The last component is opened with O_NOFOLLOW.  A symbolic link is
      followed only when the link is owned by root and sits in a
      directory owned by root that neither group nor others may write,
      as Postfix's safe_open() allows (the administrator made it);
      anything else is "file is a symbolic link".
    - The result must be a regular file or a character device (a
      terminal, /dev/null, /dev/console) with exactly one hard link (a
      second link could be a planted name for a file the writer should
      never touch).  FIFOs, sockets, directories and block devices are
      refused; O_NONBLOCK during the open keeps a FIFO without a reader
      from blocking the writer.
    - A regular file must belong to root or to the user who opens it, and
      must not be writable by group or others: such a file can be edited
      or truncated by someone else, so its lines prove nothing.
    Postfix's safe_open() checks the hard links, the type (no
    directory) and the symbolic link the same way; the owner and mode
    checks are ours.

    rotate() is the rename step of `postfix logrotate`: PATH becomes
    PATH.SUFFIX, the suffix being maillog_file_rotate_suffix formatted
    with strftime(3) (default %Y%m%d-%H%M%S); names under /dev/ are not
    rotated.

SECURITY
    Root writes the file: the checks above keep a process that can write
    the log's directory from making root append to, create or truncate
    another file.  The descriptor is close-on-exec.

DIAGNOSTICS
    MaillogError, a ConfigError, says what is wrong in Postfix's words:
        maillog_file value '/tmp/x' does not match any prefix in maillog_file_prefixes
        open logfile '/var/log/x': file is a symbolic link
        open logfile '/var/log/x': file has 2 hard links
        open logfile '/var/log/x': file is owned by uid 1000
        open logfile '/var/log/x': file is writable by group or others (mode 0664)
        open logfile '/var/log/x': not a regular file or character device
        open logfile '/var/log/x': Permission denied
        not rotating '/dev/stdout'

SEE ALSO
    src/util/logwriter.c, safe_open.c, src/global/maillog_client.c,
    conf/postfix-script (logrotate) (Postfix); log.py, postlogd.py
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterable

from master.errors import ConfigError

STDOUT = "/dev/stdout"
FILE_MODE = 0o644
_OPEN = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class MaillogError(ConfigError):
    """maillog_file is outside its prefixes, cannot be opened safely, or cannot be rotated."""


def check_prefixes(path: str, prefixes: Iterable[str]) -> None:
    """MaillogError unless `path` starts with one of `prefixes` (Postfix's string test)."""
    if not any(path.startswith(prefix) for prefix in prefixes):
        raise MaillogError(
            f"maillog_file value '{path}' does not match any prefix in maillog_file_prefixes"
        )


def open_maillog(path: str) -> int:
    """An append-only, close-on-exec descriptor for `path`; see the module docstring."""
    if path == STDOUT:
        return os.dup(1)
    fd = _open(path)
    try:
        _check(path, os.fstat(fd))
        os.set_blocking(fd, True)
    except MaillogError:
        os.close(fd)
        raise
    return fd


def append_once(path: str, data: bytes) -> None:
    """Open `path`, append `data` in one write, close (Postfix's logwriter_one_shot)."""
    if path == STDOUT:
        _write(1, path, data)
        return
    fd = open_maillog(path)
    try:
        _write(fd, path, data)
    finally:
        os.close(fd)


def rotate(path: str, suffix: str, now: float | None = None) -> str:
    """Rename `path` to PATH.SUFFIX (suffix through strftime); the new name."""
    if path.startswith("/dev/"):
        raise MaillogError(f"not rotating '{path}'")
    target = f"{path}.{time.strftime(suffix, time.localtime(now))}"
    try:
        os.rename(path, target)
    except OSError as err:
        raise MaillogError(f"mv {path} {target}: {err.strerror}") from None
    return target


def _write(fd: int, path: str, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError as err:
        raise MaillogError(f"logfile '{path}' write error: {err.strerror}") from None


def _refuse(path: str, why: str) -> MaillogError:
    return MaillogError(f"open logfile '{path}': {why}")


def _open(path: str) -> int:
    """Open, or create exclusively; a symbolic link only as _trusted_link() allows."""
    for _attempt in range(2):
        try:
            return os.open(path, _OPEN | os.O_NOFOLLOW)
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise _refuse(path, err.strerror or str(err)) from None
            if not _trusted_link(path):
                raise _refuse(path, "file is a symbolic link") from None
            try:
                return os.open(path, _OPEN)
            except OSError as err2:
                raise _refuse(path, err2.strerror or str(err2)) from None
        try:
            return os.open(path, _OPEN | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        except FileExistsError:
            continue  # made by someone else meanwhile: open it as it is, with the checks
        except OSError as err:
            raise _refuse(path, err.strerror or str(err)) from None
    raise _refuse(path, "file status changed unexpectedly")


def _trusted_link(path: str) -> bool:
    """A link owned by root in a directory owned by root, writable by neither group nor others."""
    with contextlib.suppress(OSError):
        link = os.lstat(path)
        parent = os.stat(os.path.dirname(path) or ".")
        return (
            link.st_uid == 0
            and parent.st_uid == 0
            and not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        )
    return False


def _check(path: str, st: os.stat_result) -> None:
    """The type, link count, owner and mode rules of the module docstring."""
    regular = stat.S_ISREG(st.st_mode)
    if not (regular or stat.S_ISCHR(st.st_mode)):
        raise _refuse(path, "not a regular file or character device")
    if st.st_nlink != 1:
        raise _refuse(path, f"file has {st.st_nlink} hard links")
    if not regular:
        return
    if st.st_uid not in (0, os.geteuid()):
        raise _refuse(path, f"file is owned by uid {st.st_uid}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(st.st_mode)
        raise _refuse(path, f"file is writable by group or others (mode {mode:04o})")
