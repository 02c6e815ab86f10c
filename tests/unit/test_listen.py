"""master/listen.py: real sockets, fifos and triggers in a temporary queue directory."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from master import listen
from master.builtin import inet_families
from master.config import Config
from master.events import EventLoop
from master.mastercf import parse_master_cf


def entry_of(line: str, **main: str):
    config = Config({"compatibility_level": "3.6", **main})
    return parse_master_cf(line + "\n", config)[0], config


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """A queue directory with private/ and public/, as the master's cwd."""
    (tmp_path / "private").mkdir()
    (tmp_path / "public").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def loop():
    ev = EventLoop()
    yield ev
    ev.close()


def test_inet_protocols_choose_the_address_families():
    both = [socket.AF_INET, socket.AF_INET6] if socket.has_ipv6 else [socket.AF_INET]
    assert inet_families(["ipv4"]) == [socket.AF_INET]
    assert inet_families(["IPv6", "ipv4"]) == both  # always IPv4 first
    assert inet_families(["all"]) == inet_families([]) == both


def test_unix_listener_mode_and_backlog_owner(queue):
    entry, config = entry_of("echo unix - n n - 7 testd", default_process_limit="5")
    assert listen.backlog(entry, config) == 7
    entry2, config2 = entry_of("echo unix - n n - 1 testd", default_process_limit="50")
    assert listen.backlog(entry2, config2) == 50
    (fd,) = listen.open_listeners(entry, config)
    try:
        st = os.stat(queue / "private" / "echo")
        assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o666
        assert not os.get_blocking(fd) and not os.get_inheritable(fd)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect("private/echo")
            with socket.socket(fileno=os.dup(fd)) as server:
                server.setblocking(True)
                conn, _ = server.accept()
                conn.close()
    finally:
        listen.close_listeners([fd])


def test_unix_listener_replaces_a_stale_socket_file(queue):
    entry, config = entry_of("tlsmgr unix - - n 1000? 1 tlsmgr")
    first = listen.open_listeners(entry, config)
    listen.close_listeners(first)
    assert (queue / "private" / "tlsmgr").exists()  # left behind, as Postfix does
    second = listen.open_listeners(entry, config)
    listen.close_listeners(second)


def test_public_unix_dgram_and_fifo(queue):
    dgram, config = entry_of("postlog unix-dgram n - n - 1 postlogd")
    fifo, _ = entry_of("pickup fifo n - n 60 1 pickup")
    (dfd,) = listen.open_listeners(dgram, config)
    (ffd,) = listen.open_listeners(fifo, config)
    try:
        assert os.stat(queue / "public" / "postlog").st_mode & 0o777 == 0o666
        st = os.stat(queue / "public" / "pickup")
        assert stat.S_ISFIFO(st.st_mode) and st.st_mode & 0o777 == 0o622
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"line", "public/postlog")
        assert os.read(dfd, 100) == b"line"
        # Opened read-write and non-blocking: an idle fifo is "no data", never EOF.
        with pytest.raises(BlockingIOError):
            os.read(ffd, 10)
    finally:
        listen.close_listeners([dfd, ffd])


def test_bind_error_names_the_endpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no private/ here
    entry, config = entry_of("echo unix - n n - 1 testd")
    with pytest.raises(OSError, match="bind private/echo: No such file or directory"):
        listen.open_listeners(entry, config)


def test_inet_addresses_from_master_cf_and_inet_interfaces():
    entry, config = entry_of("127.0.0.1:10025 inet n - n - 4 smtpd")
    assert listen.inet_addresses(entry, config) == [((socket.AF_INET, ("127.0.0.1", 10025)), False)]
    bare, cfg = entry_of("10025 inet n - n - 4 smtpd", inet_interfaces="loopback-only")
    got = listen.inet_addresses(bare, cfg)
    assert got[0] == ((socket.AF_INET, ("127.0.0.1", 10025)), False)
    assert all(optional for (family, _a), optional in got if family == socket.AF_INET6)
    v4, cfg4 = entry_of("10025 inet n - n - 4 smtpd", inet_interfaces="all", inet_protocols="ipv4")
    assert listen.inet_addresses(v4, cfg4) == [((socket.AF_INET, ("0.0.0.0", 10025)), False)]
    listed, cfgl = entry_of("25 inet n - n - 4 smtpd", inet_interfaces="127.0.0.1, 127.0.0.2",
                            inet_protocols="ipv4")  # fmt: skip
    assert [a for (_f, a), _o in listen.inet_addresses(listed, cfgl)] == [
        ("127.0.0.1", 25),
        ("127.0.0.2", 25),
    ]


def test_inet_listener_and_wakeup_trigger(loop):
    entry, config = entry_of("127.0.0.1:0 inet n - n 60 1 testd")
    (fd,) = listen.open_listeners(entry, config)
    server = socket.socket(fileno=fd)
    try:
        addresses = listen.listener_addresses([fd])
        assert addresses[0][0] == socket.AF_INET and addresses[0][1][1] > 0
        listen.send_wakeup(entry, addresses, loop)
        server.setblocking(True)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while len(data) < 2:
                data += conn.recv(2)
            assert data == b"W\0"
        # The server closed: the trigger connection is closed by the loop.
        assert 99 < loop.next_timer_delay() <= 100
        loop.run_once(5)
        assert loop.next_timer_delay() is None
    finally:
        server.close()


def test_unix_and_fifo_wakeup_triggers(queue, loop):
    unix, config = entry_of("tlsmgr unix - - n 1000? 1 tlsmgr")
    fifo, _ = entry_of("pickup fifo n - n 60 1 pickup")
    dgram, _ = entry_of("postlog unix-dgram n - n 5 1 postlogd")
    (ufd,) = listen.open_listeners(unix, config)
    (ffd,) = listen.open_listeners(fifo, config)
    try:
        listen.send_wakeup(unix, [], loop)
        with socket.socket(fileno=os.dup(ufd)) as server:
            server.setblocking(True)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                assert conn.recv(1) == b"W"
                assert conn.recv(1) == b"\0"
        listen.send_wakeup(fifo, [], loop)
        assert os.read(ffd, 10) == b"W"
        with pytest.raises(OSError, match="not supported for unix-dgram"):
            listen.send_wakeup(dgram, [], loop)
    finally:
        listen.close_listeners([ufd, ffd])


def test_wakeup_to_a_missing_listener_says_why(queue, loop):
    unix, _ = entry_of("absent unix - - n 10 1 absent")
    with pytest.raises(OSError, match="connect to private/absent"):
        listen.send_wakeup(unix, [], loop)
