"""tlsmgr.keychain: HKDF, the one-way chain, epochs, the window and its erasure."""

from __future__ import annotations

import hashlib

import pytest

from support.keychain_reference import reference_chain, reference_hkdf, reference_keybuf
from tlsmgr import keychain
from tlsmgr.keychain import Chain, ChainError, Roots

SECRET = bytes(range(32, 96))
H = 1800


# RFC 5869, appendix A, test cases 1-3 (SHA-256).
RFC5869 = [
    (
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        bytes.fromhex("0b" * 22),
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize("ikm, salt, info, length, prk, okm", RFC5869, ids=["A.1", "A.2", "A.3"])
def test_hkdf_rfc5869_vectors(ikm, salt, info, length, prk, okm):
    assert keychain.hkdf_extract(ikm, salt).hex() == prk
    assert keychain.hkdf_expand(bytes.fromhex(prk), info, length).hex() == okm
    assert keychain.hkdf(ikm, info, length, salt).hex() == okm


def test_hkdf_agrees_with_an_independent_implementation():
    for n in range(1, 6):
        ikm = hashlib.sha256(bytes([n])).digest()
        assert keychain.hkdf(ikm, b"label%d" % n, 16 * n) == reference_hkdf(
            ikm, b"label%d" % n, 16 * n
        )
    with pytest.raises(ValueError):
        keychain.hkdf_expand(bytes(32), b"", 255 * 32 + 1)


def test_chain_known_answers():
    c0 = keychain.genesis(SECRET)
    assert bytes(c0) == hashlib.sha256(b"mpfx chain" + SECRET).digest()
    c1 = hashlib.sha256(b"next" + bytes(c0)).digest()
    assert keychain.walk(c0, 1) == c1
    assert keychain.walk(c0, 5) == reference_chain(SECRET, 5)
    assert keychain.walk(c0, 0) == bytes(c0)
    with pytest.raises(ValueError):
        keychain.walk(c0, -1)


def test_epoch_boundaries_and_tout():
    assert keychain.epoch_of(0, H) == 0
    assert keychain.epoch_of(H - 1, H) == 0
    assert keychain.epoch_of(H - 0.001, H) == 0
    assert keychain.epoch_of(H, H) == 1
    assert keychain.epoch_of(-5, H) == 0
    for epoch in (0, 1, 997_000):
        last = keychain.tout(epoch, H)
        assert last == (epoch + 1) * H - 1
        assert keychain.epoch_of(last, H) == epoch
        assert keychain.epoch_of(last + 1, H) == epoch + 1
    assert keychain.past_epochs(3600, H) == 3
    assert keychain.past_epochs(3599, H) == 2


def test_ticket_material_matches_the_independent_derivation():
    epoch = 1234
    chain = Chain(H, epoch * H + 5, 0, keychain.genesis(SECRET))
    material = chain.ticket_material(epoch)
    assert material == reference_keybuf(SECRET, epoch, H)[:80]
    assert chain.state(epoch) == reference_chain(SECRET, epoch)
    # The name is derived with the keys, and differs per epoch.
    assert chain.ticket_material(epoch - 1)[:16] != material[:16]
    assert chain.ticket_material(epoch + 1)[:16] != material[:16]


def test_epoch_zero_has_proper_keys():
    """GnuTLS's CVE-2020-13777 was an all-zero key in the first period."""
    chain = Chain(H, 0, 0, keychain.genesis(SECRET))
    assert (chain.floor, chain.current) == (0, 0)
    material = chain.ticket_material(0)
    assert material == reference_keybuf(SECRET, 0, H)[:80]
    name, aes, mac = material[:16], material[16:48], material[48:80]
    assert len({name, aes[:16], aes[16:], mac[:16], mac[16:]}) == 5
    assert len(set(material)) > 40  # 80 pseudo-random bytes, not a pattern
    assert material != chain.ticket_material(1)
    other = Chain(H, 0, 0, keychain.genesis(b"\x00" * 32))
    assert other.ticket_material(0) != material


def test_labels_give_independent_keys():
    chain = Chain(H, 10 * H, 0, keychain.genesis(SECRET))
    roots = Roots.derive(keychain.genesis(SECRET))
    seal = chain.seal_key(10)
    assert seal == reference_hkdf(reference_chain(SECRET, 10), b"seal", 32)
    ticket = chain.ticket_material(10)
    assert seal not in (ticket[16:48], ticket[48:80])
    c0 = reference_chain(SECRET, 0)
    assert roots.index == reference_hkdf(c0, b"index", 32)
    assert roots.state_key == reference_hkdf(c0, b"state", 32)
    assert roots.fingerprint == reference_hkdf(c0, b"fingerprint", 8)
    assert chain.derive(10, b"other", 40) == reference_hkdf(
        reference_chain(SECRET, 10), b"other", 40
    )


def test_window_holds_previous_current_and_next():
    chain = Chain(H, 10 * H, 0, keychain.genesis(SECRET))
    assert (chain.floor, chain.current) == (9, 10)
    for epoch in (9, 10, 11):
        assert chain.state(epoch) == reference_chain(SECRET, epoch)
    with pytest.raises(ChainError, match="before the chain's window.*ratchet has moved on"):
        chain.state(8)
    # Later states are computed on demand.
    assert chain.state(14) == reference_chain(SECRET, 14)


def test_advance_erases_what_leaves_the_window():
    saved = []
    chain = Chain(
        H, 10 * H, 0, keychain.genesis(SECRET), on_advance=lambda c: saved.append(c.floor)
    )
    held = list(chain._states)  # the bytearrays themselves, to watch them being zeroed
    assert not chain.advance(10 * H + H - 1)  # same epoch
    assert chain.advance(11 * H)
    assert saved == [10]
    assert held[0] == bytes(32)  # C(9) zeroed
    assert held[1] == reference_chain(SECRET, 10)
    with pytest.raises(ChainError):
        chain.state(9)
    assert chain.state(12) == reference_chain(SECRET, 12)


def test_advance_jumps_many_epochs():
    chain = Chain(H, 10 * H, 0, keychain.genesis(SECRET))
    held = list(chain._states)
    assert chain.advance(1010 * H)
    assert (chain.floor, chain.current) == (1009, 1010)
    assert all(state == bytes(32) for state in held)
    assert chain.state(1009) == reference_chain(SECRET, 1009)
    assert chain.state(1011) == reference_chain(SECRET, 1011)


def test_clock_going_back_leaves_the_window():
    chain = Chain(H, 10 * H, 0, keychain.genesis(SECRET))
    assert not chain.advance(5 * H)
    assert (chain.floor, chain.current) == (9, 10)


def test_keep_past_holds_more_states():
    chain = Chain(H, 10 * H, 0, keychain.genesis(SECRET), keep_past=4)
    assert chain.floor == 6
    assert chain.seal_key(6) == reference_hkdf(reference_chain(SECRET, 6), b"seal", 32)
    chain.advance(12 * H)
    assert chain.floor == 8
    with pytest.raises(ChainError):
        chain.seal_key(7)
    assert Chain(H, 2 * H, 0, keychain.genesis(SECRET), keep_past=4).floor == 0


def test_a_ratchet_that_moved_on_cannot_go_back():
    """A host holding only C(100) cannot make the keys of epoch 99 or before."""
    c100 = reference_chain(SECRET, 100)
    chain = Chain(H, 101 * H, 100, c100)
    assert chain.ticket_material(100) == reference_keybuf(SECRET, 100, H)[:80]
    with pytest.raises(ChainError):
        chain.ticket_material(99)
    with pytest.raises(ChainError, match="after the epoch needed"):
        Chain(H, 100 * H, 100, c100)  # the window of epoch 100 starts at 99


def test_erase_and_bad_arguments():
    chain = Chain(H, 10 * H, 0, keychain.genesis(SECRET))
    held = list(chain._states)
    chain.erase()
    assert all(state == bytes(32) for state in held)
    with pytest.raises(ChainError, match="erased"):
        chain.state(10)
    with pytest.raises(ValueError):
        Chain(0, 0, 0, bytes(32))
    with pytest.raises(ValueError):
        Chain(H, 0, 0, bytes(31))
    with pytest.raises(ValueError):
        Chain(H, 0, 0, bytes(32), keep_past=-1)
