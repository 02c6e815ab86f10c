"""The key chain's two files: the shared secret and the saved chain state.

SYNOPSIS
    from tlsmgr.keyfiles import read_secret, start_chain, StateFile, KeyFileError, STATE_FILE

    secret = read_secret(path)                    # bytearray; KeyFileError
    chain, roots, state_file = start_chain(secret, state_path, period, now,
                                           keep_past=1, log=log)   # erases secret
    saved = StateFile.read(path, roots)           # (epoch, state) | None; KeyFileError
    state_file = StateFile.create(path, roots, epoch, state)   # KeyFileError
    state_file.save(epoch, state)                 # OSError
    state_file.close()
    encode_state(roots, epoch, state) -> bytes; decode_state(roots, data) -> (epoch, state)

DESCRIPTION
    The secret file (tls_session_ticket_secret_file) holds raw bytes,
    SECRET_MIN (32) to SECRET_MAX (65536), shared by every host of a
    fleet.  read_secret() reads it whole into a bytearray (the caller
    erases it) and refuses, with a message naming the file and what is
    wrong:
      - a symbolic link (lstat, then open with O_NOFOLLOW);
      - anything but a regular file (a FIFO is opened non-blocking, so it
        cannot hang the start);
      - a file not owned by root (or, when tlsmgr is not started as root,
        by the user it runs as): its owner could read it at will;
      - a file with any permission for group or others (mode & 077), as
        OpenSSH does for private keys: whoever reads it derives every key,
        whoever writes it chooses them.  0600 or 0400 is right;
      - a file shorter than 32 bytes or longer than 64 KiB.

    The state file (STATE_FILE, "tls_key_chain" in data_directory) lets a
    restart begin its walk near the current epoch instead of at C(0).  It
    holds one record of STATE_RECORD_SIZE (88) bytes:
        magic        8  b"MPFXKC\\x00\\x01" (format version 1)
        fingerprint  8  the secret's fingerprint (keychain.Roots)
        epoch        8  unsigned little-endian: the epoch of the state
        state       32  C(epoch), the chain's floor
        mac         32  HMAC-SHA256(roots.state_key, the 56 bytes above)
    The MAC is both the checksum and the seal: a torn, damaged or forged
    record (by anyone without the secret or a tlsmgr's memory) is
    refused.  decode_state() raises ValueError saying whether the record
    has the wrong size, an unknown magic, another secret's fingerprint
    or a bad MAC; read() turns that into KeyFileError, and the daemon
    then walks from C(0) with a warning (the secret is at hand, so
    nothing is lost).

    create() writes the record atomically, as root or mail_owner before
    the jail: the temporary files a killed tlsmgr left are removed, then
    a temporary file (tempfiles.create_locked, mode 0600) in the same
    folder, write, fsync, rename over the name, fsync of the folder.  A
    tlsmgr still draining after a reload keeps the old file, which no
    longer has a name, and saves into it until it exits.  It keeps
    the descriptor, because data_directory lies outside the jail and a
    jailed process can neither reach the name nor rename anything there.
    save() is what the jailed process does as epochs pass: one pwrite()
    of the whole record at offset 0, under flock(LOCK_EX), no truncation.
    A single write of 88 bytes inside one page is not torn by kill -9;
    a power cut that tears it anyway leaves a record the MAC refuses.

    start_chain() is the start-up sequence, run before the jail with
    mail_owner's ids: C(0) and the roots from the secret, the secret's
    bytes zeroed; the chain begins at the saved state when it is usable
    and not after the epoch the window needs (fewer steps), else at C(0)
    (with a warning when the file was unusable, an info line when it was
    merely too new, say after the clock or the epoch period changed); C(0)
    is zeroed; the floor state is written with create(); the chain's
    on_advance saves each new floor state in place, and a failed save is
    a warning (the keys in memory are unaffected).  One info line names
    the secret's fingerprint, the epoch and the period, so that hosts can
    be compared.

SECURITY
    The state file holds C(floor): whoever reads it derives the keys of
    that epoch and later, until the fleet's secret changes.  It is mode
    0600, owned by mail_owner, in mail_owner's data_directory; prefer a
    file system that does not keep old blocks (flash and copy-on-write
    file systems may).  The secret itself is never written anywhere.

SEE ALSO
    tlsmgr/keychain.py, tlsmgr/exchange.py (the same in-place update of a
    file outside the jail), docs/cluster.md
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import os
import stat
import struct
from typing import Any

from master import log as master_log
from tlsmgr import keychain
from tlsmgr.exchange import fsync_dir, reason_of
from tlsmgr.keychain import STATE_LEN, Chain, Roots
from tlsmgr.tempfiles import create_locked, remove_stale

SECRET_MIN = 32
SECRET_MAX = 65536
STATE_FILE = "tls_key_chain"
STATE_MAGIC = b"MPFXKC\x00\x01"
_STATE_HEAD = struct.Struct("<8s8sQ")
_MAC_LEN = hashlib.sha256().digest_size
STATE_RECORD_SIZE = _STATE_HEAD.size + STATE_LEN + _MAC_LEN  # 88


class KeyFileError(Exception):
    """A key file cannot be used; str() names the file and what is wrong."""


# The secret file.


def read_secret(path: str) -> bytearray:
    """The secret's bytes, after the checks in the module docstring."""
    what = f"ticket secret file {path}"
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise KeyFileError(f"{what} is a symbolic link; name the file itself")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise KeyFileError(f"{what} is a symbolic link; name the file itself") from None
        raise KeyFileError(f"cannot open {what}: {reason_of(err)}") from None
    try:
        info = os.fstat(fd)
        _check_secret_file(what, info)
        secret = bytearray(info.st_size)
        got = os.readv(fd, [secret])
        if got != info.st_size or os.read(fd, 1):
            raise KeyFileError(f"{what} changed while it was read; try again")
        return secret
    except OSError as err:
        raise KeyFileError(f"cannot read {what}: {reason_of(err)}") from None
    finally:
        os.close(fd)


def _check_secret_file(what: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{what} is not a regular file")
    owners = {0, os.geteuid()}
    if info.st_uid not in owners:
        raise KeyFileError(
            f"{what} is owned by uid {info.st_uid}: it must belong to root"
            + ("" if os.geteuid() == 0 else f" or to uid {os.geteuid()}")
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{what} has mode {mode:04o}: group and others must have no access (chmod 600)"
        )
    if info.st_size < SECRET_MIN:
        raise KeyFileError(f"{what} is too short: {info.st_size} bytes, at least {SECRET_MIN}")
    if info.st_size > SECRET_MAX:
        raise KeyFileError(f"{what} is too long: {info.st_size} bytes, at most {SECRET_MAX}")


# Start-up.


def start_chain(
    secret: bytearray,
    state_path: str,
    period: int,
    now: float,
    *,
    keep_past: int = keychain.TICKET_PAST_EPOCHS,
    log: Any = master_log,
) -> tuple[Chain, Roots, StateFile]:
    """This host's chain, from the secret and the saved state; KeyFileError
    when the state cannot be written.  `secret` is zeroed."""
    c0 = keychain.genesis(secret)
    secret[:] = bytes(len(secret))
    roots = Roots.derive(c0)
    try:
        chain = _resume(c0, roots, state_path, period, now, keep_past, log)
    finally:
        c0[:] = bytes(len(c0))
    state_file = StateFile.create(state_path, roots, chain.floor, chain.state(chain.floor))
    chain.on_advance = _saver(state_file, log)
    log.msg_info(
        f"shared ticket keys: secret fingerprint {roots.fingerprint.hex()},"
        f" epoch {chain.current} of {period}s"
    )
    return chain, roots, state_file


def _resume(
    c0: bytearray, roots: Roots, path: str, period: int, now: float, keep_past: int, log: Any
) -> Chain:
    try:
        saved = StateFile.read(path, roots)
    except KeyFileError as err:
        log.msg_warn(f"{err}; starting the chain from the secret")
        saved = None
    if saved is not None:
        try:
            return Chain(period, now, saved[0], saved[1], keep_past=keep_past)
        except keychain.ChainError as err:
            log.msg_info(f"ticket key chain state {path}: {err}; starting from the secret")
    return Chain(period, now, 0, c0, keep_past=keep_past)


def _saver(state_file: StateFile, log: Any) -> Any:
    def save(chain: Chain) -> None:
        try:
            state_file.save(chain.floor, chain.state(chain.floor))
        except OSError as err:
            log.msg_warn(f"cannot save ticket key chain state {state_file.path}: {reason_of(err)}")

    return save


# The state file.


def encode_state(roots: Roots, epoch: int, state: bytes | bytearray) -> bytes:
    """The 88-byte record for C(epoch)."""
    if len(state) != STATE_LEN:
        raise ValueError(f"a chain state is {STATE_LEN} bytes, not {len(state)}")
    body = _STATE_HEAD.pack(STATE_MAGIC, roots.fingerprint, epoch) + bytes(state)
    return body + hmac.new(roots.state_key, body, hashlib.sha256).digest()


def decode_state(roots: Roots, data: bytes) -> tuple[int, bytes]:
    """(epoch, state) from a record; ValueError saying what is wrong with it."""
    if len(data) != STATE_RECORD_SIZE:
        raise ValueError(f"it is {len(data)} bytes, not {STATE_RECORD_SIZE}")
    magic, fingerprint, epoch = _STATE_HEAD.unpack_from(data)
    if magic != STATE_MAGIC:
        raise ValueError("it is not a key chain state (unknown magic or version)")
    if fingerprint != roots.fingerprint:
        raise ValueError(f"it belongs to another secret (fingerprint {fingerprint.hex()})")
    body, mac = data[:-_MAC_LEN], data[-_MAC_LEN:]
    if not hmac.compare_digest(mac, hmac.new(roots.state_key, body, hashlib.sha256).digest()):
        raise ValueError("it is damaged (bad MAC)")
    return epoch, data[_STATE_HEAD.size : _STATE_HEAD.size + STATE_LEN]


class StateFile:
    """The open state file; see the module docstring."""

    def __init__(self, fd: int, path: str, roots: Roots) -> None:
        self.path = path
        self._fd = fd
        self._roots = roots

    @staticmethod
    def read(path: str, roots: Roots) -> tuple[int, bytes] | None:
        """The saved (epoch, state); None when there is no file; KeyFileError
        (naming the file and what is wrong) for anything unusable."""
        what = f"ticket key chain state {path}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise KeyFileError(f"cannot open {what}: {reason_of(err)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise KeyFileError(f"{what} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_SH)
            data = os.pread(fd, STATE_RECORD_SIZE + 1, 0)
        except OSError as err:
            raise KeyFileError(f"cannot read {what}: {reason_of(err)}") from None
        finally:
            os.close(fd)
        try:
            return decode_state(roots, data)
        except ValueError as err:
            raise KeyFileError(f"{what} is unusable: {err}") from None

    @classmethod
    def create(cls, path: str, roots: Roots, epoch: int, state: bytes | bytearray) -> StateFile:
        """Write the record to a new file renamed over `path`; keep it open."""
        directory = os.path.dirname(path)
        record = encode_state(roots, epoch, state)
        remove_stale(path)
        try:
            fd, tmp = create_locked(path)
        except OSError as err:
            raise KeyFileError(
                f"cannot create ticket key chain state {path}: {reason_of(err)}"
            ) from None
        try:
            if os.write(fd, record) != len(record):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
            os.rename(tmp, path)
            fsync_dir(directory or ".")
        except OSError as err:
            os.close(fd)
            _unlink(tmp)
            raise KeyFileError(
                f"cannot write ticket key chain state {path}: {reason_of(err)}"
            ) from None
        fcntl.flock(fd, fcntl.LOCK_UN)  # the temporary name's lock; save() takes its own
        return cls(fd, path, roots)

    def save(self, epoch: int, state: bytes | bytearray) -> None:
        """One in-place write of the record, under an exclusive lock; OSError."""
        record = encode_state(self._roots, epoch, state)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            written = os.pwrite(self._fd, record, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if written != len(record):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(record)} bytes)")

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
