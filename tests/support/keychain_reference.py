"""A reference for the shared ticket key chain: its states and each epoch's keybuf.

SYNOPSIS
    from support.keychain_reference import reference_chain, reference_hkdf, reference_keybuf

    reference_chain(secret, epoch)             # C(epoch), 32 bytes
    reference_keybuf(secret, epoch, period)    # the 88-byte ticket keybuf of that epoch

DESCRIPTION
    reference_chain(secret, epoch) and reference_keybuf(secret, epoch,
    period) compute the shared key chain's state C(epoch) and the 88-byte
    ticket keybuf of an epoch from the secret, independently of
    tlsmgr/keychain.py: hashlib for the chain, the `cryptography`
    package's HKDF for the keys (the derivation rule is written out
    here, not imported).
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def reference_chain(secret: bytes, epoch: int) -> bytes:
    """C(epoch): C(0) = SHA-256("mpfx chain" || secret), C(e+1) = SHA-256("next" || C(e))."""
    state = hashlib.sha256(b"mpfx chain" + secret).digest()
    for _ in range(epoch):
        state = hashlib.sha256(b"next" + state).digest()
    return state


def reference_hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 with an empty salt, by the `cryptography` package."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def reference_keybuf(secret: bytes, epoch: int, period: int, state: bytes | None = None) -> bytes:
    """The keybuf of `epoch`: HKDF(C(epoch), "ticket") = name || AES || HMAC, then
    tout = (epoch + 1) * period - 1 as a little-endian int64."""
    state = state if state is not None else reference_chain(secret, epoch)
    material = reference_hkdf(state, b"ticket", 80)
    return material + struct.pack("<q", (epoch + 1) * period - 1)
