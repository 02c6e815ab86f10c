"""tlsutil: session DER round trip, reuse detection, RAND_add, the SMTP line layer.

A real pyOpenSSL server (in a thread) and client, in-process, over a socketpair.
"""

from __future__ import annotations

import socket
import threading

import pytest
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

from tlsmgr.clients import mkcert, tlsutil


@pytest.fixture(scope="module")
def server_ctx(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    mkcert.ensure_certificate(str(d))
    cert = (d / mkcert.CERT_NAME).read_bytes()
    key = (d / mkcert.KEY_NAME).read_bytes()
    return tlsutil.server_context(cert, key, b"test")


class Handshake:
    """One TLS session: the server in a thread, the client here; results kept."""

    def __init__(self, server_ctx, client_ctx, offer: bytes | None = None):
        a, b = socket.socketpair()
        self.server: dict = {}
        thread = threading.Thread(target=self._serve, args=(server_ctx, a))
        thread.start()
        try:
            conn = SSL.Connection(client_ctx, b)
            conn.set_connect_state()
            if offer is not None:
                session = tlsutil.session_from_der(offer, client_ctx)
                assert session is not None
                conn.set_session(session)
            conn.do_handshake()
            conn.sendall(b"EHLO client\r\n")
            # TLS 1.3 tickets arrive after the handshake: read a reply first.
            self.reply = conn.recv(100)
            self.reused = tlsutil.session_reused(conn)
            self.der = tlsutil.session_to_der(conn.get_session())
            self.protocol = conn.get_protocol_version_name()
            self.summary = tlsutil.connection_summary(conn)
            conn.shutdown()
        finally:
            b.close()
            thread.join(10)

    def _serve(self, ctx, sock):
        try:
            conn = SSL.Connection(ctx, sock)
            conn.set_accept_state()
            conn.do_handshake()
            conn.recv(100)
            conn.sendall(b"250 ok\r\n")
            self.server["reused"] = tlsutil.session_reused(conn)
            self.server["der"] = tlsutil.session_to_der(conn.get_session())
            try:
                conn.recv(100)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                pass
        finally:
            sock.close()


def test_new_session_then_resumption_from_der(server_ctx):
    client_ctx = tlsutil.client_context()
    first = Handshake(server_ctx, client_ctx)
    assert first.reply == b"250 ok\r\n"
    assert not first.reused and not first.server["reused"]
    assert first.protocol == "TLSv1.3"
    second = Handshake(server_ctx, client_ctx, offer=first.der)
    assert second.reused and second.server["reused"]


def test_resumption_from_der_in_a_fresh_client_context(server_ctx):
    # What the smtp test client does: a new process, a new Context, DER from the cache.
    first = Handshake(server_ctx, tlsutil.client_context())
    second = Handshake(server_ctx, tlsutil.client_context(), offer=first.der)
    assert second.reused


def test_session_from_another_server_context_is_not_reused(server_ctx, tmp_path):
    mkcert.ensure_certificate(str(tmp_path))
    other = tlsutil.server_context(
        (tmp_path / mkcert.CERT_NAME).read_bytes(),
        (tmp_path / mkcert.KEY_NAME).read_bytes(),
        b"test",
    )
    first = Handshake(other, tlsutil.client_context())
    second = Handshake(server_ctx, tlsutil.client_context(), offer=first.der)
    assert not second.reused and not second.server["reused"]


def test_der_round_trip_is_stable(server_ctx):
    ctx = tlsutil.client_context()
    der = Handshake(server_ctx, ctx).der
    session = tlsutil.session_from_der(der, ctx)
    assert session is not None
    assert tlsutil.session_to_der(session) == der


def test_set_session_needs_the_connection_context(server_ctx):
    # Why session_from_der() takes the Context: pyOpenSSL checks identity.
    der = Handshake(server_ctx, tlsutil.client_context()).der
    session = tlsutil.session_from_der(der, tlsutil.client_context())
    conn = SSL.Connection(tlsutil.client_context(), None)
    with pytest.raises(ValueError):
        conn.set_session(session)


@pytest.mark.parametrize("junk", [b"", b"\x00", b"not a session", b"\x30\x82\xff\xff"])
def test_session_from_der_rejects_junk(junk):
    assert tlsutil.session_from_der(junk, tlsutil.client_context()) is None
    assert Binding.lib.ERR_get_error() == 0  # the error queue was cleared


def test_server_session_id_is_read_from_der(server_ctx):
    hs = Handshake(server_ctx, tlsutil.client_context())
    sid = tlsutil.session_id(hs.server["der"])
    assert sid is not None and len(sid) == 32
    # The second session has a different id.
    other = Handshake(server_ctx, tlsutil.client_context())
    assert tlsutil.session_id(other.server["der"]) != sid


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30", b"\x04\x00", b"\x30\x03\x02\x01\x01", b"\x30\x06\x02\x01\x01\x02\x01\x01"],
)
def test_session_id_of_junk_is_none(der):
    assert tlsutil.session_id(der) is None


def test_session_id_long_form_lengths():
    body = b"\x02\x01\x01" + b"\x02\x02\x03\x04" + b"\x04\x02\x13\x02" + b"\x04\x20" + b"A" * 32
    body += b"\x04\x81\x80" + b"k" * 128
    der = b"\x30\x81" + bytes([len(body)]) + body
    assert tlsutil.session_id(der) == b"A" * 32


def test_rand_add_and_version():
    before = Binding.lib.RAND_status()
    tlsutil.rand_add(bytes(range(32)))
    tlsutil.rand_add(b"")
    assert Binding.lib.RAND_status() == 1 and before in (0, 1)
    assert tlsutil.openssl_version_num() == Binding.lib.OpenSSL_version_num()
    assert tlsutil.openssl_version_num() >= 0x30000000


def test_connection_summary(server_ctx):
    hs = Handshake(server_ctx, tlsutil.client_context())
    assert hs.summary.startswith("TLSv1.3 with cipher TLS_")
    assert hs.summary.endswith(" bits)")


# The line layer.


def _pair():
    a, b = socket.socketpair()
    return a, b, tlsutil.LineStream(b)


def test_readline_crlf_and_bare_lf():
    a, b, stream = _pair()
    with a, b:
        a.sendall(b"220 hello\r\n250 ok\n25")
        a.sendall(b"0 x\r\n")
        assert stream.readline() == b"220 hello"
        assert stream.readline() == b"250 ok"
        assert stream.readline() == b"250 x"


def test_readline_eof_and_overlong_line():
    a, b, stream = _pair()
    with b:
        a.sendall(b"partial")
        a.close()
        with pytest.raises(tlsutil.StreamError, match="lost connection"):
            stream.readline()
    a, b, stream = _pair()
    with a, b:
        a.sendall(b"x" * (tlsutil.MAX_LINE + 10))
        with pytest.raises(tlsutil.StreamError, match="longer than"):
            stream.readline()


def test_readline_timeout():
    a, b, stream = _pair()
    with a, b:
        tlsutil.set_timeout(b, 0.05)
        with pytest.raises(tlsutil.StreamError, match="timeout"):
            stream.readline()


def test_discard_buffer_drops_pipelined_plaintext():
    a, b, stream = _pair()
    with a, b:
        a.sendall(b"STARTTLS\r\nRSET\r\n")
        assert stream.readline() == b"STARTTLS"
        assert stream.discard_buffer() == len(b"RSET\r\n")


def test_write_to_closed_peer_is_a_stream_error():
    a, b, stream = _pair()
    with b:
        a.close()
        with pytest.raises(tlsutil.StreamError, match="write error"):
            for _ in range(100):
                stream.write(b"x" * 65536)


def test_ticket_key_callback_is_out_of_reach():
    # docs/clients.md says the smtpd test server cannot use tlsmgr's ticket keys.
    # If a later pyOpenSSL or cryptography exposes a way in, this fails: use it.
    lib = Binding.lib
    for name in (
        "SSL_CTX_set_tlsext_ticket_key_evp_cb",
        "SSL_CTX_set_tlsext_ticket_key_cb",
        "SSL_CTX_ctrl",
        "SSL_CTX_sess_set_new_cb",
        "SSL_CTX_sess_set_get_cb",
    ):
        assert not hasattr(lib, name), f"{name} is now available"
    assert not [m for m in dir(SSL.Context) if "ticket" in m.lower()]
