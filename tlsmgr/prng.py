"""The tlsmgr PRNG pool: ChaCha20 with fast key erasure.

SYNOPSIS
    from tlsmgr import prng

    pool = prng.Pool()                # keyed from os.urandom(32), pid and time
    pool.mix_time(pid=True)           # pre-init: time of day, tv_sec ^ pid
    pool.mix(data)                    # any input: hashed into the next key, never credited
    pool.mix(data, now=True)          # ... applied at once, buffered output erased
    pool.reseed(data)                 # tls_random_source bytes: mix(now=True), counted
    pool.draw(n) -> bytes             # n >= 0 bytes of output
    pool.random_byte() -> int         # 0..255, for schedules
    pool.stats() -> dict[str, int]    # draws, bytes_drawn, mixes, reseeds, ...
    pool.close()                      # erase the state; the pool is unusable

    prng.next_delay(period, pool) -> int   # period * byte / 255, 0..period
    prng.clamp_period(period) -> int       # min(period, INT_MAX / 255)
    prng.keystream_into(key, out, nonce=..., counter=0)   # raw ChaCha20
    prng.Pool.from_key(key)           # deterministic pool: known answers, bench

DESCRIPTION
    This replaces OpenSSL's RAND pool that Postfix's tlsmgr(8) feeds with
    RAND_seed() and reads with RAND_bytes().

    Generator.  The state is one 32-byte ChaCha20 key and a buffer of
    keystream.  A refill runs ChaCha20 (RFC 8439, 96-bit nonce of zeros,
    counter 0; every key is used for exactly one refill) over REFILL_SIZE
    bytes: the first 32 bytes immediately become the next key and are
    zeroed in the buffer; the other REFILL_SIZE - 32 bytes are output.
    draw(n) serves bytes from the buffer, overwriting each served slice
    with zeros, and refills as often as needed (draw() has no upper
    bound; the seed request's 1..255 limit belongs to the service).  This
    is "fast key erasure" (Bernstein, 2017): the state never contains the
    key that produced output already given out, nor that output.

    Mixing.  mix(data) appends a length-prefixed copy of data to a pending
    BLAKE2b hash.  At the next refill the pending digest is folded into
    the key before it is used: key = BLAKE2b-256(person="mpfx-prng-fold",
    key || digest).  A hash of the old key and the input cannot hold less
    than the old key, so no input (a hostile exchange file, session data,
    an EGD server's bytes) can reduce what is in the pool; inputs are
    never trusted to add entropy either (nothing is credited).  Keystream
    already buffered (at most REFILL_SIZE - 32 bytes) does not depend on
    input mixed after it was made; mix(data, now=True) folds at once and
    erases the buffer, so the very next byte depends on data.  reseed(data)
    is mix(data, now=True) plus a count in stats(): use it for bytes from
    tls_random_source.  The exchange file is mixed with now=True.  The
    time of day, mixed on every loop turn, costs one hash update; a
    refill (a new cipher, ~8 us with OpenSSL's) happens only every
    REFILL_SIZE - 32 output bytes or after an immediate mix.

    Fork safety.  A pool remembers its pid.  In a forked child (found by
    an os.register_at_fork() hook, which every os.fork() runs, and again
    by a pid check in mix_time(), reseed() and every refill, for a fork
    made behind Python's back) the pool erases the keystream it inherited
    and folds in 32
    fresh bytes from os.urandom() together with the new pid and the time,
    before it serves anything: parent and child never return the same
    bytes.

    Schedules.  next_delay(period, pool) is Postfix's `period * randbyte /
    UCHAR_MAX` with period clamped to INT_MAX / 255 (8421504 s) first: an
    integer from 0 to period inclusive; 0 is possible and means "on the
    next loop turn".  tlsmgr uses it for tls_random_reseed_period and
    tls_random_prng_update_period.

    A pool is not thread-safe; tlsmgr has one thread.  This is the only
    module that imports `cryptography`'s ciphers (ChaCha20).

SECURITY
    Erasure in Python is best effort.  The key and the buffer are
    bytearrays, overwritten in place.  But draw() must return an immutable
    bytes object, whose memory is freed without being cleared; hashlib
    copies the key into its own C state and may free it without zeroing
    it (OpenSSL clears the cipher context of each refill when it frees
    it); the garbage collector may keep old copies until the memory is
    reused.  So a snapshot of the process memory can still reveal recent
    output and keys.  What the design guarantees is narrower and still
    useful: the pool object itself (key, buffer, pending hash of inputs)
    never contains anything from which earlier output can be computed,
    and the exchange file, which is written from draw(), never does either.
    The pending hash holds the inputs mixed since the last fold (time of
    day, session data); it is not secret key material.

DIAGNOSTICS
    draw() raises ValueError for a negative size; every method raises
    ValueError on a closed pool.  OpenSSL errors are not expected and
    propagate.

BUGS
    There is no entropy estimate and nothing blocks: the pool is as good
    as os.urandom() at start-up, plus whatever tls_random_source and the
    exchange file add.

SEE ALSO
    tlsmgr/entropy.py (sources and the exchange file), docs/prng.md,
    src/tlsmgr/tlsmgr.c and src/tls/tls_prng_*.c (Postfix),
    https://blog.cr.yp.to/20170723-random.html (fast key erasure),
    RFC 8439 (ChaCha20)
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import weakref

# ChaCha20 comes from OpenSSL's libcrypto through `cryptography`, which the TLS clients
# use anyway: it imports in some 7 ms, where pycryptodome's ctypes backend took 12 to 19
# (ctypes.util brings subprocess, shutil and tempfile) and its cffi backend 30 (it parses C
# declarations at import).  An exec'd tlsmgr pays this on its way to the first reply.
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_SIZE = 32
NONCE = bytes(12)  # every key is used for one refill only, so a constant nonce is safe
REFILL_SIZE = 4096  # keystream per refill: KEY_SIZE for the next key, the rest output
UCHAR_MAX = 255
INT_MAX = 2**31 - 1
MAX_PERIOD = INT_MAX // UCHAR_MAX  # 8421504 s, Postfix's clamp in tlsmgr_post_init
MIX_PERSON = b"mpfx-prng-mix"
FOLD_PERSON = b"mpfx-prng-fold"

_ZEROS = memoryview(bytes(REFILL_SIZE))
_POOLS: weakref.WeakSet[Pool] = weakref.WeakSet()


def keystream_into(
    key: bytes | bytearray, out: bytearray | memoryview, *, nonce: bytes = NONCE, counter: int = 0
) -> None:
    """Write ChaCha20 keystream for key/nonce, starting at block `counter`, into out.

    RFC 8439 ChaCha20 (96-bit nonce, 32-bit block counter) as OpenSSL
    implements it: its 128-bit IV is the counter (little-endian) || nonce.
    Raises ValueError for a bad key or nonce size.
    """
    if len(nonce) != len(NONCE):
        raise ValueError(f"ChaCha20 nonce must be {len(NONCE)} bytes, not {len(nonce)}")
    # Security: pass the bytearray itself; bytes(key) would leave an unerasable copy.
    iv = counter.to_bytes(4, "little") + nonce
    encryptor = Cipher(algorithms.ChaCha20(key, iv), None).encryptor()
    encryptor.update_into(_ZEROS[: len(out)] if len(out) <= REFILL_SIZE else bytes(len(out)), out)


def warm_up() -> None:
    """Run the cipher once, so that OpenSSL's one-time set-up is done.

    Its first cipher in a process costs some 1 ms (the provider's algorithm is
    fetched and cached); a spawn server calls this before it forks, so that no
    child pays it on its first request.  No key or output is kept.
    """
    keystream_into(bytes(KEY_SIZE), bytearray(64))


def clamp_period(period: int) -> int:
    """A reseed or exchange-file period clamped to INT_MAX / 255, as tlsmgr_post_init does."""
    return min(int(period), MAX_PERIOD)


def next_delay(period: int, pool: Pool) -> int:
    """Seconds until the next event: period * randombyte / 255 (0..period inclusive)."""
    return clamp_period(period) * pool.random_byte() // UCHAR_MAX


def _timeval(pid: int | None = None) -> bytes:
    """The time of day as a 16-byte struct timeval (amd64), tv_sec ^ pid when pid is given."""
    now = time.time_ns()
    sec, usec = now // 1_000_000_000, (now // 1000) % 1_000_000
    if pid is not None:
        sec ^= pid
    return struct.pack("=qq", sec, usec)


class Pool:
    """A ChaCha20 fast-key-erasure generator; see the module docstring."""

    __slots__ = (
        "_key",
        "_buf",
        "_view",
        "_pos",
        "_pending",
        "_pid",
        "_closed",
        "_stats",
        "__weakref__",
    )

    def __init__(self) -> None:
        self._setup(os.urandom(KEY_SIZE))
        self.mix(struct.pack("=q", os.getpid()) + _timeval())

    @classmethod
    def from_key(cls, key: bytes) -> Pool:
        """A pool whose output is a pure function of key and inputs.

        For known-answer tests and benchmarks only: nothing unpredictable
        goes in.  Fork safety still applies (a child rekeys from os.urandom).
        """
        if len(key) != KEY_SIZE:
            raise ValueError(f"pool key must be {KEY_SIZE} bytes, not {len(key)}")
        pool = cls.__new__(cls)
        pool._setup(key)
        return pool

    def _setup(self, key: bytes) -> None:
        self._key = bytearray(key)
        self._buf = bytearray(REFILL_SIZE)
        self._view = memoryview(self._buf)  # never resized, so the export is harmless
        self._pos = REFILL_SIZE  # empty: the next draw refills
        self._pending: hashlib.blake2b | None = None  # while inputs wait to be folded
        self._pid = os.getpid()
        self._closed = False
        self._stats = dict.fromkeys(
            (
                "draws",
                "bytes_drawn",
                "mixes",
                "bytes_mixed",
                "reseeds",
                "bytes_reseeded",
                "refills",
                "folds",
                "forks",
            ),
            0,
        )
        _POOLS.add(self)

    # -- inputs -----------------------------------------------------------

    def mix(self, data: bytes | bytearray | memoryview, *, now: bool = False) -> None:
        """Hash data into the pool; never credited.

        The input goes into the next key, made at the next refill: output
        already buffered (at most REFILL_SIZE - 32 bytes) does not depend
        on it.  With now=True it is applied at once and the buffer erased,
        so the very next byte depends on it (the exchange file does this).
        """
        self._check_open()
        if self._pending is None:
            self._pending = hashlib.blake2b(person=MIX_PERSON)
        self._pending.update(struct.pack(">Q", len(data)))
        self._pending.update(data)
        self._stats["mixes"] += 1
        self._stats["bytes_mixed"] += len(data)
        if now:
            self._apply_now()

    def mix_time(self, *, pid: bool = False) -> None:
        """Mix the time of day (struct timeval); with pid=True, tv_sec ^ getpid() (pre-init).

        Also the pool's pid check (see Fork safety): tlsmgr calls this once
        per loop turn, before it serves the turn's requests."""
        self._check_fork()
        self.mix(_timeval(os.getpid() if pid else None))

    def reseed(self, data: bytes | bytearray | memoryview) -> None:
        """Mix bytes from an external entropy source and apply them at once."""
        self._check_fork()
        self.mix(data, now=True)
        self._stats["reseeds"] += 1
        self._stats["bytes_reseeded"] += len(data)

    # -- output -----------------------------------------------------------

    def draw(self, n: int) -> bytes:
        """Return n bytes of output (n >= 0); each served byte is erased from the pool."""
        if n < 0:
            raise ValueError(f"cannot draw {n} bytes")
        if self._closed:
            self._check_open()
        self._stats["draws"] += 1
        self._stats["bytes_drawn"] += n
        pos = self._pos
        if n <= REFILL_SIZE - pos:  # fast path: one slice of the buffer
            out = bytes(self._view[pos : pos + n])
            self._view[pos : pos + n] = _ZEROS[:n]
            self._pos = pos + n
            return out
        return self._draw_long(n)

    def _draw_long(self, n: int) -> bytes:
        out = bytearray(n)
        done = 0
        while done < n:
            if self._pos == REFILL_SIZE:
                self._refill()
            take = min(n - done, REFILL_SIZE - self._pos)
            out[done : done + take] = self._view[self._pos : self._pos + take]
            self._view[self._pos : self._pos + take] = _ZEROS[:take]
            self._pos += take
            done += take
        result = bytes(out)
        out[:] = bytes(n)
        return result

    def random_byte(self) -> int:
        """One output byte as an integer 0..255."""
        return self.draw(1)[0]

    def stats(self) -> dict[str, int]:
        """Counters since the pool was made (inherited across fork)."""
        return dict(self._stats)

    def close(self) -> None:
        """Erase key, buffer and pending input; later calls raise ValueError."""
        self._key[:] = bytes(KEY_SIZE)
        self._view[:] = _ZEROS
        self._pos = REFILL_SIZE
        self._pending = None
        self._closed = True

    # -- internals ----------------------------------------------------------

    def _refill(self) -> None:
        """Fast key erasure: keystream -> first 32 bytes are the next key, the rest output."""
        self._check_fork()
        if self._pending is not None:
            self._fold()
        keystream_into(self._key, self._view)
        self._key[:] = self._view[:KEY_SIZE]
        self._view[:KEY_SIZE] = _ZEROS[:KEY_SIZE]
        self._pos = KEY_SIZE
        self._stats["refills"] += 1

    def _fold(self) -> None:
        """key = H(key || H(pending inputs))."""
        pending = self._pending.digest() if self._pending is not None else b""
        self._pending = None
        h = hashlib.blake2b(digest_size=KEY_SIZE, person=FOLD_PERSON)
        h.update(self._key)
        h.update(pending)
        self._key[:] = h.digest()
        self._stats["folds"] += 1

    def _apply_now(self) -> None:
        """Fold pending input and erase buffered keystream, which cannot depend on it."""
        self._erase_buffer()
        self._fold()

    def _erase_buffer(self) -> None:
        self._view[self._pos :] = _ZEROS[: REFILL_SIZE - self._pos]
        self._pos = REFILL_SIZE

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("PRNG pool is closed")

    def _check_fork(self) -> None:
        self._check_open()
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a child: drop inherited keystream, fold in fresh OS randomness and the pid."""
        if self._closed:
            return
        self._pid = os.getpid()
        self.mix(os.urandom(KEY_SIZE) + struct.pack("=q", self._pid) + _timeval())
        self._apply_now()
        self._stats["forks"] += 1


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
