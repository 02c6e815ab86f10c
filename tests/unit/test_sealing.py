"""Sealed cache entries for Redis: key names, the value format, and every way a value fails to open.

The reference values are computed here from the format as docs/tlsmgr.md writes it, with
the `cryptography` package's ChaCha20-Poly1305 and HKDF and hashlib's chain, not with
tlsmgr's own code; one vector is pinned so that the format cannot drift unnoticed.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from support.keychain_reference import reference_chain, reference_hkdf
from tlsmgr import keychain
from tlsmgr.sealing import OVERHEAD, EpochKeys, Sealer, SealError

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
H = 1800
EPOCH = 1000  # small, so that the chain is walked quickly
NOW = EPOCH * H + 100  # early in EPOCH
NONCE = bytes(range(100, 112))
SESSION = b"\x30\x82\x01\x00" + b"session" * 20
EXPIRES = NOW + 3600


def chain_of(secret: bytes, now: float = NOW, keep_past: int = 3) -> keychain.Chain:
    state = reference_chain(secret, 0)
    return keychain.Chain(H, now, 0, state, keep_past=keep_past)


def sealer_of(secret: bytes, now: float = NOW, keep_past: int = 3) -> Sealer:
    index = reference_hkdf(reference_chain(secret, 0), b"index", 32)
    return Sealer(index, EpochKeys(chain_of(secret, now, keep_past)), nonce=lambda n: NONCE[:n])


def reference_value(secret: bytes, epoch: int, cache_type: str, cache_id: str) -> bytes:
    """version 1 || epoch || nonce || ChaCha20-Poly1305(expires || session) with the
    associated data version || epoch || type || 0 || id, under HKDF(C(epoch), "seal")."""
    key = reference_hkdf(reference_chain(secret, epoch), b"seal", 32)
    header = b"\x01" + struct.pack(">Q", epoch)
    aad = header + cache_type.encode() + b"\0" + cache_id.encode()
    sealed = ChaCha20Poly1305(key).encrypt(NONCE, struct.pack(">q", EXPIRES) + SESSION, aad)
    return header + NONCE + sealed


def test_a_key_name_is_a_keyed_hash_of_type_and_id():
    sealer = sealer_of(SECRET)
    index = reference_hkdf(reference_chain(SECRET, 0), b"index", 32)
    digest = hmac.new(index, b"smtp\0[mx.example.com]:25", hashlib.sha256).hexdigest()
    name = sealer.name("smtp", "[mx.example.com]:25")
    assert name == b"mpfx:v1:" + digest.encode()
    assert b"example" not in name
    assert sealer.name("smtpd", "[mx.example.com]:25") != name  # the type is part of it
    assert sealer_of(OTHER).name("smtp", "[mx.example.com]:25") != name  # and the secret


def test_a_sealed_value_matches_the_reference():
    value = sealer_of(SECRET).seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    assert value == reference_value(SECRET, EPOCH, "smtp", "id-1")
    assert len(value) == len(SESSION) + OVERHEAD


def test_the_pinned_vector():
    # Format version 1 as it is stored in Redis: a change strands every fleet's entries.
    sealer = sealer_of(SECRET)
    assert sealer.name("smtp", "id-1") == (
        b"mpfx:v1:d38dedd2c8b8901c7bfd0ef3c968d1544559a31f76532c3d9b217feb3bacb491"
    )
    value = sealer.seal("smtp", "id-1", b"abc", 1_800_003_700, NOW)
    assert value.hex() == (
        "01"  # version
        "00000000000003e8"  # epoch 1000
        "6465666768696a6b6c6d6e6f"  # nonce
        "9b018edb72dff81197d551"  # expires and b"abc", encrypted
        "6980bd7f1fccd533274ae3eeb21fd7fe"  # tag
    )


def test_a_value_opens_to_its_session_and_expiry():
    sealer = sealer_of(SECRET)
    value = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    assert sealer.unseal("smtp", "id-1", value, NOW) == (SESSION, EXPIRES)


def test_another_host_with_the_same_secret_opens_it():
    value = sealer_of(SECRET).seal("smtpd", "id-1", SESSION, EXPIRES, NOW)
    other_host = Sealer(
        reference_hkdf(reference_chain(SECRET, 0), b"index", 32),
        EpochKeys(keychain.Chain(H, NOW, EPOCH - 5, reference_chain(SECRET, EPOCH - 5))),
    )
    assert other_host.unseal("smtpd", "id-1", value, NOW) == (SESSION, EXPIRES)


def test_every_flipped_byte_is_refused():
    sealer = sealer_of(SECRET)
    value = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    for i in range(len(value)):
        bad = bytearray(value)
        bad[i] ^= 0x01
        with pytest.raises(SealError) as err:
            sealer.unseal("smtp", "id-1", bytes(bad), NOW)
        # The version byte, the epoch (outside the window) or the tag.
        assert err.value.reason in ("malformed", "stale", "tampered"), i


def test_a_value_sealed_under_another_secret_is_refused():
    value = sealer_of(OTHER).seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    with pytest.raises(SealError) as err:
        sealer_of(SECRET).unseal("smtp", "id-1", value, NOW)
    assert err.value.reason == "tampered"
    assert "authentication" in str(err.value)


@pytest.mark.parametrize(
    "cache_type, cache_id", [("smtp", "id-2"), ("smtpd", "id-1"), ("lmtp", "id-1"), ("smtp", "")]
)
def test_a_value_moved_to_another_entry_is_refused(cache_type, cache_id):
    sealer = sealer_of(SECRET)
    value = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    with pytest.raises(SealError) as err:
        sealer.unseal(cache_type, cache_id, value, NOW)
    assert err.value.reason == "tampered"


def test_a_rewritten_epoch_is_refused():
    sealer = sealer_of(SECRET)
    value = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    for epoch in (EPOCH - 1, EPOCH + 1):  # inside the window, so the tag decides
        moved = value[:1] + struct.pack(">Q", epoch) + value[9:]
        with pytest.raises(SealError) as err:
            sealer.unseal("smtp", "id-1", moved, NOW)
        assert err.value.reason == "tampered"


def test_the_epoch_window_is_the_chains():
    keep_past = keychain.past_epochs(3600, H)  # a one-hour cache: 3 past epochs
    values = {}
    for delta in range(-5, 3):
        then = NOW + delta * H
        values[delta] = sealer_of(SECRET, then).seal("smtp", "id", SESSION, EXPIRES, then)
    reader = sealer_of(SECRET, NOW, keep_past=keep_past)
    for delta, value in values.items():
        if -keep_past <= delta <= 1:
            assert reader.unseal("smtp", "id", value, NOW)[0] == SESSION, delta
        else:
            with pytest.raises(SealError) as err:
                reader.unseal("smtp", "id", value, NOW)
            assert err.value.reason == "stale", delta


def test_a_far_future_epoch_is_refused_without_walking_the_chain():
    sealer = sealer_of(SECRET)
    value = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    far = value[:1] + struct.pack(">Q", 2**63) + value[9:]
    with pytest.raises(SealError) as err:
        sealer.unseal("smtp", "id-1", far, NOW)
    assert err.value.reason == "stale"


def test_an_expired_value_is_refused():
    sealer = sealer_of(SECRET)
    value = sealer.seal("smtp", "id-1", SESSION, NOW + 10, NOW)
    assert sealer.unseal("smtp", "id-1", value, NOW + 10)[0] == SESSION
    with pytest.raises(SealError) as err:
        sealer.unseal("smtp", "id-1", value, NOW + 11)
    assert err.value.reason == "expired"


@pytest.mark.parametrize("value", [b"", b"\x01", b"\x02" + bytes(60), b"x" * (OVERHEAD - 1)])
def test_short_or_unknown_values_are_malformed(value):
    with pytest.raises(SealError) as err:
        sealer_of(SECRET).unseal("smtp", "id-1", value, NOW)
    assert err.value.reason == "malformed"


def test_nonces_differ_between_seals():
    index = reference_hkdf(reference_chain(SECRET, 0), b"index", 32)
    sealer = Sealer(index, EpochKeys(chain_of(SECRET)))  # os.urandom nonces
    first = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    second = sealer.seal("smtp", "id-1", SESSION, EXPIRES, NOW)
    assert first[9:21] != second[9:21]
    assert sealer.unseal("smtp", "id-1", second, NOW)[0] == SESSION


def test_a_late_chain_timer_does_not_stop_sealing():
    chain = chain_of(SECRET)
    index = reference_hkdf(reference_chain(SECRET, 0), b"index", 32)
    sealer = Sealer(index, EpochKeys(chain))
    later = NOW + 3 * H  # the chain was not advanced meanwhile
    value = sealer.seal("smtp", "id-1", SESSION, int(later) + 60, later)
    assert struct.unpack(">Q", value[1:9])[0] == EPOCH + 3
    assert chain.current == EPOCH + 3
    assert sealer.unseal("smtp", "id-1", value, later)[0] == SESSION
