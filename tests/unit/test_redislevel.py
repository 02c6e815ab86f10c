"""The Redis second level behind tlsmgr's service: two hosts sharing one real redis-server.

Each "host" is what tlsmgr's daemon builds: a service.Service over a real Berkeley DB
session cache, with a redislevel.RedisLevel (the same secret's chain, its own connection)
as its second level, in one EventLoop that the test runs.  Requests go through
service.TlsmgrHandler with the connection stand-in, as the skeleton would call it.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass

import pytest

from master.events import EventLoop
from support.caches import open_cache, update_until_refused
from support.disks import fill
from support.keychain_reference import reference_chain
from support.redis_server import RedisServer
from support.stand_ins import Conn, Log, Rand
from support.waiting import spin
from tlsmgr import keychain, protocol, service
from tlsmgr.dbhash import DBError
from tlsmgr.protocol import Reply, Request, Status
from tlsmgr.redisconn import RedisAddress
from tlsmgr.redislevel import MAX_VALUE, RedisLevel, open_level
from tlsmgr.scache import MAX_SESSION
from tlsmgr.sealing import KEY_PREFIX

pytestmark = pytest.mark.redis

SECRET = b"s" * 32
OTHER = b"o" * 32
H = 1800
TIMEOUT = 3600


@dataclass
class Host:
    svc: service.Service
    level: RedisLevel
    cache: object
    log: Log

    def ask(self, request: Request, now: float | None = None) -> Reply | service.Pending:
        return self.svc.handle(request, time.time() if now is None else now)


@pytest.fixture
def loop():
    events = EventLoop()
    yield events
    events.close()


@pytest.fixture
def redis(folder):
    with RedisServer(folder) as server:
        yield server


@pytest.fixture
def hosts(loop, redis, folder):
    """make(name, secret=SECRET, timeout=TIMEOUT, on=folder, **sizes) -> a Host, connected,
    its cache in folder `on` (cache_size= and the like go to the cache); all closed after."""
    made: list[Host] = []

    def make(
        name: str, secret: bytes = SECRET, timeout: int = TIMEOUT, on: str = folder, **sizes: int
    ) -> Host:
        log = Log()
        now = time.time()
        chain = keychain.Chain(H, now, 0, reference_chain(secret, 0), keep_past=3)
        roots = keychain.Roots.derive(reference_chain(secret, 0))
        address = RedisAddress.parse(redis.address).resolved()
        level = open_level(loop, address, chain, roots, budget=0.5, log=log)
        cache = open_cache(
            on, name="smtp", file=f"{name}_scache", timeout=timeout, log=log, **sizes
        )
        slots = [service.CacheSlot("smtp", timeout, cache)]
        svc = service.Service(slots, rand=Rand(), log=log, second_level=level)
        host = Host(svc, level, cache, log)
        made.append(host)
        spin(loop, lambda: level.stats()["state"] == "up", f"host {name}'s connection")
        return host

    yield make
    for host in made:
        host.level.close()
        with contextlib.suppress(DBError):  # a cache on a full disk cannot flush
            host.cache.close()


def wait_reply(loop: EventLoop, answer: Reply | service.Pending) -> Reply:
    """The reply, once a Pending has finished (by the loop)."""
    if isinstance(answer, Reply):
        return answer
    got: list[Reply] = []
    answer.when_done(got.append)
    spin(loop, lambda: got, "the late reply")
    return got[0]


def update(cache_id: str, session: bytes) -> Request:
    return Request("update", cache_type="smtp", cache_id=cache_id, session=session)


def lookup(cache_id: str) -> Request:
    return Request("lookup", cache_type="smtp", cache_id=cache_id)


def test_a_session_stored_by_one_host_is_found_by_the_other(loop, redis, hosts):
    a, b = hosts("a"), hosts("b")
    assert a.ask(update("[mx.example.com]:25", b"SESSION")).status is Status.OK
    spin(loop, lambda: redis.keys(), "the SET")
    [key] = redis.keys()
    assert key.startswith(KEY_PREFIX) and b"example" not in key
    assert b"SESSION" not in redis.call("GET", key)  # sealed
    assert TIMEOUT * 1000 - 5000 < redis.call("PTTL", key) <= TIMEOUT * 1000

    answer = b.ask(lookup("[mx.example.com]:25"))
    assert isinstance(answer, service.Pending)  # a local miss goes to Redis
    reply = wait_reply(loop, answer)
    assert (reply.status, reply.data) == (Status.OK, b"SESSION")
    # Now B has it locally: answered at once, Redis not asked.
    again = b.ask(lookup("[mx.example.com]:25"))
    assert isinstance(again, Reply) and again.data == b"SESSION"
    assert b.level.stats()["hits"] == "1"
    assert b.cache.stats()["entries"] == 1


def test_a_miss_in_both_levels_is_an_err(loop, hosts):
    a = hosts("a")
    reply = wait_reply(loop, a.ask(lookup("nobody")))
    assert reply.status is Status.ERR and reply.data == b""
    assert a.level.stats()["misses"] == "1"


def test_a_session_from_redis_expires_locally_when_it_does_there(loop, redis, hosts):
    a, b = hosts("a", timeout=3600), hosts("b", timeout=7200)
    now = time.time()
    a.ask(update("id", b"S"), now)
    spin(loop, lambda: redis.keys(), "the SET")
    reply = wait_reply(loop, b.ask(lookup("id"), now))
    assert reply.data == b"S"
    # B's own timeout is longer, but the entry lives no longer than A sealed it for.
    assert b.cache.lookup("id", now + 3600) == b"S"
    assert b.cache.lookup("id", now + 3602) is None


def test_a_delete_goes_to_both_levels(loop, redis, hosts):
    a, b = hosts("a"), hosts("b")
    a.ask(update("id", b"S"))
    spin(loop, lambda: redis.keys(), "the SET")
    assert b.ask(Request("delete", cache_type="smtp", cache_id="id")).status is Status.ERR
    spin(loop, lambda: not redis.keys(), "the DEL")  # B had no local copy, Redis had one
    assert a.cache.lookup("id", time.time()) == b"S"  # A's first level is A's own


@pytest.mark.parametrize("how", ["altered", "moved", "garbage"])
def test_a_bad_value_in_redis_is_a_logged_miss(loop, redis, hosts, how):
    a, b = hosts("a"), hosts("b")
    a.ask(update("id", b"SESSION"))
    a.ask(update("other", b"OTHER"))
    spin(loop, lambda: len(redis.keys()) == 2, "the SETs")
    key = a.level.sealer.name("smtp", "id")
    value = redis.call("GET", key)
    if how == "altered":
        value = value[:-1] + bytes([value[-1] ^ 1])
    elif how == "moved":
        value = redis.call("GET", a.level.sealer.name("smtp", "other"))
    else:
        value = b"not a sealed entry"
    redis.call("SET", key, value)
    reply = wait_reply(loop, b.ask(lookup("id")))
    assert reply.status is Status.ERR
    stats = b.level.stats()
    assert stats["tampered"] == "1" and stats["hits"] == "0" and stats["misses"] == "1"
    reason = "is not a sealed entry" if how == "garbage" else "fails authentication"
    assert b.log.lines[-1] == (
        f"warning: redis {redis.address}: smtp cache id=id: the value in Redis {reason}"
        + (" (altered, moved from another entry, or another secret's)" if how != "garbage" else "")
        + "; treated as a miss"
    )


def test_another_secrets_value_is_a_logged_miss(loop, redis, hosts):
    a, c = hosts("a"), hosts("c", secret=OTHER)
    a.ask(update("id", b"SESSION"))
    spin(loop, lambda: redis.keys(), "the SET")
    # Another secret names entries differently: C does not even find A's.
    assert wait_reply(loop, c.ask(lookup("id"))).status is Status.ERR
    assert c.level.stats()["tampered"] == "0"
    # Put there under C's name, A's value still does not open for C.
    redis.call("SET", c.level.sealer.name("smtp", "id"), redis.call("GET", redis.keys()[0]))
    assert wait_reply(loop, c.ask(lookup("id"))).status is Status.ERR
    assert c.level.stats()["tampered"] == "1"
    assert "fails authentication" in c.log.lines[-1]


def test_with_redis_down_lookups_are_answered_at_once(loop, redis, hosts):
    a = hosts("a")
    a.ask(update("local", b"L"))
    redis.stop()
    spin(loop, lambda: a.level.stats()["state"] == "down", "the loss")
    answer = a.ask(lookup("elsewhere"))
    assert isinstance(answer, Reply) and answer.status is Status.ERR
    assert a.ask(lookup("local")).data == b"L"  # the first level still serves
    assert a.ask(update("new", b"N")).status is Status.OK  # not sent, not waited for
    stats = a.level.stats()
    assert stats["skipped"] == "1" and stats["state"] == "down"


def test_writes_go_out_after_the_turn_in_order(loop, redis, hosts):
    a = hosts("a")
    a.ask(update("id", b"FIRST"))
    a.ask(Request("delete", cache_type="smtp", cache_id="id"))
    a.ask(update("id", b"LAST"))
    assert redis.keys() == []  # nothing sent before the loop turns
    spin(loop, lambda: redis.keys(), "the writes")
    loop.run_once(0.05)
    key = a.level.sealer.name("smtp", "id")
    assert a.level.sealer.unseal("smtp", "id", redis.call("GET", key), time.time())[0] == b"LAST"


def test_the_handler_waits_for_redis_and_keeps_the_order(loop, hosts):
    a, b = hosts("a"), hosts("b")
    a.ask(update("shared", b"FROM-A"))
    b.ask(update("local", b"B-OWN"))
    spin(loop, lambda: _in_redis(loop, b), "the SET")
    conn = Conn()
    handler = b.svc.handler_factory(time.time)(conn)
    stream = (
        b"request\0lookup\0cache_type\0smtp\0cache_id\0shared\0\0"
        b"request\0seed\0size\x004\0\0"
        b"request\0lookup\0cache_type\0smtp\0cache_id\0local\0\0"
    )
    assert handler.data_received(stream) == b""  # the first reply is not ready
    assert conn.paused == 1 and not handler.between_requests
    spin(loop, lambda: conn.held, "the late reply")
    assert conn.written == protocol.encode_reply(Reply("lookup", Status.OK, b"FROM-A"))
    assert handler.between_requests is False  # input still to answer
    rest = handler.resume()
    assert rest.count(b"status\x000\x00") == 2
    assert rest.endswith(protocol.encode_reply(Reply("lookup", Status.OK, b"B-OWN")))
    assert handler.between_requests


def _in_redis(loop, host: Host) -> bool:
    got: list[bytes | None] = []
    host.level.conn.get(host.level.sealer.name("smtp", "shared"), got.append)
    spin(loop, lambda: got, "a GET")
    return got[0] is not None


def test_stats_name_the_redis_figures(hosts):
    a = hosts("a")
    reply = a.ask(Request("stats"))
    items = dict(reply.items)
    assert items["redis.state"] == "up"
    for name in ("hits", "misses", "skipped", "tampered", "stale", "oversized", "errors"):
        assert items[f"redis.{name}"] == "0"
    assert items["redis.reconnects"] == "0"


# The local cache's bounds and failures --------------------------------------


def delete(cache_id: str) -> Request:
    return Request("delete", cache_type="smtp", cache_id=cache_id)


def test_an_update_over_the_size_cap_goes_to_neither_level(loop, redis, hosts):
    a = hosts("a")
    assert a.ask(update("big", b"s" * (MAX_SESSION + 1))).status is Status.FAIL
    assert a.ask(update("small", b"S")).status is Status.OK
    spin(loop, lambda: redis.keys(), "the SET")
    loop.run_once(0.05)
    assert redis.keys() == [a.level.sealer.name("smtp", "small")]
    assert a.cache.stats()["oversized"] == 1


def test_a_value_over_the_size_cap_in_redis_is_a_logged_miss_never_read_whole(loop, redis, hosts):
    a, b = hosts("a"), hosts("b")
    now = time.time()
    sizes = {"at-cap": MAX_SESSION, "over-cap": MAX_SESSION + 1, "huge": 4 << 20}
    for cache_id, size in sizes.items():
        value = a.level.sealer.seal("smtp", cache_id, b"s" * size, int(now) + TIMEOUT, now)
        redis.call("SET", a.level.sealer.name("smtp", cache_id), value)
    # A session at the cap is read whole, opens, and is kept.
    reply = wait_reply(loop, b.ask(lookup("at-cap")))
    assert reply.status is Status.OK and len(reply.data) == MAX_SESSION
    assert b.cache.stats()["entries"] == 1
    # One byte more is refused; so is a huge value, of which Redis sends only the first
    # MAX_VALUE + 1 bytes.
    for cache_id in ("over-cap", "huge"):
        sent = _bytes_sent(redis)
        assert wait_reply(loop, b.ask(lookup(cache_id))).status is Status.ERR
        assert _bytes_sent(redis) - sent < MAX_VALUE + (16 << 10)
        assert b.log.lines[-1] == (
            f"warning: redis {redis.address}: smtp cache id={cache_id}: the value in Redis"
            f" is over the size cap ({MAX_VALUE} bytes); treated as a miss"
        )
    stats = b.level.stats()
    assert (stats["oversized"], stats["tampered"], stats["hits"]) == ("2", "0", "1")
    assert b.cache.stats()["entries"] == 1


def _bytes_sent(redis: RedisServer) -> int:
    """What the server has sent to all its clients (INFO's total_net_output_bytes)."""
    info = redis.call("INFO", "stats").decode()
    return int(re.search(r"^total_net_output_bytes:(\d+)", info, re.M)[1])


@pytest.mark.root
def test_a_local_cache_without_room_still_shares_through_redis(loop, redis, tmpfs, hosts):
    disk = tmpfs("16m")
    fill(disk, 1 << 20)  # far less than a cache's buffer pool: no room from the start
    a, b = hosts("a"), hosts("b", on=disk)
    a.ask(update("from-a", b"A"))
    spin(loop, lambda: redis.keys(), "A's SET")
    # B's update is refused locally (FAIL) and goes no further.
    assert b.ask(update("from-b", b"B")).status is Status.FAIL
    loop.run_once(0.05)
    assert redis.keys() == [a.level.sealer.name("smtp", "from-a")]
    # A's session is sent to B's client, though B cannot keep a copy.
    for _ in range(2):
        answer = b.ask(lookup("from-a"))
        assert isinstance(answer, service.Pending)  # no local copy: Redis each time
        reply = wait_reply(loop, answer)
        assert (reply.status, reply.data) == (Status.OK, b"A")
    stats = b.cache.stats()
    assert (stats["no_room"], stats["refused"], stats["entries"]) == (1, 3, 0)
    assert b.level.stats()["hits"] == "2"


@pytest.mark.root
@pytest.mark.slow
def test_a_disabled_local_cache_fails_with_redis_too_but_deletes_reach_it(
    loop, redis, tmpfs, hosts
):
    disk = tmpfs("16m")
    a, b = hosts("a"), hosts("b", on=disk, cache_size=256 << 10)
    a.ask(update("shared", b"A"))
    spin(loop, lambda: redis.keys(), "A's SET")
    b.cache.update("before", b"B", time.time())  # room checked: the next check is 1 MiB away
    # The disk fills behind B's cache: a Berkeley DB write error (after ~4 s) disables it.
    fill(disk, 0)
    update_until_refused(b.cache, b"", int(time.time()))
    assert b.cache.stats()["disabled"] == 1
    assert b.ask(lookup("shared")) == Reply("lookup", Status.FAIL)  # Redis not asked
    assert b.ask(update("from-b", b"B")) == Reply("update", Status.FAIL)
    loop.run_once(0.05)
    assert redis.keys() == [a.level.sealer.name("smtp", "shared")]
    stats = b.level.stats()
    assert (stats["hits"], stats["misses"], stats["skipped"]) == ("0", "0", "0")
    # A delete is FAIL here, and still reaches Redis: no host resumes that session.
    assert b.ask(delete("shared")) == Reply("delete", Status.FAIL)
    spin(loop, lambda: not redis.keys(), "the DEL")
