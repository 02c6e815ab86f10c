"""tlsutil: pyOpenSSL helpers shared by the smtp test client and the smtpd test server.

SYNOPSIS
    from tlsmgr.clients import tlsutil

    tlsutil.server_context(cert_pem, key_pem, session_id_context) -> SSL.Context
    tlsutil.client_context() -> SSL.Context
    tlsutil.session_to_der(session) -> bytes
    tlsutil.session_from_der(der, context) -> SSL.Session | None
    tlsutil.session_id(der) -> bytes | None
    tlsutil.session_reused(conn) -> bool
    tlsutil.rand_add(data)
    tlsutil.openssl_version_num() -> int
    tlsutil.connection_summary(conn) -> str
    tlsutil.LineStream(sock, timeout) .readline() .write(data) .start_tls(conn)
        .discard_buffer() -> int
    tlsutil.set_timeout(sock, seconds)
    tlsutil.ssl_reason(err) -> str
    tlsutil.StreamError

DESCRIPTION
    The TLS side of the test clients, in one place, on pyOpenSSL and the
    OpenSSL that `cryptography` carries (its `Binding.lib`).  These are
    the calls Postfix's src/tls makes that pyOpenSSL does not wrap:

    session_to_der(), session_from_der()
           i2d_SSL_SESSION / d2i_SSL_SESSION: the DER form Postfix keeps
           in its session caches (tls_session_passivate/activate).  A
           session made from DER must be offered on a Connection of the
           Context passed here: pyOpenSSL's set_session() checks that the
           Session's `_context` is the Connection's Context, so both the
           pointer (`_session`) and the Context (`_context`) are set.
           session_from_der() returns None for bytes OpenSSL cannot parse
           (a cache entry is untrusted input).
    session_id(der)
           The session id, read from the session's DER encoding (the
           fourth element of the SSL_SESSION sequence), since the
           bindings lack SSL_SESSION_get_id.  None when the DER is not an
           SSL_SESSION.
    session_reused(conn)
           SSL_session_reused(): the handshake resumed an old session.
    rand_add(data)
           RAND_add(data, len, len), what Postfix's tls_ext_seed() does
           with RAND_seed() after a tlsmgr `seed` request.
    openssl_version_num()
           OpenSSL_version_num() of that library, the `l=` part of
           smtpd cache ids.

    LineStream is the SMTP line layer: CRLF lines on a blocking socket,
    the same object before and after STARTTLS (start_tls() swaps the
    transport for an SSL.Connection).  Lines longer than MAX_LINE, a
    timeout and an unexpected EOF raise StreamError, whose text says what
    happened; nothing else escapes from readline() or write().

SECURITY
    Plaintext that a peer pipelines after STARTTLS must not be read as if
    it came through TLS (CVE-2011-0411): callers discard_buffer() before
    start_tls().  The client context does not verify the server's
    certificate: the test clients do opportunistic TLS, like Postfix's
    `smtp_tls_security_level = may`.

DIAGNOSTICS
    StreamError for transport problems.  The *_context() functions let
    OpenSSL.SSL.Error through for unusable certificate or key material;
    their callers report it with the file names.

BUGS
    pyOpenSSL cannot install OpenSSL's session-ticket key callback or its
    new-session and get-session callbacks, and the OpenSSL linked into
    `cryptography` does not export them; see docs/clients.md.

SEE ALSO
    src/tls/tls_session.c, tls_seed.c, tls_server.c, tls_client.c (Postfix)
"""

from __future__ import annotations

import socket
import struct

from cryptography import x509
from cryptography.hazmat.bindings.openssl.binding import Binding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL

_ffi = Binding.ffi
_lib = Binding.lib

MAX_LINE = 4096
CRLF = b"\r\n"
# The private keys a TLS server can sign with (what pyOpenSSL's use_privatekey takes).
_SIGNING_KEYS = (
    dsa.DSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    rsa.RSAPrivateKey,
)


class StreamError(Exception):
    """A transport problem on an SMTP stream; str() says what happened."""


# Contexts.


def server_context(cert_pem: bytes, key_pem: bytes, session_id_context: bytes) -> SSL.Context:
    """A server Context with this certificate and key; raises SSL.Error or ValueError."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, _SIGNING_KEYS):
        raise ValueError(f"a server key cannot be a {type(key).__name__}")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.check_privatekey()
    # As Postfix's tls_server_init(): the session id context is the service.
    ctx.set_session_id(session_id_context[:32])
    return ctx


def client_context() -> SSL.Context:
    """A client Context for opportunistic TLS (no certificate verification)."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


# Sessions.


def session_to_der(session: SSL.Session) -> bytes:
    """i2d_SSL_SESSION(): the session's DER encoding."""
    size = _lib.i2d_SSL_SESSION(session._session, _ffi.NULL)
    if size <= 0:
        raise ValueError("i2d_SSL_SESSION failed")
    buf = _ffi.new("unsigned char[]", size)
    out = _ffi.new("unsigned char **", buf)
    _lib.i2d_SSL_SESSION(session._session, out)
    return bytes(_ffi.buffer(buf, size))


def session_from_der(der: bytes, context: SSL.Context) -> SSL.Session | None:
    """d2i_SSL_SESSION(): a Session usable with Connections of `context`, or None."""
    if not der:
        return None
    buf = _ffi.new("unsigned char[]", der)
    inp = _ffi.new("unsigned char **", buf)
    ptr = _lib.d2i_SSL_SESSION(_ffi.NULL, inp, len(der))
    if ptr == _ffi.NULL:
        _clear_errors()
        return None
    session = SSL.Session.__new__(SSL.Session)
    session._session = _ffi.gc(ptr, _lib.SSL_SESSION_free)
    # Workaround: pyOpenSSL's set_session() insists on the Context identity.
    session._context = context
    return session


def session_id(der: bytes) -> bytes | None:
    """The session id inside an SSL_SESSION's DER encoding, or None."""
    try:
        tag, body, _ = _tlv(der, 0)
        if tag != 0x30:
            return None
        pos = 0
        for expected in (0x02, 0x02, 0x04):  # version, ssl_version, cipher
            tag, _, pos = _tlv(body, pos)
            if tag != expected:
                return None
        tag, value, _ = _tlv(body, pos)
    except ValueError:
        return None
    return value if tag == 0x04 else None


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER tag-length-value at pos: (tag, value, next position)."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, size = data[pos], data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > len(data):
        raise ValueError("truncated")
    return tag, data[pos : pos + size], pos + size


def session_reused(conn: SSL.Connection) -> bool:
    """SSL_session_reused(): True when the handshake resumed a session."""
    return bool(_lib.SSL_session_reused(conn._ssl))


# The library.


def rand_add(data: bytes) -> None:
    """Mix data into OpenSSL's RAND, credited as Postfix's RAND_seed() does."""
    if data:
        _lib.RAND_add(_ffi.from_buffer(data), len(data), float(len(data)))


def openssl_version_num() -> int:
    """OpenSSL_version_num() of the library pyOpenSSL uses."""
    return int(_lib.OpenSSL_version_num())


def _clear_errors() -> None:
    while _lib.ERR_get_error():
        pass


def connection_summary(conn: SSL.Connection) -> str:
    """`TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`, as Postfix logs it."""
    bits = conn.get_cipher_bits() or 0
    return (
        f"{conn.get_protocol_version_name()} with cipher "
        f"{conn.get_cipher_name()} ({bits}/{bits} bits)"
    )


# The SMTP line layer.


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel send/receive timeouts: the socket stays blocking, as pyOpenSSL needs."""
    whole = int(seconds)
    tv = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class LineStream:
    """CRLF-terminated lines over a socket, then over TLS after start_tls()."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tls: SSL.Connection | None = None
        self._buf = b""

    def start_tls(self, conn: SSL.Connection) -> None:
        """Carry on over `conn`; callers discard_buffer() first (see SECURITY)."""
        self.tls = conn

    def discard_buffer(self) -> int:
        """Drop bytes read but not yet consumed; return how many."""
        count, self._buf = len(self._buf), b""
        return count

    def readline(self) -> bytes:
        """One line without its CRLF (a bare LF is accepted too)."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line, self._buf = self._buf[:end], self._buf[end + 1 :]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) > MAX_LINE:
                raise StreamError(f"line longer than {MAX_LINE} bytes")
            data = self._recv()
            if not data:
                raise StreamError("lost connection")
            self._buf += data

    def write(self, data: bytes) -> None:
        try:
            if self.tls is not None:
                self.tls.sendall(data)
            else:
                self.sock.sendall(data)
        except SSL.Error as err:
            raise StreamError(f"TLS write error: {ssl_reason(err)}") from None
        except OSError as err:
            raise StreamError(f"write error: {_os_reason(err)}") from None

    def _recv(self) -> bytes:
        try:
            if self.tls is not None:
                return self.tls.recv(MAX_LINE)
            return self.sock.recv(MAX_LINE)
        except SSL.ZeroReturnError:
            return b""
        except SSL.WantReadError:
            raise StreamError("timeout") from None
        except SSL.SysCallError as err:
            if err.args and err.args[0] in (-1, 0):
                return b""
            raise StreamError(f"TLS read error: {ssl_reason(err)}") from None
        except SSL.Error as err:
            raise StreamError(f"TLS read error: {ssl_reason(err)}") from None
        except (BlockingIOError, TimeoutError):
            raise StreamError("timeout") from None
        except OSError as err:
            raise StreamError(f"read error: {_os_reason(err)}") from None


def _os_reason(err: OSError) -> str:
    if isinstance(err, (BlockingIOError, TimeoutError)):
        return "timeout"
    return err.strerror or str(err)


def ssl_reason(err: SSL.Error) -> str:
    """A one-line reason from pyOpenSSL's nested error tuples."""
    if isinstance(err, SSL.SysCallError):
        return str(err.args[1]) if len(err.args) > 1 else "system call error"
    parts = []
    for item in err.args[0] if err.args and isinstance(err.args[0], list) else []:
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(parts) or str(err) or type(err).__name__
