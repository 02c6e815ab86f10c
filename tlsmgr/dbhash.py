"""A thin Berkeley DB adapter for the session caches: the only berkeleydb import.

SYNOPSIS
    from tlsmgr import dbhash

    table = dbhash.Table.create(path, "hash", cache_size=4 << 20)
    table.get(key) -> bytes | None
    table.put(key, value)
    table.delete(key) -> bool            # False when the key was not there
    table.first() -> (key, value) | None # smallest key of a btree
    cursor = table.cursor()
    cursor.first() / cursor.next() -> (key, value) | None
    cursor.close()
    table.sync(); table.close()
    table.free_bytes() -> int             # room left on the file system
    dbhash.TYPES                          # ("hash", "btree")
    dbhash.DBError

DESCRIPTION
    Table.create() makes `path` (the full file name, ".db" included) a
    new, empty database, as Postfix's dict_db_open() does for a cache
    (O_CREAT and truncation: nothing survives a restart, and a damaged
    file never matters), but without touching the file that was there:
      1. remove the temporary files of `path` that a killed process left
         (tempfiles.remove_stale);
      2. create `path.XXXXXXXX.tmp`, mode 0600, with the caller's
         effective uid/gid (tlsmgr opens caches as mail_owner), and take
         an exclusive flock(2) on it, held until close();
      3. let Berkeley DB create a fresh database in it (DB_CREATE|
         DB_TRUNCATE), then rename it to `path` (to the target of `path`
         when that is a symbolic link, which Postfix's open follows).
    A process that still has the old file open (a tlsmgr draining after
    a reload) keeps writing its own inode, which no longer has a name,
    until it exits; the new one never waits for it and never shares a
    page with it.
    No environment is used (a private memory pool, as Postfix's
    DB_PRIVATE environment gives); `cache_size` sets that pool's size.
    A hash table gets Postfix's set_h_nelem(4096) hint.

    Updates are not synced one by one (the cache is truncated at every
    start, so a sync per update buys nothing); sync() writes the
    dirty pages, close() syncs and releases the lock.

    A cursor stays valid while the same Table is updated through get,
    put and delete, including deletion of the record it stands on;
    Berkeley DB adjusts it.  Entries added during a walk may or may not
    be visited.

SECURITY
    With the lock held, `postmap -s` on the file waits until tlsmgr has
    stopped, as with Postfix.  A file is never truncated under a
    process that reads it.

DIAGNOSTICS
    DBError, whose text names the file and the Berkeley DB error, for
    every failure (create, read, write).  Berkeley DB reports ENOMEM
    as Python's MemoryError: it means its buffer pool is full of dirty
    pages it cannot write (a full disk: the call that finds no buffer
    first retries for about 4 s inside Berkeley DB), so that is a
    DBError too.  free_bytes() says how much room the file system has
    left for the table's owner.

SEE ALSO
    src/util/dict_db.c, dict_open.c (Postfix), Berkeley DB's DB->open
"""

from __future__ import annotations

import contextlib
import os

from berkeleydb import db

from master import log
from tlsmgr.tempfiles import create_locked, remove_stale

TYPES = ("hash", "btree")
_DBTYPE = {"hash": db.DB_HASH, "btree": db.DB_BTREE}
H_NELEM = 4096
# What a Berkeley DB call raises on failure: ENOMEM comes as MemoryError.
_DB_ERRORS = (db.DBError, MemoryError)


class DBError(Exception):
    """A Berkeley DB or file-system failure; str() names the file."""


class Cursor:
    """A walk over one Table; see Table.cursor()."""

    def __init__(self, table: Table) -> None:
        self._table = table
        try:
            self._cursor = table._db.cursor()
        except _DB_ERRORS as err:
            raise table._error("read", err) from None

    def first(self) -> tuple[bytes, bytes] | None:
        try:
            row: tuple[bytes, bytes] | None = self._cursor.first()
            return row
        except _DB_ERRORS as err:
            raise self._table._error("read", err) from None

    def next(self) -> tuple[bytes, bytes] | None:
        try:
            row: tuple[bytes, bytes] | None = self._cursor.next()
            return row
        except _DB_ERRORS as err:
            raise self._table._error("read", err) from None

    def close(self) -> None:
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            try:
                cursor.close()
            except _DB_ERRORS as err:
                raise self._table._error("close a cursor on", err) from None


class Table:
    """One Berkeley DB file; see the module docstring."""

    def __init__(self, path: str, handle: db.DB, lock_fd: int, cache_size: int = 0) -> None:
        self.path = path
        self.cache_size = cache_size
        self._db = handle
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, path: str, kind: str, *, cache_size: int) -> Table:
        """A new empty `kind` table renamed over `path`; DBError."""
        if kind not in _DBTYPE:
            raise DBError(f"{path}: unsupported database type {kind!r} (use hash or btree)")
        # A symbolic link is followed, as Postfix's O_CREAT|O_TRUNC open follows it:
        # the new file replaces the link's target, and the link stays.
        target = os.path.realpath(path)
        remove_stale(target)
        try:
            lock_fd, tmp = create_locked(target)
        except OSError as err:
            raise DBError(f"open database {path}: {err.strerror}") from None
        handle = db.DB()
        try:
            handle.set_cachesize(0, cache_size, 1)
            if kind == "hash":
                handle.set_h_nelem(H_NELEM)
            handle.open(tmp, dbtype=_DBTYPE[kind], flags=db.DB_CREATE | db.DB_TRUNCATE, mode=0o600)
            os.rename(tmp, target)
        except (OSError, db.DBError) as err:
            with contextlib.suppress(db.DBError):
                handle.close(db.DB_NOSYNC)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(lock_fd)
            why = err.strerror if isinstance(err, OSError) else _reason(err)
            raise DBError(f"open database {path}: {why}") from None
        return cls(path, handle, lock_fd, cache_size)

    def _error(self, what: str, err: Exception) -> DBError:
        return DBError(f"{what} database {self.path}: {_reason(err)}")

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
            return value
        except _DB_ERRORS as err:
            raise self._error("read", err) from None

    def put(self, key: bytes, value: bytes) -> None:
        try:
            self._db.put(key, value)
        except _DB_ERRORS as err:
            raise self._error("write", err) from None

    def delete(self, key: bytes) -> bool:
        try:
            self._db.delete(key)
        except db.DBNotFoundError:
            return False
        except _DB_ERRORS as err:
            raise self._error("delete from", err) from None
        return True

    def first(self) -> tuple[bytes, bytes] | None:
        """The first record (the smallest key of a btree), or None."""
        cursor = self.cursor()
        try:
            return cursor.first()
        finally:
            cursor.close()

    def cursor(self) -> Cursor:
        return Cursor(self)

    def sync(self) -> None:
        """Write dirty pages to the file (no fsync)."""
        if self._db is None:
            return
        try:
            self._db.sync()
        except _DB_ERRORS as err:
            raise self._error("sync", err) from None

    def free_bytes(self) -> int:
        """Bytes the file system holding the table has left for unprivileged writers."""
        try:
            st = os.fstatvfs(self._lock_fd)
        except OSError as err:
            raise DBError(f"statvfs {self.path}: {err.strerror}") from None
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        """Sync, close, release the lock.  Harmless when already closed.

        Raises DBError when the sync fails.  Workaround: Berkeley DB 5.3's
        close of a private environment reopens the file by the name it was
        opened under, which is gone (the temporary name, renamed; also out
        of sight in a chroot jail), and fails with ENOENT although every
        page was already written by the sync; like Postfix's
        dict_db_close(), that error is only logged ("possible Berkeley DB
        bug").  The reopen can never reach the file now at `path`."""
        if self._db is None:
            return
        handle, self._db = self._db, None
        try:
            try:
                handle.sync()
            except _DB_ERRORS as err:
                raise DBError(f"sync database {self.path}: {_reason(err)}") from None
            try:
                handle.close(db.DB_NOSYNC)
            except db.DBError as err:
                if log.msg_verbose:
                    log.msg_info(
                        f"close database {self.path}: {_reason(err)} (possible Berkeley DB bug)"
                    )
        finally:
            os.close(self._lock_fd)


def _reason(err: Exception) -> str:
    args = err.args
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(err)
