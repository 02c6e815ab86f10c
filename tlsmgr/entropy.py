"""tlsmgr's external entropy sources, and the events and exits around the exchange file.

SYNOPSIS
    from tlsmgr import entropy
    from tlsmgr.exchange import ExchangeFile

    # pre_init: root, before the jail
    source = entropy.open_source(spec, nbytes)      # None when spec is empty
    with privs.saved_eugid(uid, gid):               # the daemon's job, not ours
        exch = ExchangeFile.open(path, pool)        # raises ExchangeError

    # post_init and timers (after the privilege drop)
    entropy.reseed_event(source, pool, exch)        # may raise SystemExit(0)
    entropy.exchange_event(exch, pool)              # may raise SystemExit(0)
    delay = prng.next_delay(period, pool)           # re-arm either timer

    # exit paths: TERM/INT, reload, master EOF
    entropy.save_at_exit(exch, pool) -> bool

    # the parts they are made of
    source.read() -> bytes          # raises EntropyError; source.exhausted
    source.spec, source.path, source.close()
    entropy.reseed_pool(source, pool) -> int        # raises EntropyError
    entropy.exit_after_save(exch, pool, err, delay=1.0) -> NoReturn
    entropy.exit_removed(exch, delay=1.0) -> NoReturn

DESCRIPTION
    Sources (tls_random_source, Postfix's tlsmgr_pre_init and
    tls_prng_{dev,egd,file}.c).  open_source() opens while privileged;
    read() runs after the drop, so nothing read from a source is handled
    with privileges.  Each source reads tls_random_bytes (nbytes) per
    reseed:

    dev:PATH  opened O_RDONLY|O_NONBLOCK and kept open.  read(): wait up
              to `timeout` (10 s) for data, then one read() of
              min(nbytes, 255) bytes; fewer bytes are accepted, as in
              Postfix.  EOF, a timeout or an error raise EntropyError.
    egd:PATH  an AF_UNIX stream connection, made with a 10 s timeout and
              kept.  read() speaks EGD's "read entropy nonblocking"
              command: send 0x01, n (n = min(nbytes, 255)); receive one
              count byte, then count bytes, each step within `timeout`.
              A count of 0, EOF or any I/O failure raises EntropyError.
    PATH      a regular file, opened O_RDONLY.  read() reads up to nbytes
              from offset 0 in chunks of at most 8192 (no 255 cap), then
              closes the file and sets `exhausted`: it is used once.  An
              empty result is a warning, never an exit.
    (empty)   open_source() logs Postfix's two warnings and returns None.

    A dev or egd source that cannot be opened, or a file that cannot be
    opened, is logged as a warning and returned as a source whose read()
    raises EntropyError("exiting to reopen external entropy source
    SPEC"): the daemon exits at its first reseed and the master starts a
    new tlsmgr that tries again, as Postfix does.

    reseed_event() is tlsmgr_reseed_event without the timer: it reads the
    source and calls pool.reseed(); on EntropyError it calls
    exit_after_save(), which logs the reason (info, as Postfix), saves the
    exchange file (unless removed), sleeps `delay` seconds and raises
    SystemExit(0).  Exit status 0 means the master does not throttle.

    exchange_event() is tlsmgr_prng_exch_event without the timer: if the
    file was removed (fstat st_nlink == 0) it calls exit_removed(), which
    warns, sleeps `delay` and raises SystemExit(0) without saving, so the
    next tlsmgr opens or creates the file anew, as Postfix's does;
    otherwise it updates the file (ExchangeFile.update()).  save_at_exit()
    updates it on the way out, unless it was removed; it logs and returns
    False rather than raise.

SECURITY
    Privileged code opens, unprivileged code reads: no source is read
    before the daemon drops its privileges (see tlsmgr/exchange.py for
    the exchange file).

DIAGNOSTICS
    EntropyError: str() is the line to log before exiting (Postfix's
    text, e.g. "lost connection to EGD server PATH -- exiting to
    reconnect"); .detail, when set, is the preceding line ("EGD server
    PATH reports zero bytes available").  ExchangeError: see
    tlsmgr/exchange.py; save_at_exit() logs it as a warning ("...; PRNG
    state not saved").  The sources' open failures are warnings through
    master.log.

BUGS
    Postfix opens a dev: source in blocking mode; we open it non-blocking
    and wait with poll(), so a FIFO without a writer cannot hang the
    daemon's start.  Postfix is silent when a plain file source cannot be
    opened; we warn.

SEE ALSO
    tlsmgr/exchange.py, tlsmgr/prng.py, docs/prng.md, src/tlsmgr/tlsmgr.c,
    src/tls/tls_prng_dev.c, tls_prng_egd.c, tls_prng_file.c (Postfix)
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import NoReturn

from master import log
from tlsmgr.exchange import ExchangeError, ExchangeFile, reason_of
from tlsmgr.prng import UCHAR_MAX, Pool

__all__ = [
    "DevSource",
    "EgdSource",
    "EntropyError",
    "EntropySource",
    "FileSource",
    "UnopenedSource",
    "exchange_event",
    "exit_after_save",
    "exit_removed",
    "open_source",
    "reseed_event",
    "reseed_pool",
    "save_at_exit",
]

TLS_MGR_TIMEOUT = 10.0  # seconds, Postfix's TLS_MGR_TIMEOUT for opening and reading sources
FILE_CHUNK = 8192
DEV_PREFIX, EGD_PREFIX = "dev:", "egd:"


class EntropyError(Exception):
    """An entropy source is lost: save the exchange file, log str(err), exit 0."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.detail = detail


# -- sources ---------------------------------------------------------------


class EntropySource:
    """Base of the source kinds; read() returns bytes or raises EntropyError."""

    kind = "none"

    def __init__(self, spec: str, path: str, nbytes: int, timeout: float) -> None:
        self.spec, self.path, self.nbytes, self.timeout = spec, path, nbytes, timeout
        self.exhausted = False

    def read(self) -> bytes:
        raise NotImplementedError

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        """Release the descriptor; a closed source reads nothing more."""


class UnopenedSource(EntropySource):
    """A configured source that could not be opened before the jail."""

    def read(self) -> bytes:
        raise EntropyError(f"exiting to reopen external entropy source {self.spec}")


class DevSource(EntropySource):
    """dev:PATH, a device (or FIFO) kept open; one read of at most 255 bytes."""

    kind = "dev"

    def __init__(self, spec: str, path: str, nbytes: int, timeout: float) -> None:
        super().__init__(spec, path, nbytes, timeout)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes:
        try:
            data = self._timed_read(min(self.nbytes, UCHAR_MAX))
        except OSError as err:
            why = reason_of(err)
        else:
            if data:
                return data
            why = "unexpected end of file"
        raise EntropyError(
            f"cannot read from entropy device {self.path}: {why} -- exiting to reopen"
        )

    def _timed_read(self, n: int) -> bytes:
        if self._fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            try:
                return os.read(self._fd, n)
            except BlockingIOError:
                continue  # Sanity check: poll said readable, someone else got there first

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class EgdSource(EntropySource):
    """egd:PATH, a connected EGD server socket; command 0x01 (read nonblocking)."""

    kind = "egd"

    def __init__(self, spec: str, path: str, nbytes: int, timeout: float) -> None:
        super().__init__(spec, path, nbytes, timeout)
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock else -1

    def read(self) -> bytes:
        try:
            return self._ask(min(self.nbytes, UCHAR_MAX))
        except EntropyError as err:
            self.close()
            raise EntropyError(
                f"lost connection to EGD server {self.path} -- exiting to reconnect", str(err)
            ) from None

    def _ask(self, n: int) -> bytes:
        """One EGD exchange; raises EntropyError(detail) on any failure."""
        if self._sock is None:
            raise EntropyError(f"cannot write to EGD server {self.path}: connection closed")
        try:
            self._sock.sendall(bytes((1, n)))
        except OSError as err:
            raise EntropyError(
                f"cannot write to EGD server {self.path}: {reason_of(err)}"
            ) from None
        head = self._recv_exact(1, f"cannot read from EGD server {self.path}")
        count = head[0]
        if count == 0:
            raise EntropyError(f"EGD server {self.path} reports zero bytes available")
        return self._recv_exact(count, f"cannot read {count} bytes from EGD server {self.path}")

    def _recv_exact(self, n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._sock is None:
                raise EntropyError(f"{what}: source closed")
            try:
                chunk = self._sock.recv(n - len(buf))
            except OSError as err:
                raise EntropyError(f"{what}: {reason_of(err)}") from None
            if not chunk:
                raise EntropyError(f"{what}: unexpected end of file")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class FileSource(EntropySource):
    """A regular file: read once (up to nbytes, no 255 cap), then closed."""

    kind = "file"

    def __init__(self, spec: str, path: str, nbytes: int, timeout: float) -> None:
        super().__init__(spec, path, nbytes, timeout)
        self._fd = os.open(path, os.O_RDONLY)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes:
        data = bytearray()
        why = "no data"
        try:
            while len(data) < self.nbytes and self._fd >= 0:
                chunk = os.pread(self._fd, min(FILE_CHUNK, self.nbytes - len(data)), len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            why = reason_of(err)
        self.close()
        self.exhausted = True
        if not data:
            log.msg_warn(f"cannot read from entropy file {self.path}: {why}")
        return bytes(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_source(
    spec: str, nbytes: int, *, timeout: float = TLS_MGR_TIMEOUT
) -> EntropySource | None:
    """Open tls_random_source before the jail; see the module docstring."""
    if not spec:
        log.msg_warn("no entropy source specified with parameter tls_random_source")
        log.msg_warn("encryption keys etc. may be predictable")
        return None
    kind: type[EntropySource]
    if spec.startswith(DEV_PREFIX):
        kind, path, what = DevSource, spec[len(DEV_PREFIX) :], "cannot open entropy device"
    elif spec.startswith(EGD_PREFIX):
        kind, path, what = EgdSource, spec[len(EGD_PREFIX) :], "cannot connect to EGD server"
    else:
        kind, path, what = FileSource, spec, "cannot open entropy file"
    try:
        return kind(spec, path, nbytes, timeout)
    except OSError as err:
        log.msg_warn(f"{what} {path}: {reason_of(err)}")
        return UnopenedSource(spec, path, nbytes, timeout)


def reseed_pool(source: EntropySource | None, pool: Pool) -> int:
    """Read the source once and reseed the pool; the byte count. Raises EntropyError."""
    if source is None or source.exhausted:
        return 0
    data = source.read()
    if data:
        pool.reseed(data)
    if log.msg_verbose:
        log.msg_info(f"reseed: got {len(data)} bytes from {source.spec}")
    return len(data)


# -- the daemon's events and exits ---------------------------------------


def save_at_exit(exch: ExchangeFile | None, pool: Pool) -> bool:
    """Save the pool before an exit; True if saved. Logs, never raises, on failure."""
    if exch is None:
        return False
    try:
        if exch.removed():
            log.msg_info(f"PRNG exchange file {exch.path} was removed; not saving")
            return False
        exch.update(pool)
    except ExchangeError as err:
        log.msg_warn(f"{err}; PRNG state not saved")
        return False
    return True


def exit_after_save(
    exch: ExchangeFile | None, pool: Pool, err: EntropyError | str, *, delay: float = 1.0
) -> NoReturn:
    """Log why, save the exchange file, sleep, raise SystemExit(0) (no throttling)."""
    if isinstance(err, EntropyError) and err.detail:
        log.msg_info(err.detail)
    log.msg_info(str(err))
    save_at_exit(exch, pool)
    time.sleep(delay)
    raise SystemExit(0)


def exit_removed(exch: ExchangeFile, *, delay: float = 1.0) -> NoReturn:
    """The exchange file was removed: warn, sleep, SystemExit(0), without saving."""
    log.msg_warn(
        f"PRNG exchange file {exch.path} was removed -- exiting to reopen it "
        "(the next tlsmgr process creates a new one)"
    )
    time.sleep(delay)
    raise SystemExit(0)


def reseed_event(
    source: EntropySource | None, pool: Pool, exch: ExchangeFile | None, *, delay: float = 1.0
) -> int:
    """tlsmgr_reseed_event: reseed, or save + log + exit 0 when the source is lost."""
    try:
        return reseed_pool(source, pool)
    except EntropyError as err:
        exit_after_save(exch, pool, err, delay=delay)


def exchange_event(exch: ExchangeFile, pool: Pool, *, delay: float = 1.0) -> None:
    """tlsmgr_prng_exch_event: exit if removed, else update. Raises ExchangeError."""
    if exch.removed():
        exit_removed(exch, delay=delay)
    exch.update(pool)
