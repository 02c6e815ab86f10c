"""The least HTTP: request heads read from real sockets, request lines parsed, responses.

The metrics service's use of it, over TCP from a real master, is
tests/process/test_metrics_scrape.py.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tlsmgr.clients.httpserve import (
    HEAD_LIMIT,
    HttpError,
    HttpRequest,
    linger,
    parse_request,
    read_head,
    response,
)


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x", HttpRequest("GET", "/metrics", "/metrics")),
        (b"GET /metrics HTTP/1.0", HttpRequest("GET", "/metrics", "/metrics")),
        (b"HEAD /m?x=1 HTTP/1.1\nAccept: */*", HttpRequest("HEAD", "/m", "/m?x=1")),
        (b"GET http://h:9/a/b HTTP/1.1", HttpRequest("GET", "/a/b", "http://h:9/a/b")),
        (b"GET http://h:9 HTTP/1.1", HttpRequest("GET", "/", "http://h:9")),
        (b"POST / HTTP/1.1", HttpRequest("POST", "/", "/")),
        (b"GET /metrics HTTP/2.0", 505),
        (b"GET /metrics HTTP/0.9", 505),
        (b"GET /metrics", 400),
        (b"get /metrics HTTP/1.1", 400),
        (b"GET  /metrics HTTP/1.1", 400),
        (b"GET /metrics HTTP/1.1 extra", 400),
        (b"GET /m\xe9trics HTTP/1.1", 400),
        (b"\x16\x03\x01\x02\x00\x01", 400),
        (b"", 400),
    ],
)
def test_parse_request(head, expected):
    if isinstance(expected, HttpRequest):
        assert parse_request(head) == expected
    else:
        with pytest.raises(HttpError) as caught:
            parse_request(head)
        assert caught.value.status == expected


def _read(sent: bytes, timeout: float = 5.0, close: bool = True) -> bytes | int:
    """read_head() on one end of a socket pair after `sent` went in at the other."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(sent)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        try:
            return read_head(ours, timeout)
        except HttpError as err:
            return err.status


def test_read_head():
    assert _read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody") == b"GET / HTTP/1.1\r\nHost: x"
    assert _read(b"GET / HTTP/1.0\n\n") == b"GET / HTTP/1.0"
    assert _read(b"GET / HTTP/1.1\r\n") == 400  # EOF before the blank line
    assert _read(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT) == 431
    assert _read(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT + b"\r\n\r\n") == 431
    started = time.monotonic()
    assert _read(b"GET / HTTP/1.1\r\n", timeout=0.3, close=False) == 408
    assert time.monotonic() - started < 5


def test_a_trickling_client_gets_no_more_than_the_timeout():
    ours, theirs = socket.socketpair()

    def trickle() -> None:
        for byte in b"GET / HTTP/1.1\r\nX: y\r\n":
            try:
                theirs.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.05)

    with ours, theirs:
        sender = threading.Thread(target=trickle)
        sender.start()
        started = time.monotonic()
        with pytest.raises(HttpError) as caught:
            read_head(ours, 0.3)
        assert caught.value.status == 408
        assert time.monotonic() - started < 1.0  # not 0.3 s per byte
        sender.join()


def test_response_and_linger():
    answer = response(405, b"405 Method Not Allowed\n", "text/plain")
    head, body = answer.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 405 Method Not Allowed"
    assert {"Content-Length: 23", "Connection: close", "Allow: GET, HEAD"} <= set(lines)
    assert body == b"405 Method Not Allowed\n"
    assert response(200, b"x" * 9, "text/plain", head_only=True).endswith(
        b"Content-Length: 9\r\nConnection: close\r\n\r\n"
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"unread bytes")
        ours.sendall(b"the answer")
        threading.Timer(0.1, theirs.close).start()
        linger(ours)  # returns at the peer's EOF, well before LINGER_TIME
        assert ours.recv(1) == b""
