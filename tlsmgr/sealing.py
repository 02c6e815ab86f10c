"""Session cache entries sealed for a store outside the host: key names and the AEAD format.

SYNOPSIS
    from tlsmgr.sealing import Sealer, EpochKeys, SealError

    keys = EpochKeys(chain)                     # seal keys of the chain's window
    keys(epoch) -> bytes | None; keys.current(now) -> (epoch, key); keys.erase()
    sealer = Sealer(roots.index, keys)
    name = sealer.name(cache_type, cache_id)    # b"mpfx:v1:" + 64 hex digits
    value = sealer.seal(cache_type, cache_id, session, expires, now)
    session, expires = sealer.unseal(cache_type, cache_id, value, now)   # SealError

    redis_key(index_key, cache_type, cache_id) -> bytes
    seal(key, epoch, nonce, cache_type, cache_id, session, expires) -> bytes
    open_sealed(key_for, cache_type, cache_id, value) -> (session, expires)

DESCRIPTION
    A second-level cache (Redis) is shared by every host of a fleet and
    readable and writable by whoever reaches it, so what goes there says
    nothing of whom a host talks to, and nothing read back is believed
    unless a host of the fleet wrote it, for this very entry.

    Key name.  KEY_PREFIX ("mpfx:v1:") followed by the lower-case hex of
    HMAC-SHA256(K_index, cache_type || 0x00 || cache_id), K_index being
    the chain's index key (keychain.Roots.index, the same in every
    epoch, so an id keeps its name).  The cache id (a destination, an
    smtpd session id) never leaves the host.

    Value.  VERSION (the byte 0x01, "v1") || epoch (8 bytes, big-endian,
    in the clear: which seal key to use) || nonce (12 random bytes) ||
    ciphertext || tag (16 bytes).  ChaCha20-Poly1305 (RFC 8439, OpenSSL's
    through `cryptography`) under the seal key of that epoch (chain.seal_key(e):
    a label of its own, never a ticket key), over the plaintext
    expires (8 bytes, big-endian, unix seconds) || session, with the
    associated data VERSION || epoch || cache_type || 0x00 || cache_id.
    So a value moved to another key (another id or cache type), a value
    whose epoch was rewritten, and a value sealed under another secret
    all fail the tag.  45 bytes on top of the session.

    Epoch window.  EpochKeys gives the seal key of an epoch from the
    chain's floor (the oldest state it keeps) to one past the current
    epoch, and None outside it: a value older than the floor cannot be
    opened any more (the ratchet has moved on), and a value claiming a
    far future epoch is refused before any key is derived (walking the
    chain there would cost time).  Keys are derived once per epoch and
    dropped when the chain's floor passes them.

    Expiry.  The sealed expiry is the entry's: the writer's saved time
    plus its cache timeout.  unseal() refuses an expired value even when
    the store still returns it, so a replayed or clock-skewed value
    lives no longer than its writer meant.

    Nonces are 12 random bytes per seal (os.urandom, or `nonce`): the
    hosts of a fleet share a key per epoch, and random 96-bit nonces
    make a repeat negligible for far more seals per epoch than a fleet
    makes (10^7 seals: a chance of about 10^-14).

    No sockets, no clock (time comes in as `now`).

DIAGNOSTICS
    SealError, whose `reason` is one of
        "malformed"  too short, or an unknown version byte;
        "stale"      the epoch lies outside the key window;
        "tampered"   the tag does not verify: altered, moved between
                     keys, or sealed under another secret;
        "expired"    authentic, but its expiry has passed;
    and whose str() says so in words.

SECURITY
    Whoever holds a seal key reads and forges the values of its epoch;
    the keys come from the chain, so the chain's window bounds that (see
    docs/cluster.md).  A store writer can delete values, or put back an
    older authentic value of the same id until it expires: both only
    cost a full handshake.

SEE ALSO
    RFC 8439 (ChaCha20-Poly1305); tlsmgr/keychain.py (the seal and index
    keys), tlsmgr/redislevel.py (the second level), docs/cluster.md
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tlsmgr.keychain import Chain

KEY_PREFIX = b"mpfx:v1:"
VERSION = b"\x01"
NONCE_LEN = 12
TAG_LEN = 16
_EPOCH = struct.Struct(">Q")
_EXPIRES = struct.Struct(">q")
HEADER_LEN = len(VERSION) + _EPOCH.size  # the clear part: version and epoch
OVERHEAD = HEADER_LEN + NONCE_LEN + TAG_LEN + _EXPIRES.size  # 45


class SealError(Exception):
    """A value that does not open; `reason` says why (see DIAGNOSTICS)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def _id_bytes(cache_type: str, cache_id: str) -> bytes:
    return cache_type.encode() + b"\0" + cache_id.encode("utf-8", "surrogateescape")


def redis_key(index_key: bytes, cache_type: str, cache_id: str) -> bytes:
    """KEY_PREFIX + hex(HMAC-SHA256(index_key, cache_type || 0 || cache_id))."""
    digest = hmac.new(index_key, _id_bytes(cache_type, cache_id), hashlib.sha256)
    return KEY_PREFIX + digest.hexdigest().encode()


def seal(
    key: bytes,
    epoch: int,
    nonce: bytes,
    cache_type: str,
    cache_id: str,
    session: bytes,
    expires: int,
) -> bytes:
    """The value for (cache_type, cache_id) sealed under `key`, the seal key of `epoch`."""
    header = VERSION + _EPOCH.pack(epoch)
    associated = header + _id_bytes(cache_type, cache_id)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, _EXPIRES.pack(expires) + session, associated)
    return header + nonce + sealed  # the ciphertext, then the tag


def open_sealed(
    key_for: Callable[[int], bytes | None], cache_type: str, cache_id: str, value: bytes
) -> tuple[bytes, int]:
    """(session, expires) from a value; SealError ("malformed", "stale", "tampered")."""
    if len(value) < OVERHEAD or value[:1] != VERSION:
        raise SealError("malformed", f"not a sealed entry ({len(value)} bytes)")
    epoch = _EPOCH.unpack_from(value, 1)[0]
    key = key_for(epoch)
    if key is None:
        raise SealError("stale", f"sealed in epoch {epoch}, outside the key window")
    nonce = value[HEADER_LEN : HEADER_LEN + NONCE_LEN]
    associated = value[:HEADER_LEN] + _id_bytes(cache_type, cache_id)
    try:
        plain = ChaCha20Poly1305(key).decrypt(nonce, value[HEADER_LEN + NONCE_LEN :], associated)
    except InvalidTag:
        raise SealError(
            "tampered", f"fails authentication (altered, moved, or another secret's; epoch {epoch})"
        ) from None
    return plain[_EXPIRES.size :], _EXPIRES.unpack_from(plain)[0]


class EpochKeys:
    """Seal keys of the chain's window, derived once per epoch; see the module docstring."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._keys: dict[int, bytes] = {}

    def current(self, now: float) -> tuple[int, bytes]:
        """(epoch, seal key) of `now`; moves the chain on first if its timer is late."""
        epoch = self.chain.epoch(now)
        if epoch > self.chain.current:
            self.chain.advance(now)
        key = self(epoch)
        assert key is not None  # Sanity check: the current epoch is always in the window.
        return epoch, key

    def __call__(self, epoch: int) -> bytes | None:
        """The seal key of `epoch`, or None outside [floor, current + 1]."""
        key = self._keys.get(epoch)
        if key is not None:
            return key
        chain = self.chain
        if not chain.floor <= epoch <= chain.current + 1:
            return None
        if any(e < chain.floor for e in self._keys):
            self._keys = {e: k for e, k in self._keys.items() if e >= chain.floor}
        key = self._keys[epoch] = chain.seal_key(epoch)
        return key

    def erase(self) -> None:
        self._keys.clear()


class Sealer:
    """Key names and sealed values for one fleet; see the module docstring."""

    def __init__(
        self,
        index_key: bytes,
        keys: EpochKeys,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._index_key = index_key
        self.keys = keys
        self._nonce = nonce

    def name(self, cache_type: str, cache_id: str) -> bytes:
        return redis_key(self._index_key, cache_type, cache_id)

    def seal(
        self, cache_type: str, cache_id: str, session: bytes, expires: int, now: float
    ) -> bytes:
        """Sealed under the key of the epoch of `now`."""
        epoch, key = self.keys.current(now)
        return seal(key, epoch, self._nonce(NONCE_LEN), cache_type, cache_id, session, expires)

    def unseal(self, cache_type: str, cache_id: str, value: bytes, now: float) -> tuple[bytes, int]:
        """(session, expires); SealError, with reason "expired" for a value past its expiry."""
        session, expires = open_sealed(self.keys, cache_type, cache_id, value)
        if expires < int(now):
            raise SealError("expired", f"expired at {expires}")
        return session, expires
