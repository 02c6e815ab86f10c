"""Postfix's postmap lists the session caches our tlsmgr wrote (flushed at stop and reload).

Our master and our tlsmgr (chroot y) on a private instance; after
`minipostfix stop`, or after a reload once the old tlsmgr has gone (its own
files: the new tlsmgr, started at the reload, has renamed its files into
place), `postmap -c PRIVATE -s TYPE:FILE` (a private, empty main.cf) must list
exactly the entries stored, hash and btree alike, each value being Postfix's
layout: upper-case hex of the 8-byte little-endian time saved, then the
session (tls_scache_encode() in tls_scache.c).  postmap runs only when no tlsmgr holds the
files: both tlsmgrs keep an exclusive lock on them while they run.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from support.instance import MiniInstance, running_tlsmgr
from support.postfix import postmap_list
from tlsmgr.protocol import Status

pytestmark = [pytest.mark.postfix, pytest.mark.root]

MAIN_CF = {
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
}
HEX64 = "0123456789ABCDEF" * 4
SMTP_ID = f"smtp&[127.0.0.1]:10026&127.0.0.1&127.0.0.1&&{HEX64}"
SMTPD_ID = f"{HEX64}&s=10026&l=805306672"


@pytest.fixture
def inst():
    with running_tlsmgr(MAIN_CF) as instance:
        yield instance


def client(inst: MiniInstance):
    return inst.client(timeout=20.0)


def decode(value: bytes, start: float, end: float) -> bytes:
    """Postfix's entry layout: check the time saved, return the session."""
    assert value == value.upper() and len(value) >= 16, value
    raw = bytes.fromhex(value.decode())
    (saved_at,) = struct.unpack("<q", raw[:8])
    assert int(start) <= saved_at <= int(end) + 1, (saved_at, start, end)
    return raw[8:]


def listed(
    inst: MiniInstance, table: str, start: float, end: float, folder: Path | None = None
) -> dict[bytes, bytes]:
    """postmap -s of a cache in data_directory (or in `folder`)."""
    kind, name = table.split(":")
    entries = postmap_list(f"{kind}:{(folder or inst.data) / name}")
    return {key: decode(value, start, end) for key, value in entries.items()}


def test_postmap_lists_exactly_the_entries_stored(inst):
    start = time.time()
    with client(inst) as tlsmgr:
        for cache_id, session in [
            ("a", b"A" * 10),
            ("b", b"old"),
            ("c", b"C"),
            (SMTP_ID, b"\0\xff"),
        ]:
            assert tlsmgr.update("smtp", cache_id, session).ok
        assert tlsmgr.update("smtp", "b", b"new").ok  # replaces
        assert tlsmgr.delete("smtp", "c").ok
        big = os.urandom(1100)  # a real smtp session's size
        assert tlsmgr.update("smtpd", SMTPD_ID, big).ok
        assert tlsmgr.update("smtpd", "empty", b"").ok
    end = time.time()
    inst.cli("stop").check()
    assert listed(inst, "hash:smtp_scache", start, end) == {
        b"a": b"A" * 10,
        b"b": b"new",
        SMTP_ID.encode(): b"\0\xff",
    }
    assert listed(inst, "btree:smtpd_scache", start, end) == {SMTPD_ID.encode(): big, b"empty": b""}


def test_postmap_sees_the_size_bound(inst):
    inst.write_main_cf(tls_session_cache_max_entries="3")
    inst.cli("reload").check()
    start = time.time()
    with client(inst) as tlsmgr:
        for n in range(5):
            assert tlsmgr.update("smtp", f"e{n}", b"%d" % n).ok
        assert tlsmgr.lookup("smtp", "e0").status == Status.ERR  # evicted
    end = time.time()
    inst.cli("stop").check()
    assert listed(inst, "hash:smtp_scache", start, end) == {b"e2": b"2", b"e3": b"3", b"e4": b"4"}


def test_reload_flushes_and_the_new_tlsmgr_starts_truncated(inst, tmp_path):
    start = time.time()
    with client(inst) as tlsmgr:
        assert tlsmgr.update("smtp", "before-reload", b"one").ok
        assert tlsmgr.update("smtpd", "before-reload", b"two").ok
        old = inst.tlsmgr_pid()
    end = time.time()
    # The master starts the new tlsmgr at the reload, which renames new files into place:
    # the old one's files, which it flushes as it leaves, are read through descriptors.
    files = ("smtp_scache.db", "smtpd_scache.db")
    held = {name: os.open(inst.data / name, os.O_RDONLY) for name in files}
    inst.cli("reload").check()
    inst.wait_gone(old)  # EOF on fd 5: the old tlsmgr closes its caches and leaves
    for name, fd in held.items():
        assert os.fstat(fd).st_ino != os.stat(inst.data / name).st_ino  # the new one's now
        (tmp_path / name).write_bytes(os.pread(fd, os.fstat(fd).st_size, 0))
        os.close(fd)
    mine = {"folder": tmp_path}
    assert listed(inst, "hash:smtp_scache", start, end, **mine) == {b"before-reload": b"one"}
    assert listed(inst, "btree:smtpd_scache", start, end, **mine) == {b"before-reload": b"two"}
    # The new tlsmgr truncates its caches at start, as Postfix's does.
    start = time.time()
    with client(inst) as tlsmgr:
        assert tlsmgr.lookup("smtp", "before-reload").status == Status.ERR
        assert inst.tlsmgr_pid() != old
        assert tlsmgr.update("smtp", "after-reload", b"three").ok
    end = time.time()
    inst.cli("stop").check()
    assert listed(inst, "hash:smtp_scache", start, end) == {b"after-reload": b"three"}
    assert listed(inst, "btree:smtpd_scache", start, end) == {}
