"""The Redis second level behind tlsmgr's session caches (tls_session_cache_redis).

SYNOPSIS
    from tlsmgr.redislevel import RedisLevel, open_level

    level = open_level(events, address, chain, roots, budget=0.020, log=log)
    level.fetch(cache_type, cache_id, now, done) -> bool   # done(session | None, expires)
    level.store(cache_type, cache_id, session, now, timeout)
    level.delete(cache_type, cache_id)
    level.stats() -> {"state": "up", "hits": "3", ...}
    level.warnings.flush(now)                # the "N more warnings" line, when due
    level.close()

DESCRIPTION
    service.Service calls this object (its `second_level`) behind every
    enabled cache; the local Berkeley DB cache stays the first level:
      lookup  a local miss asks Redis (fetch); done() later gives the
              session and its sealed expiry, or None: a missing key, a
              value that does not open (below), Redis down, an error
              reply, or no reply within the read budget.  fetch()
              returns False without asking while Redis is not up: the
              caller answers the miss at once.
      update  the local update, then, when the local cache stored it,
              `SET name value PX timeout-in-ms` (the entry's whole
              lifetime: it was just saved); the reply is never waited
              for.
      delete  the local delete and `DEL name` (whatever the local cache
              could do), also not waited for.
    Writes are sealed and sent at the end of the loop turn, after the
    turn's replies to clients, in the order they came.
    Names and values are sealing.Sealer's: keyed hashes of (cache type,
    cache id), and entries sealed with ChaCha20-Poly1305 under the
    epoch's seal key from the shared key chain.

    A lookup asks for at most MAX_VALUE + 1 bytes (GETRANGE): a sealed
    session at the local caches' size cap (scache.MAX_SESSION) is
    MAX_VALUE bytes, so a longer value, which no host of this version
    writes (an update over the cap is not stored anywhere), is known as
    such without being read whole.  Such a value, and a value that does
    not open, is a miss and a warning: `redis ADDRESS: smtp cache id=ID:
    the value in Redis REASON; treated as a miss` (REASON: is over the
    size cap (N bytes), is not a sealed entry, was sealed in an epoch
    outside the key window, fails authentication, has expired).  These
    warnings are rate-limited like client warnings (service.WarningLimit:
    at most 20 per 60 s, then one summary line).  Connection trouble is
    logged by redisconn.RedisConnection, once per outage.

    stats() (in the `stats` reply as redis.NAME, so in `status -v`):
    state (up, connecting, down), hits, misses, skipped (lookups not
    asked because Redis was not up), tampered (values that failed
    authentication or were malformed), stale (outside the key window or
    expired), oversized (values over the size cap), and the
    connection's errors, timeouts, reconnects and late replies.

    open_level() is called in pre_init, before the jail: importing this
    module imports the AEAD and hiredis, which a tlsmgr
    without Redis never loads.

SEE ALSO
    tlsmgr/sealing.py (the format), tlsmgr/redisconn.py (the
    connection), docs/tlsmgr.md, docs/cluster.md
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from master.events import EventLoop
from tlsmgr.keychain import Chain, Roots
from tlsmgr.redisconn import RedisAddress, RedisConnection
from tlsmgr.scache import MAX_SESSION
from tlsmgr.sealing import OVERHEAD, EpochKeys, Sealer, SealError
from tlsmgr.service import Fetched, WarningLimit

# The longest value a host seals: a session at the local caches' size cap.  A lookup
# asks for one byte more, so that a longer value is seen without being read whole.
MAX_VALUE = OVERHEAD + MAX_SESSION

_SEAL_WORDS = {
    "malformed": "is not a sealed entry",
    "stale": "was sealed in an epoch outside the key window",
    "tampered": "fails authentication (altered, moved from another entry, or another secret's)",
    "expired": "has expired",
}


class RedisLevel:
    """The second level; see the module docstring."""

    def __init__(
        self,
        conn: RedisConnection,
        sealer: Sealer,
        *,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.sealer = sealer
        self.clock = clock
        self.warnings = WarningLimit(log, subject="values in Redis")
        self.counters = dict.fromkeys(
            ("hits", "misses", "skipped", "tampered", "stale", "oversized"), 0
        )
        self._writes: list[tuple[str, str, bytes | None, float, int]] = []

    def fetch(self, cache_type: str, cache_id: str, now: float, done: Fetched) -> bool:
        """Ask Redis; done(session, expires) or done(None, 0) later; False: not asked."""

        def got(value: bytes | None) -> None:
            session, expires = self._open(cache_type, cache_id, value)
            self.counters["hits" if session is not None else "misses"] += 1
            done(session, expires)

        if self.conn.get(self.sealer.name(cache_type, cache_id), got, limit=MAX_VALUE + 1):
            return True
        self.counters["skipped"] += 1
        return False

    def store(
        self, cache_type: str, cache_id: str, session: bytes, now: float, timeout: int
    ) -> None:
        """SET, sealed, after this loop turn's replies (see _write_event)."""
        self._later((cache_type, cache_id, session, now, timeout))

    def delete(self, cache_type: str, cache_id: str) -> None:
        """DEL, in order with the stores."""
        self._later((cache_type, cache_id, None, 0.0, 0))

    def _later(self, write: tuple[str, str, bytes | None, float, int]) -> None:
        if self.conn.state != "up":
            return
        if not self._writes:
            self.conn.events.request_timer(0, self._write_event)
        self._writes.append(write)

    def _write_event(self, _loop: EventLoop | None = None) -> None:
        """Speed: sealing costs tens of microseconds, so the turn's writes are sealed
        and sent after its replies to clients have gone out, in the order they came."""
        writes, self._writes = self._writes, []
        for cache_type, cache_id, session, now, timeout in writes:
            name = self.sealer.name(cache_type, cache_id)
            if session is None:
                self.conn.command(b"DEL", name)
                continue
            value = self.sealer.seal(cache_type, cache_id, session, int(now) + timeout, now)
            self.conn.command(b"SET", name, value, b"PX", timeout * 1000)

    def stats(self) -> dict[str, str]:
        figures = {"state": self.conn.state}
        for counters in (self.counters, self.conn.counters):
            figures.update((name, str(value)) for name, value in counters.items())
        return figures

    def close(self) -> None:
        """Send what this turn still had to write (best effort), then close."""
        self._write_event()
        self.conn.close()
        self.sealer.keys.erase()

    def _open(
        self, cache_type: str, cache_id: str, value: bytes | None
    ) -> tuple[bytes | None, int]:
        if not value:  # a missing key: GETRANGE answers b""
            return None, 0
        now = self.clock()
        if len(value) > MAX_VALUE:
            self.counters["oversized"] += 1
            self._warn(cache_type, cache_id, f"is over the size cap ({MAX_VALUE} bytes)", now)
            return None, 0
        try:
            return self.sealer.unseal(cache_type, cache_id, value, now)
        except SealError as err:
            kind = "stale" if err.reason in ("stale", "expired") else "tampered"
            self.counters[kind] += 1
            self._warn(cache_type, cache_id, _SEAL_WORDS[err.reason], now)
            return None, 0

    def _warn(self, cache_type: str, cache_id: str, what: str, now: float) -> None:
        self.warnings.warn(
            f"redis {self.conn.address.text}: {cache_type} cache id={cache_id}:"
            f" the value in Redis {what}; treated as a miss",
            now,
        )


def open_level(
    events: EventLoop,
    address: RedisAddress,
    chain: Chain,
    roots: Roots,
    *,
    budget: float,
    log: Any,
) -> RedisLevel:
    """The second level over a resolved address; connects from the first loop turn."""
    conn = RedisConnection(events, address, budget=budget, log=log)
    level = RedisLevel(conn, Sealer(roots.index, EpochKeys(chain)), log=log)
    conn.start()
    return level
