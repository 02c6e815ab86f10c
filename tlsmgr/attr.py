"""Attribute lists in Postfix's "0" format: a sans-IO decoder and an encoder.

SYNOPSIS
    from tlsmgr import attr

    dec = attr.AttrDecoder()
    dec.feed(data)                        # any split of the byte stream
    pairs = dec.next_list()               # [(name, value), ...] or attr.NEED_DATA
    dec.buffered                          # bytes received and not yet returned
    dec.whole_lists(data, limit=0)        # fast path: [pairs, ...] or None

    attr.encode_list([(b"status", attr.format_int(-2))])   # -> bytes
    attr.format_int(-1)     -> b"4294967295"   (printf "%u" of an int)
    attr.format_data(b"A")  -> b"QQ=="         (standard base64, padded)
    attr.parse_uint(b" 7")  -> 7               (sscanf "%u%c" == 1), else None
    attr.to_int32(4294967294) -> -2            (an unsigned value read into an int)
    attr.parse_data(b"QQ==QUJD") -> b"A"       (Postfix base64_decode_opt), else None

    attr.RemoteProtocolError              # the one error family
    attr.MAX_NAME, attr.MAX_DATA, attr.MAX_VALUE, attr.MAX_LIST

DESCRIPTION
    No sockets, no clock, no third-party imports.

    The wire format (Postfix attr_print0.c / attr_scan0.c): an attribute
    is its name, a NUL, its value, a NUL; a list ends with one more NUL,
    which reads as an empty name.  Names and values are byte strings
    without NUL; there is no escaping.  Integers travel as decimal text,
    printed as unsigned 32-bit numbers (-1 is "4294967295"); binary data
    travels as standard base64 with padding ("" for empty data).

    AttrDecoder is incremental.  feed() appends bytes; next_list()
    returns the next complete list as (name, value) pairs, in order, or
    NEED_DATA.  The complete fields that have arrived are split off the
    buffer in one pass and consumed from there; the scanner remembers how
    far it searched for a NUL in what remains, so feeding one byte at a
    time stays O(n) overall.  Several lists in one feed() come out one
    per next_list() call (pipelining).  The common case, a chunk that
    starts when nothing is pending and holds whole lists (one request in
    one write, as real clients send it), takes a fast path that splits
    the chunk once and walks it in pairs; it yields exactly what the
    general path would, and hands any incomplete tail to it.

    Limits, checked as soon as they are exceeded (a client cannot make
    the decoder buffer more than MAX_LIST bytes of one list):
        MAX_NAME  = 64        bytes of one attribute name
        MAX_DATA  = 65536     bytes of one decoded value
        MAX_VALUE = 87384     bytes of one value on the wire: the base64
                              text of MAX_DATA bytes
        MAX_LIST  = 131072    bytes of one attribute list, NULs included
    Postfix 3.7 has no limits here (attr_scan0.c reads each value with
    vstring_get_null(), unbounded).

    parse_uint() is glibc's sscanf("%u%c") == 1: leading white space and
    a sign are accepted ("-1" wraps to 4294967295), at least one decimal
    digit is required, nothing may follow (" 0x10", "7 " and "" fail).
    Values beyond 2**64 - 1 saturate as strtoul does; the result is then
    reduced to 32 bits, as storing it in an unsigned int does.

    parse_data() is Postfix's base64_decode_opt(): the length must be a
    multiple of 4; decoding stops at the first "=" found in the third or
    fourth position of a quad and ignores the rest ("QQ==QUJD" is "A");
    any other character outside the alphabet fails the whole value.

DIAGNOSTICS
    RemoteProtocolError(message, reply=...).  `reply` says whether the
    peer may still be sent a FAIL reply before the connection is closed
    (True for over-limit input).  Once raised, the decoder stays broken:
    every later next_list() raises the same error, since framing is lost.
    The encoder raises ValueError for a name or value containing a NUL
    (a caller bug, never a runtime condition).

SEE ALSO
    src/util/attr_print0.c, attr_scan0.c, base64_code.c (Postfix),
    h11's _receivebuffer.py (the incremental scanner idea)
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections import deque
from collections.abc import Iterable
from typing import Final, NoReturn

MAX_NAME = 64
MAX_DATA = 64 * 1024
MAX_VALUE = 4 * ((MAX_DATA + 2) // 3)
MAX_LIST = 128 * 1024

Pairs = list[tuple[bytes, bytes]]


class _NeedData(enum.Enum):
    """The sentinel type of NEED_DATA: an enum of one member, so that a type
    checker narrows `x is NEED_DATA` as it does None."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __bool__(self) -> bool:
        return False


NEED_DATA: Final = _NeedData.NEED_DATA


class RemoteProtocolError(Exception):
    """The peer sent bytes that break the protocol.

    `reply` is True when a FAIL reply should still be sent before the
    connection is closed (over-limit input), False when the connection
    is to be closed without a reply.
    """

    def __init__(self, message: str, *, reply: bool = True) -> None:
        super().__init__(message)
        self.reply = reply


class AttrDecoder:
    """Incremental decoder of NUL-terminated attribute lists; see the module docstring."""

    def __init__(
        self,
        *,
        max_name: int = MAX_NAME,
        max_value: int = MAX_VALUE,
        max_list: int = MAX_LIST,
    ) -> None:
        self._max_name = max_name
        self._max_value = max_value
        self._max_list = max_list
        # Bytes after the last NUL seen: the start of a field not complete yet.
        self._buf = bytearray()
        self._scan = 0  # self._buf has no NUL before this offset
        # Complete fields split off the stream and not consumed yet.
        self._parts: list[bytes] = []
        self._next = 0
        # The list being assembled.
        self._name: bytes | None = None  # a name read, waiting for its value
        self._pairs: Pairs = []
        # Complete lists found by the fast path.
        self._ready: deque[Pairs] = deque()
        # A chunk this short cannot break the value or list limits.
        self._fast_limit = min(max_value, max_list)
        self._list_len = 0  # its bytes so far, NULs included
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet returned as part of a complete list."""
        waiting = sum(len(part) + 1 for part in self._parts[self._next :])
        ready = sum(len(n) + len(v) + 2 for pairs in self._ready for n, v in pairs)
        return ready + len(self._ready) + self._list_len + waiting + len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer."""
        if (
            len(data) <= self._fast_limit
            and not self._buf
            and self._name is None
            and not self._list_len
            and self._next >= len(self._parts)
            and self._error is None
        ):
            self._feed_fast(bytes(data))
        else:
            self._buf += data

    def whole_lists(self, data: bytes, limit: int = 0) -> list[Pairs] | None:
        """The lists in `data` when it is exactly whole lists (at most `limit`
        of them, unless 0) and nothing is pending.

        The fast path for one request in one read: returns them without
        touching the decoder's state, or None (then feed() as usual).  It
        never returns what feed() + next_list() would not."""
        if (
            self._buf
            or self._ready
            or self._name is not None
            or self._list_len
            or self._next < len(self._parts)
            or self._error is not None
            or len(data) > self._fast_limit
            or data[-2:] != b"\0\0"
        ):
            return None
        fields = data.split(b"\0")
        lists, start = self._walk(fields, limit)
        return lists if start == len(fields) - 1 else None

    def _feed_fast(self, data: bytes) -> None:
        """Whole lists straight from one split; the rest to the general path."""
        fields = data.split(b"\0")
        lists, start = self._walk(fields, 0)
        self._ready.extend(lists)
        if start < len(fields) - 1 or fields[-1]:
            self._buf += b"\0".join(fields[start:])

    def _walk(self, fields: list[bytes], limit: int) -> tuple[list[Pairs], int]:
        """The complete lists at the start of split fields (at most `limit`,
        unless 0), and the index of the field where the rest begins (an
        incomplete list, or a name too long, which the general path must
        see).  The last field follows the last NUL: it is never complete."""
        last = len(fields) - 1
        max_name = self._max_name
        lists: list[Pairs] = []
        start = 0
        while start < last:
            pairs: Pairs = []
            i = start
            while i < last:
                name = fields[i]
                if not name or len(name) > max_name or i + 1 >= last:
                    break
                pairs.append((name, fields[i + 1]))
                i += 2
            if i >= last or fields[i]:
                break
            lists.append(pairs)
            start = i + 1
            if len(lists) == limit:
                break
        return lists, start

    def next_list(self) -> Pairs | _NeedData:
        """Return the next complete attribute list, or NEED_DATA.

        Raises RemoteProtocolError when a limit is exceeded.
        """
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        if not self._buf and self._next >= len(self._parts):
            return NEED_DATA
        while True:
            pairs = self._consume()
            if pairs is not None:
                return pairs
            if not self._split():
                return NEED_DATA

    def _consume(self) -> Pairs | None:
        """Walk the split fields; a complete list, or None when they run out."""
        parts, i, count = self._parts, self._next, len(self._parts)
        name, length = self._name, self._list_len
        try:
            while i < count:
                field = parts[i]
                i += 1
                length += len(field) + 1
                if length > self._max_list:
                    self._fail(f"attribute list longer than {self._max_list} bytes")
                if name is None:
                    if not field:
                        pairs, self._pairs, length = self._pairs, [], 0
                        return pairs
                    if len(field) > self._max_name:
                        self._fail(f"attribute name longer than {self._max_name} bytes")
                    name = field
                else:
                    if len(field) > self._max_value:
                        self._value_too_long(name)
                    self._pairs.append((name, field))
                    name = None
            return None
        finally:
            self._next, self._name, self._list_len = i, name, length

    def _split(self) -> bool:
        """Split the complete fields off the buffer; False when there are none."""
        buf = self._buf
        end = buf.rfind(b"\0", self._scan)
        if end < 0:
            # Sanity check: the limits apply to a field still arriving, too.
            self._scan = len(buf)
            limit = self._max_name if self._name is None else self._max_value
            if len(buf) > limit:
                if self._name is None:
                    self._fail(f"attribute name longer than {self._max_name} bytes")
                self._value_too_long(self._name)
            if self._list_len + len(buf) + 1 > self._max_list:
                self._fail(f"attribute list longer than {self._max_list} bytes")
            return False
        self._parts = bytes(buf[:end]).split(b"\0")
        self._next = 0
        del buf[: end + 1]
        self._scan = 0
        return True

    def _value_too_long(self, name: bytes) -> None:
        shown = name.decode("ascii", "backslashreplace")
        self._fail(f"attribute {shown}: value longer than {self._max_value} bytes")

    def _fail(self, message: str) -> NoReturn:
        self._error = RemoteProtocolError(message, reply=True)
        raise self._error


def encode_list(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Encode (name, value) pairs as one attribute list, terminator included."""
    out = bytearray()
    for name, value in pairs:
        if not name or b"\0" in name or b"\0" in value:
            raise ValueError(f"cannot encode attribute {name!r}: empty name or NUL byte")
        out += name
        out += b"\0"
        out += value
        out += b"\0"
    out += b"\0"
    return bytes(out)


def format_int(value: int) -> bytes:
    """printf("%u") of a C int: negative values come out as 2**32 + value."""
    return b"%d" % (value & 0xFFFFFFFF)


def format_data(data: bytes) -> bytes:
    """Standard base64 with padding, no line breaks; b"" for empty data."""
    return base64.b64encode(data)


_SPACE = b" \t\n\v\f\r"
_ULONG_MAX = 2**64 - 1


def parse_uint(text: bytes) -> int | None:
    """sscanf(text, "%u%c") == 1, as an unsigned 32-bit value; None on failure."""
    i = 0
    while i < len(text) and text[i] in _SPACE:
        i += 1
    negative = False
    if i < len(text) and text[i] in b"+-":
        negative = text[i] == 0x2D
        i += 1
    digits = text[i:]
    if not digits or not digits.isdigit():
        return None
    # Sanity check: int() refuses very long digit strings; strtoul saturates.
    significant = digits.lstrip(b"0")
    number = _ULONG_MAX + 1 if len(significant) > 20 else int(significant or b"0")
    if number > _ULONG_MAX:
        value = _ULONG_MAX
    else:
        value = -number % 2**64 if negative else number
    return value & 0xFFFFFFFF


def to_int32(value: int) -> int:
    """An unsigned 32-bit value as a C int reads it."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def parse_data(text: bytes) -> bytes | None:
    """Postfix's base64_decode_opt(); None when the value is not valid."""
    if len(text) % 4:
        return None
    stop = len(text)
    pad = text.find(b"=")
    if pad >= 0:
        if pad % 4 < 2:
            # Sanity check: "=" in the first two positions of a quad is invalid.
            return None
        stop = pad
    body = text[:stop]
    if not _B64_ALPHABET.issuperset(body):
        return None
    # Workaround: binascii wants whole quads; pad the last one and drop the
    # bits Postfix ignores (it keeps 1 byte for 2 chars, 2 for 3).
    keep = len(body) // 4 * 3 + {0: 0, 2: 1, 3: 2}[len(body) % 4]
    try:
        raw = binascii.a2b_base64(body + b"=" * (-len(body) % 4), strict_mode=False)
    except binascii.Error:
        return None
    return raw[:keep]
