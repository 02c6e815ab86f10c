"""Temporary files that become tlsmgr's files: made whole and locked, then put into place.

SYNOPSIS
    from tlsmgr.tempfiles import create_locked, remove_stale

    fd, tmp = create_locked(path)     # PATH.XXXXXXXX.tmp, mode 0600, flock(LOCK_EX) held
    ...                               # fill it, then rename (or link) tmp to path
    removed = remove_stale(path)      # PATH's temporary files whose maker is gone

DESCRIPTION
    A file that another process may be reading, or still using, is
    never rewritten in place: a new one is made under a temporary name
    next to it and renamed over it.  A process that has the old file
    open keeps its own inode until it closes it (a draining tlsmgr
    keeps its caches while its successor starts on new ones), and a
    reader sees the old file or the new one, never half of either.

    create_locked() makes `PATH.XXXXXXXX.tmp` (eight random hex digits;
    O_EXCL and O_NOFOLLOW, mode 0600, the caller's effective uid and gid,
    close-on-exec, as mkstemp() does: the tempfile module itself is not
    imported, it costs an exec'd tlsmgr 3 ms on its way to its first
    reply) and takes
    an exclusive flock(2) on it, which its maker holds for as long as
    it keeps the file open (a cache's lock is held until the cache is
    closed).  So a temporary file that nobody holds locked was left by
    a process that died before it could put the file in place (kill -9
    during start-up): remove_stale() removes those, and only those, of
    PATH.  A file that another process's remove_stale() unlinked between
    mkstemp() and flock() is noticed (its name no longer leads to it)
    and made again.

SECURITY
    remove_stale() opens candidates with O_NOFOLLOW and O_NONBLOCK and
    unlinks only a regular file that is still the one it locked; the
    folder is mail_owner's data_directory in practice.

DIAGNOSTICS
    OSError from create_locked(); remove_stale() skips what it cannot
    open or lock, and logs `removed stale temporary file NAME` for each
    file it removes.

SEE ALSO
    dbhash.py (cache files), exchange.py (the PRNG exchange file)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat

from master import log

SUFFIX = ".tmp"
_ATTEMPTS = 5  # create_locked(): a name removed under us is made again this often


def create_locked(path: str) -> tuple[int, str]:
    """A new empty temporary file next to `path`, locked; (fd, its name). OSError."""
    directory, base = os.path.split(path)
    for _ in range(_ATTEMPTS):
        try:
            fd, tmp = _create(directory, base)
        except FileExistsError:
            continue  # another name: eight random hex digits rarely collide twice
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, tmp):
                return fd, tmp
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)  # remove_stale() of another process took it before our lock
    raise FileExistsError(f"{path}: temporary files keep disappearing")


def _create(directory: str, base: str) -> tuple[int, str]:
    """A new file `base.XXXXXXXX.tmp` in directory, O_EXCL, mode 0600; FileExistsError."""
    tmp = os.path.join(directory, f"{base}.{os.urandom(4).hex()}{SUFFIX}")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(tmp, flags, 0o600), tmp


def remove_stale(path: str) -> list[str]:
    """Remove PATH's temporary files that no process holds locked; their names."""
    directory, base = os.path.split(path)
    pattern = re.compile(re.escape(base) + r"\.[A-Za-z0-9_]{8}" + re.escape(SUFFIX) + r"\Z")
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    removed = []
    for name in names:
        if pattern.match(name):
            full = os.path.join(directory, name)
            if _remove_if_stale(full):
                log.msg_info(f"removed stale temporary file {full}")
                removed.append(full)
    return removed


def _remove_if_stale(name: str) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its maker still has it
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _same_file(fd, name):
            return False
        os.unlink(name)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _same_file(fd: int, name: str) -> bool:
    """True when `name` still leads to the file open on `fd`."""
    try:
        by_name = os.lstat(name)
    except OSError:
        return False
    by_fd = os.fstat(fd)
    return (by_name.st_dev, by_name.st_ino) == (by_fd.st_dev, by_fd.st_ino)
