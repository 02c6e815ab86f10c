"""A reference ChaCha20 (RFC 8439 section 2.3) and the pool's construction, in pure Python.

SYNOPSIS
    from support.prng_reference import KEY, RefPool, ref_block, ref_keystream

    ref_block(KEY, 1, nonce)              # one 64-byte block
    ref_keystream(KEY, n)                 # n bytes from counter 0, nonce 0
    RefPool(KEY).draw(32)                 # what prng.Pool.from_key(KEY).draw(32) must give

DESCRIPTION
    Written from the RFC, independent of OpenSSL (which tlsmgr's
    pool uses), so that known-answer tests do not check the pool with its
    own cipher; tests/unit/test_prng.py checks it against the RFC's
    vectors.  RefPool is the fast-key-erasure construction as
    tlsmgr/prng.py's docstring states it: mix() feeds a pending BLAKE2b
    (person MIX_PERSON), a draw folds it into the key (person
    FOLD_PERSON) and refills REFILL_SIZE bytes of keystream, whose first
    32 bytes become the next key.  KEY is the RFC's test key, 00..1f.
"""

from __future__ import annotations

import hashlib
import struct

from tlsmgr import prng

KEY = bytes(range(32))
M32 = 0xFFFFFFFF


def _rotl(v: int, c: int) -> int:
    return ((v << c) & M32) | (v >> (32 - c))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 7)


def ref_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    state = [
        *struct.unpack("<4I", b"expand 32-byte k"),
        *struct.unpack("<8I", key),
        counter,
        *struct.unpack("<3I", nonce),
    ]
    w = list(state)
    for _ in range(10):
        _quarter(w, 0, 4, 8, 12)
        _quarter(w, 1, 5, 9, 13)
        _quarter(w, 2, 6, 10, 14)
        _quarter(w, 3, 7, 11, 15)
        _quarter(w, 0, 5, 10, 15)
        _quarter(w, 1, 6, 11, 12)
        _quarter(w, 2, 7, 8, 13)
        _quarter(w, 3, 4, 9, 14)
    return struct.pack("<16I", *((x + y) & M32 for x, y in zip(w, state, strict=True)))


def ref_keystream(key: bytes, n: int, nonce: bytes = bytes(12), counter: int = 0) -> bytes:
    blocks = (n + 63) // 64
    return b"".join(ref_block(key, counter + i, nonce) for i in range(blocks))[:n]


class RefPool:
    """The construction as the docstring states it, in a few lines."""

    def __init__(self, key: bytes) -> None:
        self.key, self.buf, self.pending = key, b"", None

    def mix(self, data: bytes, now: bool = False) -> None:
        if self.pending is None:
            self.pending = hashlib.blake2b(person=prng.MIX_PERSON)
        self.pending.update(struct.pack(">Q", len(data)) + data)
        if now:
            self.buf = b""
            self.fold()

    def fold(self) -> None:
        digest = self.pending.digest() if self.pending else b""
        self.pending = None
        h = hashlib.blake2b(self.key + digest, digest_size=32, person=prng.FOLD_PERSON)
        self.key = h.digest()

    def draw(self, n: int) -> bytes:
        while len(self.buf) < n:
            if self.pending is not None:
                self.fold()
            ks = ref_keystream(self.key, prng.REFILL_SIZE)
            self.key, self.buf = ks[:32], self.buf + ks[32:]
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
