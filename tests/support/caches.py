"""A real Berkeley DB session cache in a test's folder, opened as the caller.

SYNOPSIS
    from support.caches import TIMEOUT, open_cache

    cache = open_cache(folder, name="smtp", kind="hash", max_entries=0, max_bytes=0, log=log)
    ...
    on_file(cache) -> (entries, bytes)
    update_until_refused(cache, session, now) -> how many were stored
    cache.close()
    table_records("/path/smtp_scache.db")     # {key: value}, as another reader finds them

DESCRIPTION
    open_cache() opens tlsmgr.scache.SessionCache `name` on
    `kind:folder/FILE` (FILE is NAME_scache unless given) with
    data_directory = folder and mail_owner_uid = the caller's euid, so
    nothing is redirected and no privilege is needed.  Other keyword
    arguments (cache_size, index_cache_size) go to SessionCache.open().
    TIMEOUT (3600 s) is the default session timeout.  The caller closes
    the cache; the folder fixture removes the files.

    on_file() walks the cache file (white box: the cache's own table)
    and counts its records and their bytes, key and value, as
    SessionCache's `entries` and `bytes` should.

    table_records() opens any Berkeley DB file read-only with a handle of
    its own, as another program would (no lock taken), and returns all
    its records; a file Berkeley DB cannot read raises its DBError.

    update_until_refused() updates u0, u1, ... until the cache raises
    StoreError (no room, or a Berkeley DB error that disables it) and
    returns how many it stored before; AssertionError after `limit`.
"""

from __future__ import annotations

import os
from typing import Any

from berkeleydb import db

from support.stand_ins import Log
from tlsmgr.scache import SessionCache
from tlsmgr.service import StoreError

TIMEOUT = 3600


def open_cache(
    folder: str,
    *,
    name: str = "smtp",
    kind: str = "hash",
    file: str | None = None,
    timeout: int = TIMEOUT,
    max_entries: int = 0,
    max_bytes: int = 0,
    verbose: bool = False,
    log: Any = None,
    **sizes: int,
) -> SessionCache:
    """A real cache `kind:folder/file`, opened as the caller."""
    return SessionCache.open(
        name,
        f"{kind}:{folder}/{file or name + '_scache'}",
        timeout=timeout,
        max_entries=max_entries,
        max_bytes=max_bytes,
        data_directory=folder,
        mail_owner_uid=os.geteuid(),
        verbose=verbose,
        log=log or Log(),
        **sizes,
    )


def on_file(cache: SessionCache) -> tuple[int, int]:
    """(entries, bytes) of the cache file, by a full walk."""
    entries = total = 0
    cursor = cache._table.cursor()
    record = cursor.first()
    while record is not None:
        entries += 1
        total += len(record[0]) + len(record[1])
        record = cursor.next()
    cursor.close()
    return entries, total


def table_records(path: str) -> dict[bytes, bytes]:
    """Every record of a Berkeley DB file, read as another program reads it."""
    handle = db.DB()
    handle.open(path, flags=db.DB_RDONLY)
    try:
        return dict(handle.items())
    finally:
        handle.close()


def update_until_refused(cache: SessionCache, session: bytes, now: int, limit: int = 50000) -> int:
    """Updates u0, u1, ... until one raises StoreError; how many were stored before it."""
    for i in range(limit):
        try:
            cache.update(f"u{i}", session, now)
        except StoreError:
            return i
    raise AssertionError(f"{limit} updates and no failure")
