"""The least HTTP a one-request-per-connection server needs: read a head, parse it, answer.

SYNOPSIS
    from tlsmgr.clients.httpserve import HttpError, HttpRequest, read_head
    from tlsmgr.clients.httpserve import parse_request, response, linger

    request = parse_request(read_head(conn, timeout))   # HttpError(status, why)
    conn.sendall(response(200, body, content_type, head_only=request.method == "HEAD"))
    linger(conn)

DESCRIPTION
    For a blocking socket that serves one request and closes
    (`Connection: close`), as the metrics service does: no keep-alive,
    no request body, no chunked encoding.

    read_head() returns the request head without its blank line (line
    ends CRLF or bare LF).  It must arrive within `timeout` seconds in
    all (HttpError 408: a client that trickles bytes gains nothing) and
    hold at most HEAD_LIMIT (8 KiB) bytes (431); EOF before the blank
    line is 400.

    parse_request() reads the request line, `METHOD SP TARGET SP
    HTTP/x.y`, strictly: an upper-case token method, single spaces, and
    version HTTP/1.0 or HTTP/1.1 (another version is 505, anything else
    400, as is a head that is not ASCII).  The path is the target without
    its query string; an absolute-form target (`http://host:port/path`)
    gives its path.  Headers are not interpreted.

    response() is a status line (always HTTP/1.1), Date, Content-Type,
    Content-Length and `Connection: close` (plus `Allow: GET, HEAD` on a
    405), then the body unless head_only.  linger() closes the sending
    side and reads what the client still sends, up to LINGER_BYTES
    (64 KiB) for at most LINGER_TIME (2 s): closing a socket with unread
    input makes the kernel send a reset, which can destroy the response
    before the client has read it (a head too large, a request body).

SEE ALSO
    RFC 9112 (HTTP/1.1 messages), metrics.py
"""

from __future__ import annotations

import email.utils
import re
import socket
import time
from dataclasses import dataclass

__all__ = [
    "HEAD_LIMIT",
    "LINGER_BYTES",
    "LINGER_TIME",
    "REASONS",
    "HttpError",
    "HttpRequest",
    "linger",
    "parse_request",
    "read_head",
    "response",
]

HEAD_LIMIT = 8192
LINGER_BYTES, LINGER_TIME = 65536, 2.0
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}
_REQUEST_LINE = re.compile(r"([A-Z]+) (\S+) (HTTP/\d\.\d)")
_END = re.compile(rb"\r?\n\r?\n")


class HttpError(Exception):
    """A status to answer instead of 200; str() is `STATUS REASON: why` (for the log)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(f"{status} {REASONS[status]}: {why}")
        self.status = status


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    target: str  # as sent, for messages


def read_head(conn: socket.socket, timeout: float) -> bytes:
    """The request head; HttpError 408, 431, or 400 on EOF (see the module docstring)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while (end := _END.search(data)) is None:
        if len(data) > HEAD_LIMIT:
            raise HttpError(431, f"more than {HEAD_LIMIT} bytes without a blank line")
        left = deadline - time.monotonic()
        if left <= 0:
            raise HttpError(408, f"no complete request within {timeout:g}s")
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            raise HttpError(400, f"connection closed after {len(data)} bytes")
        data += chunk
    if end.start() > HEAD_LIMIT:
        raise HttpError(431, f"a request head of {end.start()} bytes")
    return bytes(data[: end.start()])


def parse_request(head: bytes) -> HttpRequest:
    """The request line's method and path; HttpError 400 or 505."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "bytes that are not ASCII") from None
    line = text.split("\n", 1)[0].removesuffix("\r")
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise HttpError(400, f"request line {line[:80]!r}")
    method, target, version = match.groups()
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, version)
    path = target
    if "://" in target:  # absolute-form: the path starts after the authority
        path = "/" + target.split("://", 1)[1].partition("/")[2]
    return HttpRequest(method, path.partition("?")[0], target[:80])


def response(status: int, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    """A whole response, headers and (unless head_only) body."""
    headers = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 405:
        headers.append("Allow: GET, HEAD")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + (b"" if head_only else body)


def linger(conn: socket.socket) -> None:
    """Close the sending side, then read and drop the rest (see the module docstring)."""
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:  # the client is gone already
        return
    deadline = time.monotonic() + LINGER_TIME
    left = LINGER_BYTES
    while left > 0 and (wait := deadline - time.monotonic()) > 0:
        conn.settimeout(wait)
        try:
            chunk = conn.recv(min(left, 4096))
        except (TimeoutError, ConnectionError):
            return
        if not chunk:
            return
        left -= len(chunk)
