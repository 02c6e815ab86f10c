"""tlsmgr.attr: the "0"-format codec, its limits and Postfix's value parsers."""

from __future__ import annotations

import copy
import pickle

import pytest

from tlsmgr import attr
from tlsmgr.attr import NEED_DATA, AttrDecoder, RemoteProtocolError

SEED = b"request\0seed\0size\x0032\0\0"
SEED_PAIRS = [(b"request", b"seed"), (b"size", b"32")]


def test_decodes_one_list():
    dec = AttrDecoder()
    dec.feed(SEED)
    assert dec.next_list() == SEED_PAIRS
    assert dec.next_list() is NEED_DATA
    assert dec.buffered == 0


@pytest.mark.parametrize("cut", range(len(SEED) + 1))
def test_any_split_gives_the_same_list(cut):
    dec = AttrDecoder()
    dec.feed(SEED[:cut])
    first = dec.next_list()
    if cut < len(SEED):
        assert first is NEED_DATA
        dec.feed(SEED[cut:])
        first = dec.next_list()
    assert first == SEED_PAIRS


def test_one_byte_at_a_time_and_pipelined():
    stream = SEED + b"request\0policy\0cache_type\0smtp\0\0" + b"\0"
    dec = AttrDecoder()
    lists = []
    for byte in stream:
        dec.feed(bytes([byte]))
        while (got := dec.next_list()) is not NEED_DATA:
            lists.append(got)
    assert lists == [SEED_PAIRS, [(b"request", b"policy"), (b"cache_type", b"smtp")], []]


def test_scanner_remembers_how_far_it_searched():
    # The O(n) property: a NUL is never searched for twice in the same bytes.
    dec = AttrDecoder()
    dec.feed(b"request\0")
    assert dec.next_list() is NEED_DATA
    for _ in range(1000):
        dec.feed(b"x")
        assert dec.next_list() is NEED_DATA
    assert dec._scan == 1000
    assert dec.buffered == len(b"request\0") + 1000


def test_empty_values_and_empty_list():
    dec = AttrDecoder()
    dec.feed(b"keyname\0\0\0" + b"\0")
    assert dec.next_list() == [(b"keyname", b"")]
    assert dec.next_list() == []


def test_name_limit():
    ok = AttrDecoder()
    ok.feed(b"n" * attr.MAX_NAME + b"\0v\0\0")
    assert ok.next_list() == [(b"n" * attr.MAX_NAME, b"v")]
    bad = AttrDecoder()
    bad.feed(b"n" * (attr.MAX_NAME + 1))  # caught before any NUL arrives
    with pytest.raises(RemoteProtocolError) as err:
        bad.next_list()
    assert err.value.reply is True
    with pytest.raises(RemoteProtocolError):  # the decoder stays broken
        bad.next_list()


def test_value_limit_is_base64_of_64k():
    assert attr.MAX_VALUE == 87384
    assert len(attr.format_data(bytes(attr.MAX_DATA))) == attr.MAX_VALUE
    ok = AttrDecoder()
    ok.feed(b"session\0" + b"A" * attr.MAX_VALUE + b"\0\0")
    assert ok.next_list()[0][1] == b"A" * attr.MAX_VALUE
    bad = AttrDecoder()
    bad.feed(b"session\0" + b"A" * (attr.MAX_VALUE + 1))
    with pytest.raises(RemoteProtocolError, match="value longer"):
        bad.next_list()


def test_list_limit():
    value = b"A" * 60000
    dec = AttrDecoder()
    dec.feed(b"a\0" + value + b"\0b\0" + value + b"\0c\0" + value)
    with pytest.raises(RemoteProtocolError, match="list longer"):
        dec.next_list()
    fits = AttrDecoder()
    fits.feed(b"a\0" + value + b"\0b\0" + value + b"\0\0")
    assert len(fits.next_list()) == 2


def test_encode_list():
    assert attr.encode_list(SEED_PAIRS) == SEED
    assert attr.encode_list([]) == b"\0"
    with pytest.raises(ValueError):
        attr.encode_list([(b"a", b"x\0y")])
    with pytest.raises(ValueError):
        attr.encode_list([(b"", b"x")])


@pytest.mark.parametrize(
    "value, text",
    [(0, b"0"), (1, b"1"), (-1, b"4294967295"), (-2, b"4294967294"), (3600, b"3600")],
)
def test_format_int_is_unsigned(value, text):
    assert attr.format_int(value) == text


@pytest.mark.parametrize(
    "text, value",
    [
        (b"32", 32),
        (b" 7", 7),
        (b"\t7", 7),
        (b"+3", 3),
        (b"-1", 4294967295),
        (b"-2", 4294967294),
        (b"007", 7),
        (b"4294967297", 1),  # unsigned int keeps 32 bits
        (b"99999999999999999999999", 4294967295),  # strtoul saturates
        (b"0" * 5000 + b"9", 9),
        (b" 0x10", None),
        (b"7 ", None),
        (b"", None),
        (b" ", None),
        (b"+", None),
        (b"-", None),
        (b"+-1", None),
        (b"1e3", None),
        (b"\xd9\xa1", None),  # a non-ASCII digit
    ],
)
def test_parse_uint_is_sscanf_u(text, value):
    assert attr.parse_uint(text) == value


def test_to_int32():
    assert attr.to_int32(4294967295) == -1
    assert attr.to_int32(4294967294) == -2
    assert attr.to_int32(2**31 - 1) == 2**31 - 1
    assert attr.to_int32(2**31) == -(2**31)


@pytest.mark.parametrize(
    "text, data",
    [
        (b"", b""),
        (b"QQ==", b"A"),
        (b"QUI=", b"AB"),
        (b"QUJD", b"ABC"),
        (b"QQ==QUJD", b"A"),  # stops at the first pad
        (b"QQ=A", b"A"),
        (b"QUJ=QUJD", b"AB"),
        (b"QR==", b"A"),  # stray bits are ignored
        (b"AAAAAAAAAAAAAAAAAAAAAA==", bytes(16)),
        (b"QQ=", None),  # length not a multiple of 4
        (b"Q===", None),
        (b"=QQQ", None),
        (b"!!!notb64", None),
        (b"QQ\nQ", None),
        (b"QUJ\0", None),
    ],
)
def test_parse_data_is_postfix_base64(text, data):
    assert attr.parse_data(text) == data


def test_format_data():
    assert attr.format_data(b"") == b""
    assert attr.format_data(b"\x01\x02sessionbytes") == b"AQJzZXNzaW9uYnl0ZXM="
    for n in range(70):
        blob = bytes(range(n))
        assert attr.parse_data(attr.format_data(blob)) == blob


def test_need_data_is_a_falsy_singleton():
    assert not NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"
    assert list(type(NEED_DATA)) == [NEED_DATA]
    assert copy.copy(NEED_DATA) is NEED_DATA
    assert pickle.loads(pickle.dumps(NEED_DATA)) is NEED_DATA
