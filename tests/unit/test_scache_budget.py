"""tlsmgr.scache's bounds in bytes: the byte budget, its exact count, and the size caps."""

from __future__ import annotations

import os
import random

import pytest

from support.caches import TIMEOUT, on_file, open_cache
from support.stand_ins import Log
from tlsmgr import attr
from tlsmgr.scache import MAX_CACHE_ID, MAX_SESSION, encode_entry
from tlsmgr.service import StoreError

T0 = 1_700_000_000


def size(cache_id: str, session: bytes) -> int:
    """What one entry counts: its key and its value as stored."""
    return len(cache_id.encode()) + 1 + len(encode_entry(T0, session))


def counted(cache) -> tuple[int, int]:
    stats = cache.stats()
    return stats["entries"], stats["bytes"]


# The count ------------------------------------------------------------------------


def test_bytes_count_what_the_file_holds(folder):
    c = open_cache(folder)
    try:
        c.update("a", b"x" * 100, T0)
        assert counted(c) == on_file(c) == (1, size("a", b"x" * 100))
        c.update("a", b"x" * 300, T0 + 1)  # an overwrite counts the difference
        c.update("b", b"", T0 + 1)
        assert counted(c) == on_file(c) == (2, size("a", b"x" * 300) + size("b", b""))
        c.update("a", b"x", T0 + 2)
        assert counted(c) == on_file(c)
        assert c.delete("b") is True
        assert c.delete("b") is False
        assert counted(c) == on_file(c) == (1, size("a", b"x"))
        assert c.lookup("a", T0 + 2 + TIMEOUT + 1) is None  # expired: deleted
        assert counted(c) == on_file(c) == (0, 0)
    finally:
        c.close()


@pytest.mark.parametrize("kind", ["hash", "btree"])
def test_counts_stay_exact_under_a_random_workload(folder, kind):
    """Updates of every size, overwrites, deletes, expiry by lookup and by the
    cleanup scan, and eviction by both bounds, interleaved."""
    rng = random.Random(10)
    budget = 40_000
    c = open_cache(folder, kind=kind, max_entries=60, max_bytes=budget)
    ids = [f"id{i}" * rng.randint(1, 8) for i in range(150)]
    now = T0
    try:
        for step in range(3000):
            now += rng.choice((0, 0, 1, 5))
            op = rng.random()
            if op < 0.6:
                c.update(rng.choice(ids), os.urandom(rng.choice((0, 10, 500, 2000))), now)
            elif op < 0.75:
                c.delete(rng.choice(ids))
            elif op < 0.95:
                c.lookup(rng.choice(ids), now + rng.choice((0, TIMEOUT + 1)))
            elif not c.cleaning:
                c.start_cleanup(now)
            if c.cleaning:
                c.cleanup_step(now + TIMEOUT // 2, budget=3)
            if step % 100 == 0:
                assert counted(c) == on_file(c)
            entries, total = counted(c)
            assert entries <= 60 and total <= budget
        assert counted(c) == on_file(c)
        assert c.stats()["evictions"] > 0
    finally:
        c.close()


# The budget -----------------------------------------------------------------------


def test_byte_budget_evicts_the_oldest(folder):
    session = b"s" * 1000
    one = size("k0", session)
    log = Log()
    c = open_cache(folder, max_bytes=3 * one, verbose=True, log=log)
    try:
        for i in range(3):
            c.update(f"k{i}", session, T0 + i)
        assert counted(c) == (3, 3 * one)
        c.update("k3", session, T0 + 3)  # one too many: the oldest goes
        assert c.lookup("k0", T0 + 3) is None
        assert [c.lookup(f"k{i}", T0 + 3) for i in (1, 2, 3)] == [session] * 3
        c.update("k1", session, T0 + 4)  # refreshed: now the youngest
        c.update("big", session * 2, T0 + 5)  # twice the size: two go
        assert [c.lookup(k, T0 + 5) for k in ("k2", "k3")] == [None, None]
        assert c.lookup("k1", T0 + 5) == session
        assert counted(c) == on_file(c) == (2, one + size("big", session * 2))
        assert c.stats()["evictions"] == 3
        assert f"evict smtp session id=k0: cache full ({3 * one} bytes)" in log.lines
    finally:
        c.close()


def test_a_budget_smaller_than_one_entry_keeps_the_newest(folder):
    c = open_cache(folder, max_bytes=10)
    try:
        c.update("a", b"x" * 100, T0)
        c.update("b", b"y" * 100, T0 + 1)
        assert c.lookup("a", T0 + 1) is None
        assert c.lookup("b", T0 + 1) == b"y" * 100
        assert counted(c) == on_file(c) == (1, size("b", b"y" * 100))
    finally:
        c.close()


def test_the_age_index_comes_with_either_bound(folder):
    for entries, budget, index in ((0, 0, False), (5, 0, True), (0, 5000, True)):
        c = open_cache(folder, max_entries=entries, max_bytes=budget)
        c.close()
        assert os.path.exists(f"{folder}/smtp_scache.age.db") is index
        if index:
            os.unlink(f"{folder}/smtp_scache.age.db")


def test_unlimited_still_counts_bytes(folder):
    c = open_cache(folder)
    try:
        for i in range(20):
            c.update(f"k{i}", b"v" * i, T0)
        c.delete("k3")
        assert counted(c) == on_file(c)
    finally:
        c.close()


# The size caps --------------------------------------------------------------------


def test_entries_up_to_the_caps_are_stored(folder):
    c = open_cache(folder)
    try:
        c.update("i" * MAX_CACHE_ID, b"s" * MAX_SESSION, T0)
        assert c.lookup("i" * MAX_CACHE_ID, T0) == b"s" * MAX_SESSION
    finally:
        c.close()


def test_over_cap_updates_are_refused_with_a_warning(folder):
    log = Log()
    c = open_cache(folder, log=log)
    try:
        c.update("id", b"old", T0)
        with pytest.raises(StoreError):
            c.update("id", b"s" * (MAX_SESSION + 1), T0 + 1)
        with pytest.raises(StoreError):
            c.update("i" * (MAX_CACHE_ID + 1), b"s", T0 + 1)
        assert c.lookup("id", T0 + 1) == b"old"  # the entry it would have replaced stays
        assert counted(c) == on_file(c) == (1, size("id", b"old"))
        assert c.stats()["oversized"] == 2
        assert log.lines == [
            f"warning: smtp TLS cache: session of {MAX_SESSION + 1} bytes (limit {MAX_SESSION})"
            " not stored",
            f"warning: smtp TLS cache: cache_id of {MAX_CACHE_ID + 1} bytes"
            f" (limit {MAX_CACHE_ID}) not stored",
        ]
    finally:
        c.close()


def test_the_caps_count_bytes_not_characters(folder):
    c = open_cache(folder)
    try:
        with pytest.raises(StoreError):
            c.update("é" * (MAX_CACHE_ID // 2 + 1), b"s", T0)
    finally:
        c.close()


def test_the_caps_bind_below_the_protocol_limits():
    # Otherwise the protocol layer would refuse first and the caps would be dead code;
    # tests/interop/test_session_sizes.py checks that real sessions fit under them.
    assert MAX_SESSION < attr.MAX_DATA and MAX_CACHE_ID < attr.MAX_VALUE
