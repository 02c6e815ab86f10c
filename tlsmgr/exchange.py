"""tlsmgr's PRNG exchange file: 1024 bytes of pool output that outlive the process.

SYNOPSIS
    from tlsmgr.exchange import ExchangeFile, ExchangeError, EXCH_SIZE, fsync_dir, reason_of

    with privs.saved_eugid(uid, gid):               # the daemon's job, not ours
        exch = ExchangeFile.open(path, pool)        # raises ExchangeError
    exch.read_into(pool) -> int; exch.update(pool); exch.removed() -> bool
    exch.path, exch.fileno(), exch.close()

DESCRIPTION
    tls_random_exchange_name, Postfix's tls_prng_exch.c.  Exactly
    EXCH_SIZE = 1024 bytes, mode 0600; it belongs to mail_owner because
    the daemon opens it with mail_owner's effective ids.  open() first
    removes the temporary files a killed process left (`prng_exch.*.tmp`,
    tempfiles.remove_stale), then opens an existing file O_RDWR; when
    the name does not exist, it writes 1024 bytes drawn from the pool to
    a temporary file in the same directory (tempfiles.create_locked,
    0600), fsyncs it and links it into place (rename where the file
    system has no hard links), so a missing file never becomes an empty
    or short one, even after kill -9.  The descriptor is kept: the data
    directory lies outside the jail.  The file itself is never renamed
    or replaced: every tlsmgr that has it open (an old one draining
    after a reload beside its successor) writes the same inode, under
    the lock, and one that finds its inode without a name takes that as
    "removed" and leaves.

    update() is tls_prng_exch_update: flock(LOCK_EX); pread up to 1024
    bytes at offset 0 and mix them in (applied at once); draw 1024 bytes;
    one pwrite of 1024 bytes at offset 0, in place, no truncation before,
    no fsync; unlock.  A single 1024-byte write within one page is not
    torn by kill -9, and the file never shrinks, so the file on disk is
    always 1024 usable bytes.  A short, empty, over-long or non-random-
    looking file is mixed as it is, with a warning, then rewritten (an
    over-long file is truncated to 1024 bytes after the write).
    read_into() is the read-and-mix half alone, under a shared lock.
    removed() is true once the file has no name left (st_nlink == 0).

SECURITY
    No exchange file content is looked at before the daemon drops its
    privileges, except when open() creates a new file.  The file is never
    trusted: its content is hashed in and not credited, so a hostile or
    corrupted file cannot make the pool weaker.

DIAGNOSTICS
    ExchangeError: "cannot open|create|lock|unlock|fstat|read|write PRNG
    exchange file PATH: reason"; the daemon treats it as fatal outside
    its exit paths, as Postfix does.  Content problems are warnings
    through master.log, each said once until the file is good again.

BUGS
    With no hard links and two daemons racing to create the file, the
    loser keeps an unlinked file and exits to reopen at its next update
    (harmless).

SEE ALSO
    tlsmgr/entropy.py, tlsmgr/prng.py, docs/prng.md,
    src/tls/tls_prng_exch.c (Postfix)
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from master import log
from tlsmgr.prng import Pool
from tlsmgr.tempfiles import create_locked, remove_stale

EXCH_SIZE = 1024  # TLS_PRNG_EXCH_SIZE
MIN_DISTINCT = 128  # 1024 random bytes hold ~251 distinct values; fewer than this is not random


class ExchangeError(Exception):
    """The exchange file cannot be opened, locked, read or written; str() says which."""


def reason_of(err: OSError) -> str:
    """The reason an OSError gives, for messages (a bare timeout says "Connection timed out")."""
    if isinstance(err, TimeoutError) and not err.strerror:
        return os.strerror(errno.ETIMEDOUT)
    return err.strerror or str(err)


class ExchangeFile:
    """The open PRNG exchange file; see the module docstring."""

    def __init__(self, fd: int, path: str) -> None:
        self.path = path
        self._fd = fd
        self._last_warning: str | None = None

    @classmethod
    def open(cls, path: str, pool: Pool) -> ExchangeFile:
        """Open path O_RDWR, or create it full-size when missing. Raises ExchangeError."""
        remove_stale(path)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            fd = _create(path, pool)
        except OSError as err:
            raise ExchangeError(
                f"cannot open PRNG exchange file {path}: {reason_of(err)}"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ExchangeError(f"cannot open PRNG exchange file {path}: not a regular file")
        return cls(fd, path)

    def fileno(self) -> int:
        return self._fd

    def removed(self) -> bool:
        """True when the file has no name left (st_nlink == 0). Raises ExchangeError."""
        try:
            return os.fstat(self._fd).st_nlink == 0
        except OSError as err:
            raise ExchangeError(
                f"cannot fstat PRNG exchange file {self.path}: {reason_of(err)}"
            ) from None

    def read_into(self, pool: Pool) -> int:
        """Read the file under a shared lock and mix it in; the byte count."""
        with _Locked(self, fcntl.LOCK_SH):
            data, size = self._read()
        self._check(data, size)
        if data:
            pool.mix(data, now=True)
        return len(data)

    def update(self, pool: Pool) -> None:
        """Read, mix, draw, rewrite 1024 bytes in place under LOCK_EX. Raises ExchangeError."""
        with _Locked(self, fcntl.LOCK_EX):
            data, size = self._read()
            self._check(data, size)
            if data:
                pool.mix(data, now=True)
            fresh = pool.draw(EXCH_SIZE)
            try:
                written = os.pwrite(self._fd, fresh, 0)
                if size > EXCH_SIZE:
                    os.ftruncate(self._fd, EXCH_SIZE)
            except OSError as err:
                raise self._error("write", err) from None
            if written != EXCH_SIZE:
                raise ExchangeError(
                    f"cannot write PRNG exchange file {self.path}: "
                    f"short write ({written} of {EXCH_SIZE} bytes)"
                )
        self._last_warning = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _read(self) -> tuple[bytes, int]:
        try:
            size = os.fstat(self._fd).st_size
            data = b""
            while len(data) < EXCH_SIZE:
                chunk = os.pread(self._fd, EXCH_SIZE - len(data), len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            raise self._error("read", err) from None
        return data, size

    def _check(self, data: bytes, size: int) -> None:
        """Warn once about content that is not 1024 random-looking bytes."""
        name = f"PRNG exchange file {self.path}"
        if not data:
            text = f"{name} is empty; rewriting it"
        elif len(data) < EXCH_SIZE:
            text = f"{name} is short ({len(data)} of {EXCH_SIZE} bytes); mixing it as-is"
        elif size > EXCH_SIZE:
            text = f"{name} is longer than {EXCH_SIZE} bytes ({size}); truncating it"
        elif len(set(data)) < MIN_DISTINCT:
            text = f"{name} does not look random ({len(set(data))} distinct byte values)"
        else:
            return
        if text != self._last_warning:
            log.msg_warn(f"{text}; it will be rewritten with fresh pool output")
            self._last_warning = text

    def _error(self, verb: str, err: OSError) -> ExchangeError:
        return ExchangeError(f"cannot {verb} PRNG exchange file {self.path}: {reason_of(err)}")


class _Locked:
    """flock() held for a with-block; errors become ExchangeError."""

    def __init__(self, exch: ExchangeFile, how: int) -> None:
        self._exch, self._how = exch, how

    def __enter__(self) -> None:
        try:
            fcntl.flock(self._exch.fileno(), self._how)
        except OSError as err:
            raise self._exch._error("lock", err) from None

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._exch.fileno(), fcntl.LOCK_UN)
        except OSError as err:
            if exc[0] is None:
                raise self._exch._error("unlock", err) from None


def _create(path: str, pool: Pool) -> int:
    """Make path appear with 1024 bytes of pool output, never empty. Returns an O_RDWR fd."""
    directory = os.path.dirname(path)
    try:
        fd, tmp = create_locked(path)
    except OSError as err:
        raise ExchangeError(f"cannot create PRNG exchange file {path}: {reason_of(err)}") from None
    try:
        data = pool.draw(EXCH_SIZE)
        if os.write(fd, data) != EXCH_SIZE:
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Another process created it between our open() and now: use theirs.
            os.close(fd)
            fd = -1
            fd = os.open(path, os.O_RDWR)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.rename(tmp, path)  # Workaround: a file system without hard links
        fsync_dir(directory or ".")
    except OSError as err:
        if fd >= 0:
            os.close(fd)
        raise ExchangeError(f"cannot create PRNG exchange file {path}: {reason_of(err)}") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    fcntl.flock(fd, fcntl.LOCK_UN)  # the temporary name's lock; updates take their own
    return fd


def fsync_dir(directory: str) -> None:
    """Best effort: make the new name durable."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
