"""The tlsmgr protocol: names, Request and Reply, server and client state machines.

SYNOPSIS
    from tlsmgr import protocol
    from tlsmgr.protocol import Status, Request, Reply, Trigger
    from tlsmgr.attr import NEED_DATA, RemoteProtocolError

    # server side, one object per connection
    conn = protocol.ServerConnection()
    sock.send(protocol.GREETING)          # b"protocol\\0tlsmgr_protocol\\0\\0"
    conn.receive_data(data)               # b"" means end of input
    event = conn.next_event()             # Request | Trigger | NEED_DATA
    conn.whole_requests(data, limit=0)    # fast path: [Request, ...] or None
    sock.send(protocol.encode_reply(reply))

    # client side
    cc = protocol.ClientConnection()
    cc.receive_data(data); cc.next_greeting()   # True | NEED_DATA
    sock.send(cc.send_request(Request("lookup", cache_type="smtp", cache_id="x")))
    reply = cc.next_reply()               # Reply | NEED_DATA

    protocol.parse_request(pairs) -> Request
    protocol.encode_request(request) -> bytes
    protocol.encode_raw(name, [(attr, int | str | bytes), ...]) -> bytes
    protocol.decode_reply(request_name, pairs) -> Reply
    protocol.printable(peer_bytes) -> str     # for log lines
    protocol.CACHE_TYPES, protocol.REQUESTS

DESCRIPTION
    No sockets, no clock, no third-party imports.  Built on attr.py.

    Requests (tlsmgr_service() in Postfix's tlsmgr.c).  Every request is one attribute list that
    starts with request=NAME, followed by that request's attributes in
    this order:
        seed     size (int)                     -> status, seed (data)
        lookup   cache_type, cache_id           -> status, session (data)
        update   cache_type, cache_id, session  -> status
        delete   cache_type, cache_id           -> status
        tktkey   keyname (data: empty or 16)    -> status, keybuf (data)
        policy   cache_type                     -> status, cachable, timeout
        stats    (nothing)                      -> status, then NAME=VALUE
                                                   pairs (minipostfix only)
    Status codes are Status.OK (0), Status.ERR (-1) and Status.FAIL (-2),
    sent as unsigned numbers (4294967295, 4294967294); readers accept
    both spellings.  Reply data attributes are always present, empty
    when there is no data; update and delete replies carry status only.

    Strictness (Postfix's ATTR_FLAG_STRICT).  Attributes must come in
    the order above.  parse_request() never raises: a complete list that
    is malformed (no request attribute first, unknown request name,
    missing or out-of-order attribute, bad number, bad base64) gives a
    Request whose `error` says what is wrong; the server answers it with
    FAIL and keeps the connection, since framing is intact.  Extra
    attributes after the expected ones are ignored with a warning in
    `warnings`, as Postfix 3.7 does.

    ServerConnection.  The first byte of a connection decides, however
    the bytes are split (a request always begins with "request"): "W"
    is a master wake-up trigger.  "W\\0", or "W" then end of
    input, gives Trigger (close without a reply); "W" and any other byte
    raises RemoteProtocolError(reply=False) (close, no reply).  Anything
    else is the first attribute list.  Lists are parsed however the bytes
    are split, and pipelined lists come out in order.  Over-limit input
    (attr.py) raises RemoteProtocolError(reply=True): send a FAIL reply
    (status only), then close.  After a Trigger or an error the
    connection accepts nothing more.

    Where we differ from 3.7.11 (docs/protocol.md): every complete request
    is answered, an unknown request name included (3.7.11 sends nothing);
    error replies carry no stale data; pipelined requests are answered in
    order (3.7.11 drops what follows the first request of a read);
    triggers are recognised by content, not by peeking at a byte count.

    ClientConnection.  Reads the greeting strictly (exactly
    protocol=tlsmgr_protocol), then one reply per request sent, in order.
    Replies are decoded as Postfix's clients do (ATTR_FLAG_MISSING):
    unexpected attributes are skipped, a missing one is an error.

    Fast path.  ServerConnection.whole_requests(data, limit) takes a read
    that holds exactly whole requests, at most `limit` of them, while
    nothing is pending (how real clients send them): one split, the
    frequent well-formed requests recognised directly by parse_request();
    otherwise it returns None and the incremental path above runs.  Both
    give the same Requests (tests/unit/test_protocol_fuzz.py).  tlsmgr's
    handler asks for one: pipelined input goes to the incremental path,
    which it feeds a slice at a time.

DIAGNOSTICS
    RemoteProtocolError (from attr.py) for broken framing, over-limit
    input, a bad greeting or a reply that lacks an attribute.  The
    encoders raise ValueError for caller bugs (NUL in a string value).

SEE ALSO
    src/tlsmgr/tlsmgr.c, src/tls/tls_mgr.c, tls_mgr.h (Postfix),
    tlsmgr/attr.py, docs/protocol.md
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

import tlsmgr.attr as attr
from tlsmgr.attr import NEED_DATA, Pairs, RemoteProtocolError

__all__ = [
    "CACHE_TYPES",
    "ClientConnection",
    "GREETING",
    "REQUESTS",
    "Reply",
    "Request",
    "ServerConnection",
    "Status",
    "Trigger",
    "decode_reply",
    "encode_raw",
    "encode_reply",
    "encode_request",
    "parse_request",
    "printable",
]


class Status(enum.IntEnum):
    """TLS_MGR_STAT_*: the status attribute of every reply."""

    OK = 0
    ERR = -1
    FAIL = -2


# Request names (TLS_MGR_REQ_*), plus minipostfix's stats.
REQ_SEED = "seed"
REQ_LOOKUP = "lookup"
REQ_UPDATE = "update"
REQ_DELETE = "delete"
REQ_TKTKEY = "tktkey"
REQ_POLICY = "policy"
REQ_STATS = "stats"

# Attribute names (TLS_MGR_ATTR_*).
ATTR_REQ = "request"
ATTR_STATUS = "status"
ATTR_SIZE = "size"
ATTR_SEED = "seed"
ATTR_CACHE_TYPE = "cache_type"
ATTR_CACHE_ID = "cache_id"
ATTR_SESSION = "session"
ATTR_KEYNAME = "keyname"
ATTR_KEYBUF = "keybuf"
ATTR_CACHABLE = "cachable"
ATTR_SESSTOUT = "timeout"
ATTR_PROTOCOL = "protocol"

PROTOCOL_NAME = "tlsmgr_protocol"
GREETING = attr.encode_list([(ATTR_PROTOCOL.encode(), PROTOCOL_NAME.encode())])

CACHE_TYPES = ("smtpd", "smtp", "lmtp")
MAX_SEED = 255  # a seed request asks for 1..255 bytes (tlsmgr_service())

# The tktkey keybuf is Postfix's TLS_TICKET_KEY struct, raw: the key name, the
# AES-256 and HMAC-SHA256 keys, then tout (end of encryption) as a little-endian
# time_t (amd64).  A tktkey request's keyname is empty or TICKET_NAME_LEN bytes.
TICKET_NAME_LEN = 16
TICKET_AES_LEN = 32
TICKET_HMAC_LEN = 32
TICKET_MATERIAL_LEN = TICKET_NAME_LEN + TICKET_AES_LEN + TICKET_HMAC_LEN  # 80
TICKET_TOUT_FORMAT = "<q"
KEYBUF_SIZE = TICKET_MATERIAL_LEN + struct.calcsize(TICKET_TOUT_FORMAT)  # 88

INT, STR, DATA = "int", "str", "data"

# What follows request=NAME, in order (tlsmgr_service() in tlsmgr.c).
REQUEST_ATTRS: dict[str, tuple[tuple[str, str], ...]] = {
    REQ_SEED: ((ATTR_SIZE, INT),),
    REQ_LOOKUP: ((ATTR_CACHE_TYPE, STR), (ATTR_CACHE_ID, STR)),
    REQ_UPDATE: ((ATTR_CACHE_TYPE, STR), (ATTR_CACHE_ID, STR), (ATTR_SESSION, DATA)),
    REQ_DELETE: ((ATTR_CACHE_TYPE, STR), (ATTR_CACHE_ID, STR)),
    REQ_TKTKEY: ((ATTR_KEYNAME, DATA),),
    REQ_POLICY: ((ATTR_CACHE_TYPE, STR),),
    REQ_STATS: (),
}
REQUESTS = tuple(REQUEST_ATTRS)

# What follows status in each reply.  The key "" is the reply to a list
# whose request name is missing or unknown: status only.
REPLY_ATTRS: dict[str, tuple[tuple[str, str], ...]] = {
    REQ_SEED: ((ATTR_SEED, DATA),),
    REQ_LOOKUP: ((ATTR_SESSION, DATA),),
    REQ_UPDATE: (),
    REQ_DELETE: (),
    REQ_TKTKEY: ((ATTR_KEYBUF, DATA),),
    REQ_POLICY: ((ATTR_CACHABLE, INT), (ATTR_SESSTOUT, INT)),
    REQ_STATS: (),
    "": (),
}


class Request(NamedTuple):
    """One request.  `error` is set when it was complete but malformed."""

    name: str
    size: int = 0
    cache_type: str = ""
    cache_id: str = ""
    session: bytes = b""
    keyname: bytes = b""
    error: str | None = None
    warnings: tuple[str, ...] = ()


class Trigger(NamedTuple):
    """A master wake-up trigger ("W"): close the connection, no reply."""

    request: bytes = b"W"


class Reply(NamedTuple):
    """One reply.  `request` names its shape (REPLY_ATTRS); `data` is the
    seed, session or keybuf; `items` are the stats reply's pairs."""

    request: str
    status: Status
    data: bytes = b""
    cachable: int = 0
    timeout: int = 0
    items: tuple[tuple[str, str], ...] = ()

    @property
    def shape(self) -> str:
        return self.request if self.request in REPLY_ATTRS else ""


def _text(value: bytes) -> str:
    """A string attribute as str; surrogateescape keeps every byte."""
    return value.decode("utf-8", "surrogateescape")


def printable(value: bytes, limit: int = 100) -> str:
    """A peer's bytes, printable, for a log line."""
    text = value[:limit].decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _convert(kind: str, raw: bytes) -> int | str | bytes | None:
    if kind == INT:
        number = attr.parse_uint(raw)
        return None if number is None else attr.to_int32(number)
    if kind == DATA:
        data = attr.parse_data(raw)
        # Sanity check: MAX_VALUE base64 characters can hold 2 bytes more.
        return None if data is None or len(data) > attr.MAX_DATA else data
    return _text(raw)


_REQ = ATTR_REQ.encode()
# REQUEST_ATTRS with the names as bytes, keyed by the request name as bytes.
_SCHEMAS = {
    name.encode(): (name, tuple((a, a.encode(), kind) for a, kind in schema))
    for name, schema in REQUEST_ATTRS.items()
}


_CACHE_TYPE, _CACHE_ID, _SIZE, _SESSION = (
    ATTR_CACHE_TYPE.encode(),
    ATTR_CACHE_ID.encode(),
    ATTR_SIZE.encode(),
    ATTR_SESSION.encode(),
)
_ID_REQUESTS = {REQ_LOOKUP.encode(): REQ_LOOKUP, REQ_DELETE.encode(): REQ_DELETE}
_SEED_REQ, _UPDATE_REQ = REQ_SEED.encode(), REQ_UPDATE.encode()


def parse_request(pairs: Pairs) -> Request:
    """Turn one complete attribute list into a Request; never raises.

    The well-formed lookup, delete, seed and update requests, which are
    nearly all the traffic, are recognised directly; everything else
    (and anything unusual about those) goes through the general parser,
    which gives the same result for them."""
    count = len(pairs)
    if count == 3:
        (n0, v0), (n1, v1), (n2, v2) = pairs
        name = _ID_REQUESTS.get(v0)
        if name and n0 == _REQ and n1 == _CACHE_TYPE and n2 == _CACHE_ID:
            return Request(name, cache_type=_text(v1), cache_id=_text(v2))
    elif count == 2:
        (n0, v0), (n1, v1) = pairs
        # Sanity check: up to 9 plain digits is a number %u reads the same way.
        if v0 == _SEED_REQ and n0 == _REQ and n1 == _SIZE and len(v1) < 10 and v1.isdigit():
            return Request(REQ_SEED, size=int(v1))
    elif count == 4:
        (n0, v0), (n1, v1), (n2, v2), (n3, v3) = pairs
        if v0 == _UPDATE_REQ and n0 == _REQ and n1 == _CACHE_TYPE and n2 == _CACHE_ID:
            session = attr.parse_data(v3) if n3 == _SESSION else None
            if session is not None and len(session) <= attr.MAX_DATA:
                return Request(
                    REQ_UPDATE, cache_type=_text(v1), cache_id=_text(v2), session=session
                )
    return _parse_general(pairs)


def _parse_general(pairs: Pairs) -> Request:
    """Turn one complete attribute list into a Request; never raises."""
    if not pairs:
        return Request("", error=f"missing attribute {ATTR_REQ}")
    first, value = pairs[0]
    if first != _REQ:
        return Request("", error=f"unexpected attribute {printable(first)} (expecting: {ATTR_REQ})")
    entry = _SCHEMAS.get(value)
    if entry is None:
        return Request(_text(value), error=f'unknown request "{printable(value)}"')
    name, schema = entry
    # Request's keyword arguments, each converted by its schema kind.
    fields: dict[str, Any] = {}
    last = len(pairs) - 1
    for i, (want, want_bytes, kind) in enumerate(schema, 1):
        if i > last:
            return Request(name, error=f"missing attribute {want}")
        got, raw = pairs[i]
        if got != want_bytes:
            return Request(name, error=f"unexpected attribute {printable(got)} (expecting: {want})")
        if kind is STR:
            fields[want] = raw.decode("utf-8", "surrogateescape")
            continue
        converted = _convert(kind, raw)
        if converted is None:
            what = "numerical" if kind == INT else "base64"
            return Request(name, error=f"malformed {what} data in {want}: {printable(raw)}")
        fields[want] = converted
    if last > len(schema):
        extra = printable(pairs[len(schema) + 1][0])
        fields["warnings"] = (f"unexpected attribute {extra} (expecting: (list terminator))",)
    return Request(name, **fields)


def _encode_value(kind: str, value: int | str | bytes) -> bytes:
    if kind == INT:
        return attr.format_int(int(value))
    if kind == DATA and not isinstance(value, str):
        return attr.format_data(bytes(value))
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


_STATUS = {status: b"status\0" + attr.format_int(int(status)) + b"\0" for status in Status}
_REPLY_FIELD = {ATTR_CACHABLE: "cachable", ATTR_SESSTOUT: "timeout"}
# REPLY_ATTRS as (name + NUL, kind, Reply field).
_REPLY_SHAPES = {
    shape: tuple((a.encode() + b"\0", kind, _REPLY_FIELD.get(a, "data")) for a, kind in attrs)
    for shape, attrs in REPLY_ATTRS.items()
}


# Shapes whose reply is status plus one data attribute: that attribute's name + NUL.
_ONE_DATA = {
    shape: attrs[0][0].encode() + b"\0"
    for shape, attrs in REPLY_ATTRS.items()
    if len(attrs) == 1 and attrs[0][1] == DATA
}
_STATUS_ONLY = {shape for shape, attrs in REPLY_ATTRS.items() if not attrs}


def encode_reply(reply: Reply) -> bytes:
    """The reply's bytes, byte-exact as Postfix 3.7 sends them."""
    if not reply.items:
        prefix = _ONE_DATA.get(reply.request)
        if prefix is not None:
            data = binascii.b2a_base64(reply.data, newline=False)
            return b"".join((_STATUS[reply.status], prefix, data, b"\0\0"))
        if reply.request in _STATUS_ONLY:
            return _STATUS[reply.status] + b"\0"
    out = [_STATUS[reply.status]]
    for name, kind, field in _REPLY_SHAPES[reply.shape]:
        value = getattr(reply, field)
        out += (name, attr.format_data(value) if kind is DATA else attr.format_int(value), b"\0")
    if reply.items:
        out.append(attr.encode_list((n.encode(), v.encode()) for n, v in reply.items)[:-1])
    out.append(b"\0")
    return b"".join(out)


def encode_request(request: Request) -> bytes:
    """A well-formed request's bytes (client side).  ValueError on NUL in a string."""
    schema = REQUEST_ATTRS[request.name]
    pairs = [(ATTR_REQ.encode(), request.name.encode())]
    for name, kind in schema:
        pairs.append((name.encode(), _encode_value(kind, getattr(request, name))))
    return attr.encode_list(pairs)


def encode_raw(name: str | bytes, attrs: Iterable[tuple[str | bytes, int | str | bytes]]) -> bytes:
    """Any request, unchecked: ints as %u, str raw, bytes as base64."""
    pairs = [(ATTR_REQ.encode(), _encode_value(STR, name))]
    for key, value in attrs:
        kind = INT if isinstance(value, int) else DATA if isinstance(value, bytes) else STR
        pairs.append((_encode_value(STR, key), _encode_value(kind, value)))
    return attr.encode_list(pairs)


def _status(raw: bytes) -> Status:
    number = attr.parse_uint(raw)
    if number is None:
        raise RemoteProtocolError(f"malformed numerical data in status: {printable(raw)}")
    try:
        return Status(attr.to_int32(number))
    except ValueError:
        raise RemoteProtocolError(f"unknown status {attr.to_int32(number)}") from None


def decode_reply(request_name: str, pairs: Pairs) -> Reply:
    """A reply to `request_name`, read as Postfix's clients read it.

    Unexpected attributes are skipped (they end up in `items`); a missing
    one raises RemoteProtocolError, as does a bad status or number."""
    wanted = ((ATTR_STATUS, INT), *REPLY_ATTRS.get(request_name, ()))
    values: dict[str, bytes] = {}
    extra: list[tuple[str, str]] = []
    i = 0
    for name, _kind in wanted:
        while i < len(pairs) and pairs[i][0] != name.encode():
            extra.append((_text(pairs[i][0]), _text(pairs[i][1])))
            i += 1
        if i >= len(pairs):
            raise RemoteProtocolError(f"missing attribute {name} in reply")
        values[name] = pairs[i][1]
        i += 1
    extra += [(_text(n), _text(v)) for n, v in pairs[i:]]
    # Reply's keyword arguments, each converted by its kind.
    fields: dict[str, Any] = {}
    for name, kind in wanted[1:]:
        converted = _convert(kind, values[name])
        if converted is None:
            raise RemoteProtocolError(f"malformed data in reply attribute {name}")
        fields["data" if kind == DATA else _REPLY_FIELD[name]] = converted
    shape = request_name if request_name in REPLY_ATTRS else ""
    return Reply(shape, _status(values[ATTR_STATUS]), items=tuple(extra), **fields)


class ServerConnection:
    """Server side of one connection; see the module docstring."""

    _START, _LISTS, _DONE = "start", "lists", "done"

    def __init__(
        self,
        *,
        max_name: int = attr.MAX_NAME,
        max_value: int = attr.MAX_VALUE,
        max_list: int = attr.MAX_LIST,
    ) -> None:
        self._decoder = attr.AttrDecoder(max_name=max_name, max_value=max_value, max_list=max_list)
        self._head = b""  # held back until we know whether this is a trigger
        self._state = self._START
        self._error: RemoteProtocolError | None = None
        self.eof = False

    @property
    def buffered(self) -> int:
        """Bytes received that are not part of an event yet (a partial request)."""
        return len(self._head) + self._decoder.buffered

    def whole_requests(self, data: bytes, limit: int = 0) -> list[Request] | None:
        """The fast path: the Requests in `data` when it holds exactly whole
        requests (at most `limit`, unless 0) and nothing is pending, else
        None (state untouched; use receive_data() and next_event()).  The
        same Requests either way."""
        if self._state != self._LISTS:
            return None
        lists = self._decoder.whole_lists(data, limit)
        if lists is None:
            return None
        return [parse_request(pairs) for pairs in lists]

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; b"" means the peer closed its side."""
        if not data:
            self.eof = True
        elif self._state == self._START:
            self._head += data
        elif self._state == self._LISTS:
            self._decoder.feed(data)

    def next_event(self) -> Request | Trigger | attr._NeedData:
        """The next Request or Trigger, or NEED_DATA; RemoteProtocolError."""
        if self._error is not None:
            raise self._error
        if self._state == self._START:
            event = self._start()
            if event is not None:
                return event
        if self._state == self._DONE:
            return NEED_DATA
        try:
            pairs = self._decoder.next_list()
        except RemoteProtocolError as err:
            self._error = err
            raise
        if pairs is NEED_DATA:
            return NEED_DATA
        return parse_request(pairs)

    def _start(self) -> Trigger | attr._NeedData | None:
        head = self._head
        if not head:
            return NEED_DATA
        if head[:1] != b"W":
            self._state = self._LISTS
            self._decoder.feed(head)
            self._head = b""
            return None
        if len(head) == 1 and not self.eof:
            return NEED_DATA
        if len(head) == 1 or head[1] == 0:
            self._state = self._DONE
            return Trigger()
        self._error = RemoteProtocolError(
            f"bad master trigger: {printable(head[:2])}...", reply=False
        )
        raise self._error


class ClientConnection:
    """Client side of one connection; see the module docstring."""

    def __init__(self) -> None:
        self._decoder = attr.AttrDecoder()
        self._pending: list[str] = []
        self.greeted = False
        self.eof = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.eof = True
        else:
            self._decoder.feed(data)

    def next_greeting(self) -> bool | attr._NeedData:
        """True once the greeting was read; NEED_DATA; RemoteProtocolError."""
        if self.greeted:
            return True
        pairs = self._decoder.next_list()
        if pairs is NEED_DATA:
            return NEED_DATA
        if pairs != [(ATTR_PROTOCOL.encode(), PROTOCOL_NAME.encode())]:
            shown = ", ".join(f"{printable(n)}={printable(v)}" for n, v in pairs)
            raise RemoteProtocolError(f"unexpected server greeting: {shown or '(empty)'}")
        self.greeted = True
        return True

    def send_request(self, request: Request) -> bytes:
        """Bytes to send for `request`; its reply is expected next."""
        data = encode_request(request)
        self._pending.append(request.name)
        return data

    def send_raw(self, name: str, data: bytes) -> bytes:
        """Record that raw bytes for request `name` were sent; return them."""
        self._pending.append(name)
        return data

    def next_reply(self) -> Reply | attr._NeedData:
        """The reply to the oldest request sent, or NEED_DATA; RemoteProtocolError."""
        if not self._pending:
            raise RemoteProtocolError("reply without a request")
        pairs = self._decoder.next_list()
        if pairs is NEED_DATA:
            return NEED_DATA
        return decode_reply(self._pending.pop(0), pairs)
