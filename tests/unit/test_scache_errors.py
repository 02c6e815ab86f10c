"""tlsmgr.scache near a full file system: it stops storing while there is room left, and a
Berkeley DB write error disables that cache instead of raising out of it.

Real Berkeley DB files on a real tmpfs (the `tmpfs` fixture, root only), filled with a
ballast file.  Berkeley DB writes a page when it needs the page's buffer for another, so a
write error comes once the buffer pool is full of pages it cannot write; the pools here are
small to get there soon.  The Berkeley DB call that meets the full disk waits about 4 s
before it gives up; nothing after it waits.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from support.caches import on_file, update_until_refused
from support.disks import fill
from support.stand_ins import Log
from tlsmgr.dbhash import DBError
from tlsmgr.scache import ROOM_MARGIN, SessionCache
from tlsmgr.service import StoreError

pytestmark = [pytest.mark.root, pytest.mark.slow]

T0 = 1_700_000_000
POOL = 256 << 10
INDEX_POOL = 32 << 10
SESSION = b"s" * 2000


def open_small(folder: str, log: Log, max_entries: int = 100000) -> SessionCache:
    return SessionCache.open(
        "smtp",
        f"btree:{folder}/smtp_scache",
        timeout=3600,
        data_directory=folder,
        mail_owner_uid=os.geteuid(),
        max_entries=max_entries,
        cache_size=POOL,
        index_cache_size=INDEX_POOL,
        log=log,
    )


def warnings(log: Log) -> list[str]:
    return [line for line in log.lines if line.startswith("warning:")]


def test_updates_stop_while_there_is_room_and_resume_when_there_is_more(tmpfs):
    folder = tmpfs("16m")
    ballast = fill(folder, ROOM_MARGIN + 2 * POOL + (2 << 20))
    log = Log()
    c = open_small(folder, log)
    try:
        stored = update_until_refused(c, SESSION, T0)
        assert stored > 100
        [warning] = warnings(log)
        assert warning.startswith(f"warning: smtp TLS cache: {folder}/smtp_scache")
        assert warning.endswith("updates refused until there is room")
        with pytest.raises(StoreError):
            c.update("again", SESSION, T0)
        stats = c.stats()
        assert (stats["no_room"], stats["refused"], stats["errors"]) == (1, 2, 0)
        # Lookups, deletes and the scan go on; the count matches the file.
        assert all(c.lookup(f"u{i}", T0) == SESSION for i in range(stored))
        assert c.delete("u0") is True
        c.start_cleanup(T0)
        while c.cleanup_step(T0, budget=50):
            pass
        assert (c.stats()["entries"], c.stats()["bytes"]) == on_file(c)
        os.unlink(ballast)
        c.update("after", SESSION, T0)  # room again
        assert c.lookup("after", T0) == SESSION
        assert c.stats()["no_room"] == 0
        assert log.lines[-1] == "smtp TLS cache: room again: updates resumed"
    finally:
        c.close()  # every page can be written: no error


@pytest.mark.parametrize("full", ["cache", "index"])
def test_a_write_error_disables_the_cache(tmpfs, folder, full):
    """The file system fills behind the cache's back (another writer) between two room
    checks; the file that cannot be written is the cache itself (unbounded: no index)
    or its age index (alone on that file system, through a symlink)."""
    disk = tmpfs("16m")
    if full == "index":
        os.symlink(os.path.join(disk, "age.db"), os.path.join(folder, "smtp_scache.age.db"))
    else:
        folder = disk
    log = Log()
    c = open_small(folder, log, max_entries=100000 if full == "index" else 0)
    try:
        for i in range(20):
            c.update(f"k{i}", SESSION, T0)
        fill(disk, 0)
        update_until_refused(c, b"", T0)  # small entries: the next room check is far off
        [warning] = warnings(log)
        path = "smtp_scache.age.db" if full == "index" else "smtp_scache.db"
        assert re.search(rf"^warning: smtp TLS cache: .*{path}: .*: cache disabled until", warning)
        assert c.stats()["errors"] == 1 and c.stats()["disabled"] == 1
        # Disabled: every request fails at once, without touching the files.
        started = time.monotonic()
        for _ in range(20):
            for request in (
                lambda: c.lookup("k0", T0),
                lambda: c.update("k0", SESSION, T0),
                lambda: c.delete("k0"),
            ):
                with pytest.raises(StoreError):
                    request()
        assert time.monotonic() - started < 2  # one Berkeley DB call here takes ~4 s
        c.start_cleanup(T0)
        assert not c.cleaning
        assert warnings(log) == [warning]
    finally:
        try:
            c.close()
        except DBError:
            pass  # the last flush meets the full disk too
