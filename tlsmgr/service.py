"""tlsmgr's request handler: Request + now -> Reply, over the caches and ticket keys.

SYNOPSIS
    from tlsmgr import service

    specs = service.plan_caches([(cache_type, database, timeout, loglevel), ...])
    slots = [service.CacheSlot(s.cache_type, s.timeout, store_or_None) for s in specs]
    svc = service.Service(slots, rand=pool, log=master_log, started=now,
                          second_level=None)
    reply = svc.handle(request, now)                  # -> protocol.Reply (or Pending)
    pending.when_done(callback)                       # callback(reply), later

    factory = svc.handler_factory(clock)              # for multi_server.main()
    handler = factory(conn)                           # one per connection
    handler.connection_made() -> bytes                # the greeting
    handler.data_received(data) -> bytes              # replies, in order
    handler.resume() -> bytes                         # after conn.hold()
    handler.between_requests -> bool
    handler.connection_lost()

    svc.warn(text, now)                               # a client's doing: rate-limited
    svc.warnings.flush(now)                           # the "suppressed" line, when due

    service.Handle                                    # what the handler uses of conn
    service.SecondLevel                               # a store behind every cache
    service.sanitise_timeout(seconds) -> int          # 1..119 -> 120, <= 0 -> 0
    service.cache_logging(loglevel_text) -> bool      # TLS_LOG_CACHE
    service.NULL_LOG

DESCRIPTION
    No sockets, no clock, no third-party imports.  Time comes in as
    `now`, randomness as `rand` (draw(n) -> bytes, mix(data)), logging
    as `log` (any object with msg_info(text) and msg_warn(text), such
    as the master.log module), stores as objects with lookup(), update(),
    delete() and stats() (scache.SessionCache; see SessionStore).

    handle() dispatches through a dict on the request name (Postfix's
    tlsmgr_service(); status codes from tls_mgr.h):
      seed    size 1..255: OK and that many bytes from rand.draw();
              otherwise FAIL, empty seed, warning
              `bogus seed length "N" in "seed" request`.
      lookup  OK and the session; ERR (empty) on a miss or an expired
              or malformed entry.  With a second level, a local miss
              asks it (second_level.fetch): handle() then returns a
              Pending, whose reply comes later (the session, stored
              locally to expire no later than there, or ERR); when the
              second level cannot ask (not connected), ERR at once.
      update  OK; the session bytes are also passed to rand.mix()
              (hashed into the pool, never credited: tlsmgr(8)
              says session data is mixed in; 3.7's code does not), and
              to second_level.store() when there is one.
      delete  OK when deleted (or the cleanup scan stands on the entry),
              ERR when not found; second_level.delete() too.
      tktkey  a name that is neither empty nor 16 bytes: FAIL (empty),
              warning `invalid session ticket key name length: N`; smtpd
              timeout 0: ERR (empty); no live key by that name: ERR, and
              keybuf echoes the 16-byte name the client sent, as Postfix
              does (it is the client's own data, nothing leaks); else OK
              and the 88-byte key (tickets.py: random keys, or keys
              shared through tls_session_ticket_secret_file when the
              daemon passes `tickets`).
      policy  OK, cachable 1/0 (cache open or not), the sanitised timeout
              even when the cache is disabled.
      stats   OK and NAME=VALUE pairs: uptime, requests.<name> per request
              type (plus requests.malformed), warnings.suppressed (see
              below), and per cache type
              <type>.enabled, <type>.timeout and, when enabled, the
              store's stats() (scache.SessionCache: entries, bytes, hits,
              misses, evictions, expired, oversized, refused, errors,
              no_room, disabled); redis.* from second_level.stats();
              prng.* when rand has a stats() method; log.dropped when the
              log has dropped_records() (master.log).  minipostfix only:
              real clients never send it, the six requests they do
              send stay byte-compatible.
    lookup, update and delete get FAIL when the store raises StoreError:
    an update over a size cap or into a cache whose file system is
    short of room, any request to a cache whose files failed (see
    scache.py).  FAIL, not ERR: ERR means "not found", while FAIL is
    what a disabled cache answers, and Postfix's smtp and smtpd ignore
    the status of an update and treat both alike on a lookup.  The
    second level stands behind a working store: a lookup the store
    fails is not asked there, an update it refuses is not stored there
    (the size caps bound both levels), a delete goes there whatever
    the store did; a session fetched from there is sent even when the
    store refuses to keep the copy.
    lookup, update, delete and policy on an unknown cache type: FAIL and
    `bogus cache type "X" in "NAME" request`; lookup, update and delete
    on a disabled cache: FAIL, no warning.  A malformed request (its
    `error` set by protocol.parse_request) gets FAIL with that request's
    reply shape; FAIL and ERR replies never carry data (the tktkey echo
    aside).

    TlsmgrHandler is the per-connection glue multi_server.main() wants
    (its handler contract: conn.room, conn.hold(), conn.pause(),
    conn.write(), resume(), between_requests).  It owns a protocol.ServerConnection, answers
    pipelined requests in order, and calls conn.close_after_write()
    after a master trigger (no reply), a protocol error (a FAIL reply
    when the error allows one, e.g. an over-limit request), or the
    MAX_MALFORMED-th (3rd) malformed request on the connection (after
    its FAIL reply).  A read that is exactly one request takes the fast
    path; other input goes to the decoder FEED_SIZE (4 KiB) at a time,
    and answering stops after REQUEST_BUDGET (32) requests or once the
    replies have filled conn.room: the rest stays undecoded, and the
    handler calls conn.hold() to be resumed when the output has
    drained.  A Pending reply (a lookup gone to the second level) stops
    the turn after the replies before it: conn.pause(), and when the
    reply comes, conn.write(reply) and conn.hold(), so that resume()
    goes on with the rest in order.  between_requests means no partial
    request, no undecoded input and no reply pending.

    Warnings a client can cause (malformed requests, protocol errors,
    bogus seed length, cache type or key name length) name the peer
    (conn.peer when the handle has one) and go through svc.warn(): a
    WarningLimit writes at most WARN_BURST (20) of them per WARN_INTERVAL
    (60 s) per process; at the end of an interval that dropped some, one
    line `N more warnings about client requests suppressed (at most 20
    per 60s)`, written by the next warning or by flush() (tlsmgr calls
    it from a timer).  The count since start is warnings.suppressed in
    stats.

    plan_caches() is the pure half of tlsmgr_pre_init(): it sanitises
    the timeouts, decides which caches are enabled (database set and
    timeout > 0) and refuses a timeout above 8640000 s or two caches on
    one database, with Postfix's messages, by raising ValueError.

SEE ALSO
    src/tlsmgr/tlsmgr.c tlsmgr_service(), tlsmgr_pre_init() (Postfix),
    tlsmgr/protocol.py, scache.py, tickets.py, docs/tlsmgr.md
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import tlsmgr.protocol as protocol
from tlsmgr.attr import NEED_DATA, RemoteProtocolError
from tlsmgr.params import MAX_SCACHE_TIMEOUT, SCACHE_LIFEMIN
from tlsmgr.protocol import (
    GREETING,
    REQ_DELETE,
    REQ_LOOKUP,
    REQ_POLICY,
    REQ_SEED,
    REQ_STATS,
    REQ_TKTKEY,
    REQ_UPDATE,
    Reply,
    Request,
    Status,
    Trigger,
)
from tlsmgr.tickets import SharedTicketKeys, TicketKeys

# Flow control per connection (the multi_server handler contract).  A turn
# of 32 small requests costs well under a millisecond; a 4 KiB slice of
# pipelined input decodes into at most a few hundred objects at a time.
REQUEST_BUDGET = 32  # requests answered per connection per loop turn
FEED_SIZE = 4096  # pipelined input handed to the decoder at a time
# Real clients never send a malformed request; three let a person typing at
# the socket see the FAIL replies, and bound a flood's warnings per connection.
MAX_MALFORMED = 3
# Warnings a client can cause, per process: the first WARN_BURST lines of a
# WARN_INTERVAL are written, the rest counted and summed up in one line.
WARN_BURST = 20
WARN_INTERVAL = 60.0


class Random(Protocol):
    def draw(self, n: int) -> bytes: ...

    def mix(self, data: bytes) -> None: ...


class StoreError(Exception):
    """A store could not do what was asked and has logged why; the reply is FAIL."""


class SessionStore(Protocol):
    """What the service needs from a session cache (scache.SessionCache).

    lookup, update and delete raise StoreError when the store refuses
    (an entry over a size cap, no room on disk) or cannot do it (its
    files failed)."""

    def lookup(self, cache_id: str, now: float) -> bytes | None: ...

    def update(self, cache_id: str, session: bytes, now: float) -> None: ...

    def delete(self, cache_id: str) -> bool: ...

    def stats(self) -> dict[str, int]: ...


class SecondLevel(Protocol):
    """A store shared behind every enabled cache (redislevel.RedisLevel)."""

    def fetch(self, cache_type: str, cache_id: str, now: float, done: Fetched) -> bool: ...

    def store(
        self, cache_type: str, cache_id: str, session: bytes, now: float, timeout: int
    ) -> None: ...

    def delete(self, cache_type: str, cache_id: str) -> None: ...

    def stats(self) -> dict[str, str]: ...


# done(session, expires) of SecondLevel.fetch(): (None, 0) for a miss.
Fetched = Callable[[bytes | None, int], None]


class Handle(Protocol):
    """What TlsmgrHandler uses of the skeleton's per-connection handle
    (multi_server.Connection; its `peer` too, when it has one)."""

    @property
    def room(self) -> int: ...

    def hold(self) -> None: ...

    def pause(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def close_after_write(self) -> None: ...


class Pending:
    """A reply that comes later: a lookup that went to the second level.

    Whoever gets one from Service.handle() calls when_done(callback) at
    once; callback(reply) then runs exactly once, later, from the event
    loop (never from inside handle())."""

    __slots__ = ("reply", "_callback")

    def __init__(self) -> None:
        self.reply: Reply | None = None
        self._callback: Callable[[Reply], None] | None = None

    def when_done(self, callback: Callable[[Reply], None]) -> None:
        self._callback = callback

    def finish(self, reply: Reply) -> None:
        callback, self._callback = self._callback, None
        self.reply = reply
        if callback is not None:
            callback(reply)


class _NullLog:
    def msg_info(self, text: str) -> None:
        pass

    def msg_warn(self, text: str) -> None:
        pass


NULL_LOG = _NullLog()


class WarningLimit:
    """At most `burst` warnings per `interval` seconds; see the module docstring."""

    def __init__(
        self,
        log: Any,
        burst: int = WARN_BURST,
        interval: float = WARN_INTERVAL,
        subject: str = "client requests",
    ) -> None:
        self.log = log
        self.subject = subject
        self.burst = burst
        self.interval = interval
        self.suppressed = 0  # lines not written, since start (for stats)
        self._start = 0.0  # the current interval began then
        self._written = 0  # lines written in it
        self._held = 0  # lines suppressed in it

    def warn(self, text: str, now: float) -> None:
        """Log `text` as a warning unless this interval's lines are used up."""
        self.flush(now)
        if self._written < self.burst:
            self._written += 1
            self.log.msg_warn(text)
        else:
            self._held += 1
            self.suppressed += 1

    def flush(self, now: float) -> None:
        """Once the interval is over: the summary line (if any were suppressed),
        and a new interval.  A clock that went back starts one too."""
        if self._start <= now < self._start + self.interval:
            return
        if self._held:
            self.log.msg_warn(
                f"{self._held} more warnings about {self.subject} suppressed"
                f" (at most {self.burst} per {self.interval:g}s)"
            )
        self._start, self._written, self._held = now, 0, 0


def sanitise_timeout(seconds: int) -> int:
    """Postfix's rule: <= 0 disables (0); 1..119 become 120."""
    if seconds <= 0:
        return 0
    return max(seconds, SCACHE_LIFEMIN)


def cache_logging(loglevel: str) -> bool:
    """True when a *_tls_loglevel value turns on TLS_LOG_CACHE: a level of
    2 or more, or the keyword "cache"."""
    for word in loglevel.replace(",", " ").split():
        if word == "cache" or (word.isdigit() and int(word) >= 2):
            return True
    return False


class CacheSpec(NamedTuple):
    """One cache as configured: type, database ("" = none), sanitised timeout."""

    cache_type: str
    database: str
    timeout: int
    verbose: bool = False

    @property
    def enabled(self) -> bool:
        return self.timeout > 0 and bool(self.database)


def plan_caches(rows: Iterable[tuple[str, str, int, str]]) -> list[CacheSpec]:
    """(cache_type, database, timeout, loglevel) rows -> CacheSpecs.

    ValueError: `invalid smtp_tls_session_cache_timeout: N (max 8640000)`,
    `do not use the same TLS cache file X for smtpd and smtp`."""
    specs: list[CacheSpec] = []
    seen: dict[str, str] = {}
    for cache_type, database, timeout, loglevel in rows:
        if timeout > MAX_SCACHE_TIMEOUT:
            raise ValueError(
                f"invalid {cache_type}_tls_session_cache_timeout: {timeout}"
                f" (max {MAX_SCACHE_TIMEOUT})"
            )
        spec = CacheSpec(cache_type, database, sanitise_timeout(timeout), cache_logging(loglevel))
        if spec.enabled:
            if database in seen:
                raise ValueError(
                    f"do not use the same TLS cache file {database}"
                    f" for {seen[database]} and {cache_type}"
                )
            seen[database] = cache_type
        specs.append(spec)
    return specs


class CacheSlot(NamedTuple):
    """A cache type as the service sees it; store None = disabled."""

    cache_type: str
    timeout: int
    store: SessionStore | None = None


class Service:
    """The six tlsmgr requests plus stats; see the module docstring."""

    def __init__(
        self,
        slots: Iterable[CacheSlot],
        *,
        rand: Random,
        log: Any = NULL_LOG,
        started: float = 0.0,
        tickets: TicketKeys | SharedTicketKeys | None = None,
        warnings: WarningLimit | None = None,
        second_level: SecondLevel | None = None,
    ) -> None:
        self.slots = {slot.cache_type: slot for slot in slots}
        self.second_level = second_level
        self.rand = rand
        self.log = log
        self.warnings = warnings or WarningLimit(log)
        self.started = started
        smtpd = self.slots.get("smtpd")
        self.tickets = tickets or TicketKeys(smtpd.timeout if smtpd else 0, rand)
        self.counts: Counter[str] = Counter()
        self._dispatch: dict[str, Callable[[Request, float], Reply | Pending]] = {
            REQ_SEED: self._seed,
            REQ_LOOKUP: self._lookup,
            REQ_UPDATE: self._update,
            REQ_DELETE: self._delete,
            REQ_TKTKEY: self._tktkey,
            REQ_POLICY: self._policy,
            REQ_STATS: self._stats,
        }

    def handle(self, request: Request, now: float) -> Reply | Pending:
        """Answer one request; never raises for anything a client can send.
        A Pending only for a lookup that went to the second level."""
        if request.error is not None:
            self.counts["malformed"] += 1
            return Reply(request.name, Status.FAIL)
        self.counts[request.name] += 1
        return self._dispatch[request.name](request, now)

    def warn(self, text: str, now: float) -> None:
        """A warning that a client caused: rate-limited (WarningLimit)."""
        self.warnings.warn(text, now)

    def handler_factory(self, clock: Callable[[], float]) -> Callable[[Handle], TlsmgrHandler]:
        """A factory for multi_server.main(): conn -> TlsmgrHandler."""
        return lambda conn: TlsmgrHandler(self, conn, clock)

    def _slot(self, request: Request, now: float) -> CacheSlot | None:
        slot = self.slots.get(request.cache_type)
        if slot is None:
            shown = protocol.printable(request.cache_type.encode("utf-8", "surrogateescape"))
            self.warn(f'bogus cache type "{shown}" in "{request.name}" request', now)
        return slot

    def _seed(self, request: Request, now: float) -> Reply:
        if not 0 < request.size <= protocol.MAX_SEED:
            self.warn(f'bogus seed length "{request.size}" in "{REQ_SEED}" request', now)
            return Reply(REQ_SEED, Status.FAIL)
        return Reply(REQ_SEED, Status.OK, self.rand.draw(request.size))

    def _lookup(self, request: Request, now: float) -> Reply | Pending:
        slot = self._slot(request, now)
        if slot is None or slot.store is None:
            return Reply(REQ_LOOKUP, Status.FAIL)
        try:
            session = slot.store.lookup(request.cache_id, now)
        except StoreError:
            return Reply(REQ_LOOKUP, Status.FAIL)
        if session is not None:
            return Reply(REQ_LOOKUP, Status.OK, session)
        if self.second_level is not None:
            pending = Pending()
            done = self._fetched(slot, request.cache_id, now, pending)
            if self.second_level.fetch(slot.cache_type, request.cache_id, now, done):
                return pending
        return Reply(REQ_LOOKUP, Status.ERR)

    @staticmethod
    def _fetched(slot: CacheSlot, cache_id: str, now: float, pending: Pending) -> Fetched:
        """What to do with the second level's answer: a session found there is
        stored locally to expire when it does there (never later), and sent, also
        when the local cache refuses the copy (StoreError: it has logged why)."""

        def done(session: bytes | None, expires: int) -> None:
            if session is None or slot.store is None:
                pending.finish(Reply(REQ_LOOKUP, Status.ERR))
                return
            with contextlib.suppress(StoreError):
                slot.store.update(cache_id, session, min(now, expires - slot.timeout))
            pending.finish(Reply(REQ_LOOKUP, Status.OK, session))

        return done

    def _update(self, request: Request, now: float) -> Reply:
        slot = self._slot(request, now)
        if slot is None or slot.store is None:
            return Reply(REQ_UPDATE, Status.FAIL)
        # Security: session data is hashed into the pool and never credited.
        self.rand.mix(request.session)
        try:
            slot.store.update(request.cache_id, request.session, now)
        except StoreError:
            return Reply(REQ_UPDATE, Status.FAIL)
        if self.second_level is not None:
            self.second_level.store(
                slot.cache_type, request.cache_id, request.session, now, slot.timeout
            )
        return Reply(REQ_UPDATE, Status.OK)

    def _delete(self, request: Request, now: float) -> Reply:
        slot = self._slot(request, now)
        if slot is None or slot.store is None:
            return Reply(REQ_DELETE, Status.FAIL)
        if self.second_level is not None:
            self.second_level.delete(slot.cache_type, request.cache_id)
        try:
            deleted = slot.store.delete(request.cache_id)
        except StoreError:
            return Reply(REQ_DELETE, Status.FAIL)
        return Reply(REQ_DELETE, Status.OK if deleted else Status.ERR)

    def _tktkey(self, request: Request, now: float) -> Reply:
        name = request.keyname
        if len(name) not in (0, protocol.TICKET_NAME_LEN):
            self.warn(f"invalid session ticket key name length: {len(name)}", now)
            return Reply(REQ_TKTKEY, Status.FAIL)
        if not self.tickets.enabled:
            return Reply(REQ_TKTKEY, Status.ERR)
        keybuf = self.tickets.lookup(name, now)
        if keybuf is None:
            # Compatibility: Postfix echoes the client's own key name here.
            return Reply(REQ_TKTKEY, Status.ERR, name)
        return Reply(REQ_TKTKEY, Status.OK, keybuf)

    def _policy(self, request: Request, now: float) -> Reply:
        slot = self._slot(request, now)
        if slot is None:
            return Reply(REQ_POLICY, Status.FAIL)
        cachable = 1 if slot.store is not None else 0
        return Reply(REQ_POLICY, Status.OK, cachable=cachable, timeout=slot.timeout)

    def _stats(self, request: Request, now: float) -> Reply:
        items: list[tuple[str, str]] = [("uptime", str(max(0, int(now - self.started))))]
        for name in (*protocol.REQUESTS, "malformed"):
            items.append((f"requests.{name}", str(self.counts[name])))
        items.append(("warnings.suppressed", str(self.warnings.suppressed)))
        for cache_type, slot in self.slots.items():
            items.append((f"{cache_type}.enabled", "1" if slot.store is not None else "0"))
            items.append((f"{cache_type}.timeout", str(slot.timeout)))
            if slot.store is not None:
                items += [(f"{cache_type}.{k}", str(v)) for k, v in slot.store.stats().items()]
        if self.second_level is not None:
            items += [(f"redis.{k}", v) for k, v in self.second_level.stats().items()]
        rand_stats = getattr(self.rand, "stats", None)
        if callable(rand_stats):
            items += [(f"prng.{k}", str(v)) for k, v in rand_stats().items()]
        dropped = getattr(self.log, "dropped_records", None)
        if callable(dropped):
            items.append(("log.dropped", str(dropped())))
        return Reply(REQ_STATS, Status.OK, items=tuple(items))


_FAIL = protocol.encode_reply(Reply("", Status.FAIL))


class TlsmgrHandler:
    """One client connection, for the multi_server skeleton; see the module docstring."""

    def __init__(self, service: Service, conn: Handle, clock: Callable[[], float]) -> None:
        self.service = service
        self.conn = conn
        self.clock = clock
        self._proto: protocol.ServerConnection | None = None
        self.closing = False
        self.malformed = 0
        self._input = b""  # received, not yet handed to the decoder
        self._offset = 0  # how much of it was
        self._pending: Pending | None = None  # a lookup waiting for the second level

    @property
    def proto(self) -> protocol.ServerConnection:
        """The decoder, made when the first bytes come: a client that connects and
        goes away again costs none."""
        if self._proto is None:
            self._proto = protocol.ServerConnection()
        return self._proto

    @property
    def peer(self) -> str:
        """Who the warnings name; asked only for a warning (the handle finds it on first use)."""
        return str(getattr(self.conn, "peer", "") or "private/tlsmgr")

    def connection_made(self) -> bytes:
        return GREETING

    def data_received(self, data: bytes) -> bytes:
        """Feed bytes (b"" = end of input); return the replies to send, in order."""
        if self.closing:
            return b""
        if not data:
            self.proto.receive_data(b"")
        elif self._input:
            # Sanity check: the skeleton reads nothing while input is held back.
            self._input = self._input[self._offset :] + data
            self._offset = 0
        else:
            requests = self.proto.whole_requests(data, 1)
            if requests is not None:
                answer = self._answer(requests[0])
                if isinstance(answer, Pending):
                    self._wait(answer)
                    return b""
                return protocol.encode_reply(answer)
            self._input = data
        return self._work()

    def resume(self) -> bytes:
        """Go on with the input kept back by conn.hold()."""
        return b"" if self.closing else self._work()

    @property
    def between_requests(self) -> bool:
        """No partial request, no undecoded input, no reply pending."""
        decoder = self._proto
        return (
            not self._input and (decoder is None or not decoder.buffered) and self._pending is None
        )

    def _wait(self, pending: Pending) -> None:
        """A reply that comes later: read nothing more until it is written."""
        self._pending = pending
        self.conn.pause()
        pending.when_done(self._late_reply)

    def _late_reply(self, reply: Reply) -> None:
        """Write the late reply after everything before it, then go on with the rest."""
        self._pending = None
        if self.closing:
            return
        self.conn.write(protocol.encode_reply(reply))
        self.conn.hold()

    def _work(self) -> bytes:
        """Answer the requests in the input, in order, until it runs out; stop
        after REQUEST_BUDGET of them, or once the replies fill the connection's
        room, and hold the rest back."""
        out: list[bytes] = []
        room = self.conn.room
        budget = REQUEST_BUDGET
        while not self.closing:
            try:
                event = self.proto.next_event()
            except RemoteProtocolError as err:
                self._warn(f"{err} from {self.peer}")
                if err.reply:
                    out.append(_FAIL)
                self._close()
                break
            if event is NEED_DATA:
                if not self._feed():
                    break
                continue
            if isinstance(event, Trigger):
                self._close()
                break
            answer = self._answer(event)
            if isinstance(answer, Pending):
                self._wait(answer)
                break
            reply = protocol.encode_reply(answer)
            out.append(reply)
            budget -= 1
            room -= len(reply)
            if (budget <= 0 or room <= 0) and not self.closing:
                if not self.between_requests:
                    self.conn.hold()
                break
        return b"".join(out)

    def _feed(self) -> bool:
        """Hand the decoder the next FEED_SIZE bytes of input; False when none is left."""
        start = self._offset
        if start >= len(self._input):
            return False
        end = start + FEED_SIZE
        self.proto.receive_data(self._input[start:end])
        if end >= len(self._input):
            self._input, self._offset = b"", 0
        else:
            self._offset = end
        return True

    def _answer(self, request: Request) -> Reply | Pending:
        now = self.clock()
        if request.warnings or request.error is not None:
            self._complain(request, now)
        return self.service.handle(request, now)

    def _complain(self, request: Request, now: float) -> None:
        for warning in request.warnings:
            self.service.warn(f"{warning} from {self.peer}", now)
        if request.error is None:
            return
        what = f'"{request.name}" request' if request.name else "request"
        self.service.warn(f"malformed {what} from {self.peer}: {request.error}", now)
        self.malformed += 1
        if self.malformed >= MAX_MALFORMED:
            self.service.warn(
                f"closing the connection from {self.peer} after {self.malformed}"
                " malformed requests",
                now,
            )
            self._close()

    def _warn(self, text: str) -> None:
        self.service.warn(text, self.clock())

    def _close(self) -> None:
        self.closing = True
        self.conn.close_after_write()

    def connection_lost(self) -> None:
        self.closing = True
