"""Postfix's attribute lists ("0" format) on the test side: build a request, read a reply.

SYNOPSIS
    from support.attrs import ask, parse_list, read_reply, request

    sock.sendall(request(b"request", b"seed", b"size", b"32"))
    read_reply(sock)                 # [(b"status", b"0"), (b"seed", b"...")]
    ask(sock, b"request", b"seed", b"size", b"32")      # the two at once
    parse_list(buf)                  # (pairs, length) of the first whole list, or None

DESCRIPTION
    A list is name NUL value NUL ... NUL (an empty name ends it).  This
    is a second, deliberately simple implementation, independent of
    tlsmgr/attr.py, so that the tests do not check the product with
    itself.  read_reply() reads byte by byte from a blocking socket and
    never takes more than one list; EOF inside a list is an
    AssertionError.
"""

from __future__ import annotations

import socket

Pairs = list[tuple[bytes, bytes]]


def request(*attrs: bytes) -> bytes:
    """name, value, name, value, ... -> one request in the "0" format."""
    return b"".join(a + b"\0" for a in attrs) + b"\0"


def parse_list(buf: bytes) -> tuple[Pairs, int] | None:
    """One complete attribute list at the start of buf and its length; None if partial."""
    attrs, pos = [], 0
    while True:
        end = buf.find(b"\0", pos)
        if end < 0:
            return None
        name = buf[pos:end]
        if not name:
            return attrs, end + 1
        vend = buf.find(b"\0", end + 1)
        if vend < 0:
            return None
        attrs.append((name, buf[end + 1 : vend]))
        pos = vend + 1


def read_reply(sock: socket.socket) -> Pairs:
    """Read exactly one attribute list (byte by byte: never more than it)."""
    buf = b""
    while (parsed := parse_list(buf)) is None:
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"EOF inside an attribute list: {buf!r}")
        buf += chunk
    return parsed[0]


def ask(sock: socket.socket, *attrs: bytes) -> Pairs:
    """Send one request and read its reply."""
    sock.sendall(request(*attrs))
    return read_reply(sock)
