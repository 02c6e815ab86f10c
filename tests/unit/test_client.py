"""tlsmgr.client against real sockets: the test server, and scripted fake servers."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable

import pytest

from support import tlsmgr_server
from support.sockets import recv_until
from support.wire_cases import GREETING
from tlsmgr.client import Result, TlsmgrClient
from tlsmgr.protocol import Status


@pytest.fixture
def server(folder):
    proc = tlsmgr_server.start(folder)
    yield os.path.join(folder, "tlsmgr")
    tlsmgr_server.stop(proc)


def test_six_requests_and_stats(server):
    with TlsmgrClient(server) as tlsmgr:
        seed = tlsmgr.seed(32)
        assert seed.status == Status.OK and len(seed.data) == 32 and seed.ok
        assert tlsmgr.policy("smtp") == Result(Status.OK, cachable=1, timeout=3600)
        assert tlsmgr.policy("lmtp") == Result(Status.OK, cachable=0, timeout=3600)
        miss = tlsmgr.lookup("smtp", "smtp&[127.0.0.1]:25&&")
        assert miss.status == Status.ERR and miss.data == b"" and miss.reason
        session = os.urandom(1100)
        assert tlsmgr.update("smtp", "smtp&[127.0.0.1]:25&&", session).ok
        assert tlsmgr.lookup("smtp", b"smtp&[127.0.0.1]:25&&").data == session
        assert tlsmgr.delete("smtp", "smtp&[127.0.0.1]:25&&").ok
        assert tlsmgr.delete("smtp", "smtp&[127.0.0.1]:25&&").status == Status.ERR
        assert tlsmgr.lookup("lmtp", "x").status == Status.FAIL
        key = tlsmgr.tktkey()
        assert key.ok and len(key.data) == 88
        assert tlsmgr.tktkey(key.data[:16]).data == key.data
        assert tlsmgr.tktkey(b"\0" * 16).status == Status.ERR
        stats = dict(tlsmgr.stats().items)
        assert stats["requests.lookup"] == "3"
        assert stats["smtp.entries"] == "0"


def test_caller_bugs_raise_value_error(server):
    tlsmgr = TlsmgrClient(server)
    for call in (
        lambda: tlsmgr.lookup("bogus", "x"),
        lambda: tlsmgr.policy("SMTP"),
        lambda: tlsmgr.seed(0),
        lambda: tlsmgr.seed(256),
        lambda: tlsmgr.tktkey(b"abc"),
        lambda: tlsmgr.delete("smtp", "a\0b"),
        lambda: tlsmgr.update("smtp", "x", bytes(65537)),
    ):
        with pytest.raises(ValueError):
            call()
    tlsmgr.close()


def test_raw_validates_nothing(server):
    with TlsmgrClient(server) as tlsmgr:
        assert tlsmgr.raw("lookup", [("cache_type", "bogus"), ("cache_id", "x")]).status == (
            Status.FAIL
        )
        assert tlsmgr.raw("seed", [("size", 0)]).status == Status.FAIL
        assert tlsmgr.raw("frobnicate").status == Status.FAIL
        assert tlsmgr.raw("tktkey", [("keyname", b"abc")]).status == Status.FAIL
        assert tlsmgr.raw("policy", [("cache_type", "smtp")]).timeout == 3600
        assert tlsmgr.seed(4).ok  # the connection is still in step


def test_unreachable_gives_fail_never_raises(folder):
    tlsmgr = TlsmgrClient(os.path.join(folder, "nothing"), retry_delay=0.01)
    result = tlsmgr.seed(32)
    assert result.status == Status.FAIL
    assert result.reason.startswith(f"problem talking to server {folder}/nothing:")
    assert "No such file" in result.reason


def test_tlsmgr_killed_and_restarted_on_the_same_listener(folder):
    path = os.path.join(folder, "tlsmgr")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    first = tlsmgr_server.start(folder, fd=listener.fileno())
    try:
        tlsmgr = TlsmgrClient(path)
        assert tlsmgr.update("smtp", "id", b"s").ok
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = tlsmgr_server.start(folder, fd=listener.fileno())
        try:
            # The old connection reads as closed: the client reconnects at once.
            assert tlsmgr.seed(8).ok
            assert tlsmgr.lookup("smtp", "id").status == Status.ERR  # caches are new
        finally:
            tlsmgr_server.stop(second)
        tlsmgr.close()
    finally:
        tlsmgr_server.stop(first)
        listener.close()


# Scripted servers -------------------------------------------------------------------

Script = Callable[[socket.socket], None]


class FakeServer:
    """Accepts connections on a unix socket and runs one script per connection."""

    def __init__(self, path: str, scripts: list[Script]) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.scripts = scripts
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                try:
                    script(conn)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)


def serve(replies: list[bytes], then: bytes = b"", linger: bool = True) -> Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        for reply in replies:
            recv_until(conn, b"\0\0")  # one request
            conn.sendall(reply)
        if then:
            conn.sendall(then)
        if linger:
            conn.recv(1)  # until the client closes

    return script


OK_UPDATE = b"status\x000\x00\x00"


@pytest.fixture
def fake(folder):
    servers: list[FakeServer] = []

    def make(scripts: list[Script]) -> tuple[str, FakeServer]:
        path = os.path.join(folder, f"fake{len(servers)}")
        servers.append(FakeServer(path, scripts))
        return path, servers[-1]

    yield make
    for server in servers:
        server.close()


def test_broken_connection_is_retried_once(fake):
    def hang_up(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        recv_until(conn, b"\0\0")  # and close without a reply

    path, server = fake([hang_up, serve([OK_UPDATE])])
    tlsmgr = TlsmgrClient(path, retry_delay=0.01)
    assert tlsmgr.update("smtp", "i", b"s").ok
    assert server.accepted == 2
    tlsmgr.close()


def test_two_attempts_then_fail(fake):
    def hang_up(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        recv_until(conn, b"\0\0")

    path, server = fake([hang_up, hang_up, serve([OK_UPDATE])])
    result = TlsmgrClient(path, retry_delay=0.01).update("smtp", "i", b"s")
    assert result.status == Status.FAIL
    assert result.reason == f"problem talking to server {path}: connection closed by server"
    assert server.accepted == 2


def test_unsolicited_bytes_make_the_client_reconnect(fake):
    path, server = fake([serve([OK_UPDATE], then=b"junk"), serve([OK_UPDATE])])
    tlsmgr = TlsmgrClient(path, retry_delay=0.01)
    assert tlsmgr.update("smtp", "i", b"s").ok
    assert tlsmgr.update("smtp", "i", b"s").ok
    assert server.accepted == 2
    tlsmgr.close()


def test_connection_is_reused_then_replaced_when_idle(fake):
    path, server = fake([serve([OK_UPDATE, OK_UPDATE]), serve([OK_UPDATE]), serve([OK_UPDATE])])
    tlsmgr = TlsmgrClient(path)
    assert tlsmgr.update("smtp", "i", b"s").ok
    assert tlsmgr.update("smtp", "i", b"s").ok
    assert server.accepted == 1
    tlsmgr.idle_limit = -1.0  # every connection is now too idle to reuse
    assert tlsmgr.update("smtp", "i", b"s").ok
    assert server.accepted == 2
    tlsmgr.close()


def test_bad_greeting_is_retried_then_fails(fake):
    def bad(conn: socket.socket) -> None:
        conn.sendall(b"protocol\0other\0\0")
        conn.recv(1)

    path, server = fake([bad, bad])
    result = TlsmgrClient(path, retry_delay=0.01).seed()
    assert result.status == Status.FAIL
    assert "unexpected server greeting: protocol=other" in result.reason
    assert server.accepted == 2


def test_incomplete_replies_are_fail(fake):
    path, _ = fake(
        [
            serve(
                [
                    b"status\x000\x00\x00",  # a seed reply without its seed
                    b"status\x000\x00keybuf\x00QUJD\x00\x00",  # a 3-byte key
                    b"status\x00-1\x00session\x00\x00\x00",  # "-1" is ERR too
                ]
            )
        ]
    )
    tlsmgr = TlsmgrClient(path, retry_delay=0.01)
    missing = tlsmgr.seed()
    assert missing.status == Status.FAIL
    assert missing.reason.endswith("missing attribute seed in reply")
    # The client closed that connection; the next request needs a new one.
    path2, _ = fake(
        [serve([b"status\x000\x00keybuf\x00QUJD\x00\x00", b"status\x00-1\x00session\x00\x00\x00"])]
    )
    tlsmgr = TlsmgrClient(path2, retry_delay=0.01)
    short_key = tlsmgr.tktkey()
    assert (short_key.status, short_key.reason) == (Status.FAIL, "keybuf of 3 bytes, not 88")
    assert tlsmgr.lookup("smtp", "x").status == Status.ERR
    tlsmgr.close()


def test_no_reply_times_out(fake):
    def silent(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        recv_until(conn, b"\0\0")
        conn.recv(1)

    path, _ = fake([silent, silent])
    result = TlsmgrClient(path, timeout=0.2, retry_delay=0.01).raw("frobnicate")
    assert result.status == Status.FAIL
    assert result.reason.endswith(": timeout")
