"""One Redis connection inside the daemon's event loop: RESP2, pipelined, never blocking.

SYNOPSIS
    from tlsmgr.redisconn import RedisAddress, RedisConnection, AddressError

    address = RedisAddress.parse("inet:127.0.0.1:6379/2")   # AddressError
    address = address.resolved()             # pre_init: getaddrinfo once; AddressError
    address = address.inside_jail(root)      # unix: the path as seen from the jail
    conn = RedisConnection(events, address, budget=0.020, log=log)
    conn.start()                             # connect on the next loop turn
    conn.state                               # "up" | "connecting" | "down"
    conn.get(key, done) -> bool              # done(value or None) later; False: not asked
    conn.get(key, done, limit=N) -> bool     # at most N bytes of the value come back
    conn.command(*args) -> bool              # SET, DEL: sent, the reply never waited for
    conn.counters                            # errors, timeouts, reconnects, late
    conn.close()

DESCRIPTION
    Addresses: `inet:HOST:PORT[/DB]` (HOST a name, an IPv4 address or
    an IPv6 address in brackets) and `unix:/path[/DB]`, where a last
    path component of digits only is the database number.  Names are
    resolved once, by resolved(), before the jail (the jail has no
    resolver configuration); the first address getaddrinfo() gives is
    used.

    The connection is a non-blocking socket registered in the daemon's
    EventLoop: connect() without blocking, completion seen as
    writability and checked with SO_ERROR; then `SELECT db` (when a
    database is named) or `PING`, and the connection is "up" once that
    is answered.  Commands are packed with hiredis.pack_command() and
    pipelined on the one connection; replies are parsed with
    hiredis.Reader (RESP2, encoding=None: bytes in, bytes out) and
    matched to commands by a FIFO, in order.  No thread, no blocking
    call: commands are written once per loop turn, after its other I/O
    callbacks (so the turn's replies to clients go out first, and its
    commands share one write), and what the kernel does not take at
    once waits in an output buffer for writability.

    get() asks only while the connection is up (otherwise False at once,
    and the caller answers without Redis) and never calls `done` from
    inside get(): `done(value)` runs later from the loop, exactly once,
    with the value (bytes), or None for a missing key, an error reply,
    a lost connection, or when `budget` seconds passed first (a
    timeout).  The reply that comes after its budget is read and
    dropped, so the FIFO stays aligned.  With `limit`, get() sends
    `GETRANGE key 0 limit-1` instead of GET: Redis sends at most `limit`
    bytes of the value, so a huge value costs no more than that to read
    (a missing key is then b"", as GETRANGE answers).  command() sends
    and forgets: its reply is read and only counted when it is an error.

    Down and slow.  The connection is "down" after a connect error, a
    reset or EOF, a protocol error (hiredis.ProtocolError: the reader
    cannot go on), an error reply to SELECT or PING, a reply nobody
    asked for, or when the oldest command has waited STALL (1 s)
    without a reply (a server that accepts but never answers).  Every
    pending get() is then answered with None, the first loss is logged
    once (`warning: redis ADDRESS: REASON; serving from the local
    caches until it is back`), and a new connection is tried after a
    jittered exponential backoff: BACKOFF_MIN (0.1 s) doubling up to
    BACKOFF_MAX (10 s), each delay between half and all of that.  The
    first connection after a loss is logged once (`redis ADDRESS:
    connected again`).  Nothing is queued while down: writes are
    skipped, reads answered locally.  At most OUTPUT_LIMIT (1 MiB)
    waits unsent; beyond it commands are refused (counted as errors)
    until the server reads again or is declared stalled.

    Counters: errors (connection failures and losses, protocol errors,
    error replies, refused commands), timeouts (gets past their
    budget), reconnects (connections made after a loss), late (replies
    dropped because their get had timed out).

DIAGNOSTICS
    AddressError (str(): what is wrong with the address) from parse()
    and resolved().  Nothing else raises: Redis failures are states.

BUGS
    No AUTH, no TLS to Redis: keep it on loopback or a unix socket
    (docs/cluster.md).  RESP3 is never asked for.

SEE ALSO
    tlsmgr/redislevel.py (what is stored), master/events.py, the Redis
    protocol specification (RESP2), hiredis
"""

from __future__ import annotations

import collections
import errno
import os
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import hiredis

from master.events import EventLoop

STALL = 1.0  # seconds without any reply: the server is not answering
BACKOFF_MIN = 0.1
BACKOFF_MAX = 10.0
OUTPUT_LIMIT = 1 << 20
READ_SIZE = 65536

UP, CONNECTING, DOWN = "up", "connecting", "down"

_INET = re.compile(
    r"inet:(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>[^:/]+)(?:/(?P<db>\d+))?"
)
_UNIX = re.compile(r"unix:(?P<path>/.*?)(?:/(?P<db>\d+))?")

Done = Callable[[bytes | None], None]


class AddressError(Exception):
    """A tls_session_cache_redis value that cannot be used; str() says why."""


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: the text as configured, and what connect() needs."""

    text: str
    family: int
    host: str  # an inet host, or a unix path
    port: int = 0
    db: int | None = None
    sockaddr: Any = None  # set by resolved(); a unix path is its own

    @classmethod
    def parse(cls, text: str) -> RedisAddress:
        """The address in `text`; AddressError."""
        usage = "expected inet:HOST:PORT[/DB] or unix:/path[/DB]"
        inet = _INET.fullmatch(text)
        if inet:
            port = inet["port"]
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise AddressError(f'"{text}": bad port "{port}" ({usage})')
            family = socket.AF_INET6 if inet["v6"] else socket.AF_UNSPEC
            return cls(text, family, inet["v6"] or inet["host"], int(port), _db(inet["db"]))
        unix = _UNIX.fullmatch(text)
        if unix:
            path = unix["path"]
            return cls(text, socket.AF_UNIX, path, 0, _db(unix["db"]), path)
        raise AddressError(f'"{text}": {usage}')

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX

    def resolved(self) -> RedisAddress:
        """With the socket address to connect to (a name looked up now); AddressError."""
        if self.is_unix:
            return self
        try:
            infos = socket.getaddrinfo(self.host, self.port, self.family, socket.SOCK_STREAM)
        except OSError as err:
            raise AddressError(f"{self.text}: cannot resolve {self.host}: {err}") from None
        family, _, _, _, sockaddr = infos[0]
        return replace(self, family=family, sockaddr=sockaddr)

    def inside_jail(self, root: str) -> RedisAddress:
        """A unix path as seen from a chroot to `root`; AddressError when it lies outside."""
        if not self.is_unix:
            return self
        real_root = os.path.realpath(root)
        real = os.path.realpath(self.host)
        if os.path.commonpath([real_root, real]) != real_root or real == real_root:
            raise AddressError(
                f"{self.text}: the socket lies outside the jail {root}, where tlsmgr runs"
                " chrooted (master.cf); put it inside queue_directory, use an inet: address,"
                " or run tlsmgr unchrooted"
            )
        return replace(self, sockaddr="/" + os.path.relpath(real, real_root))


def _db(text: str | None) -> int | None:
    return None if text is None else int(text)


# What a command in the FIFO is waiting for.
GET, SEND, HELLO = "get", "send", "hello"


class _Call:
    """One command in the FIFO: its kind, who waits for its reply, and until when."""

    __slots__ = ("kind", "done", "sent", "deadline", "live")

    def __init__(self, kind: str, done: Done | None, sent: float, deadline: float) -> None:
        self.kind = kind
        self.done = done
        self.sent = sent
        self.deadline = deadline
        self.live = kind != SEND  # a get or the greeting still has someone waiting

    def answer(self, reply: bytes | None) -> None:
        """Give the reply (None: a miss) to whoever waits for it."""
        if self.done is not None:
            self.done(reply)


class RedisConnection:
    """The connection and its state; see the module docstring."""

    def __init__(
        self,
        events: EventLoop,
        address: RedisAddress,
        *,
        budget: float,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.events = events
        self.address = address
        self.budget = budget
        self.log = log
        self.clock = clock
        self.jitter = jitter
        self.state = DOWN
        self.counters = dict.fromkeys(("errors", "timeouts", "reconnects", "late"), 0)
        self._sock: socket.socket | None = None
        self._fd = -1
        self._reader: Any = None
        self._out = bytearray()
        self._fifo: collections.deque[_Call] = collections.deque()
        self._live: collections.deque[_Call] = collections.deque()  # waited for, in order
        self._timer: Any = None
        self._timer_due = 0.0
        self._connect_deadline: float | None = None
        self._retry: Any = None
        self._attempts = 0
        self._ever_up = False
        self._down_logged = False
        self._flushing = False  # a flush is due at the end of this loop turn
        self._writing = False  # waiting for writability

    # The caller's side -------------------------------------------------

    def start(self) -> None:
        """Connect on the next loop turn (and keep reconnecting while down)."""
        self._schedule_retry(0.0)

    def get(self, key: bytes, done: Done, limit: int = 0) -> bool:
        """GET key (GETRANGE key 0 limit-1 with a limit); done(value or None) later,
        never from inside this call; False when not asked (not up, or the output is
        full): the caller answers now."""
        if self.state != UP or len(self._out) > OUTPUT_LIMIT:
            return False
        now = self.clock()
        args = (b"GETRANGE", key, 0, limit - 1) if limit > 0 else (b"GET", key)
        self._push(_Call(GET, done, now, now + self.budget), args)
        return True

    def command(self, *args: bytes | str | int) -> bool:
        """Send a command whose reply nobody waits for; False when not sent."""
        if self.state != UP:
            return False
        if len(self._out) > OUTPUT_LIMIT:
            self.counters["errors"] += 1
            return False
        now = self.clock()
        self._push(_Call(SEND, None, now, now + STALL), args)
        return True

    def close(self) -> None:
        """Write what the kernel takes now, then close; no callback runs afterwards."""
        if self._sock is not None and self._out:
            try:
                self._sock.send(self._out)
            except OSError:
                pass
        self._fifo.clear()
        self._live.clear()
        self._drop_socket()
        self.events.cancel_timer(self._retry)
        self._retry = None
        self.state = DOWN

    # Sending -----------------------------------------------------------

    def _push(self, call: _Call, args: tuple[Any, ...]) -> None:
        self._fifo.append(call)
        if call.live:
            self._live.append(call)
        if self._timer is None or call.deadline < self._timer_due:
            self._arm(call.deadline)
        self._send(hiredis.pack_command(args))

    def _send(self, data: bytes) -> None:
        """Queue data; it is written once per loop turn, after that turn's I/O
        callbacks: clients' replies go out first, and a turn's commands share one
        write (and a write error is never met inside the caller's get())."""
        self._out += data
        if not self._flushing and not self._writing:
            self._flushing = True
            self.events.request_timer(0, self._flush_event)

    def _flush_event(self, _loop: EventLoop) -> None:
        self._flushing = False
        if self._sock is not None and self._out and not self._writing:
            self._write_out()

    def _write_event(self, _fd: int, _loop: EventLoop) -> None:
        self._write_out()

    def _write_out(self) -> None:
        """Write what the kernel takes; wait for writability for the rest."""
        assert self._sock is not None
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError as err:
            self._failed(f"write: {err.strerror or err}")
            return
        del self._out[:sent]
        if self._out and not self._writing:
            self._writing = True
            self.events.enable_write(self._fd, self._write_event)
        elif not self._out and self._writing:
            self._writing = False
            self.events.disable_write(self._fd)

    # Receiving ---------------------------------------------------------

    def _read_event(self, _fd: int, _loop: EventLoop) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            self._failed(f"read: {err.strerror or err}")
            return
        if not data:
            self._failed("connection closed by the server")
            return
        reader = self._reader
        reader.feed(data)
        while self._sock is not None:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as err:
                self._failed(f"protocol error: {err}")
                return
            if reply is False:
                return
            if not self._fifo:
                self._failed("a reply that no command asked for")
                return
            self._reply(self._fifo.popleft(), reply)

    def _reply(self, call: _Call, reply: Any) -> None:
        error = isinstance(reply, hiredis.ReplyError)
        if call.kind == HELLO:
            self._live.popleft()
            if error:
                self._failed(f"{'SELECT' if self.address.db is not None else 'PING'}: {reply}")
            else:
                self._up()
            return
        if error:
            self.counters["errors"] += 1
        if call.live:
            call.live = False
            head = self._live.popleft()
            assert head is call  # Sanity check: replies come in the order commands went.
            call.answer(None if error else reply)
        elif call.kind == GET:
            self.counters["late"] += 1

    # Budgets and stalls ------------------------------------------------

    def _arm(self, due: float) -> None:
        self.events.cancel_timer(self._timer)
        self._timer_due = due
        self._timer = self.events.request_timer(max(0.0, due - self.clock()), self._check_event)

    def _check_event(self, _loop: EventLoop) -> None:
        """Answer the gets whose budget is over; declare a stall; re-arm."""
        self._timer = None
        now = self.clock()
        if self._connect_deadline is not None:
            if now >= self._connect_deadline:
                self._failed(f"connect: no answer within {STALL:g}s")
            else:
                self._arm(self._connect_deadline)
            return
        live = self._live
        while live and live[0].deadline <= now:
            call = live.popleft()
            call.live = False
            if call.kind == HELLO:
                self._failed(f"no answer within {STALL:g}s")
                return
            self.counters["timeouts"] += 1
            call.answer(None)
        if not self._fifo:
            return
        if now - self._fifo[0].sent >= STALL:
            self._failed(f"no reply for {STALL:g}s")
            return
        due = self._fifo[0].sent + STALL
        self._arm(min(due, live[0].deadline) if live else due)

    # Connecting --------------------------------------------------------

    def _schedule_retry(self, delay: float) -> None:
        self.events.cancel_timer(self._retry)
        self._retry = self.events.request_timer(delay, self._connect_event)

    def _connect_event(self, _loop: EventLoop) -> None:
        self._retry = None
        address = self.address
        self.state = CONNECTING
        try:
            sock = socket.socket(address.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            if address.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as err:
            self._failed(f"socket: {err.strerror or err}")
            return
        self._sock, self._fd = sock, sock.fileno()
        self._reader = hiredis.Reader(encoding=None)
        code = sock.connect_ex(address.sockaddr)
        if code == 0:
            self._connected()
        elif code == errno.EINPROGRESS:
            self.events.enable_write(self._fd, self._connecting_event)
            self._connect_deadline = self.clock() + STALL
            self._arm(self._connect_deadline)
        else:
            self._failed(f"connect: {os.strerror(code)}")

    def _connecting_event(self, _fd: int, _loop: EventLoop) -> None:
        assert self._sock is not None
        self._connect_deadline = None
        self.events.disable_write(self._fd)
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._failed(f"connect: {os.strerror(code)}")
            return
        self._connected()

    def _connected(self) -> None:
        """Connected: greet with SELECT (or PING); up once it is answered."""
        self.events.enable_read(self._fd, self._read_event)
        db = self.address.db
        now = self.clock()
        hello = _Call(HELLO, None, now, now + STALL)
        self._push(hello, (b"SELECT", db) if db is not None else (b"PING",))

    def _up(self) -> None:
        self.state = UP
        self._attempts = 0
        if self._ever_up:
            self.counters["reconnects"] += 1
        if self._down_logged:
            self.log.msg_info(f"redis {self.address.text}: connected again")
        elif not self._ever_up:
            self.log.msg_info(f"redis {self.address.text}: connected")
        self._ever_up = True
        self._down_logged = False

    # Losing ------------------------------------------------------------

    def _failed(self, reason: str) -> None:
        """The connection is unusable: answer every pending get, retry later."""
        self.counters["errors"] += 1
        waiting = [call for call in self._live if call.kind == GET]
        self._fifo.clear()
        self._live.clear()
        self._drop_socket()
        self.state = DOWN
        if not self._down_logged:
            self._down_logged = True
            self.log.msg_warn(
                f"redis {self.address.text}: {reason}; serving from the local caches"
                " until it is back"
            )
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2**self._attempts)
        self._attempts = min(self._attempts + 1, 32)
        self._schedule_retry(delay * (0.5 + self.jitter() / 2))
        for call in waiting:
            call.live = False
            call.answer(None)

    def _drop_socket(self) -> None:
        self.events.cancel_timer(self._timer)
        self._timer = None
        self._connect_deadline = None
        if self._sock is not None:
            self.events.disable(self._fd)
            self._sock.close()
        self._sock, self._fd = None, -1
        self._reader = None
        self._out = bytearray()
        self._writing = False
