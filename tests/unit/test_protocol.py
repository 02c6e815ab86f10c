"""tlsmgr.protocol: requests, replies, the server and client state machines."""

from __future__ import annotations

import pytest

from tlsmgr import attr, protocol
from tlsmgr.attr import NEED_DATA, RemoteProtocolError
from tlsmgr.protocol import (
    GREETING,
    ClientConnection,
    Reply,
    Request,
    ServerConnection,
    Status,
    Trigger,
)


def req(*attrs: bytes) -> bytes:
    return b"".join(a + b"\0" for a in attrs) + b"\0"


def parse(*attrs: bytes) -> Request:
    dec = attr.AttrDecoder()
    dec.feed(req(*attrs))
    return protocol.parse_request(dec.next_list())


def test_greeting_bytes():
    assert GREETING == b"protocol\0tlsmgr_protocol\0\0"
    assert len(GREETING) == 26


def test_status_values():
    assert (Status.OK, Status.ERR, Status.FAIL) == (0, -1, -2)


# Requests ---------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ((b"request", b"seed", b"size", b"32"), Request("seed", size=32)),
        (
            (b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"id"),
            Request("lookup", cache_type="smtp", cache_id="id"),
        ),
        (
            (
                b"request",
                b"update",
                b"cache_type",
                b"smtpd",
                b"cache_id",
                b"id",
                b"session",
                b"AQJzZXNzaW9uYnl0ZXM=",
            ),
            Request("update", cache_type="smtpd", cache_id="id", session=b"\x01\x02sessionbytes"),
        ),
        (
            (b"request", b"delete", b"cache_type", b"lmtp", b"cache_id", b"id"),
            Request("delete", cache_type="lmtp", cache_id="id"),
        ),
        ((b"request", b"tktkey", b"keyname", b""), Request("tktkey", keyname=b"")),
        (
            (b"request", b"tktkey", b"keyname", b"AAAAAAAAAAAAAAAAAAAAAA=="),
            Request("tktkey", keyname=bytes(16)),
        ),
        ((b"request", b"policy", b"cache_type", b"smtp"), Request("policy", cache_type="smtp")),
        ((b"request", b"stats"), Request("stats")),
        ((b"request", b"seed", b"size", b"-1"), Request("seed", size=-1)),
        ((b"request", b"seed", b"size", b" 7"), Request("seed", size=7)),
    ],
)
def test_parse_each_request(attrs, expected):
    assert parse(*attrs) == expected


@pytest.mark.parametrize(
    "attrs, name, error",
    [
        ((), "", "missing attribute request"),
        ((b"\xff\xfe", b"garbage"), "", "unexpected attribute \\xff\\xfe (expecting: request)"),
        ((b"request", b"frobnicate"), "frobnicate", 'unknown request "frobnicate"'),
        ((b"request", b"lookup", b"cache_type", b"smtp"), "lookup", "missing attribute cache_id"),
        (
            (b"request", b"seed", b"sizex", b"32"),
            "seed",
            "unexpected attribute sizex (expecting: size)",
        ),
        (
            (b"request", b"lookup", b"cache_id", b"x", b"cache_type", b"smtp"),
            "lookup",
            "unexpected attribute cache_id (expecting: cache_type)",
        ),
        (
            (b"request", b"seed", b"size", b" 0x10"),
            "seed",
            "malformed numerical data in size:  0x10",
        ),
        ((b"request", b"seed", b"size", b""), "seed", "malformed numerical data in size: "),
        (
            (b"request", b"update", b"cache_type", b"smtp", b"cache_id", b"x", b"session", b"!!!!"),
            "update",
            "malformed base64 data in session: !!!!",
        ),
        (
            (b"request", b"tktkey", b"keyname", b"QQ="),
            "tktkey",
            "malformed base64 data in keyname: QQ=",
        ),
    ],
)
def test_malformed_requests_carry_an_error(attrs, name, error):
    got = parse(*attrs)
    assert (got.name, got.error) == (name, error)


def test_extra_attribute_is_accepted_with_a_warning():
    got = parse(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"x", b"extra", b"1")
    assert got.error is None
    assert got.cache_id == "x"
    assert got.warnings == ("unexpected attribute extra (expecting: (list terminator))",)


def test_non_utf8_cache_id_round_trips():
    got = parse(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"\xff\x00"[:1])
    assert got.cache_id.encode("utf-8", "surrogateescape") == b"\xff"
    assert protocol.encode_request(got) == req(
        b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"\xff"
    )


# Replies ------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, wire",
    [
        (
            Reply("seed", Status.OK, bytes(range(32))),
            b"status\x000\x00seed\x00AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\x00\x00",
        ),
        (Reply("seed", Status.FAIL), b"status\x004294967294\x00seed\x00\x00\x00"),
        (
            Reply("lookup", Status.OK, b"\x01\x02sessionbytes"),
            b"status\x000\x00session\x00AQJzZXNzaW9uYnl0ZXM=\x00\x00",
        ),
        (Reply("lookup", Status.ERR), b"status\x004294967295\x00session\x00\x00\x00"),
        (Reply("update", Status.OK), b"status\x000\x00\x00"),
        (Reply("delete", Status.ERR), b"status\x004294967295\x00\x00"),
        (
            Reply("tktkey", Status.ERR, bytes(16)),
            b"status\x004294967295\x00keybuf\x00AAAAAAAAAAAAAAAAAAAAAA==\x00\x00",
        ),
        (
            Reply("policy", Status.OK, cachable=1, timeout=3600),
            b"status\x000\x00cachable\x001\x00timeout\x003600\x00\x00",
        ),
        (
            Reply("policy", Status.FAIL),
            b"status\x004294967294\x00cachable\x000\x00timeout\x000\x00\x00",
        ),
        (
            Reply("stats", Status.OK, items=(("uptime", "5"),)),
            b"status\x000\x00uptime\x005\x00\x00",
        ),
        (Reply("", Status.FAIL), b"status\x004294967294\x00\x00"),
        (Reply("frobnicate", Status.FAIL), b"status\x004294967294\x00\x00"),
    ],
)
def test_encode_reply_byte_exact(reply, wire):
    assert protocol.encode_reply(reply) == wire


@pytest.mark.parametrize("status", [b"4294967295", b"-1", b" -1", b"+4294967295"])
def test_decode_reply_accepts_both_status_spellings(status):
    pairs = [(b"status", status), (b"session", b"")]
    assert protocol.decode_reply("lookup", pairs) == Reply("lookup", Status.ERR)


def test_decode_reply_skips_unexpected_and_requires_all():
    pairs = [
        (b"junk", b"1"),
        (b"status", b"0"),
        (b"cachable", b"1"),
        (b"x", b"y"),
        (b"timeout", b"120"),
    ]
    got = protocol.decode_reply("policy", pairs)
    assert (got.status, got.cachable, got.timeout) == (Status.OK, 1, 120)
    assert got.items == (("junk", "1"), ("x", "y"))
    with pytest.raises(RemoteProtocolError, match="missing attribute seed"):
        protocol.decode_reply("seed", [(b"status", b"0")])
    with pytest.raises(RemoteProtocolError, match="unknown status"):
        protocol.decode_reply("update", [(b"status", b"5")])
    with pytest.raises(RemoteProtocolError, match="malformed"):
        protocol.decode_reply("update", [(b"status", b"x")])


def test_encode_raw_sends_anything():
    assert protocol.encode_raw("seed", [("size", 0)]) == req(b"request", b"seed", b"size", b"0")
    assert protocol.encode_raw("tktkey", [("keyname", b"abc")]) == req(
        b"request", b"tktkey", b"keyname", b"YWJj"
    )
    assert protocol.encode_raw(b"frob", [(b"a", "b")]) == req(b"request", b"frob", b"a", b"b")


def test_encode_request_rejects_nul():
    with pytest.raises(ValueError):
        protocol.encode_request(Request("lookup", cache_type="smtp", cache_id="a\0b"))


# ServerConnection ----------------------------------------------------------


def events(conn: ServerConnection) -> list:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def feed_split(chunks: list[bytes], eof: bool = False) -> list:
    conn = ServerConnection()
    got = []
    for chunk in chunks:
        conn.receive_data(chunk)
        got += events(conn)
    if eof:
        conn.receive_data(b"")
        got += events(conn)
    return got


@pytest.mark.parametrize("chunks", [[b"W\0"], [b"W", b"\0"], [b"W", b"\0request\0seed\0"]])
def test_trigger(chunks):
    assert feed_split(chunks) == [Trigger()]


def test_trigger_then_end_of_input():
    assert feed_split([b"W"], eof=True) == [Trigger()]
    assert feed_split([b"W"]) == []


@pytest.mark.parametrize("chunks", [[b"WX"], [b"W", b"X\0"], [b"Wrequest\0seed\0\0"]])
def test_bad_trigger_closes_without_reply(chunks):
    with pytest.raises(RemoteProtocolError) as err:
        feed_split(chunks)
    assert err.value.reply is False


def test_short_input_is_just_incomplete():
    conn = ServerConnection()
    conn.receive_data(b"X\0")
    assert conn.next_event() is NEED_DATA
    assert conn.buffered == 2
    conn.receive_data(b"")
    assert conn.next_event() is NEED_DATA


def test_w_later_in_a_connection_is_not_a_trigger():
    conn = ServerConnection()
    conn.receive_data(req(b"request", b"stats") + b"W\0")
    assert events(conn) == [Request("stats")]
    conn.receive_data(b"v\0\0")
    assert events(conn)[0].error == "unexpected attribute W (expecting: request)"


def test_pipelined_requests_in_order():
    stream = (
        req(b"request", b"seed", b"size", b"1")
        + req(b"request", b"stats")
        + req(b"request", b"policy", b"cache_type", b"smtp")
    )
    assert feed_split([stream]) == [
        Request("seed", size=1),
        Request("stats"),
        Request("policy", cache_type="smtp"),
    ]
    assert feed_split([bytes([b]) for b in stream]) == feed_split([stream])


def test_over_limit_raises_with_reply_and_stays_broken():
    conn = ServerConnection()
    conn.receive_data(b"request\0update\0cache_type\0smtp\0cache_id\0x\0session\0")
    conn.receive_data(b"A" * (attr.MAX_VALUE + 1))
    with pytest.raises(RemoteProtocolError) as err:
        conn.next_event()
    assert err.value.reply is True
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_oversized_decoded_data_is_a_malformed_request():
    # 87384 base64 characters without padding decode to 65538 bytes.
    got = parse(
        b"request",
        b"update",
        b"cache_type",
        b"smtp",
        b"cache_id",
        b"x",
        b"session",
        b"AAAA" * (attr.MAX_VALUE // 4),
    )
    assert got.error is not None and "malformed base64" in got.error


def test_nothing_after_a_trigger():
    conn = ServerConnection()
    conn.receive_data(b"W\0")
    assert conn.next_event() == Trigger()
    conn.receive_data(req(b"request", b"stats"))
    assert conn.next_event() is NEED_DATA


# ClientConnection -----------------------------------------------------------


def test_client_reads_greeting_then_replies_in_order():
    cc = ClientConnection()
    assert cc.next_greeting() is NEED_DATA
    for byte in GREETING:
        cc.receive_data(bytes([byte]))
    assert cc.next_greeting() is True
    sent = cc.send_request(Request("policy", cache_type="smtp")) + cc.send_request(
        Request("update", cache_type="smtp", cache_id="i", session=b"s")
    )
    assert sent.startswith(b"request\0policy\0cache_type\0smtp\0\0request\0update\0")
    cc.receive_data(b"status\x000\x00cachable\x001\x00timeout\x00120\x00\x00status\x000\x00\x00")
    assert cc.next_reply() == Reply("policy", Status.OK, cachable=1, timeout=120)
    assert cc.next_reply() == Reply("update", Status.OK)
    with pytest.raises(RemoteProtocolError):
        cc.next_reply()


@pytest.mark.parametrize(
    "greeting",
    [
        b"protocol\0other\0\0",
        b"protocol\0tlsmgr_protocol\0extra\0x\0\0",
        b"\0",
        b"status\x000\x00\x00",
    ],
)
def test_client_rejects_a_bad_greeting(greeting):
    cc = ClientConnection()
    cc.receive_data(greeting)
    with pytest.raises(RemoteProtocolError, match="greeting"):
        cc.next_greeting()
