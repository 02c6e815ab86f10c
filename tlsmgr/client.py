"""The tlsmgr client library (Postfix's tls_mgr.c): six requests, OK/ERR/FAIL, never raises on FAIL.

SYNOPSIS
    from tlsmgr.client import TlsmgrClient, Result
    from tlsmgr.protocol import Status

    with TlsmgrClient("private/tlsmgr", timeout=30.0) as tlsmgr:
        r = tlsmgr.seed(32)                    # r.status, r.data, r.reason
        r = tlsmgr.policy("smtp")              # r.cachable, r.timeout
        r = tlsmgr.update("smtp", cache_id, session)
        r = tlsmgr.lookup("smtp", cache_id)    # r.data = the session
        r = tlsmgr.delete("smtp", cache_id)
        r = tlsmgr.tktkey(b"")                 # r.data = the 88-byte keybuf
        r = tlsmgr.stats()                     # r.items = (name, value) pairs
        r = tlsmgr.raw("lookup", [("cache_type", "bogus"), ("cache_id", "x")])

DESCRIPTION
    One connection, opened on the first request and kept, as attr_clnt
    does (ipc_idle 5 s, ipc_ttl 1000 s: an older or idler connection is
    replaced before the next request).  After connecting the client
    reads the server's greeting, protocol=tlsmgr_protocol, strictly.
    Before each request it checks that the socket has nothing to read:
    unsolicited bytes or end of input mean the connection is broken, and
    a new one is made.  A request that cannot be sent or whose reply does
    not arrive (connection refused or closed, timeout, bad greeting) is
    tried again on a new connection after 1 s; after 2 attempts
    (attr_clnt_request()'s try limit and delay) the result is FAIL with reason `problem talking to
    server PATH: WHY`.

    Every call returns a Result: status is Status.OK, ERR or FAIL (an
    IntEnum; FAIL also stands for "could not talk to tlsmgr"), data is
    the reply's seed, session or keybuf (b"" otherwise), reason says why
    when status is not OK.  A reply that lacks an attribute, or a tktkey
    OK whose keybuf is not 88 bytes, is FAIL, as in tls_mgr.c.

    raw(request, attrs) is the escape hatch for the probe: it sends any
    request name with any attributes (int -> decimal, str -> as is,
    bytes -> base64), validates nothing, and decodes the reply by the
    request's shape (status only for unknown names, any further
    attributes in `items`).

    The client imports only tlsmgr.attr and tlsmgr.protocol from the
    server side (as tls_mgr.c includes only attr.h and tls_mgr.h).

DIAGNOSTICS
    ValueError, for caller bugs only: a cache type other than smtpd,
    smtp or lmtp; a seed size outside 1..255; a ticket key name that is
    neither empty nor 16 bytes; a NUL in a cache_id; a session over
    64 KiB.  Runtime conditions never raise.

SEE ALSO
    src/tls/tls_mgr.c, src/util/attr_clnt.c, auto_clnt.c (Postfix),
    tlsmgr/protocol.py, docs/protocol.md
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tlsmgr import attr, protocol
from tlsmgr.attr import NEED_DATA, RemoteProtocolError
from tlsmgr.protocol import (
    CACHE_TYPES,
    KEYBUF_SIZE,
    MAX_SEED,
    REQ_DELETE,
    REQ_LOOKUP,
    REQ_POLICY,
    REQ_SEED,
    REQ_STATS,
    REQ_TKTKEY,
    REQ_UPDATE,
    TICKET_NAME_LEN,
    Reply,
    Request,
    Status,
)

__all__ = ["Result", "TlsmgrClient"]

_RECV_SIZE = 65536


@dataclass(frozen=True)
class Result:
    """The outcome of one request."""

    status: Status
    data: bytes = b""
    reason: str = ""
    cachable: int = 0
    timeout: int = 0
    items: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


class _Broken(Exception):
    """The connection cannot be used; try again on a new one."""


class TlsmgrClient:
    """A client of one tlsmgr socket; see the module docstring."""

    def __init__(
        self,
        socket_path: str = "private/tlsmgr",
        *,
        timeout: float = 30.0,
        attempts: int = 2,
        retry_delay: float = 1.0,
        idle_limit: float = 5.0,
        ttl_limit: float = 1000.0,
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self.idle_limit = idle_limit
        self.ttl_limit = ttl_limit
        self._sock: socket.socket | None = None
        self._conn: protocol.ClientConnection | None = None
        self._opened = 0.0
        self._used = 0.0

    # The requests --------------------------------------------------------

    def seed(self, size: int = 32) -> Result:
        if not 0 < size <= MAX_SEED:
            raise ValueError(f"seed size {size} out of range 1..{MAX_SEED}")
        return self._call(Request(REQ_SEED, size=size))

    def policy(self, cache_type: str) -> Result:
        return self._call(Request(REQ_POLICY, cache_type=_cache_type(cache_type)))

    def lookup(self, cache_type: str, cache_id: str | bytes) -> Result:
        return self._call(
            Request(REQ_LOOKUP, cache_type=_cache_type(cache_type), cache_id=_cache_id(cache_id))
        )

    def update(self, cache_type: str, cache_id: str | bytes, session: bytes) -> Result:
        if len(session) > attr.MAX_DATA:
            raise ValueError(f"session of {len(session)} bytes exceeds {attr.MAX_DATA}")
        return self._call(
            Request(
                REQ_UPDATE,
                cache_type=_cache_type(cache_type),
                cache_id=_cache_id(cache_id),
                session=bytes(session),
            )
        )

    def delete(self, cache_type: str, cache_id: str | bytes) -> Result:
        return self._call(
            Request(REQ_DELETE, cache_type=_cache_type(cache_type), cache_id=_cache_id(cache_id))
        )

    def tktkey(self, name: bytes = b"") -> Result:
        if len(name) not in (0, TICKET_NAME_LEN):
            raise ValueError(f"ticket key name of {len(name)} bytes: use 0 or 16")
        result = self._call(Request(REQ_TKTKEY, keyname=bytes(name)))
        if result.ok and len(result.data) != KEYBUF_SIZE:
            return Result(
                Status.FAIL, reason=f"keybuf of {len(result.data)} bytes, not {KEYBUF_SIZE}"
            )
        return result

    def stats(self) -> Result:
        return self._call(Request(REQ_STATS))

    def raw(
        self, request: str | bytes, attrs: Iterable[tuple[str | bytes, int | str | bytes]] = ()
    ) -> Result:
        """Send any request, unchecked; see the module docstring."""
        name = request.decode("utf-8", "surrogateescape") if isinstance(request, bytes) else request
        try:
            payload = protocol.encode_raw(request, list(attrs))
        except ValueError as err:
            return Result(Status.FAIL, reason=f"cannot encode request: {err}")
        return self._exchange(name, payload)

    # Connection handling -------------------------------------------------

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._conn = None

    def __enter__(self) -> TlsmgrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, request: Request) -> Result:
        return self._exchange(request.name, protocol.encode_request(request))

    def _exchange(self, name: str, payload: bytes) -> Result:
        why = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                sock, conn = self._connection()
                sock.sendall(conn.send_raw(name, payload))
                reply = self._read_reply(sock, conn)
            except (_Broken, OSError) as err:
                why = _why(err)
                self.close()
                continue
            except RemoteProtocolError as err:
                self.close()
                return Result(Status.FAIL, reason=f"bad reply from {self.socket_path}: {err}")
            self._used = time.monotonic()
            return _result(reply)
        return Result(Status.FAIL, reason=f"problem talking to server {self.socket_path}: {why}")

    def _connection(self) -> tuple[socket.socket, protocol.ClientConnection]:
        now = time.monotonic()
        if self._sock is not None and (
            now - self._used > self.idle_limit
            or now - self._opened > self.ttl_limit
            or _readable(self._sock)
        ):
            self.close()
        if self._sock is None or self._conn is None:
            self._connect()
        assert self._sock is not None and self._conn is not None
        return self._sock, self._conn

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
            conn = protocol.ClientConnection()
            while True:
                try:
                    if conn.next_greeting() is not NEED_DATA:
                        break
                except RemoteProtocolError as err:
                    raise _Broken(str(err)) from None
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise _Broken("connection closed before the greeting")
                conn.receive_data(data)
        except BaseException:
            sock.close()
            raise
        self._sock, self._conn = sock, conn
        self._opened = self._used = time.monotonic()

    def _read_reply(self, sock: socket.socket, conn: protocol.ClientConnection) -> Reply:
        while True:
            reply = conn.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise _Broken("connection closed by server")
            conn.receive_data(data)


def _cache_type(cache_type: str) -> str:
    if cache_type not in CACHE_TYPES:
        raise ValueError(f"bad cache type {cache_type!r}: use one of {', '.join(CACHE_TYPES)}")
    return cache_type


def _cache_id(cache_id: str | bytes) -> str:
    text = cache_id.decode("utf-8", "surrogateescape") if isinstance(cache_id, bytes) else cache_id
    if "\0" in text:
        raise ValueError("cache_id contains a NUL byte")
    return text


def _readable(sock: socket.socket) -> bool:
    """True when the server sent something unasked, or closed its side."""
    # Workaround: with a timeout set, Python polls before recv() and would
    # wait for data despite MSG_DONTWAIT; check in non-blocking mode.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
    return True


def _why(err: BaseException) -> str:
    if isinstance(err, socket.timeout):
        return "timeout"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)


def _result(reply: Reply) -> Result:
    reason = ""
    if reply.status == Status.ERR:
        reason = "not found or not available"
    elif reply.status == Status.FAIL:
        reason = "request failed (bad request, unknown or disabled cache)"
    return Result(reply.status, reply.data, reason, reply.cachable, reply.timeout, reply.items)
