"""tlsmgr.dbhash: Berkeley DB files made new and renamed into place, locked, walked."""

from __future__ import annotations

import fcntl
import os
import stat

import pytest

from support.caches import table_records
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
        # What postmap -s meets: its shared lock cannot be had while the table is open.
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        table.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_new_table_replaces_the_file_without_touching_the_open_one(folder):
    """An old tlsmgr draining beside its successor: each keeps its own inode."""
    path = os.path.join(folder, "t.db")
    old = Table.create(path, "hash", cache_size=64 << 10)
    new = None
    try:
        old.put(b"old\0", b"1\0")
        old_inode = os.stat(path).st_ino
        new = Table.create(path, "hash", cache_size=64 << 10)  # no wait for the old one's lock
        assert os.stat(path).st_ino != old_inode
        assert new.get(b"old\0") is None
        old.put(b"later\0", b"2\0")  # the old one goes on with its own file
        assert old.get(b"old\0") == b"1\0"
        new.put(b"new\0", b"3\0")
        old.close()  # its last pages go to its own inode, which has no name now
        new.close()
        assert table_records(path) == {b"new\0": b"3\0"}
        assert sorted(os.listdir(folder)) == ["t.db"]
    finally:
        old.close()
        if new is not None:
            new.close()


def test_stale_temporary_files_are_removed_and_live_ones_kept(folder):
    path = os.path.join(folder, "t.db")
    stale = path + ".abcdefgh.tmp"  # left by a tlsmgr killed while it made the file
    live = path + ".ijklmnop.tmp"  # another tlsmgr making the file right now
    other = os.path.join(folder, "u.db.abcdefgh.tmp")  # another file's
    for name in (stale, live, other):
        with open(name, "wb") as fp:
            fp.write(b"partial")
    holder = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        Table.create(path, "btree", cache_size=64 << 10).close()
        left = {"t.db", os.path.basename(live), os.path.basename(other)}
        assert set(os.listdir(folder)) == left
    finally:
        os.close(holder)


def test_a_symbolic_link_is_followed_and_kept(folder):
    """As Postfix's O_CREAT|O_TRUNC open: the link's target is made new, the link stays."""
    elsewhere = os.path.join(folder, "elsewhere")
    os.mkdir(elsewhere)
    target = os.path.join(elsewhere, "real.db")
    link = os.path.join(folder, "t.db")
    os.symlink(target, link)
    table = Table.create(link, "hash", cache_size=64 << 10)
    table.put(b"k\0", b"v\0")
    table.close()
    assert os.readlink(link) == target
    assert table_records(target) == {b"k\0": b"v\0"}


def test_errors_name_the_file(folder):
    with pytest.raises(DBError, match="unsupported database type"):
        Table.create(os.path.join(folder, "t.db"), "lmdb", cache_size=64 << 10)
    missing = os.path.join(folder, "no", "such", "t.db")
    with pytest.raises(DBError, match=f"open database {missing}: No such file"):
        Table.create(missing, "hash", cache_size=64 << 10)
