"""tlsmgr.tickets: Postfix's two-key RFC 5077 store (reference 2.8)."""

from __future__ import annotations

import struct

import pytest

from tlsmgr.tickets import KEYBUF_SIZE, TicketKeys, pack_key, unpack_key


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
