"""One TLS session cache: entries as Postfix stores them, expiry, cleanup scan, size bounds.

SYNOPSIS
    from tlsmgr import scache

    cache = scache.SessionCache.open(
        "smtp", "btree:/var/lib/postfix/smtp_scache", timeout=3600,
        max_entries=100000, max_bytes=1 << 30, data_directory="/var/lib/postfix",
        mail_owner="postfix", mail_owner_uid=uid)
    cache.lookup(cache_id, now) -> bytes | None         # StoreError
    cache.update(cache_id, session, now)                # StoreError
    cache.delete(cache_id) -> bool                      # StoreError
    cache.start_cleanup(now)                  # from a timer, every `timeout` s
    cache.cleanup_step(now, budget=1) -> bool # from the loop hook; True = more to do
    cache.stats() -> {"entries", "bytes", "hits", "misses", "evictions", "expired",
                      "oversized", "refused", "errors", "no_room", "disabled"}
    cache.flush(); cache.close()                        # DBError
    scache.MAX_CACHE_ID, scache.MAX_SESSION, scache.ROOM_MARGIN

    scache.encode_entry(saved_at, session) -> bytes
    scache.decode_entry(value) -> (saved_at, session)      # EntryError

DESCRIPTION
    Files.  A cache named `type:path` (type hash or btree; without a
    prefix, default_database_type) lives in the Berkeley DB file
    `path.db`.  With max_entries > 0 or max_bytes > 0 a second file,
    `path.age.db`, a btree keyed by big-endian saved_at + key, finds the
    oldest entry without holding keys in memory.  Both are made new at
    open (dbhash.Table.create: under a temporary name, locked, mode
    0600, then renamed over the old file, which a draining tlsmgr may
    still use), by the caller's effective uid/gid: tlsmgr opens them as
    mail_owner, in pre-init, inside master.privs.saved_eugid().  Before that the path
    goes through redirect.redirect_database() (Postfix's
    data_redirect_map()).

    Entries, exactly as Postfix 3.7 stores them (tls_scache_encode() and
    tls_scache_decode() in tls_scache.c), so that
    `postmap -s hash:path` lists our files:
        key   = cache_id + NUL
        value = upper-case hex of (8-byte little-endian time_t saved_at
                + session bytes), + NUL
    Decoding accepts lower case and colon-separated pairs ("0A:1B"), as
    3.7's hex_decode_opt(HEX_DECODE_FLAG_ALLOW_COLON) does.

    lookup: a hit returns the session; an entry with saved_at + timeout
    < now (strictly) is expired; an expired, truncated (< 16 hex digits)
    or malformed entry is deleted and reported as a miss.
    update: stores with saved_at = now, replacing any old entry.
    delete: True when the entry was there and was deleted, or when it is
    the entry the cleanup scan stands on (then it is kept, as Postfix
    does); False when it was not there.

    Bounds (tlsmgr(8) BUGS: nothing bounded a cache).  An update whose
    cache_id is longer than MAX_CACHE_ID bytes or whose session is longer
    than MAX_SESSION bytes is refused (StoreError, a warning, counted as
    oversized); the entry it would have replaced stays.  After an update
    that takes the cache over max_entries entries or max_bytes bytes (0:
    no bound), the oldest entries by saved_at are evicted until it fits,
    never the entry just written.  `bytes` counts what the entries hold:
    key + value as stored (cache_id + 1 + 2 x (8 + session) + 1), not
    Berkeley DB's page overhead.  The count is kept exact by every path
    that adds or removes an entry (update, overwrite, delete, expiry,
    the scan's delete-behind, eviction): no scan, no memory that grows
    with the cache; the files are empty at open, so it starts at 0.

    Room.  Berkeley DB writes a page to its file when it needs the
    page's buffer, so a cache's dirty pages (up to its buffer pool) may
    all need disk space at any moment; and without transactions a write
    that fails halfway may leave the file inconsistent (seen on a full
    disk: a btree whose records a cursor walks but get() no longer
    finds).  So the cache keeps away from a full file system: before the
    first update and after every ROOM_STEP bytes stored, it checks that
    the file system of each of its files has room for both buffer pools
    and ROOM_MARGIN more.  When one has not, the cache has no room: updates
    are refused (StoreError, counted as refused, the warning `smtp TLS
    cache: /path: N bytes free, fewer than M: updates refused until
    there is room`), and each later update checks again; lookups,
    deletes and the scan go on.  With room again: `smtp TLS cache: room
    again: updates resumed`.

    Failures.  A Berkeley DB error in a request, a scan step or an
    eviction (a disk filled by another writer between two checks, an
    I/O error) disables the cache until the next tlsmgr start, which
    truncates its files: its files may be inconsistent, and they cannot
    be made anew in place (after the jail their names are out of
    reach).  The warning: `smtp TLS cache: ERROR: cache disabled until
    tlsmgr restarts`.  Every later request gets StoreError at once,
    without touching the files: on a full disk every Berkeley DB call
    would first wait about 4 s for a buffer it cannot write, as the one
    that failed did.  The other caches, seeds and ticket keys carry on.

    Cleanup (tlsmgr_cache_run_event() and tlsmgr_loop() in tlsmgr.c,
    tls_scache_sequence()).  start_cleanup() arms a scan unless one is
    running; each cleanup_step() moves the cursor over at most `budget`
    entries.  An expired or bad entry is remembered and deleted one step
    later, after the cursor has moved past it, by a lookup of its key,
    so an entry updated in the meantime survives.  Client requests run
    between steps: nothing is ever stalled by a scan.

    Logging, when `verbose` (the cache's *_tls_loglevel has cache
    logging): Postfix's lines `open smtp TLS cache hash:/path`,
    `lookup smtp session id=ID`, `read smtp TLS cache entry ID: time=T
    [data N bytes]`, `put smtp session id=ID [data N bytes]`, `write smtp
    TLS cache entry ID: time=T [data N bytes]`, `delete smtp session
    id=ID`, `tlsmgr_cache_run_event: start TLS smtp session cache
    cleanup`, `close smtp TLS cache hash:/path`; plus minipostfix's
    `evict smtp session id=ID: cache full (N entries)` (or `N bytes`).
    Always logged: the warnings `smtp TLS cache: truncated entry for ID:
    ...`, `smtp TLS cache: malformed entry for ID: ...`, and the size
    cap, room and failure lines above.

    Invariants, kept by every path that adds or removes an entry: the
    counts match the file, the age index names every entry, and the
    scan's current entry is never deleted under it.

DIAGNOSTICS
    lookup, update and delete raise service.StoreError (the reply is
    FAIL) for an update over a cap or while the cache has no room, and for
    every request once the cache is disabled; dbhash.DBError from open()
    (fatal for tlsmgr), flush() and close().

BUGS
    Postfix's UTF-8 check (an update with a non-UTF-8 cache_id is skipped
    when smtputf8_enable is on) is not copied: keys are stored as sent.

SEE ALSO
    src/tls/tls_scache.c (Postfix), redirect.py, dbhash.py
"""

from __future__ import annotations

import binascii
import contextlib
import struct
from typing import Any

from master import log as master_log
from tlsmgr import dbhash
from tlsmgr.dbhash import DBError
from tlsmgr.redirect import redirect_database, split_database
from tlsmgr.service import StoreError

TIME_FORMAT = "<q"  # time_t on amd64
TIME_SIZE = struct.calcsize(TIME_FORMAT)
INDEX_TIME = ">q"  # big-endian, so that btree order is time order
DEFAULT_CACHE_SIZE = 8 << 20
DEFAULT_INDEX_CACHE_SIZE = 1 << 20
INDEX_SUFFIX = ".age"
# Size caps of one entry, far above every real session (docs/tlsmgr.md, "Bounds",
# has the measured figures): an update over either is refused.
MAX_CACHE_ID = 1024
MAX_SESSION = 32 * 1024
# Free space checked after every ROOM_STEP bytes stored; updates are refused while a
# file system has less than the buffer pools' size plus ROOM_MARGIN free (see Room).
ROOM_STEP = 1 << 20
ROOM_MARGIN = 4 << 20
COUNTERS = (
    "entries",
    "bytes",
    "hits",
    "misses",
    "evictions",
    "expired",
    "oversized",
    "refused",
    "errors",
)

__all__ = [
    "EntryError",
    "SessionCache",
    "decode_entry",
    "encode_entry",
]


class EntryError(ValueError):
    """A stored value that cannot be decoded; args[0] is "truncated" or "malformed"."""


_TIME = struct.Struct(TIME_FORMAT)
_INDEX_TIME = struct.Struct(INDEX_TIME)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def encode_entry(saved_at: int, session: bytes) -> bytes:
    """The stored value: upper-case hex of LE time_t + session, NUL-terminated."""
    return binascii.hexlify(_TIME.pack(saved_at) + session).upper() + b"\0"


def _hex_decode(text: bytes) -> bytes | None:
    """hex_decode_opt(..., HEX_DECODE_FLAG_ALLOW_COLON); None when invalid."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        if n - i < 2:
            return None
        pair = text[i : i + 2]
        if not _HEX_DIGITS.issuperset(pair):
            return None
        out.append(int(pair, 16))
        i += 3 if n - i > 4 and text[i + 2] == 0x3A else 2
    return bytes(out)


def decode_entry(value: bytes) -> tuple[int, bytes]:
    """(saved_at, session) from a stored value; EntryError."""
    end = value.find(b"\0")
    text = value if end < 0 else value[:end]
    if len(text) < 2 * TIME_SIZE:
        raise EntryError("truncated")
    try:
        raw: bytes | None = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        # The slow path: colon-separated pairs, or not hex at all.
        raw = _hex_decode(text) if b":" in text else None
    if raw is None:
        raise EntryError("malformed")
    if len(raw) < TIME_SIZE:
        raise EntryError("truncated")
    return _TIME.unpack_from(raw)[0], raw[TIME_SIZE:]


class SessionCache:
    """One cache type's store; see the module docstring."""

    def __init__(
        self,
        label: str,
        name: str,
        table: dbhash.Table,
        index: dbhash.Table | None,
        *,
        timeout: int,
        max_entries: int = 0,
        max_bytes: int = 0,
        verbose: bool = False,
        log: Any = master_log,
    ) -> None:
        self.label = label
        self.name = name
        self.timeout = timeout
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.verbose = verbose
        self.log = log
        self._table = table
        self._index = index
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._cursor: dbhash.Cursor | None = None
        self._first = False
        self._cursor_key: bytes | None = None  # Postfix's saved_cursor
        self._del_cursor = False
        self._disabled = False
        self._no_room = False
        self._unchecked = ROOM_STEP  # bytes stored since the last room check
        pools = table.cache_size + (index.cache_size if index is not None else 0)
        self._room_needed = pools + ROOM_MARGIN

    @classmethod
    def open(
        cls,
        cache_type: str,
        database: str,
        *,
        timeout: int,
        max_entries: int = 0,
        max_bytes: int = 0,
        data_directory: str,
        mail_owner: str = "postfix",
        mail_owner_uid: int,
        default_database_type: str = "hash",
        cache_size: int = DEFAULT_CACHE_SIZE,
        index_cache_size: int = DEFAULT_INDEX_CACHE_SIZE,
        verbose: bool = False,
        log: Any = master_log,
    ) -> SessionCache:
        """Redirect, create/truncate and open the cache's files; DBError.

        Call with euid/egid set to mail_owner (master.privs.saved_eugid)."""
        name, warnings = redirect_database(
            database,
            default_type=default_database_type,
            data_directory=data_directory,
            mail_owner=mail_owner,
            mail_owner_uid=mail_owner_uid,
        )
        for warning in warnings:
            log.msg_warn(warning)
        kind, path = split_database(name)
        if kind not in dbhash.TYPES:
            raise DBError(f"{cache_type} TLS cache {database}: unsupported type {kind!r}")
        if verbose:
            log.msg_info(f"open {cache_type} TLS cache {name}")
        table = dbhash.Table.create(path + ".db", kind, cache_size=cache_size)
        index = None
        if max_entries > 0 or max_bytes > 0:
            try:
                index = dbhash.Table.create(
                    path + INDEX_SUFFIX + ".db",
                    "btree",
                    cache_size=index_cache_size,
                )
            except DBError:
                table.close()
                raise
        return cls(
            cache_type,
            name,
            table,
            index,
            timeout=timeout,
            max_entries=max_entries,
            max_bytes=max_bytes,
            verbose=verbose,
            log=log,
        )

    # Client operations ---------------------------------------------------

    def lookup(self, cache_id: str, now: float) -> bytes | None:
        """The session stored under cache_id, or None (miss, expired, bad); StoreError."""
        if self._disabled:
            raise self._unavailable()
        key = _key(cache_id)
        try:
            if not self.verbose:
                # The common case, a live well-formed entry, decoded in line;
                # anything else takes the general path below (which reads again).
                value = self._table.get(key)
                if value is None:
                    self.counters["misses"] += 1
                    return None
                if value[-1:] == b"\0" and len(value) > 2 * TIME_SIZE:
                    try:
                        raw = binascii.unhexlify(value[:-1])
                    except (binascii.Error, ValueError):
                        raw = b""
                    if raw and _TIME.unpack_from(raw)[0] + self.timeout >= int(now):
                        self.counters["hits"] += 1
                        return raw[TIME_SIZE:]
            else:
                self.log.msg_info(f"lookup {self.label} session id={cache_id}")
            session = self._lookup(key, int(now))
        except DBError as err:
            raise self._failed(err) from None
        self.counters["hits" if session is not None else "misses"] += 1
        return session

    def update(self, cache_id: str, session: bytes, now: float) -> None:
        """Store session under cache_id, saved at now; evict at the bounds.

        StoreError when the entry is over a size cap, the cache has no room
        or is disabled, or the files fail."""
        key = _key(cache_id)
        if len(key) > MAX_CACHE_ID + 1 or len(session) > MAX_SESSION:
            raise self._oversized(key, session)
        if self._disabled:
            raise self._unavailable()
        saved_at = int(now)
        value = encode_entry(saved_at, session)
        self._unchecked += len(key) + len(value)
        if self._unchecked >= ROOM_STEP or self._no_room:
            self._check_room()
            if self._no_room:
                self.counters["refused"] += 1
                raise StoreError(f"{self.label} TLS cache: no room")
        if self.verbose:
            self.log.msg_info(f"put {self.label} session id={cache_id} [data {len(session)} bytes]")
            self.log.msg_info(
                f"write {self.label} TLS cache entry {cache_id}: time={saved_at}"
                f" [data {len(session)} bytes]"
            )
        try:
            old = self._table.get(key)
            self._table.put(key, value)
            counters = self.counters
            if old is None:
                counters["entries"] += 1
                counters["bytes"] += len(key) + len(value)
            else:
                counters["bytes"] += len(value) - len(old)
            if self._index is not None:
                if old is not None:
                    self._unindex(key, old)
                index_key = _INDEX_TIME.pack(saved_at) + key
                self._index.put(index_key, b"")
                self._evict(index_key)
        except DBError as err:
            raise self._failed(err) from None

    def delete(self, cache_id: str) -> bool:
        """Delete cache_id; True if deleted or protected by the scan cursor.

        StoreError when the cache is disabled or the files fail."""
        if self._disabled:
            raise self._unavailable()
        if self.verbose:
            self.log.msg_info(f"delete {self.label} session id={cache_id}")
        key = _key(cache_id)
        if key == self._cursor_key:
            return True
        try:
            return self._remove(key)
        except DBError as err:
            raise self._failed(err) from None

    def stats(self) -> dict[str, int]:
        return {**self.counters, "no_room": int(self._no_room), "disabled": int(self._disabled)}

    # Cleanup scan --------------------------------------------------------

    def start_cleanup(self, now: float) -> None:
        """Arm a scan unless one is running (tlsmgr_cache_run_event) or the
        cache is disabled."""
        if self.verbose:
            self.log.msg_info(
                f"tlsmgr_cache_run_event: start TLS {self.label} session cache cleanup"
            )
        if self._cursor is None and not self._disabled:
            try:
                self._cursor = self._table.cursor()
            except DBError as err:
                self._failed(err)
                return
            self._first = True

    @property
    def cleaning(self) -> bool:
        return self._cursor is not None

    def cleanup_step(self, now: float, budget: int = 1) -> bool:
        """Move the scan over at most `budget` entries; True while it has more to do.

        A failure of the files ends the scan and disables the cache."""
        try:
            for _ in range(max(1, budget)):
                if self._cursor is None:
                    return False
                self._sequence(int(now))
        except DBError as err:
            self._failed(err)
            return False
        return self._cursor is not None

    def _sequence(self, now: int) -> None:
        """One step of tls_scache_sequence(): check this entry, delete behind."""
        assert self._cursor is not None
        record = self._cursor.first() if self._first else self._cursor.next()
        self._first = False
        keep = False
        if record is not None:
            keep = self._decode(record[0], record[1], now) is not None
        saved, delete_saved = self._cursor_key, self._del_cursor
        self._cursor_key, self._del_cursor = None, False
        if delete_saved and saved is not None:
            # Delete behind: a no-op when the entry was updated meanwhile.
            if self.verbose:
                self.log.msg_info(f"lookup {self.label} session id={_id(saved)}")
            self._lookup(saved, now)
        if record is None:
            self._end_scan()
            return
        self._cursor_key, self._del_cursor = record[0], not keep

    def _end_scan(self) -> None:
        cursor, self._cursor = self._cursor, None
        self._cursor_key, self._del_cursor = None, False
        if cursor is not None:
            with contextlib.suppress(DBError):  # nothing is lost with the cursor
                cursor.close()

    # Flushing ------------------------------------------------------------

    def flush(self) -> None:
        """Write dirty pages to the files (no fsync); DBError."""
        self._table.sync()
        if self._index is not None:
            self._index.sync()

    def close(self) -> None:
        """End any scan, sync and close the files, release their locks.

        DBError when the last sync fails; the files are closed anyway."""
        if self.verbose:
            self.log.msg_info(f"close {self.label} TLS cache {self.name}")
        self._end_scan()
        errors = []
        for table in (self._table, self._index):
            try:
                if table is not None:
                    table.close()
            except DBError as err:
                errors.append(str(err))
        if errors:
            raise DBError("; ".join(errors))

    # Failures ------------------------------------------------------------

    def _oversized(self, key: bytes, session: bytes) -> StoreError:
        self.counters["oversized"] += 1
        if len(key) > MAX_CACHE_ID + 1:
            what = f"cache_id of {len(key) - 1} bytes (limit {MAX_CACHE_ID})"
        else:
            what = f"session of {len(session)} bytes (limit {MAX_SESSION})"
        self.log.msg_warn(f"{self.label} TLS cache: {what} not stored")
        return StoreError(f"{what} not stored")

    def _check_room(self) -> None:
        """Set or clear no_room by the free space of each file's file system."""
        self._unchecked = 0
        try:
            short = [
                (table.path, free)
                for table in (self._table, self._index)
                if table is not None and (free := table.free_bytes()) < self._room_needed
            ]
        except DBError as err:
            raise self._failed(err) from None
        if short and not self._no_room:
            path, free = short[0]
            self.log.msg_warn(
                f"{self.label} TLS cache: {path}: {free} bytes free, fewer than"
                f" {self._room_needed}: updates refused until there is room"
            )
        elif not short and self._no_room:
            self.log.msg_info(f"{self.label} TLS cache: room again: updates resumed")
        self._no_room = bool(short)

    def _failed(self, err: DBError) -> StoreError:
        """Disable the cache after a failure of its files (see Failures)."""
        self.counters["errors"] += 1
        self._disabled = True
        self._end_scan()
        self.log.msg_warn(f"{self.label} TLS cache: {err}: cache disabled until tlsmgr restarts")
        return StoreError(str(err))

    def _unavailable(self) -> StoreError:
        return StoreError(f"{self.label} TLS cache disabled after an error")

    # Internals -----------------------------------------------------------

    def _decode(self, key: bytes, value: bytes, now: int) -> bytes | None:
        """The session of a live entry, or None (logged when bad)."""
        try:
            saved_at, session = decode_entry(value)
        except EntryError as err:
            shown = value.split(b"\0", 1)[0][:100].decode("ascii", "backslashreplace")
            self.log.msg_warn(f"{self.label} TLS cache: {err} entry for {_id(key)}: {shown}")
            return None
        if self.verbose:
            self.log.msg_info(
                f"read {self.label} TLS cache entry {_id(key)}: time={saved_at}"
                f" [data {len(session)} bytes]"
            )
        if saved_at + self.timeout < now:
            return None
        return session

    def _lookup(self, key: bytes, now: int) -> bytes | None:
        value = self._table.get(key)
        if value is None:
            return None
        session = self._decode(key, value, now)
        if session is None:
            if self.verbose:
                self.log.msg_info(f"delete {self.label} session id={_id(key)}")
            if key == self._cursor_key:
                self._del_cursor = True
            elif self._remove(key, value) and _expired(value, self.timeout, now):
                self.counters["expired"] += 1
        return session

    def _remove(self, key: bytes, value: bytes | None = None) -> bool:
        """Delete key's entry (value: what it holds, when known) and its index key."""
        if value is None:
            value = self._table.get(key)
            if value is None:
                return False
        if not self._table.delete(key):
            return False
        self.counters["entries"] -= 1
        self.counters["bytes"] -= len(key) + len(value)
        if self._index is not None:
            self._unindex(key, value)
        return True

    def _unindex(self, key: bytes, value: bytes) -> None:
        assert self._index is not None
        saved_at = _saved_at(value)
        if saved_at is not None:
            self._index.delete(_INDEX_TIME.pack(saved_at) + key)

    def _evict(self, newest: bytes) -> None:
        """Delete the oldest entries, never the one just written (index key
        `newest`), while the cache is over a bound."""
        assert self._index is not None
        if not self._over():
            return
        cursor = self._index.cursor()
        try:
            record = cursor.first()
            while record is not None and self._over():
                if record[0] != newest:
                    self._evict_one(record[0])
                record = cursor.next()
        finally:
            cursor.close()

    def _over(self) -> bool:
        counters = self.counters
        return 0 < self.max_entries < counters["entries"] or 0 < self.max_bytes < counters["bytes"]

    def _evict_one(self, index_key: bytes) -> None:
        """Evict the entry an index key names, when it is still the entry the
        key describes; delete the index key either way."""
        assert self._index is not None
        key = index_key[TIME_SIZE:]
        value = self._table.get(key)
        if value is not None and _saved_at(value) == _INDEX_TIME.unpack_from(index_key)[0]:
            if self.verbose:
                full = (
                    f"{self.max_entries} entries"
                    if 0 < self.max_entries < self.counters["entries"]
                    else f"{self.max_bytes} bytes"
                )
                self.log.msg_info(f"evict {self.label} session id={_id(key)}: cache full ({full})")
            self._table.delete(key)
            self.counters["entries"] -= 1
            self.counters["bytes"] -= len(key) + len(value)
            self.counters["evictions"] += 1
            if key == self._cursor_key:
                self._cursor_key, self._del_cursor = None, False
        self._index.delete(index_key)


def _key(cache_id: str) -> bytes:
    return cache_id.encode("utf-8", "surrogateescape") + b"\0"


def _id(key: bytes) -> str:
    return key.rstrip(b"\0").decode("utf-8", "surrogateescape")


def _saved_at(value: bytes) -> int | None:
    """The saved_at of a stored value (the first 16 hex digits), or None."""
    try:
        return int(_TIME.unpack(binascii.unhexlify(value[: 2 * TIME_SIZE]))[0])
    except (binascii.Error, ValueError, struct.error):
        pass
    try:
        return decode_entry(value)[0]
    except EntryError:
        return None


def _expired(value: bytes, timeout: int, now: int) -> bool:
    saved_at = _saved_at(value)
    return saved_at is not None and saved_at + timeout < now
