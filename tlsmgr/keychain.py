"""The shared key chain: one secret, a one-way chain of states, keys derived by label.

SYNOPSIS
    from tlsmgr import keychain

    c0 = keychain.genesis(secret)            # C(0) = SHA-256("mpfx chain" || secret)
    roots = keychain.Roots.derive(c0)        # index, state_key, fingerprint (kept)
    chain = keychain.Chain(period, now, origin_epoch, origin_state,
                           keep_past=1, on_advance=None)
    chain.epoch(now) -> int                  # floor(now / period)
    chain.advance(now) -> bool               # True when the window moved
    chain.floor, chain.current               # oldest state held, newest epoch seen
    chain.state(e) -> bytes                  # C(e); ChainError before the floor
    chain.derive(e, label, length) -> bytes  # HKDF-SHA256(C(e), info=label)
    chain.ticket_material(e) -> bytes        # 80 bytes: name || AES || HMAC
    chain.seal_key(e) -> bytes               # 32 bytes, label "seal"
    chain.erase()

    keychain.hkdf(ikm, info, length, salt=b"")   # RFC 5869, SHA-256
    keychain.walk(state, steps) -> bytes         # C(e + steps) from C(e)
    keychain.tout(e, period) -> int              # (e + 1) * period - 1
    keychain.past_epochs(lifetime, period) -> int

DESCRIPTION
    Hosts given the same secret agree on every key without talking to
    each other; a host that holds only a later state cannot go back.

    Epochs.  With H = period seconds (tlsmgr uses half the sanitised
    smtpd_tls_session_cache_timeout, the period at which Postfix's tlsmgr
    makes a new ticket key), epoch e = floor(unix_time / H).  No start
    time is needed: hosts that agree on H and on the time agree on e.
    tout(e) = (e + 1) * H - 1 is the last second of epoch e.

    Chain.  C(0) = SHA-256("mpfx chain" || secret) and C(e + 1) =
    SHA-256("next" || C(e)).  A step is one SHA-256 over 36 bytes:
    walking 10^6 steps (epoch 0 to today at H = 1800) takes about 0.3 s
    here, so a host can always start from the secret; the saved state
    (tlsmgr/keyfiles.py) only shortens the walk.  Going back needs a
    SHA-256 preimage.

    Derivation.  Every key is HKDF-SHA256 (RFC 5869: extract with an
    empty salt, expand with the label as info) over a chain state, each
    use with its own label, so no key is ever used for two purposes:
        ticket material  C(e), "ticket", 80 bytes: the 16-byte key name,
                         the 32-byte AES-256 key and the 32-byte
                         HMAC-SHA256 key, in the keybuf's order.  The name
                         is thus derived with the keys: the same on every
                         host for an epoch, different for every epoch and
                         every secret, and it reveals nothing of the keys.
        seal key         C(e), "seal", 32 bytes (for sealing cache
                         entries kept outside the host).
        Roots, once, from C(0):
        index            "index", 32 bytes: a key that is the same in
                         every epoch (for naming shared cache entries).
        state_key        "state", 32 bytes: authenticates the saved state.
        fingerprint      "fingerprint", 8 bytes: names the secret in logs
                         and in the state file; hosts with equal
                         fingerprints hold the same secret.
    Epoch 0 gets keys like any other (a constant key in the first period
    would be GnuTLS's CVE-2020-13777).

    Window.  A Chain holds the states C(floor) .. C(current + 1), where
    current is the newest epoch seen (from `now`) and floor = current -
    keep_past (not below 0).  advance(now) moves forward only: states
    below the new floor are overwritten with zeros and dropped, and
    on_advance(chain) is called (tlsmgr saves the floor state then).  A
    clock that goes back leaves the window where it is.  state(e) for e
    below the floor raises ChainError: the ratchet has moved on.  States
    after current + 1 are computed on demand and not kept.

    keep_past is what the chain's users need: 1 for ticket keys (the
    previous epoch's tickets are still accepted); a user that keeps data
    sealed for up to L seconds needs past_epochs(L, H) = L // H + 1.

    No sockets, no clock, no files, no third-party imports.

SECURITY
    Whoever holds C(e) can derive every key of epoch e and later; whoever
    holds the secret, every key.  The Chain never sees the secret:
    genesis() takes it, and the caller erases its copy.  Erasure is best
    effort: states live in bytearrays that are zeroed, but hashlib and
    hmac make internal copies that Python does not let us clear.

SEE ALSO
    RFC 5869 (HKDF); tlsmgr/keyfiles.py (the secret file, the saved
    state), tlsmgr/tickets.py (SharedTicketKeys), docs/cluster.md
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from tlsmgr.protocol import TICKET_MATERIAL_LEN

STATE_LEN = 32  # SHA-256
GENESIS_PREFIX = b"mpfx chain"
STEP_PREFIX = b"next"

LABEL_TICKET = b"ticket"
LABEL_SEAL = b"seal"
LABEL_INDEX = b"index"
LABEL_STATE = b"state"
LABEL_FINGERPRINT = b"fingerprint"

SEAL_KEY_LEN = 32
FINGERPRINT_LEN = 8
TICKET_PAST_EPOCHS = 1  # tickets of the previous epoch are still accepted

_HASH_LEN = hashlib.sha256().digest_size


class ChainError(Exception):
    """A state the chain cannot give (before its floor); str() says which."""


# RFC 5869 over SHA-256.


def hkdf_extract(ikm: bytes | bytearray, salt: bytes = b"") -> bytes:
    """PRK = HMAC-SHA256(salt, IKM); an empty salt is HashLen zero bytes."""
    return hmac.new(salt or bytes(_HASH_LEN), ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """OKM: the first `length` bytes of T(1) || T(2) || ...; length <= 255 * 32."""
    if not 0 < length <= 255 * _HASH_LEN:
        raise ValueError(f"HKDF output length {length} out of range")
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def hkdf(ikm: bytes | bytearray, info: bytes, length: int, salt: bytes = b"") -> bytes:
    """HKDF-SHA256(IKM, salt, info, L)."""
    return hkdf_expand(hkdf_extract(ikm, salt), info, length)


# The chain.


def genesis(secret: bytes | bytearray) -> bytearray:
    """C(0) = SHA-256("mpfx chain" || secret)."""
    digest = hashlib.sha256(GENESIS_PREFIX)
    digest.update(secret)
    return bytearray(digest.digest())


def walk(state: bytes | bytearray, steps: int) -> bytes:
    """C(e + steps) from C(e): `steps` times C' = SHA-256("next" || C)."""
    if steps < 0:
        raise ValueError("the chain only goes forward")
    # Speed: copying a hash object that has absorbed the prefix beats
    # hashing prefix + state afresh (about 0.3 s instead of 0.5 s per 10^6).
    base = hashlib.sha256(STEP_PREFIX)
    current = bytes(state)
    for _ in range(steps):
        digest = base.copy()
        digest.update(current)
        current = digest.digest()
    return current


def epoch_of(now: float, period: int) -> int:
    """floor(now / period), never below 0."""
    return max(0, int(now // period))


def tout(epoch: int, period: int) -> int:
    """The last second of `epoch`: (epoch + 1) * period - 1."""
    return (epoch + 1) * period - 1


def past_epochs(lifetime: int, period: int) -> int:
    """Past epochs to keep for data that lives up to `lifetime` seconds."""
    return lifetime // period + 1


class Roots:
    """What is derived once from C(0) and kept for the process's life."""

    __slots__ = ("index", "state_key", "fingerprint")

    def __init__(self, *, index: bytes, state_key: bytes, fingerprint: bytes) -> None:
        self.index = index
        self.state_key = state_key
        self.fingerprint = fingerprint

    @classmethod
    def derive(cls, c0: bytes | bytearray) -> Roots:
        prk = hkdf_extract(c0)
        return cls(
            index=hkdf_expand(prk, LABEL_INDEX, 32),
            state_key=hkdf_expand(prk, LABEL_STATE, 32),
            fingerprint=hkdf_expand(prk, LABEL_FINGERPRINT, FINGERPRINT_LEN),
        )


class Chain:
    """Chain states C(floor) .. C(current + 1); see the module docstring."""

    def __init__(
        self,
        period: int,
        now: float,
        origin_epoch: int,
        origin_state: bytes | bytearray,
        *,
        keep_past: int = TICKET_PAST_EPOCHS,
        on_advance: Callable[[Chain], None] | None = None,
    ) -> None:
        """Walk from C(origin_epoch) to the window of `now`.

        ValueError for a period below 1, a negative keep_past or a state
        that is not 32 bytes; ChainError when origin_epoch is after the
        floor the window of `now` needs (the walk cannot go back)."""
        if period < 1:
            raise ValueError(f"epoch period {period} is not positive")
        if keep_past < 0:
            raise ValueError(f"keep_past {keep_past} is negative")
        if len(origin_state) != STATE_LEN:
            raise ValueError(f"a chain state is {STATE_LEN} bytes, not {len(origin_state)}")
        self.period = period
        self.keep_past = keep_past
        self.on_advance = on_advance
        self.current = epoch_of(now, period)
        self.floor = max(0, self.current - keep_past)
        if origin_epoch > self.floor:
            raise ChainError(
                f"chain state of epoch {origin_epoch} is after the epoch needed ({self.floor})"
            )
        first = walk(origin_state, self.floor - origin_epoch)
        self._states: list[bytearray] = [bytearray(first)]
        self._extend()

    def epoch(self, now: float) -> int:
        return epoch_of(now, self.period)

    def advance(self, now: float) -> bool:
        """Move the window to the epoch of `now` (forward only); True when it moved."""
        epoch = epoch_of(now, self.period)
        if epoch <= self.current:
            return False
        floor = max(0, epoch - self.keep_past)
        drop = floor - self.floor
        if drop >= len(self._states):
            # Jump: one walk from the newest state held.
            last = self._states[-1]
            fresh = bytearray(walk(last, floor - (self.floor + len(self._states) - 1)))
            self._erase(len(self._states))
            self._states = [fresh]
        elif drop > 0:
            self._erase(drop)
            del self._states[:drop]
        self.floor, self.current = floor, epoch
        self._extend()
        if self.on_advance is not None:
            self.on_advance(self)
        return True

    def state(self, epoch: int) -> bytes:
        """C(epoch) for epoch >= floor; ChainError before the floor."""
        return bytes(self._ref(epoch))

    def derive(self, epoch: int, label: bytes, length: int = 32) -> bytes:
        """HKDF-SHA256(C(epoch), info=label, length); ChainError before the floor."""
        return hkdf(self._ref(epoch), label, length)

    def ticket_material(self, epoch: int) -> bytes:
        """80 bytes: key name (16), AES-256 key (32), HMAC-SHA256 key (32)."""
        return self.derive(epoch, LABEL_TICKET, TICKET_MATERIAL_LEN)

    def seal_key(self, epoch: int) -> bytes:
        """The 32-byte key that seals data of `epoch` (never a ticket key)."""
        return self.derive(epoch, LABEL_SEAL, SEAL_KEY_LEN)

    def erase(self) -> None:
        """Zero and drop every state; the chain is unusable afterwards."""
        self._erase(len(self._states))
        self._states = []

    def _ref(self, epoch: int) -> bytes | bytearray:
        if epoch < self.floor:
            raise ChainError(
                f"epoch {epoch} is before the chain's window (from epoch {self.floor}):"
                " the ratchet has moved on"
            )
        if not self._states:
            raise ChainError("the chain has been erased")
        index = epoch - self.floor
        if index < len(self._states):
            return self._states[index]
        return walk(self._states[-1], index - len(self._states) + 1)

    def _extend(self) -> None:
        """Hold states up to current + 1."""
        want = self.current + 1 - self.floor + 1
        while len(self._states) < want:
            self._states.append(bytearray(walk(self._states[-1], 1)))

    def _erase(self, count: int) -> None:
        for state in self._states[:count]:
            state[:] = bytes(len(state))
