"""The smtp test client against the smtpd test server's session code, in-process.

A real TCP listener on 127.0.0.1 (a free port), the server's smtpd_session() in a
thread, the client's smtp_session() here; no tlsmgr (caching is tested with a real
tlsmgr in tests/process/test_clients.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest
from OpenSSL import SSL

from tlsmgr.clients import mkcert, smtp, smtpd, tlsutil


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    mkcert.ensure_certificate(str(d))
    ctx = tlsutil.server_context(
        (d / mkcert.CERT_NAME).read_bytes(), (d / mkcert.KEY_NAME).read_bytes(), b"t"
    )
    return smtpd.SmtpdState(context=ctx, service="127.0.0.1:10025", loglevel=2, timeout=10)


class Server:
    """A listener whose accepted connections go to `serve(sock)` in a thread."""

    def __init__(self, serve):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.serve = serve
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                self.serve(conn)
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
            finally:
                conn.close()

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)
        assert not self.errors, self.errors


@pytest.fixture
def server(state):
    srv = Server(lambda conn: smtpd.smtpd_session(conn, "unknown[127.0.0.1]", state))
    yield srv
    srv.close()


def _talk(port: int, lines: list[bytes]) -> list[bytes]:
    """Plain SMTP: send each line, collect each reply line until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(lines))
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n")[:-1]


def test_session_without_cache(server, capsys):
    said: list[str] = []
    outcome = smtp.smtp_session("127.0.0.1", server.port, tlsmgr=None, say=said.append)
    assert not outcome.offered and not outcome.reused and not outcome.stored
    assert outcome.summary.startswith("TLSv1.3 with cipher ")
    assert said[0].startswith(f"connected to 127.0.0.1[127.0.0.1]:{server.port}: 220 ")
    assert "new session" in said and said[-1] == "221 2.0.0 Bye"
    assert outcome.cache_id.startswith(f"smtp&[127.0.0.1]:{server.port}&127.0.0.1&127.0.0.1&&")


def test_server_logs_like_smtpd(state, capfd):
    srv = Server(lambda conn: smtpd.smtpd_session(conn, "unknown[127.0.0.1]", state))
    try:
        smtp.smtp_session("127.0.0.1", srv.port, tlsmgr=None, say=lambda _: None)
    finally:
        srv.close()  # joins the server thread: its last log line is written
    err = capfd.readouterr().err
    assert "connect from unknown[127.0.0.1]" in err
    assert "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with" in err
    assert "disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 quit=1 commands=4" in err


def test_plain_commands(server):
    replies = _talk(
        server.port,
        [b"HELO x\r\n", b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"\r\n", b"NOOP\r\n", b"QUIT\r\n"],
    )
    assert replies[0].startswith(b"220 localhost ESMTP")
    assert replies[1] == b"250 localhost"
    assert b"250-STARTTLS" in replies[2:8]
    rest = replies[replies.index(b"250 ENHANCEDSTATUSCODES") + 1 :]
    assert rest == [
        b"502 5.5.2 Error: command not recognized",
        b"500 5.5.2 Error: bad syntax",
        b"250 2.0.0 Ok",
        b"221 2.0.0 Bye",
    ]


def test_error_limit_ends_the_session(server):
    replies = _talk(server.port, [b"BOGUS\r\n"] * 25)
    assert replies[-1] == b"421 4.7.0 Error: too many errors"
    assert replies.count(b"502 5.5.2 Error: command not recognized") == smtpd.ERROR_LIMIT


def test_starttls_syntax(server):
    replies = _talk(server.port, [b"STARTTLS now\r\n", b"QUIT\r\n"])
    assert replies[1:] == [b"501 5.5.4 Syntax: STARTTLS", b"221 2.0.0 Bye"]


def test_pipelined_plaintext_after_starttls_is_discarded(state, capfd):
    srv = Server(lambda conn: smtpd.smtpd_session(conn, "unknown[127.0.0.1]", state))
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            tlsutil.set_timeout(sock, 10)
            stream = tlsutil.LineStream(sock)
            smtp.read_reply(stream, "srv")
            # The injection of CVE-2011-0411: a command after STARTTLS in the same packet.
            sock.sendall(b"STARTTLS\r\nQUIT\r\n")
            assert str(smtp.read_reply(stream, "srv")).startswith("220 ")
            conn = SSL.Connection(tlsutil.client_context(), sock)
            conn.set_connect_state()
            conn.do_handshake()
            stream.start_tls(conn)
            # The QUIT was not executed: the session is still open over TLS.
            smtp.command(stream, "NOOP", "srv", 250)
            smtp.command(stream, "QUIT", "srv", 221)
    finally:
        srv.close()
    assert "discarding input pipelined after STARTTLS" in capfd.readouterr().err


def test_server_without_starttls_is_fatal():
    def plain(conn):
        stream = tlsutil.LineStream(conn)
        stream.write(b"220 plain\r\n")
        stream.readline()
        stream.write(b"250-plain\r\n250 8BITMIME\r\n")
        try:
            stream.readline()
        except tlsutil.StreamError:
            pass

    srv = Server(plain)
    try:
        with pytest.raises(smtp.SmtpError, match="does not offer STARTTLS"):
            smtp.smtp_session("127.0.0.1", srv.port, tlsmgr=None, say=lambda _: None)
    finally:
        srv.close()


def test_handshake_failure_is_fatal():
    def broken(conn):
        stream = tlsutil.LineStream(conn)
        stream.write(b"220 x\r\n")
        stream.readline()
        stream.write(b"250-x\r\n250 STARTTLS\r\n")
        stream.readline()
        stream.write(b"220 go ahead\r\nthis is not TLS\r\n")

    srv = Server(broken)
    try:
        with pytest.raises(smtp.SmtpError, match="TLS handshake with 127.0.0.1"):
            smtp.smtp_session("127.0.0.1", srv.port, tlsmgr=None, say=lambda _: None, timeout=5)
    finally:
        srv.close()


def test_refused_connection_and_bad_greeting():
    with socket.create_server(("127.0.0.1", 0)) as probe_sock:
        port = probe_sock.getsockname()[1]
    with pytest.raises(smtp.SmtpError, match=f"connect to 127.0.0.1:{port}: Connection refused"):
        smtp.smtp_session("127.0.0.1", port, tlsmgr=None, say=lambda _: None)
    srv = Server(lambda conn: conn.sendall(b"554 go away\r\n"))
    try:
        with pytest.raises(smtp.SmtpError, match="greeted with: 554 go away"):
            smtp.smtp_session("127.0.0.1", srv.port, tlsmgr=None, say=lambda _: None)
    finally:
        srv.close()


def test_read_reply_multiline_and_malformed():
    a, b = socket.socketpair()
    with a, b:
        stream = tlsutil.LineStream(b)
        a.sendall(b"250-one\r\n250-two\r\n250 three\r\n250\r\nhello\r\n")
        reply = smtp.read_reply(stream, "p")
        assert reply.code == 250 and reply.lines == ["one", "two", "three"]
        assert smtp.read_reply(stream, "p").lines == [""]
        with pytest.raises(smtp.SmtpError, match="malformed reply from p"):
            smtp.read_reply(stream, "p")


def test_cache_ids():
    cid = smtp.smtp_cache_id("mail.example", 25, "192.0.2.1")
    head, digest = cid.rsplit("&", 1)
    assert head == "smtp&[mail.example]:25&mail.example&192.0.2.1&"
    assert len(digest) == 64 and digest == digest.upper()
    assert smtp.smtp_cache_id("mail.example", 25, "192.0.2.1") == cid
    sid = bytes(range(32))
    assert smtpd.smtpd_cache_id(sid, "10026") == (
        f"{sid.hex().upper()}&s=10026&l={tlsutil.openssl_version_num()}"
    )


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "tlsmgr.clients.smtp", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_goes_on_without_tlsmgr_when_its_socket_is_missing(server, tmp_path):
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n")
    res = _cli("-c", tmp_path, "--port", server.port)
    assert res.returncode == 0, res.stderr
    assert res.stderr == (
        f"smtp: warning: no tlsmgr socket {tmp_path}/queue/private/tlsmgr: "
        "going on without tlsmgr (no seed, no cache)\n"
    )
    assert "smtp: new session\n" in res.stdout and "stored" not in res.stdout


def test_cli_no_cache_and_failures(server, tmp_path):
    res = _cli("--no-cache", "--port", server.port)
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout.endswith("smtp: new session\nsmtp: 221 2.0.0 Bye\n")
    bad_config = _cli("-c", tmp_path / "nowhere", "--port", server.port)
    assert bad_config.returncode == 1
    assert bad_config.stderr.startswith(f"smtp: fatal: open {tmp_path}/nowhere/main.cf: ")
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    refused = _cli("--no-cache", "--port", port)
    assert refused.returncode == 1
    assert refused.stderr == f"smtp: fatal: connect to 127.0.0.1:{port}: Connection refused\n"
