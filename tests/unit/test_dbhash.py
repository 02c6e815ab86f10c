"""tlsmgr.dbhash: Berkeley DB files created, truncated, locked, walked."""

from __future__ import annotations

import fcntl
import os
import stat

import pytest

from tlsmgr.dbhash import DBError, Table


@pytest.mark.parametrize("kind", ["hash", "btree"])
def test_create_put_get_delete(folder, kind):
    table = Table.create(os.path.join(folder, "t.db"), kind, cache_size=64 << 10)
    try:
        assert table.get(b"k\0") is None
        table.put(b"k\0", b"v\0")
        table.put(b"k\0", b"w\0")
        assert table.get(b"k\0") == b"w\0"
        assert table.delete(b"k\0") is True
        assert table.delete(b"k\0") is False
    finally:
        table.close()
    table.close()  # harmless twice
    assert stat.S_IMODE(os.stat(os.path.join(folder, "t.db")).st_mode) == 0o600


def test_create_truncates(folder):
    path = os.path.join(folder, "t.db")
    table = Table.create(path, "hash", cache_size=64 << 10)
    table.put(b"old\0", b"x\0")
    table.close()
    table = Table.create(path, "hash", cache_size=64 << 10)
    try:
        assert table.get(b"old\0") is None
    finally:
        table.close()
    with open(path, "wb") as fp:
        fp.write(b"not a database" * 100)
    table = Table.create(path, "btree", cache_size=64 << 10)
    table.close()


def test_btree_first_is_smallest_key(folder):
    table = Table.create(os.path.join(folder, "t.db"), "btree", cache_size=64 << 10)
    try:
        assert table.first() is None
        for key in (b"\x00\x05b", b"\x00\x01z", b"\x00\x03a"):
            table.put(key, b"")
        assert table.first() == (b"\x00\x01z", b"")
    finally:
        table.close()


def test_cursor_survives_updates_and_deletes(folder):
    table = Table.create(os.path.join(folder, "t.db"), "hash", cache_size=64 << 10)
    try:
        for i in range(200):
            table.put(b"k%d\0" % i, b"v")
        cursor = table.cursor()
        seen = set()
        record = cursor.first()
        while record is not None:
            seen.add(record[0])
            table.delete(record[0])  # the record under the cursor
            table.put(b"new\0", b"x")
            record = cursor.next()
        cursor.close()
        assert {b"k%d\0" % i for i in range(200)} <= seen
        assert table.get(b"new\0") == b"x"
    finally:
        table.close()


def test_exclusive_lock(folder):
    path = os.path.join(folder, "t.db")
    table = Table.create(path, "hash", cache_size=64 << 10)
    try:
        # What postmap -s would meet: its shared lock cannot be had.
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with pytest.raises(DBError, match="unable to get exclusive lock"):
            Table.create(path, "hash", cache_size=64 << 10, lock_wait=0.1)
        assert table.get(b"x") is None  # the first one is untouched
    finally:
        table.close()
    Table.create(path, "hash", cache_size=64 << 10, lock_wait=0.1).close()


def test_errors_name_the_file(folder):
    with pytest.raises(DBError, match="unsupported database type"):
        Table.create(os.path.join(folder, "t.db"), "lmdb", cache_size=64 << 10)
    missing = os.path.join(folder, "no", "such", "t.db")
    with pytest.raises(DBError, match=f"open database {missing}: No such file"):
        Table.create(missing, "hash", cache_size=64 << 10)
