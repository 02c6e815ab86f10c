"""tlsmgr.tickets: Postfix's two-key RFC 5077 store, and the keys shared through a key chain."""

from __future__ import annotations

import struct

import pytest

from support.keychain_reference import reference_chain, reference_keybuf
from tlsmgr import keychain
from tlsmgr.protocol import KEYBUF_SIZE
from tlsmgr.tickets import SharedTicketKeys, TicketKeys, pack_key, unpack_key


class Counter:
    """Deterministic randomness: each draw is a new run of one byte value."""

    def __init__(self) -> None:
        self.n = 0

    def draw(self, n: int) -> bytes:
        self.n += 1
        return bytes([self.n]) * n


T = 3600
H = T // 2
NOW = 1_700_000_000


def test_keybuf_layout():
    keys = TicketKeys(T, Counter())
    keybuf = keys.lookup(b"", NOW)
    assert len(keybuf) == KEYBUF_SIZE == 88
    assert keybuf[:16] == b"\x01" * 16  # name
    assert keybuf[16:48] == b"\x01" * 32  # AES-256 key
    assert keybuf[48:80] == b"\x01" * 32  # HMAC key
    assert struct.unpack("<q", keybuf[80:])[0] == NOW + H - 1  # encrypt until
    assert pack_key(unpack_key(keybuf)) == keybuf


def test_current_key_is_reused_while_it_encrypts():
    keys = TicketKeys(T, Counter())
    first = keys.lookup(b"", NOW)
    assert keys.lookup(b"", NOW + H - 2) == first
    # tout > now is strict: at tout a new key is made.
    second = keys.lookup(b"", NOW + H - 1)
    assert second[:16] == b"\x02" * 16
    assert struct.unpack("<q", second[80:])[0] == NOW + H - 1 + H - 1


def test_named_lookup_and_decrypt_window():
    keys = TicketKeys(T, Counter())
    first = keys.lookup(b"", NOW)
    name = first[:16]
    tout = NOW + H - 1
    assert keys.lookup(name, NOW) == first
    keys.lookup(b"", tout)  # rotate: the first key is now keys[1]
    assert keys.lookup(name, tout + H - 1) == first  # tout + H > now
    assert keys.lookup(name, tout + H) is None
    assert keys.lookup(b"\x7f" * 16, NOW) is None


def test_only_two_keys_are_kept():
    keys = TicketKeys(T, Counter())
    k1 = keys.lookup(b"", NOW)
    k2 = keys.lookup(b"", NOW + H)
    k3 = keys.lookup(b"", NOW + 2 * H)
    assert k3[:16] == b"\x03" * 16
    assert keys.lookup(k2[:16], NOW + 2 * H) == k2
    assert keys.lookup(k1[:16], NOW + 2 * H) is None  # rotated out


def test_disabled_and_bad_names():
    keys = TicketKeys(0, Counter())
    assert not keys.enabled
    assert keys.lookup(b"", NOW) is None
    with pytest.raises(ValueError, match="length: 3"):
        TicketKeys(T, Counter()).lookup(b"abc", NOW)


def test_sanitised_minimum_timeout():
    keys = TicketKeys(120, Counter())
    keybuf = keys.lookup(b"", NOW)
    assert struct.unpack("<q", keybuf[80:])[0] == NOW + 59


# Shared keys: every host derives the same keys from the same secret.

SECRET = b"the fleet's shared secret, 32+ bytes"
E = 1000  # an epoch, and a time in it (a small one keeps the chain walks short)
NOW_E = E * H + 7


def shared(now: float = NOW_E, secret: bytes = SECRET) -> SharedTicketKeys:
    return SharedTicketKeys(keychain.Chain(H, now, 0, keychain.genesis(secret)))


def test_shared_keys_are_the_chain_keys_with_the_epoch_tout():
    keybuf = shared().lookup(b"", NOW_E)
    assert keybuf == reference_keybuf(SECRET, E, H)
    assert struct.unpack("<q", keybuf[80:])[0] == (E + 1) * H - 1
    # Another host with the same secret, started at another time, agrees.
    assert shared(NOW_E - 5 * H).lookup(b"", NOW_E) == keybuf
    assert shared(secret=b"another secret of 32 bytes or more").lookup(b"", NOW_E) != keybuf


def test_shared_encryption_key_follows_the_epoch():
    keys = shared()
    first = keys.lookup(b"", E * H)
    assert keys.lookup(b"", (E + 1) * H - 1) == first  # its tout: smtpd asks again now
    assert keys.lookup(b"", (E + 1) * H) == reference_keybuf(SECRET, E + 1, H)


def test_shared_names_are_found_in_the_previous_current_and_next_epoch():
    base = reference_chain(SECRET, E - 2)
    names = {
        d: reference_keybuf(SECRET, E + d, H, keychain.walk(base, d + 2))[:16]
        for d in (-2, -1, 0, 1, 2)
    }
    keys = shared()
    for d in (-1, 0, 1):
        assert keys.lookup(names[d], NOW_E) == reference_keybuf(
            SECRET, E + d, H, keychain.walk(base, d + 2)
        )
    assert keys.lookup(names[-2], NOW_E) is None  # too old
    assert keys.lookup(names[2], NOW_E) is None  # too far ahead
    assert keys.lookup(b"\x7f" * 16, NOW_E) is None
    with pytest.raises(ValueError, match="length: 3"):
        keys.lookup(b"abc", NOW_E)


def test_shared_keys_leaving_the_window_are_erased():
    keys = shared()
    old = keys.lookup(b"", NOW_E)
    held = keys._keys[E]  # the key object itself, to watch it being zeroed
    assert keys.lookup(old[:16], NOW_E + H) == old  # previous epoch: still good
    assert bytes(held.material) == old[:80]
    assert keys.lookup(old[:16], NOW_E + 2 * H) is None
    assert held.material == bytes(80)
    assert keys.chain.floor == E + 1


def test_shared_keys_after_the_clock_stepped_back():
    keys = shared()
    keys.lookup(b"", NOW_E + 10 * H)
    # The chain cannot go back: no key to encrypt with until the clock catches up.
    assert keys.lookup(b"", NOW_E) is None
    assert keys.lookup(b"", NOW_E + 9 * H) == reference_keybuf(SECRET, E + 9, H)


def test_shared_keys_at_epoch_zero():
    keys = shared(now=0)
    keybuf = keys.lookup(b"", 0)
    assert keybuf == reference_keybuf(SECRET, 0, H)
    assert keybuf[:80] != bytes(80) and len(set(keybuf[:80])) > 40
    assert struct.unpack("<q", keybuf[80:])[0] == H - 1
