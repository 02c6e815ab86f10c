"""Property tests: whatever bytes arrive, in whatever split, the parser only
returns requests, a trigger or NEED_DATA, or raises RemoteProtocolError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tlsmgr import attr, protocol
from tlsmgr.attr import NEED_DATA, RemoteProtocolError
from tlsmgr.protocol import Request, ServerConnection, Trigger

NAMES = [
    b"request",
    b"seed",
    b"size",
    b"cache_type",
    b"cache_id",
    b"session",
    b"keyname",
    b"lookup",
    b"update",
    b"delete",
    b"tktkey",
    b"policy",
    b"stats",
    b"smtp",
    b"W",
    b"",
]

# Streams made of protocol-like tokens find the interesting paths faster than
# uniform bytes; both are used.
token = st.one_of(
    st.sampled_from(NAMES),
    st.binary(max_size=12),
    st.sampled_from(
        [b"32", b"-1", b" 7", b"QQ==", b"QQ==QUJD", b"!!", b"AAAAAAAAAAAAAAAAAAAAAA=="]
    ),
)
tokenised = st.lists(token, max_size=30).map(lambda parts: b"\0".join(parts) + b"\0\0")
stream = st.one_of(st.binary(max_size=400), tokenised)


@st.composite
def splits(draw, data_strategy=stream):
    data = draw(data_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks, start = [], 0
    for cut in cuts:
        chunks.append(data[start:cut])
        start = cut
    chunks.append(data[start:])
    return data, [c for c in chunks if c], draw(st.booleans())


def run(chunks: list[bytes], eof: bool) -> tuple[list, RemoteProtocolError | None]:
    conn = ServerConnection(max_list=200, max_value=100)
    got: list = []
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, (Request, Trigger))
                got.append(event)
        if eof:
            conn.receive_data(b"")
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, (Request, Trigger))
                got.append(event)
    except RemoteProtocolError as err:
        return got, err
    return got, None


@settings(max_examples=400, deadline=None)
@given(splits())
def test_parser_never_crashes_and_ignores_splits(case):
    data, chunks, eof = case
    got, err = run(chunks, eof)
    whole, whole_err = run([data] if data else [], eof)
    # The split never changes what comes out.
    assert got == whole
    assert (err is None) == (whole_err is None)
    for event in got:
        if isinstance(event, Request) and event.error is None:
            assert event.name in protocol.REQUESTS


requests = st.one_of(
    st.builds(lambda n: Request("seed", size=n), st.integers(-(2**31), 2**31 - 1)),
    st.builds(
        lambda t, i: Request("lookup", cache_type=t, cache_id=i),
        st.sampled_from(protocol.CACHE_TYPES),
        st.text(
            alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
            max_size=20,
        ),
    ),
    st.builds(
        lambda i, s: Request("update", cache_type="smtp", cache_id=i, session=s),
        st.text(
            alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
            max_size=20,
        ),
        st.binary(max_size=60),
    ),
    st.builds(lambda k: Request("tktkey", keyname=k), st.binary(max_size=20)),
    st.just(Request("stats")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, min_size=1, max_size=5), st.data())
def test_valid_requests_round_trip_in_any_split(reqs, data):
    stream = b"".join(protocol.encode_request(r) for r in reqs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    conn = ServerConnection()
    got, start = [], 0
    for cut in [*cuts, len(stream)]:
        conn.receive_data(stream[start:cut])
        start = cut
        while (event := conn.next_event()) is not NEED_DATA:
            got.append(event)
    assert got == reqs


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_value_parsers_never_raise(blob):
    number = attr.parse_uint(blob)
    assert number is None or 0 <= number < 2**32
    decoded = attr.parse_data(blob)
    assert decoded is None or len(decoded) <= len(blob)


def _primed(max_list: int = 200, max_value: int = 100) -> ServerConnection:
    """A connection past its first byte (so not a trigger), nothing pending."""
    conn = ServerConnection(max_list=max_list, max_value=max_value)
    conn.receive_data(protocol.encode_request(Request("stats")))
    assert conn.next_event() == Request("stats") and conn.next_event() is NEED_DATA
    return conn


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        stream,
        st.lists(requests, min_size=1, max_size=5).map(
            lambda reqs: b"".join(protocol.encode_request(r) for r in reqs)
        ),
    )
)
def test_fast_path_gives_what_the_general_path_gives(data):
    """whole_requests() returns None or exactly the requests the incremental
    path returns for the same bytes, and leaves the connection untouched."""
    fast = _primed().whole_requests(data)
    slow_conn = _primed()
    slow: list = []
    try:
        slow_conn.receive_data(data)
        while (event := slow_conn.next_event()) is not NEED_DATA:
            slow.append(event)
        leftover = slow_conn.buffered
    except RemoteProtocolError:
        slow, leftover = None, None
    if fast is not None:
        assert slow == fast and leftover == 0
    untouched = _primed()
    untouched.whole_requests(data)
    assert untouched.buffered == 0


def test_fast_path_takes_whole_requests_and_declines_the_rest():
    lookup = protocol.encode_request(Request("lookup", cache_type="smtp", cache_id="id"))
    seed = protocol.encode_request(Request("seed", size=32))
    conn = _primed()
    assert conn.whole_requests(lookup + seed) == [
        Request("lookup", cache_type="smtp", cache_id="id"),
        Request("seed", size=32),
    ]
    # With a limit: at most that many requests, else the general path.
    assert conn.whole_requests(lookup + seed, 2) == conn.whole_requests(lookup + seed)
    assert conn.whole_requests(lookup + seed, 1) is None
    assert conn.whole_requests(lookup, 1) == [Request("lookup", cache_type="smtp", cache_id="id")]
    assert conn.whole_requests(lookup[:-1]) is None  # a partial request
    assert ServerConnection().whole_requests(lookup) is None  # first bytes: trigger check
    assert _primed(max_value=8).whole_requests(lookup) is None  # limits: the general path
