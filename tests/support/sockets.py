"""Small socket helpers: a free loopback port, a connect probe, reading exactly what is asked for.

SYNOPSIS
    from support.sockets import connectable, free_port, recv_all, recv_exactly, recv_line
    from support.sockets import recv_until

    port = free_port()              # no fixed ports in tests
    recv_line(sock)                 # up to and including b"\\n" (or EOF)
    recv_until(sock, b"\\0\\0")       # up to and including a terminator (or EOF)
    recv_exactly(sock, n)           # n bytes; EOF before them fails the test
    recv_all(sock)                  # until EOF
    connectable(path)               # a unix stream socket accepts a connection

DESCRIPTION
    free_port() binds 127.0.0.1:0 and returns the port the kernel chose;
    it was free a moment ago, which is as good as it gets.  recv_until()
    and recv_line() read one byte at a time, so that they never take more
    than they return.
"""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recv_until(sock: socket.socket, end: bytes) -> bytes:
    """Read up to and including the next `end` (or EOF)."""
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def recv_line(sock: socket.socket) -> bytes:
    """Read up to and including the next newline (or EOF)."""
    return recv_until(sock, b"\n")


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly `size` bytes; AssertionError on EOF before them."""
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(1 << 20, size - got))
        assert chunk, f"EOF after {got} of {size} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_all(sock: socket.socket) -> bytes:
    """Read until EOF."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def connectable(path: Path | str) -> bool:
    """Whether a unix stream socket at `path` accepts a connection now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
