"""tlsmgr/prng.py: known answers, fast key erasure, mixing, schedules.

The reference ChaCha20 (support/prng_reference.py) is written from RFC 8439
in pure Python and checked here against the RFC's own vectors, so the
known-answer tests do not trust OpenSSL's ChaCha20 (which the pool uses) to
check itself.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.prng_reference import KEY, RefPool, ref_block, ref_keystream
from tlsmgr import prng

# RFC 8439 section 2.3.2: key 00..1f, nonce 000000090000004a00000000, block counter 1.
RFC_2_3_2_NONCE = bytes.fromhex("000000090000004a00000000")
RFC_2_3_2_BLOCK = bytes.fromhex(
    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
)
# RFC 8439 section 2.4.2: same key, nonce 000000000000004a00000000, initial counter 1.
RFC_2_4_2_NONCE = bytes.fromhex("000000000000004a00000000")
RFC_2_4_2_PLAIN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
    b"the future, sunscreen would be it."
)
RFC_2_4_2_CIPHER = bytes.fromhex(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
    "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
    "5af90bbf74a35be6b40b8eedf2785e42874d"
)


# -- ChaCha20 itself -------------------------------------------------------


def test_reference_chacha20_matches_rfc8439_vectors():
    assert ref_block(KEY, 1, RFC_2_3_2_NONCE) == RFC_2_3_2_BLOCK
    ks = ref_keystream(KEY, len(RFC_2_4_2_PLAIN), RFC_2_4_2_NONCE, counter=1)
    assert bytes(a ^ b for a, b in zip(RFC_2_4_2_PLAIN, ks, strict=True)) == RFC_2_4_2_CIPHER


def test_keystream_into_block_function_rfc8439_2_3_2():
    out = bytearray(64)
    prng.keystream_into(KEY, out, nonce=RFC_2_3_2_NONCE, counter=1)
    assert bytes(out) == RFC_2_3_2_BLOCK


def test_keystream_into_encryption_rfc8439_2_4_2():
    ks = bytearray(len(RFC_2_4_2_PLAIN))
    prng.keystream_into(KEY, ks, nonce=RFC_2_4_2_NONCE, counter=1)
    assert bytes(a ^ b for a, b in zip(RFC_2_4_2_PLAIN, ks, strict=True)) == RFC_2_4_2_CIPHER


# -- the construction ------------------------------------------------------


def test_first_refill_is_chacha20_keystream_minus_the_next_key():
    pool = prng.Pool.from_key(KEY)
    direct = ref_keystream(KEY, prng.REFILL_SIZE)
    assert pool.draw(prng.REFILL_SIZE - 32) == direct[32:]
    # The second refill is keyed by the first 32 bytes of the first one.
    second = ref_keystream(direct[:32], prng.REFILL_SIZE)
    assert pool.draw(100) == second[32:132]


def test_pinned_known_answer():
    """Output 0..31 of Pool.from_key(00..1f) is keystream bytes 32..63 (block 0, nonce 0)."""
    assert prng.Pool.from_key(KEY).draw(32) == ref_block(KEY, 0, bytes(12))[32:]
    assert prng.Pool.from_key(KEY).draw(32).hex() == (
        "2b23cce7a26023ab3f0eef693ac87f64258235eab1f7a32dc22762a0485b410c"
    )


@pytest.mark.parametrize(
    "sizes",
    [
        [1, 31, 32, 255, 4064, 1000, 5000],
        [4063, 2, 4064, 4065],
        [0, 255] * 40,
        [9000],
    ],
)
def test_draws_of_any_size_match_the_reference_model(sizes):
    pool, ref = prng.Pool.from_key(KEY), RefPool(KEY)
    for n in sizes:
        assert pool.draw(n) == ref.draw(n)


def test_mixing_matches_the_reference_model():
    pool, ref = prng.Pool.from_key(KEY), RefPool(KEY)
    steps = [
        ("draw", 40),
        ("mix", b"time of day"),
        ("draw", 4000),  # still the old buffer: mixed input goes into the next key
        ("draw", 100),  # crosses a refill: the fold happened first
        ("mix", b"session"),
        ("mix", b""),
        ("mixnow", b"exchange file"),
        ("draw", 33),
        ("reseed", os.urandom(32)),
        ("draw", 5000),
    ]
    for op, arg in steps:
        if op == "draw":
            assert pool.draw(arg) == ref.draw(arg), (op, arg)
        elif op == "mix":
            pool.mix(arg)
            ref.mix(arg)
        elif op == "mixnow":
            pool.mix(arg, now=True)
            ref.mix(arg, now=True)
        else:
            pool.reseed(arg)
            ref.mix(arg, now=True)


def test_mix_changes_later_output_and_is_framed():
    def after(*inputs: bytes) -> bytes:
        pool = prng.Pool.from_key(KEY)
        for data in inputs:
            pool.mix(data)
        return pool.draw(64)

    outputs = [
        after(),
        after(b"a"),
        after(b"b"),
        after(b"ab"),
        after(b"a", b"b"),
        after(b"b", b"a"),
    ]
    outputs.append(after(b"", b"ab"))
    assert len(set(outputs)) == len(outputs)


def test_immediate_mix_and_reseed_discard_buffered_output():
    plain, now, reseeded = (prng.Pool.from_key(KEY) for _ in range(3))
    for pool in (plain, now, reseeded):
        pool.draw(1)
    plain.mix(b"x")
    now.mix(b"x", now=True)
    reseeded.reseed(b"x")
    twin = prng.Pool.from_key(KEY)
    twin.draw(1)
    assert plain.draw(64) == twin.draw(64)  # buffered keystream served first
    assert now.draw(64) == reseeded.draw(64) != plain.draw(64)


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=2, unique=True),
    inputs=st.lists(st.binary(max_size=300), max_size=5),
)
def test_no_input_makes_two_different_pools_equal(keys, inputs):
    """Mixing hashes the old key with the input: it cannot collapse distinct states."""
    a, b = (prng.Pool.from_key(k) for k in keys)
    for data in inputs:
        a.mix(data, now=True)
        b.mix(data, now=True)
    assert a.draw(32) != b.draw(32)


# -- fast key erasure ------------------------------------------------------


def _state(pool: prng.Pool) -> tuple[bytes, bytes, int]:
    """What an attacker who reads the pool object learns (private fields, on purpose)."""
    return bytes(pool._key), bytes(pool._buf), pool._pos


def test_backtracking_earlier_output_cannot_be_regenerated():
    pool = prng.Pool.from_key(KEY)
    earlier = pool.draw(64)
    key, buf, pos = _state(pool)
    assert key != KEY
    assert buf[:pos] == bytes(pos), "served bytes and the used key must be zeroed"
    assert earlier not in buf
    # Everything the captured key can produce, and the pool's own future: no earlier output.
    future = ref_keystream(key, 64 * 1024) + prng.Pool.from_key(key).draw(64 * 1024)
    assert earlier[:16] not in future
    rest_of_pool = pool.draw(64 * 1024)
    assert earlier[:16] not in rest_of_pool


def test_key_changes_at_every_refill_and_old_keys_are_gone():
    pool = prng.Pool.from_key(KEY)
    keys = []
    for _ in range(5):
        pool.draw(prng.REFILL_SIZE - 32)
        keys.append(bytes(pool._key))
    assert len(set(keys + [KEY])) == 6
    key, buf, pos = _state(pool)
    assert pos == prng.REFILL_SIZE and buf == bytes(prng.REFILL_SIZE)


def test_close_erases_everything():
    pool = prng.Pool()
    pool.draw(10)
    pool.mix(b"pending")
    pool.close()
    assert _state(pool) == (bytes(32), bytes(prng.REFILL_SIZE), prng.REFILL_SIZE)
    for call in (lambda: pool.draw(1), lambda: pool.mix(b"x"), lambda: pool.reseed(b"x")):
        with pytest.raises(ValueError, match="closed"):
            call()


@pytest.mark.parametrize(
    "notice",
    [
        lambda pool: pool.mix_time(),
        lambda pool: pool.reseed(b"x"),
        lambda pool: pool.draw(prng.REFILL_SIZE),  # needs a refill
    ],
    ids=["mix_time", "reseed", "refill"],
)
def test_pid_check_rekeys_even_without_the_fork_hook(notice):
    """A fork that bypassed os.register_at_fork is noticed by the pid check in
    mix_time() (once per tlsmgr loop turn), reseed() and every refill."""
    pool, twin = prng.Pool.from_key(KEY), prng.Pool.from_key(KEY)
    pool.draw(1)
    twin.draw(1)
    pool._pid = -1
    notice(pool)
    notice(twin)
    assert pool.draw(64) != twin.draw(64)
    assert pool._pid == os.getpid() and pool.stats()["forks"] == 1
    assert twin.stats()["forks"] == 0


# -- API details -----------------------------------------------------------


def test_draw_sizes():
    pool = prng.Pool()
    assert pool.draw(0) == b""
    assert len(pool.draw(255)) == 255 and len(pool.draw(10000)) == 10000
    with pytest.raises(ValueError):
        pool.draw(-1)
    assert isinstance(pool.draw(3), bytes)


def test_two_fresh_pools_differ():
    assert prng.Pool().draw(32) != prng.Pool().draw(32)


def test_stats_count_what_happened():
    pool = prng.Pool.from_key(KEY)
    pool.mix(b"abc")
    pool.mix_time()
    pool.reseed(bytes(32))
    pool.draw(5000)
    s = pool.stats()
    assert (s["mixes"], s["bytes_mixed"], s["reseeds"], s["bytes_reseeded"]) == (
        3,
        3 + 16 + 32,
        1,
        32,
    )
    assert (s["draws"], s["bytes_drawn"], s["refills"], s["forks"]) == (1, 5000, 2, 0)


def test_mix_time_is_a_struct_timeval():
    pool = prng.Pool.from_key(KEY)
    pool.mix_time()
    pool.mix_time(pid=True)
    assert pool.stats()["bytes_mixed"] == 32


# -- schedules -------------------------------------------------------------


def test_next_delay_is_period_times_byte_over_255():
    pool, twin = prng.Pool.from_key(KEY), prng.Pool.from_key(KEY)
    for period in (1, 2, 3600, 86400):
        for _ in range(50):
            assert prng.next_delay(period, pool) == period * twin.random_byte() // 255


def test_next_delay_covers_zero_to_period():
    pool = prng.Pool.from_key(KEY)
    seen = {prng.next_delay(255, pool) for _ in range(5000)}
    assert seen == set(range(256))  # 0 and the full period included


def test_periods_are_clamped_to_int_max_over_255():
    assert prng.MAX_PERIOD == 8421504
    assert prng.clamp_period(10**12) == 8421504 and prng.clamp_period(3600) == 3600
    pool = prng.Pool()
    assert all(0 <= prng.next_delay(10**12, pool) <= 8421504 for _ in range(300))
