"""A closed loop of one-request connections: the load that reloads and crashes are tested under.

SYNOPSIS
    from support.load import ClientThreads, ClosedLoop

    with ClosedLoop(inst.socket_path, [request(b"request", b"seed", b"size", b"32")]) as load:
        load.wait_served(100)           # 100 more replies than when called
        ...                             # reload, kill, ...
    load.served, load.failures          # replies, and what went wrong instead of one
    load.longest_gap()                  # seconds without a reply, for the figures

DESCRIPTION
    Each of `clients` threads, until the block ends: connects to the unix
    socket, reads the server's greeting (one attribute list), sends the
    next of `requests` (in turn), reads one attribute list as the reply
    and closes: a new connection per request, as a Postfix smtpd or smtp
    process asks tlsmgr once per TLS session.  Nothing is retried: a
    refused connection, EOF before the reply, a timeout or a reply with
    status FAIL is a failure, recorded as text (OK and ERR are replies).
    Leaving the block stops the threads and waits for them.

    longest_gap() is the longest time between two replies (any thread)
    while the loop ran: a figure for benchmarks, never an assertion.

    ClientThreads is the machinery under it, for other closed loops (a
    benchmark's SMTP sessions): a subclass's one(n) runs in each of its
    threads, back to back, from entering the block until leaving it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Self

from support.attrs import Pairs, parse_list
from support.waiting import WAIT, wait_until

FAIL = b"4294967294"


class ClientThreads:
    """`clients` threads, each calling one(n) back to back while the block lasts."""

    def __init__(self, clients: int) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT)

    def one(self, n: int) -> None:
        """One round of thread n; a subclass's work."""
        raise NotImplementedError

    def _client(self, n: int) -> None:
        while not self._stop.is_set():
            self.one(n)


class ClosedLoop(ClientThreads):
    """Threads that each ask one request per connection, back to back; see the module."""

    def __init__(self, path: str, requests: Sequence[bytes], clients: int = 4) -> None:
        super().__init__(clients)
        self.path = path
        self.requests = list(requests)
        self.served = 0
        self.failures: list[str] = []
        self._done: list[float] = []
        self._lock = threading.Lock()
        self._turns = list(range(clients))

    def wait_served(self, count: int, timeout: float = WAIT) -> None:
        """Return once `count` more replies have come than when called."""
        target = self.served + count
        wait_until(
            lambda: self.served >= target,
            f"{count} more replies (failures so far: {self.failures[:3]})",
            timeout,
        )

    def longest_gap(self) -> float:
        """The longest time in seconds between two replies."""
        with self._lock:
            done = sorted(self._done)
        return max((b - a for a, b in zip(done, done[1:], strict=False)), default=0.0)

    def one(self, n: int) -> None:
        request = self.requests[self._turns[n] % len(self.requests)]
        self._turns[n] += 1
        try:
            reply = self._ask(request)
        except (OSError, EOFError) as err:
            self._failed(f"{type(err).__name__}: {err}")
            return
        if dict(reply).get(b"status") == FAIL:
            self._failed(f"FAIL reply to {request!r}")
            return
        with self._lock:
            self.served += 1
            self._done.append(time.monotonic())

    def _ask(self, request: bytes) -> Pairs:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(self.path)
            greeting, rest = _read_list(sock, b"")
            sock.sendall(request)
            reply, _ = _read_list(sock, rest)
            return reply

    def _failed(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)


def _read_list(sock: socket.socket, buf: bytes) -> tuple[Pairs, bytes]:
    """One attribute list from buf and the socket, and what came after it."""
    while (parsed := parse_list(buf)) is None:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} bytes of a reply")
        buf += chunk
    pairs, length = parsed
    return pairs, buf[length:]
