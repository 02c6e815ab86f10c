"""tlsmgr.scache: entries as Postfix stores them, expiry, cleanup, eviction, redirect."""

from __future__ import annotations

import os
import pwd
import random
import shutil
import stat
import subprocess
import tempfile

import pytest
from berkeleydb import db

from support.caches import TIMEOUT, open_cache
from support.stand_ins import Log
from tlsmgr import dbhash
from tlsmgr.scache import EntryError, SessionCache, decode_entry, encode_entry

T0 = 1_700_000_000


@pytest.fixture
def cache(folder):
    c = open_cache(folder, max_entries=1000)
    yield c
    c.close()


# Entry format ---------------------------------------------------------------


def test_entry_encoding_is_postfix_s():
    # Seen with db5.3_dump on a real cache: key "pad\0", value below.
    assert encode_entry(0x6B05AEFE, b"A") == b"FEAE056B0000000041\0"
    assert encode_entry(T0, b"") == b"00F1536500000000\0"
    assert decode_entry(b"FEAE056B0000000041\0") == (0x6B05AEFE, b"A")


@pytest.mark.parametrize(
    "value, entry",
    [
        (b"feae056b0000000041\0", (0x6B05AEFE, b"A")),
        (b"FE:AE:05:6B:00:00:00:00:41\0", (0x6B05AEFE, b"A")),
        (b"FEAE:056B0000000041\0", (0x6B05AEFE, b"A")),  # a colon is allowed, not required
        (b"FEAE056B0000000041\0junk", (0x6B05AEFE, b"A")),  # read up to the first NUL
    ],
)
def test_decode_accepts_postfix_variants(value, entry):
    assert decode_entry(value) == entry


@pytest.mark.parametrize(
    "value, kind",
    [
        (b"FEAE056B\0", "truncated"),
        (b"FEAE056B000000\0", "truncated"),
        (b"00:00:00:00:00:00\0", "truncated"),  # 17 characters, 6 bytes
        (b"FEAE056B00000000Z1\0", "malformed"),
        (b"FEAE056B000000004\0", "malformed"),  # odd length
        (b"FEAE056B00000000:\0", "malformed"),  # no trailing colon
        (b"FEAE056B 0000000041\0", "malformed"),
    ],
)
def test_decode_rejects(value, kind):
    with pytest.raises(EntryError, match=kind):
        decode_entry(value)


# Lookup, update, delete, expiry ------------------------------------------------


def test_update_lookup_delete(cache):
    assert cache.lookup("id", T0) is None
    cache.update("id", b"\x01\x02sessionbytes", T0)
    assert cache.lookup("id", T0 + 1) == b"\x01\x02sessionbytes"
    cache.update("empty", b"", T0)
    assert cache.lookup("empty", T0) == b""
    assert cache.delete("id") is True
    assert cache.delete("id") is False
    assert cache.lookup("id", T0) is None
    assert cache.stats() == {
        "entries": 1,
        "bytes": len(b"empty\0") + len(encode_entry(T0, b"")),
        "hits": 2,
        "misses": 2,
        "evictions": 0,
        "expired": 0,
        "oversized": 0,
        "refused": 0,
        "errors": 0,
        "no_room": 0,
        "disabled": 0,
    }


def test_expiry_is_strict(cache):
    cache.update("id", b"s", T0)
    assert cache.lookup("id", T0 + TIMEOUT) == b"s"  # saved + timeout == now: still valid
    assert cache.lookup("id", T0 + TIMEOUT + 1) is None  # expired: deleted
    assert cache.lookup("id", T0) is None
    assert cache.stats()["expired"] == 1
    assert cache.stats()["entries"] == 0


@pytest.mark.parametrize(
    "value, kind", [(b"ABCD\0", "truncated"), (b"ZZZZZZZZZZZZZZZZZZ\0", "malformed")]
)
def test_bad_entries_are_deleted_with_a_warning(folder, value, kind):
    log = Log()
    c = open_cache(folder, log=log)
    try:
        c._table.put(b"bad\0", value)
        c.counters["entries"] += 1
        assert c.lookup("bad", T0) is None
        assert c._table.get(b"bad\0") is None
        shown = value.rstrip(b"\0").decode()
        assert log.lines == [f"warning: smtp TLS cache: {kind} entry for bad: {shown}"]
        assert c.stats()["entries"] == 0
    finally:
        c.close()


def test_stored_bytes(cache):
    cache.update("load-key-0", b"\x30\x82", T0)
    assert cache._table.get(b"load-key-0\0") == b"00F15365000000003082\0"


def test_verbose_logging(folder):
    log = Log()
    c = open_cache(folder, verbose=True, log=log, kind="btree")
    c.update("id", b"abc", T0)
    c.lookup("id", T0 + 5)
    c.delete("id")
    c.start_cleanup(T0)
    c.close()
    assert log.lines == [
        f"open smtp TLS cache btree:{folder}/smtp_scache",
        "put smtp session id=id [data 3 bytes]",
        f"write smtp TLS cache entry id: time={T0} [data 3 bytes]",
        "lookup smtp session id=id",
        f"read smtp TLS cache entry id: time={T0} [data 3 bytes]",
        "delete smtp session id=id",
        "tlsmgr_cache_run_event: start TLS smtp session cache cleanup",
        f"close smtp TLS cache btree:{folder}/smtp_scache",
    ]


# Cleanup scan -------------------------------------------------------------------


def scan(cache, now, budget=1):
    cache.start_cleanup(now)
    steps = 1
    while cache.cleanup_step(now, budget):
        steps += 1
    return steps


def test_cleanup_deletes_expired_entries(cache):
    for i in range(10):
        cache.update(f"old{i}", b"x", T0)
    for i in range(5):
        cache.update(f"new{i}", b"y", T0 + 100)
    now = T0 + TIMEOUT + 1
    steps = scan(cache, now)
    assert steps == 16  # one entry per step, and one more to find the end
    assert cache.stats()["entries"] == 5
    assert cache.stats()["expired"] == 10
    assert all(cache.lookup(f"new{i}", now) == b"y" for i in range(5))
    assert not cache.cleaning


def test_cleanup_budget(cache):
    for i in range(10):
        cache.update(f"k{i}", b"x", T0)
    assert scan(cache, T0, budget=4) == 3  # 11 cursor moves, 4 per step
    assert cache.cleanup_step(T0) is False


def test_delete_behind_spares_an_entry_updated_meanwhile(cache):
    for i in range(3):
        cache.update(f"k{i}", b"old", T0)
    now = T0 + TIMEOUT + 1
    cache.start_cleanup(now)
    cache.cleanup_step(now)
    current = cache._cursor_key.rstrip(b"\0").decode()
    cache.update(current, b"fresh", now)  # while it is scheduled for deletion
    while cache.cleanup_step(now):
        pass
    assert cache.lookup(current, now) == b"fresh"
    assert cache.stats()["entries"] == 1


def test_cursor_entry_is_protected_from_client_delete(cache):
    for i in range(3):
        cache.update(f"k{i}", b"v", T0)
    cache.start_cleanup(T0)
    cache.cleanup_step(T0)
    current = cache._cursor_key.rstrip(b"\0").decode()
    assert cache.delete(current) is True  # reported as done, as Postfix does
    assert cache.lookup(current, T0) == b"v"
    while cache.cleanup_step(T0):
        pass
    assert cache.delete(current) is True
    assert cache.lookup(current, T0) is None


def test_expired_cursor_entry_found_by_lookup_is_deleted_later(cache):
    cache.update("a", b"v", T0)
    now = T0 + TIMEOUT + 1
    cache.start_cleanup(T0)  # arm with an early clock: the entry looks fine
    cache.cleanup_step(T0)
    assert cache.lookup("a", now) is None  # expired, but under the cursor: kept for now
    assert cache._table.get(b"a\0") is not None
    cache.cleanup_step(now)
    assert cache._table.get(b"a\0") is None
    assert cache.stats()["expired"] == 1


def test_requests_interleaved_with_a_scan(cache):
    rng = random.Random(4)
    ids = [f"id{i}" for i in range(60)]
    for i in ids[:40]:
        cache.update(i, b"v", T0)
    now = T0 + TIMEOUT // 2
    cache.start_cleanup(now)
    more = True
    while more:
        op = rng.choice(["update", "delete", "lookup"])
        key = rng.choice(ids)
        if op == "update":
            cache.update(key, b"w", now + rng.randint(0, TIMEOUT))
        elif op == "delete":
            cache.delete(key)
        else:
            cache.lookup(key, now)
        more = cache.cleanup_step(now + TIMEOUT, budget=2)
    # Every entry left is consistent with the counter and decodable.
    count = 0
    cursor = cache._table.cursor()
    record = cursor.first()
    while record is not None:
        decode_entry(record[1])
        count += 1
        record = cursor.next()
    cursor.close()
    assert count == cache.stats()["entries"]


# Eviction ----------------------------------------------------------------------


def test_evicts_the_oldest(folder):
    c = open_cache(folder, max_entries=3)
    try:
        for i, name in enumerate("abcd"):
            c.update(name, name.encode(), T0 + i)
        assert c.lookup("a", T0 + 10) is None
        assert [c.lookup(n, T0 + 10) for n in "bcd"] == [b"b", b"c", b"d"]
        c.update("b", b"b2", T0 + 20)  # refreshed: now the youngest
        c.update("e", b"e", T0 + 21)
        assert c.lookup("c", T0 + 30) is None
        assert c.lookup("b", T0 + 30) == b"b2"
        stats = c.stats()
        assert (stats["entries"], stats["evictions"]) == (3, 2)
    finally:
        c.close()
    assert os.path.exists(f"{folder}/smtp_scache.age.db")


def test_eviction_during_a_scan(folder):
    c = open_cache(folder, max_entries=5)
    try:
        for i in range(5):
            c.update(f"k{i}", b"v", T0 + i)
        c.start_cleanup(T0)
        c.cleanup_step(T0)
        for i in range(5, 15):  # evicts everything, the cursor's entry included
            c.update(f"k{i}", b"v", T0 + i)
        while c.cleanup_step(T0 + 20):
            pass
        assert c.stats()["entries"] == 5
        assert all(c.lookup(f"k{i}", T0 + 20) == b"v" for i in range(10, 15))
    finally:
        c.close()


def test_unlimited_has_no_index(folder):
    c = open_cache(folder, max_entries=0)
    try:
        for i in range(50):
            c.update(f"k{i}", b"v", T0)
        assert c.stats()["entries"] == 50
    finally:
        c.close()
    assert not os.path.exists(f"{folder}/smtp_scache.age.db")


# Files ---------------------------------------------------------------------------


def test_files_are_truncated_at_open_and_flushed(folder):
    c = open_cache(folder, max_entries=10)
    c.update("id", b"v", T0)
    c.flush()
    # Read the flushed file as another reader would, without the lock.
    reader = db.DB()
    reader.open(f"{folder}/smtp_scache.db", dbtype=db.DB_HASH, flags=db.DB_RDONLY)
    assert reader.get(b"id\0") == encode_entry(T0, b"v")
    reader.close()
    c.close()
    c = open_cache(folder, max_entries=10)
    try:
        assert c.lookup("id", T0) is None
    finally:
        c.close()
    assert stat.S_IMODE(os.stat(f"{folder}/smtp_scache.db").st_mode) == 0o600


def test_unsupported_type(folder):
    with pytest.raises(dbhash.DBError, match="unsupported type 'lmdb'"):
        SessionCache.open(
            "smtp",
            f"lmdb:{folder}/x",
            timeout=TIMEOUT,
            data_directory=folder,
            mail_owner_uid=os.geteuid(),
            log=Log(),
        )


def test_default_database_type(folder):
    c = SessionCache.open(
        "smtp",
        f"{folder}/plain",
        timeout=TIMEOUT,
        data_directory=folder,
        mail_owner_uid=os.geteuid(),
        default_database_type="btree",
        log=Log(),
    )
    try:
        assert c.name == f"btree:{folder}/plain"
    finally:
        c.close()


@pytest.mark.postfix
@pytest.mark.parametrize("kind", ["hash", "btree"])
def test_postmap_lists_our_file(folder, kind):
    c = open_cache(folder, max_entries=10, kind=kind)
    c.update("load-key-0", b"\x30\x82", T0)
    c.update("smtp&[127.0.0.1]:25&&", b"", T0 + 1)
    c.close()  # the lock is held while open, as with Postfix
    open(os.path.join(folder, "main.cf"), "w").close()
    out = subprocess.run(
        ["postmap", "-c", folder, "-s", f"{kind}:{folder}/smtp_scache"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert sorted(out.splitlines()) == [
        "load-key-0\t00F15365000000003082",
        "smtp&[127.0.0.1]:25&&\t01F1536500000000",
    ]


# data_redirect (the rules themselves: test_redirect.py) ------------------------


def test_redirect_with_a_real_folder(folder):
    other = tempfile.mkdtemp(dir="/tmp")
    try:
        log = Log()
        c = SessionCache.open(
            "smtp",
            f"hash:{other}/smtp_scache",
            timeout=TIMEOUT,
            data_directory=folder,
            mail_owner_uid=os.geteuid() + 1,  # the folder's owner is not "mail_owner"
            log=log,
        )
        c.close()
        assert os.path.exists(f"{folder}/smtp_scache.db")
        assert not os.path.exists(f"{other}/smtp_scache.db")
        assert (
            log.lines[1]
            == f"warning: redirecting the request to postfix-owned data_directory {folder}"
        )
    finally:
        shutil.rmtree(other, ignore_errors=True)


@pytest.mark.root
def test_opened_as_mail_owner(folder):
    pw = pwd.getpwnam("postfix")
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    os.setegid(pw.pw_gid)
    os.seteuid(pw.pw_uid)
    try:
        c = SessionCache.open(
            "smtpd",
            f"btree:{folder}/smtpd_scache",
            timeout=TIMEOUT,
            max_entries=5,
            data_directory=folder,
            mail_owner_uid=pw.pw_uid,
            log=Log(),
        )
    finally:
        os.seteuid(0)
        os.setegid(0)
    c.close()
    for name in ("smtpd_scache.db", "smtpd_scache.age.db"):
        st = os.stat(os.path.join(folder, name))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (pw.pw_uid, pw.pw_gid, 0o600)
