"""The Redis connection in an event loop, against Debian's real redis-server.

Each test runs an EventLoop of its own and a private redis-server (support.redis_server:
a unix socket in a temporary folder, or a free loopback port), stopped afterwards.  A
redis-server frozen with SIGSTOP accepts connections and never answers: that is how
slowness is made.  The one peer that is not Redis is a socket of the test's own that
answers the greeting and then sends bytes no RESP parser accepts.
"""

from __future__ import annotations

import socket
import time

import pytest

from master.events import EventLoop
from support.redis_server import RedisServer
from support.sockets import free_port
from support.stand_ins import Log
from support.waiting import spin
from tlsmgr.redisconn import STALL, AddressError, RedisAddress, RedisConnection

pytestmark = pytest.mark.redis

BUDGET = 0.05


@pytest.fixture
def redis(folder):
    with RedisServer(folder) as server:
        yield server


@pytest.fixture
def loop():
    events = EventLoop()
    yield events
    events.close()


def run_for(loop: EventLoop, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        loop.run_once(0.01)


def connect(loop: EventLoop, address: str, log: Log | None = None, budget: float = BUDGET):
    conn = RedisConnection(
        loop, RedisAddress.parse(address).resolved(), budget=budget, log=log or Log()
    )
    conn.start()
    return conn


def connected(loop: EventLoop, address: str, log: Log | None = None) -> RedisConnection:
    """connect(), then turn the loop until the connection is up."""
    conn = connect(loop, address, log)
    spin(loop, lambda: conn.state == "up", "the connection")
    return conn


class Answers:
    """done() callbacks that record what they were given, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes | None]] = []

    def done(self, name: str):
        return lambda value: self.got.append((name, value))


def test_get_answers_later_with_the_value_or_none(loop, redis):
    redis.call("SET", b"k1", b"v1")
    log = Log()
    conn = connected(loop, redis.address, log)
    answers = Answers()
    assert conn.get(b"k1", answers.done("k1"))
    assert conn.get(b"nothing", answers.done("nothing"))
    assert answers.got == []  # never from inside get()
    spin(loop, lambda: len(answers.got) == 2, "two replies")
    assert answers.got == [("k1", b"v1"), ("nothing", None)]
    assert log.lines == [f"redis {redis.address}: connected"]
    conn.close()


def test_a_get_with_a_limit_reads_at_most_that_much(loop, redis):
    redis.call("SET", b"long", b"0123456789")
    conn = connected(loop, redis.address)
    answers = Answers()
    for key, limit in ((b"long", 4), (b"long", 10), (b"nothing", 4)):
        assert conn.get(key, answers.done(f"{key.decode()} {limit}"), limit=limit)
    spin(loop, lambda: len(answers.got) == 3, "three replies")
    assert answers.got == [("long 4", b"0123"), ("long 10", b"0123456789"), ("nothing 4", b"")]
    conn.close()


def test_many_gets_are_pipelined_on_one_connection_and_answered_in_order(loop, redis):
    for i in range(300):
        redis.call("SET", f"k{i}", f"v{i}" * (i % 7 + 1))
    conn = connected(loop, redis.address)
    answers = Answers()
    for i in range(300):
        assert conn.get(f"k{i}".encode(), answers.done(f"k{i}"))
    spin(loop, lambda: len(answers.got) == 300, "300 replies")
    assert answers.got == [(f"k{i}", f"v{i}".encode() * (i % 7 + 1)) for i in range(300)]
    clients = redis.call("CLIENT", "LIST").decode().splitlines()
    assert len(clients) == 2  # ours, and the one asking
    assert conn.counters == {"errors": 0, "timeouts": 0, "reconnects": 0, "late": 0}
    conn.close()


def test_commands_are_sent_without_waiting_and_a_database_is_selected(loop, redis):
    conn = connected(loop, redis.address + "/3")
    assert conn.command(b"SET", b"k", b"in db 3", b"PX", 60000)
    assert conn.command(b"SET", b"gone", b"x")
    assert conn.command(b"DEL", b"gone")
    spin(loop, lambda: redis.call("GET", b"k", db=3) == b"in db 3", "the SET")
    assert redis.call("GET", b"k") is None  # not in database 0
    assert 0 < redis.call("PTTL", b"k", db=3) <= 60000
    assert redis.call("EXISTS", b"gone", db=3) == 0
    conn.close()


def test_an_error_reply_is_a_none_and_counted(loop, redis):
    redis.call("RPUSH", b"list", b"x")
    conn = connected(loop, redis.address)
    answers = Answers()
    conn.get(b"list", answers.done("list"))  # WRONGTYPE
    spin(loop, lambda: answers.got, "the reply")
    assert answers.got == [("list", None)]
    assert conn.counters["errors"] == 1 and conn.state == "up"
    conn.close()


def test_a_reply_after_the_budget_is_dropped_and_the_fifo_stays_aligned(loop, redis):
    redis.call("SET", b"a", b"A")
    redis.call("SET", b"b", b"B")
    conn = connected(loop, redis.address)
    answers = Answers()
    redis.freeze()
    try:
        conn.get(b"a", answers.done("a"))
        conn.get(b"b", answers.done("b"))
        spin(loop, lambda: len(answers.got) == 2, "both budgets", timeout=STALL / 2)
        assert answers.got == [("a", None), ("b", None)]
        assert conn.counters["timeouts"] == 2
    finally:
        redis.thaw()
    # The late replies (A, B) arrive and are dropped; the next get gets its own value.
    conn.get(b"b", answers.done("b again"))
    spin(loop, lambda: len(answers.got) == 3, "the third reply")
    assert answers.got[2] == ("b again", b"B")
    assert conn.counters["late"] == 2
    assert conn.state == "up"
    conn.close()


def test_a_server_that_never_answers_is_given_up_and_retried(loop, redis):
    log = Log()
    conn = connected(loop, redis.address, log)
    answers = Answers()
    redis.freeze()
    try:
        conn.get(b"a", answers.done("a"))
        spin(loop, lambda: conn.state != "up", "the stall to be noticed", timeout=STALL * 5)
        assert answers.got == [("a", None)]
        assert not conn.get(b"a", answers.done("skipped"))  # not asked while down
        run_for(loop, STALL * 2)  # retries meet a server that still does not answer
        assert conn.state != "up"
    finally:
        redis.thaw()
    spin(loop, lambda: conn.state == "up", "the connection again")
    warnings = [line for line in log.lines if line.startswith("warning:")]
    assert warnings == [
        f"warning: redis {redis.address}: no reply for 1s;"
        " serving from the local caches until it is back"
    ]
    assert log.lines[-1] == f"redis {redis.address}: connected again"
    assert conn.counters["reconnects"] == 1
    conn.close()


def test_a_restarted_server_is_found_again_by_itself(loop, redis):
    log = Log()
    conn = connected(loop, redis.address, log)
    redis.stop()
    answers = Answers()
    if conn.get(b"a", answers.done("a")):  # sent before the loss was seen
        spin(loop, lambda: answers.got, "the answer")
        assert answers.got == [("a", None)]
    spin(loop, lambda: conn.state == "down", "the loss")
    run_for(loop, 0.5)  # a few failed attempts: still one warning
    redis.start()
    redis.call("SET", b"a", b"A")
    spin(loop, lambda: conn.state == "up", "the connection again")
    conn.get(b"a", answers.done("a again"))
    spin(loop, lambda: answers.got and answers.got[-1][0] == "a again", "the reply")
    assert answers.got[-1] == ("a again", b"A")
    assert [line for line in log.lines if "warning" in line] == [
        f"warning: redis {redis.address}: connection closed by the server;"
        " serving from the local caches until it is back"
    ]
    assert conn.counters["reconnects"] == 1
    conn.close()


def test_no_server_at_start_is_logged_once_and_never_blocks(loop):
    log = Log()
    port = free_port()
    conn = connect(loop, f"inet:127.0.0.1:{port}", log)
    run_for(loop, 1.0)
    assert conn.state == "down"
    assert not conn.get(b"a", lambda value: None)
    assert log.lines == [
        f"warning: redis inet:127.0.0.1:{port}: connect: Connection refused;"
        " serving from the local caches until it is back"
    ]
    assert conn.counters["errors"] >= 3  # retried, with backoff
    conn.close()


def test_inet_addresses_work_too(loop, folder):
    with RedisServer(folder, port=free_port()) as redis:
        redis.call("SET", b"k", b"v")
        conn = connected(loop, redis.address)
        answers = Answers()
        conn.get(b"k", answers.done("k"))
        spin(loop, lambda: answers.got, "the reply")
        assert answers.got == [("k", b"v")]
        conn.close()


def test_a_protocol_error_drops_the_connection(loop):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    log = Log()
    conn = connect(loop, f"inet:127.0.0.1:{listener.getsockname()[1]}", log)
    peer = spin(loop, lambda: _accept(listener), "the connection")
    peer.setblocking(False)
    assert spin(loop, lambda: _recv(peer), "the greeting") == b"*1\r\n$4\r\nPING\r\n"
    peer.sendall(b"+PONG\r\n")
    spin(loop, lambda: conn.state == "up", "the greeting's answer")
    answers = Answers()
    conn.get(b"k", answers.done("k"))
    assert spin(loop, lambda: _recv(peer), "the GET").startswith(b"*2\r\n$3\r\nGET")
    peer.sendall(b"?what\r\n")
    spin(loop, lambda: answers.got, "the answer")
    assert answers.got == [("k", None)] and conn.state == "down"
    assert "protocol error" in log.lines[-1]
    conn.close()
    peer.close()
    listener.close()


def _recv(peer: socket.socket) -> bytes | None:
    try:
        return peer.recv(100)
    except BlockingIOError:
        return None


def _accept(listener: socket.socket) -> socket.socket | None:
    try:
        return listener.accept()[0]
    except BlockingIOError:
        return None


@pytest.mark.parametrize(
    "text, family, host, port, db",
    [
        ("inet:127.0.0.1:6379", socket.AF_UNSPEC, "127.0.0.1", 6379, None),
        ("inet:[::1]:6380/2", socket.AF_INET6, "::1", 6380, 2),
        ("inet:redis.example:6379/0", socket.AF_UNSPEC, "redis.example", 6379, 0),
        ("unix:/var/run/redis/redis.sock", socket.AF_UNIX, "/var/run/redis/redis.sock", 0, None),
        ("unix:/var/run/redis.sock/15", socket.AF_UNIX, "/var/run/redis.sock", 0, 15),
    ],
)
def test_addresses(text, family, host, port, db):
    address = RedisAddress.parse(text)
    assert (address.family, address.host, address.port, address.db) == (family, host, port, db)


@pytest.mark.parametrize(
    "text", ["redis://x", "inet:host", "inet:host:0", "inet:host:99999", "inet::6379", "unix:x"]
)
def test_bad_addresses(text):
    with pytest.raises(AddressError, match="expected inet:HOST:PORT"):
        RedisAddress.parse(text)


def test_a_unix_socket_must_lie_inside_the_jail(folder):
    inside = RedisAddress.parse(f"unix:{folder}/private/redis.sock/1").inside_jail(folder)
    assert inside.sockaddr == "/private/redis.sock" and inside.db == 1
    with pytest.raises(AddressError, match="outside the jail"):
        RedisAddress.parse("unix:/run/redis.sock").inside_jail(folder)


def test_a_name_that_does_not_resolve():
    with pytest.raises(AddressError, match="cannot resolve"):
        RedisAddress.parse("inet:no-such-host.invalid:6379").resolved()
