"""tlsmgr.service: every request of the table over real cache files, and the handler."""

from __future__ import annotations

import struct

import pytest

from support.caches import open_cache
from support.keychain_reference import reference_keybuf
from support.stand_ins import Conn, Log, Rand
from tlsmgr import keychain, protocol, service
from tlsmgr.protocol import Reply, Request, Status
from tlsmgr.scache import MAX_SESSION
from tlsmgr.tickets import SharedTicketKeys

T0 = 1_700_000_000


@pytest.fixture
def env(folder):
    log, rand = Log(), Rand(0xA5)
    stores = {
        name: open_cache(folder, name=name, kind="btree", max_entries=100, log=log)
        for name in ("smtpd", "smtp")
    }
    slots = [
        service.CacheSlot("smtpd", 3600, stores["smtpd"]),
        service.CacheSlot("smtp", 3600, stores["smtp"]),
        service.CacheSlot("lmtp", 120, None),
    ]
    svc = service.Service(slots, rand=rand, log=log, started=T0 - 10)
    yield svc, log, rand
    for store in stores.values():
        store.close()


# The request table (tlsmgr_service() in Postfix's tlsmgr.c) -----------------------


def test_seed(env):
    svc, log, rand = env
    assert svc.handle(Request("seed", size=1), T0) == Reply("seed", Status.OK, b"\xa5")
    assert svc.handle(Request("seed", size=255), T0).data == b"\xa5" * 255
    for size in (0, -1, 256, 2**31 - 1):
        assert svc.handle(Request("seed", size=size), T0) == Reply("seed", Status.FAIL)
    assert 'warning: bogus seed length "0" in "seed" request' in log.lines
    assert 'warning: bogus seed length "-1" in "seed" request' in log.lines
    assert rand.drawn == 256


def test_lookup_update_delete(env):
    svc, log, rand = env
    lookup = Request("lookup", cache_type="smtp", cache_id="id")
    assert svc.handle(lookup, T0) == Reply("lookup", Status.ERR)
    update = Request("update", cache_type="smtp", cache_id="id", session=b"sess")
    assert svc.handle(update, T0) == Reply("update", Status.OK)
    assert rand.mixed == [b"sess"]  # session data goes into the pool
    assert svc.handle(lookup, T0 + 1) == Reply("lookup", Status.OK, b"sess")
    # The same id in another cache is another entry.
    assert svc.handle(Request("lookup", cache_type="smtpd", cache_id="id"), T0).status == Status.ERR
    delete = Request("delete", cache_type="smtp", cache_id="id")
    assert svc.handle(delete, T0) == Reply("delete", Status.OK)
    assert svc.handle(delete, T0) == Reply("delete", Status.ERR)
    assert svc.handle(lookup, T0) == Reply("lookup", Status.ERR)
    svc.handle(update, T0)
    assert svc.handle(lookup, T0 + 3601) == Reply("lookup", Status.ERR)  # expired


@pytest.mark.parametrize("name", ["lookup", "update", "delete"])
def test_disabled_and_unknown_caches_fail(env, name):
    svc, log, _ = env
    disabled = Request(name, cache_type="lmtp", cache_id="x", session=b"s")
    assert svc.handle(disabled, T0) == Reply(name, Status.FAIL)
    assert log.lines == []  # no warning for a disabled cache
    bogus = Request(name, cache_type="bogus", cache_id="x", session=b"s")
    assert svc.handle(bogus, T0) == Reply(name, Status.FAIL)
    assert log.lines == [f'warning: bogus cache type "bogus" in "{name}" request']


def test_policy(env):
    svc, log, _ = env
    assert svc.handle(Request("policy", cache_type="smtp"), T0) == Reply(
        "policy", Status.OK, cachable=1, timeout=3600
    )
    assert svc.handle(Request("policy", cache_type="lmtp"), T0) == Reply(
        "policy", Status.OK, cachable=0, timeout=120
    )
    assert svc.handle(Request("policy", cache_type="bogus"), T0) == Reply("policy", Status.FAIL)
    assert log.lines == ['warning: bogus cache type "bogus" in "policy" request']


def test_tktkey(env):
    svc, log, _ = env
    current = svc.handle(Request("tktkey"), T0)
    assert current.status == Status.OK and len(current.data) == 88
    assert struct.unpack("<q", current.data[80:])[0] == T0 + 1799
    assert svc.handle(Request("tktkey"), T0 + 5) == current
    named = svc.handle(Request("tktkey", keyname=current.data[:16]), T0 + 5)
    assert named == current
    unknown = svc.handle(Request("tktkey", keyname=b"\x01" * 16), T0)
    assert unknown == Reply("tktkey", Status.ERR, b"\x01" * 16)  # Postfix's echo
    late = svc.handle(Request("tktkey", keyname=current.data[:16]), T0 + 1799 + 1800)
    assert late == Reply("tktkey", Status.ERR, current.data[:16])
    for bad in (b"abc", b"\x00" * 17):
        assert svc.handle(Request("tktkey", keyname=bad), T0) == Reply("tktkey", Status.FAIL)
    assert log.lines == [
        "warning: invalid session ticket key name length: 3",
        "warning: invalid session ticket key name length: 17",
    ]


def test_tktkey_disabled_by_smtpd_timeout():
    slots = [service.CacheSlot("smtpd", 0), service.CacheSlot("smtp", 3600)]
    svc = service.Service(slots, rand=Rand(0xA5))
    assert svc.handle(Request("tktkey"), T0) == Reply("tktkey", Status.ERR)
    name = b"\x02" * 16
    assert svc.handle(Request("tktkey", keyname=name), T0) == Reply("tktkey", Status.ERR)


def test_tktkey_with_shared_keys():
    secret = b"a secret shared by several hosts"
    now = 1000 * 1800 + 5
    tickets = SharedTicketKeys(keychain.Chain(1800, now, 0, keychain.genesis(secret)))
    svc = service.Service([service.CacheSlot("smtpd", 3600)], rand=Rand(0xA5), tickets=tickets)
    current = svc.handle(Request("tktkey"), now)
    assert current == Reply("tktkey", Status.OK, reference_keybuf(secret, 1000, 1800))
    named = svc.handle(Request("tktkey", keyname=current.data[:16]), now + 1800)
    assert named == current  # the previous epoch's key still decrypts
    gone = svc.handle(Request("tktkey", keyname=current.data[:16]), now + 3600)
    assert gone == Reply("tktkey", Status.ERR, current.data[:16])


def test_malformed_request_gets_fail_of_its_shape(env):
    svc, _, _ = env
    bad = Request("lookup", error="missing attribute cache_id")
    assert (
        protocol.encode_reply(svc.handle(bad, T0)) == b"status\x004294967294\x00session\x00\x00\x00"
    )
    unknown = Request("frobnicate", error="unknown request")
    assert protocol.encode_reply(svc.handle(unknown, T0)) == b"status\x004294967294\x00\x00"


def test_updates_the_store_refuses_get_fail(env):
    svc, log, rand = env
    big = Request("update", cache_type="smtp", cache_id="id", session=b"s" * (MAX_SESSION + 1))
    assert svc.handle(big, T0) == Reply("update", Status.FAIL)
    assert log.lines == [
        f"warning: smtp TLS cache: session of {MAX_SESSION + 1} bytes (limit {MAX_SESSION})"
        " not stored"
    ]
    lookup = Request("lookup", cache_type="smtp", cache_id="id")
    assert svc.handle(lookup, T0) == Reply("lookup", Status.ERR)
    stats = dict(svc.handle(Request("stats"), T0).items)
    assert (stats["smtp.oversized"], stats["smtp.entries"]) == ("1", "0")


def test_stats(env):
    svc, _, _ = env
    svc.handle(Request("update", cache_type="smtp", cache_id="a", session=b"s"), T0)
    svc.handle(Request("lookup", cache_type="smtp", cache_id="a"), T0)
    svc.handle(Request("lookup", cache_type="smtp", cache_id="b"), T0)
    svc.handle(Request("lookup", error="x"), T0)
    reply = svc.handle(Request("stats"), T0 + 5)
    items = dict(reply.items)
    assert reply.status == Status.OK
    assert items["uptime"] == "15"
    assert (items["requests.lookup"], items["requests.update"], items["requests.malformed"]) == (
        "2",
        "1",
        "1",
    )
    assert (items["smtp.entries"], items["smtp.hits"], items["smtp.misses"]) == ("1", "1", "1")
    assert (items["lmtp.enabled"], items["lmtp.timeout"]) == ("0", "120")
    assert "lmtp.entries" not in items
    assert items["prng.draws"] == "1"
    wire = protocol.encode_reply(reply)
    assert wire.startswith(b"status\x000\x00uptime\x0015\x00requests.seed\x000\x00")


# Configuration helpers ----------------------------------------------------------


def test_sanitise_timeout():
    assert [service.sanitise_timeout(t) for t in (-5, 0, 1, 119, 120, 3600)] == [
        0,
        0,
        120,
        120,
        120,
        3600,
    ]


@pytest.mark.parametrize(
    "level, on",
    [
        ("0", False),
        ("1", False),
        ("2", True),
        ("4", True),
        ("cache", True),
        ("1, cache", True),
        ("", False),
    ],
)
def test_cache_logging(level, on):
    assert service.cache_logging(level) is on


def test_plan_caches():
    specs = service.plan_caches(
        [
            ("smtpd", "", 3600, "0"),
            ("smtp", "btree:/x/smtp_scache", 60, "2"),
            ("lmtp", "btree:/x/lmtp_scache", 0, "0"),
        ]
    )
    assert [(s.cache_type, s.timeout, s.enabled, s.verbose) for s in specs] == [
        ("smtpd", 3600, False, False),
        ("smtp", 120, True, True),
        ("lmtp", 0, False, False),
    ]
    with pytest.raises(
        ValueError, match=r"invalid smtp_tls_session_cache_timeout: 8640001 \(max 8640000\)"
    ):
        service.plan_caches([("smtp", "", 8640001, "0")])
    with pytest.raises(
        ValueError, match="do not use the same TLS cache file hash:/a for smtpd and smtp"
    ):
        service.plan_caches([("smtpd", "hash:/a", 10, ""), ("smtp", "hash:/a", 10, "")])
    # A disabled cache may share the name (Postfix checks enabled ones only).
    service.plan_caches([("smtpd", "hash:/a", 10, ""), ("smtp", "hash:/a", 0, "")])


# The per-connection handler ---------------------------------------------------------


def test_handler_answers_pipelined_requests_in_order(env):
    svc, _, _ = env
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    assert handler.connection_made() == protocol.GREETING
    stream = (
        b"request\0update\0cache_type\0smtp\0cache_id\0i\0session\0QQ==\0\0"
        b"request\0lookup\0cache_type\0smtp\0cache_id\0i\0\0"
        b"request\0delete\0cache_type\0smtp\0cache_id\0i\0\0"
    )
    out = b"".join(handler.data_received(bytes([b])) for b in stream)
    assert out == (b"status\x000\x00\x00status\x000\x00session\x00QQ==\x00\x00status\x000\x00\x00")
    assert conn.closed == 0


def test_handler_trigger_closes_without_reply(env):
    svc, _, _ = env
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    assert handler.data_received(b"W") == b""
    assert conn.closed == 0
    assert handler.data_received(b"\0request\0stats\0\0") == b""
    assert conn.closed == 1
    assert handler.data_received(b"request\0stats\0\0") == b""  # nothing after close


def test_handler_protocol_errors(env):
    svc, log, _ = env
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    assert handler.data_received(b"WX") == b""
    assert conn.closed == 1
    assert log.lines[-1] == "warning: bad master trigger: WX... from private/tlsmgr(pid 7)"
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    out = handler.data_received(b"request\0stats\0\0" + b"n" * 65)
    # The complete request is answered, then FAIL for the over-limit one.
    assert out.startswith(b"status\x000\x00uptime\x00")
    assert out.endswith(b"\x00\x00status\x004294967294\x00\x00")
    assert out.count(b"status\x00") == 2
    assert conn.closed == 1
    assert log.lines[-1].startswith(
        "warning: attribute name longer than 64 bytes from private/tlsmgr"
    )


def test_handler_logs_malformed_requests_with_the_peer(env):
    svc, log, _ = env
    handler = svc.handler_factory(lambda: T0)(Conn())
    out = handler.data_received(b"request\0seed\0sizex\x0032\0\0")
    assert out == b"status\x004294967294\x00seed\x00\x00\x00"
    assert log.lines == [
        'warning: malformed "seed" request from private/tlsmgr(pid 7):'
        " unexpected attribute sizex (expecting: size)"
    ]
    out = handler.data_received(b"request\0policy\0cache_type\0smtp\0x\0y\0\0")
    assert out == b"status\x000\x00cachable\x001\x00timeout\x003600\x00\x00"
    assert log.lines[-1] == (
        "warning: unexpected attribute x (expecting: (list terminator)) from private/tlsmgr(pid 7)"
    )


# Flow control: the skeleton's handler contract ------------------------------------


def _lookup(cache_id: bytes) -> bytes:
    return b"request\0lookup\0cache_type\0smtp\0cache_id\0" + cache_id + b"\0\0"


def _drain(handler, conn, first: bytes) -> tuple[bytes, int]:
    """What the skeleton does: resume() while the handler holds input back.
    Returns all output and the number of calls it took."""
    out, calls = first, 1
    while conn.held:
        conn.held -= 1
        out += handler.resume()
        calls += 1
    return out, calls


def test_handler_stops_at_the_room_and_holds_the_rest_undecoded(env):
    svc, _, _ = env
    session = bytes(range(256)) * 8  # 2 KiB: 2.7 KiB of reply
    svc.handle(Request("update", cache_type="smtp", cache_id="big", session=session), T0)
    reply = protocol.encode_reply(Reply("lookup", Status.OK, session))
    conn = Conn(room=len(reply) * 2 + 10)
    handler = svc.handler_factory(lambda: T0)(conn)
    pipelined = _lookup(b"big") * 200  # 8 KiB
    first = handler.data_received(pipelined)
    # The first two replies fit; the third passes the mark; the rest waits.
    assert first == reply * 3
    assert conn.held == 1
    assert not handler.between_requests
    # Undecoded: the decoder has been given one slice of the input, no more.
    assert handler.proto.buffered < service.FEED_SIZE < len(pipelined)
    out, calls = _drain(handler, conn, first)
    assert out == reply * 200 and calls == -(-200 // 3)
    assert handler.between_requests


def test_handler_answers_at_most_a_budget_of_requests_per_call(env):
    svc, _, _ = env
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    seed = b"request\0seed\0size\x001\0\0"
    reply = b"status\x000\x00seed\x00pQ==\x00\x00"
    first = handler.data_received(seed * 100)
    assert first == reply * service.REQUEST_BUDGET
    out, calls = _drain(handler, conn, first)
    assert out == reply * 100
    assert calls == -(-100 // service.REQUEST_BUDGET)


def test_handler_one_request_per_read_never_holds(env):
    svc, _, _ = env
    conn = Conn(room=0)  # even with no room left: one request is always answered
    handler = svc.handler_factory(lambda: T0)(conn)
    for _ in range(3):
        assert handler.data_received(_lookup(b"none")).startswith(b"status\x004294967295\x00")
    assert conn.held == 0 and handler.between_requests


def test_handler_between_requests(env):
    svc, _, _ = env
    handler = svc.handler_factory(lambda: T0)(Conn())
    assert handler.between_requests
    request = _lookup(b"x")
    assert handler.data_received(request[:10]) == b""
    assert not handler.between_requests
    assert handler.data_received(request[10:]).startswith(b"status\x00")
    assert handler.between_requests


def test_handler_closes_after_three_malformed_requests(env):
    svc, log, _ = env
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    # 5,000 empty attribute lists: each one a malformed request.
    out = handler.data_received(b"\0" * 5000)
    assert out == b"status\x004294967294\x00\x00" * service.MAX_MALFORMED
    assert conn.closed == 1 and conn.held == 0
    assert handler.data_received(b"\0") == b""
    assert log.lines == [
        "warning: malformed request from private/tlsmgr(pid 7): missing attribute request"
    ] * service.MAX_MALFORMED + [
        "warning: closing the connection from private/tlsmgr(pid 7) after 3 malformed requests"
    ]


def test_handler_malformed_requests_one_per_read_count_too(env):
    svc, _, _ = env
    conn = Conn()
    handler = svc.handler_factory(lambda: T0)(conn)
    bad = b"request\0seed\0sizex\x0032\0\0"
    for _ in range(service.MAX_MALFORMED - 1):
        handler.data_received(bad)
        assert handler.data_received(b"request\0seed\0size\x001\0\0").startswith(b"status\x000")
    assert conn.closed == 0
    assert handler.data_received(bad) == b"status\x004294967294\x00seed\x00\x00\x00"
    assert conn.closed == 1


def test_client_warnings_are_rate_limited_per_process(env):
    svc, log, _ = env
    now = [T0]
    factory = svc.handler_factory(lambda: now[0])
    for _ in range(50):  # 50 connections, 2 malformed requests each (not closed)
        handler = factory(Conn())
        handler.data_received(b"\0\0")
    assert len(log.lines) == service.WARN_BURST
    stats = dict(svc.handle(Request("stats"), now[0]).items)
    assert stats["warnings.suppressed"] == str(100 - service.WARN_BURST)
    assert stats["requests.malformed"] == "100"
    # The next interval: one line sums up what was suppressed, then warnings again.
    now[0] += service.WARN_INTERVAL
    factory(Conn()).data_received(b"request\0seed\0size\x000\0\0")
    assert log.lines[service.WARN_BURST :] == [
        f"warning: {100 - service.WARN_BURST} more warnings about client requests suppressed"
        f" (at most {service.WARN_BURST} per 60s)",
        'warning: bogus seed length "0" in "seed" request',
    ]


def test_warning_limit_flush_writes_the_summary_once_the_interval_is_over():
    log = Log()
    limit = service.WarningLimit(log, burst=2, interval=10)
    for n in range(5):
        limit.warn(f"w{n}", 100 + n)
    assert log.lines == ["warning: w0", "warning: w1"]
    limit.flush(109)  # not over yet
    assert len(log.lines) == 2
    limit.flush(110)
    assert log.lines[2:] == [
        "warning: 3 more warnings about client requests suppressed (at most 2 per 10s)"
    ]
    limit.flush(130)  # nothing suppressed since: no line
    assert len(log.lines) == 3 and limit.suppressed == 3
    limit.warn("after a clock step back", 50)
    assert log.lines[-1] == "warning: after a clock step back"
