"""Our tlsmgr under our master, under load: many clients, stalled and vanishing clients,
clients that pipeline and never read, malformed floods, and kill -9 with the client
library in use.

Each test runs its own instance (chroot y, as the embedded master.cf) so that
a restart or a crash in one cannot hide in another.  Nothing here measures
time: every wait has a hang guard and fails with a message.
"""

from __future__ import annotations

import base64
import os
import resource
import select
import signal
import socket
import threading
import time

import pytest

from support.attrs import ask, read_reply, request
from support.instance import OUR_TLSMGR, MiniInstance
from support.procs import memory_kb, socket_fds
from support.sockets import recv_exactly
from support.waiting import WAIT, wait_until
from tlsmgr import service
from tlsmgr.protocol import Status
from tlsmgr.scache import MAX_SESSION

pytestmark = pytest.mark.root

MAIN_CF = {"smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache"}
OK, ERR = b"0", b"4294967295"
GREETING_ATTRS = [(b"protocol", b"tlsmgr_protocol")]
CLIENTS = 1000


@pytest.fixture
def inst():
    with MiniInstance(main_cf=MAIN_CF, tlsmgr=OUR_TLSMGR) as instance:
        instance.cli("start").check()
        yield instance
        assert "bad command startup" not in instance.log()
        instance.cli("stop").check()
        assert instance.processes() == []


@pytest.fixture
def nofile():
    """Tests that open 1000 connections raise their own soft limit (Debian's is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CLIENTS + 200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(inst: MiniInstance, greeting: bool = True) -> socket.socket:
    """A new connection; with `greeting`, the greeting read and checked."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            sock.connect(inst.socket_path)
            break
        except BlockingIOError:
            # The listen queue (100, as Postfix's) is full: a unix socket
            # with a timeout says EAGAIN at once; wait for tlsmgr to accept.
            if time.monotonic() > deadline:
                sock.close()
                raise AssertionError("tlsmgr does not accept connections") from None
            time.sleep(0.01)
    if greeting:
        assert read_reply(sock) == GREETING_ATTRS
    return sock


def lookup(cache_id: bytes) -> bytes:
    return request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", cache_id)


def update(cache_id: bytes, session: bytes) -> bytes:
    return request(
        b"request",
        b"update",
        b"cache_type",
        b"smtp",
        b"cache_id",
        cache_id,
        b"session",
        base64.b64encode(session),
    )


# 1000 concurrent clients ------------------------------------------------------


def test_1000_concurrent_clients_are_all_answered(inst, nofile):
    socks: list[socket.socket] = []
    pid = 0
    try:
        for _ in range(CLIENTS):
            socks.append(connect(inst, greeting=False))
        for sock in socks:
            assert read_reply(sock) == GREETING_ATTRS
        pid = inst.tlsmgr_pid()
        # All 1000 connections are open in the one tlsmgr at the same time.
        assert socket_fds(pid) >= CLIENTS
        # Every round: all clients send, then all read; each request waits in
        # the server while the others are handled.
        for sock in socks:
            sock.sendall(request(b"request", b"seed", b"size", b"16"))
        for sock in socks:
            reply = read_reply(sock)
            assert reply[0] == (b"status", OK) and len(base64.b64decode(reply[1][1])) == 16
        for n, sock in enumerate(socks):
            sock.sendall(update(b"client-%d" % n, b"session of client %d" % n))
        for sock in socks:
            assert read_reply(sock) == [(b"status", OK)]
        for n, sock in enumerate(socks):
            sock.sendall(lookup(b"client-%d" % n))
        for n, sock in enumerate(socks):
            want = base64.b64encode(b"session of client %d" % n)
            assert read_reply(sock) == [(b"status", OK), (b"session", want)]
        stats = dict(ask(socks[0], b"request", b"stats"))
        assert stats[b"smtp.entries"] == str(CLIENTS).encode()
        assert inst.tlsmgr_pids() == [pid]
    finally:
        for sock in socks:
            sock.close()
    if pid:
        wait_until(lambda: socket_fds(pid) < 10, "tlsmgr to close the 1000 connections")


# A client that stalls in the middle of a request ------------------------------


def test_half_written_request_delays_nobody(inst):
    staller = connect(inst)
    half_trigger = connect(inst)
    other = connect(inst)
    try:
        whole = lookup(b"stalled-id")
        staller.sendall(whole[:25])  # "request\0lookup\0cache_type", no NUL yet
        half_trigger.sendall(b"W")  # a trigger without its NUL
        # Others are served meanwhile, on an open connection and on new ones.
        assert ask(other, *[b"request", b"seed", b"size", b"8"])[0] == (b"status", OK)
        other.sendall(update(b"stalled-id", b"written meanwhile"))
        assert read_reply(other) == [(b"status", OK)]
        with connect(inst) as fresh:
            assert ask(fresh, b"request", b"policy", b"cache_type", b"smtp")[0] == (b"status", OK)
        # Byte by byte, interleaved with another client's requests.
        for n, byte in enumerate(whole[25:-1]):
            staller.sendall(bytes([byte]))
            if n % 8 == 0:
                assert read_reply(_send(other, lookup(b"nothing")))[0] == (b"status", ERR)
        staller.settimeout(0.2)
        with pytest.raises(TimeoutError):
            staller.recv(1)  # not complete yet: no reply
        staller.settimeout(WAIT)
        staller.sendall(whole[-1:])
        # The stalled client gets its reply once the request is complete.
        session = base64.b64encode(b"written meanwhile")
        assert read_reply(staller) == [(b"status", OK), (b"session", session)]
        # The half trigger: its NUL closes it, without a reply.
        half_trigger.sendall(b"\0")
        assert half_trigger.recv(100) == b""
    finally:
        for sock in (staller, half_trigger, other):
            sock.close()


def _send(sock: socket.socket, data: bytes) -> socket.socket:
    sock.sendall(data)
    return sock


# A client that goes away in the middle of its replies --------------------------


def test_client_that_disconnects_mid_reply_does_not_disturb_others(inst):
    big = os.urandom(MAX_SESSION)  # the largest a cache stores: 43 KiB of base64 per reply
    other = connect(inst)
    leaver = connect(inst)
    try:
        assert ask(other, *_parts(update(b"big", big)))[0] == (b"status", OK)
        pid = inst.tlsmgr_pid()
        baseline = socket_fds(pid)
        # 100 pipelined lookups (4.4 MB of replies); read a little, then vanish.
        leaver.sendall(lookup(b"big") * 100)
        assert leaver.recv(1000).startswith(b"status\0" + OK)
        # The server is not stuck writing to the leaver: others are served.
        for _ in range(3):
            assert ask(other, *_parts(lookup(b"big")))[1] == (b"session", base64.b64encode(big))
        leaver.close()  # with unread replies: a reset for the server
        for n in range(20):
            other.sendall(update(b"after-%d" % n, b"x"))
            assert read_reply(other) == [(b"status", OK)]
        wait_until(lambda: socket_fds(pid) <= baseline - 1, "tlsmgr to drop the leaver")
        with connect(inst) as fresh:
            assert ask(fresh, *_parts(lookup(b"after-19"))) == [
                (b"status", OK),
                (b"session", b"eA=="),
            ]
        assert inst.tlsmgr_pids() == [pid]
    finally:
        other.close()
        leaver.close()


def _parts(data: bytes) -> list[bytes]:
    """An encoded request back into its name/value parts (for ask())."""
    return data.split(b"\0")[:-2]


# kill -9 of tlsmgr under load ----------------------------------------------------


class Load(threading.Thread):
    """A client library user asking for seeds until told to stop."""

    def __init__(self, inst: MiniInstance, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client = inst.client(timeout=WAIT)
        self.stop = stop
        self.results: list[tuple[Status, str]] = []

    def run(self) -> None:
        with self.client:
            while not self.stop.is_set():
                result = self.client.seed(32)
                self.results.append((result.status, result.reason))


def test_kill_9_under_load_master_restarts_tlsmgr_and_clients_reconnect(inst):
    user = inst.client(timeout=WAIT)
    stop = threading.Event()
    loads = [Load(inst, stop) for _ in range(4)]
    try:
        assert user.update("smtp", "before-kill", b"lost at restart").ok
        assert user.lookup("smtp", "before-kill").data == b"lost at restart"
        held = user._sock  # white box: the connection the next call must replace
        for load in loads:
            load.start()
        old = inst.tlsmgr_pid()
        wait_until(lambda: all(len(load.results) >= 20 for load in loads), "load before the kill")
        os.kill(old, signal.SIGKILL)
        inst.wait_gone(old)
        new = inst.tlsmgr_pid(other_than=old)
        counts = [len(load.results) for load in loads]
        wait_until(
            lambda: all(len(ld.results) >= c + 20 for ld, c in zip(loads, counts, strict=True)),
            "load after the restart",
        )
        # The user's next call reconnects (its connection died with the old
        # tlsmgr); the new tlsmgr started with truncated caches: ERR, not FAIL.
        after = user.lookup("smtp", "before-kill")
        assert (after.status, after.data) == (Status.ERR, b"")
        assert user._sock is not held
        assert user.update("smtp", "after-kill", b"kept").ok
        assert user.lookup("smtp", "after-kill").data == b"kept"
    finally:
        stop.set()
        for load in loads:
            load.join(WAIT)
        user.close()
    assert not any(load.is_alive() for load in loads)
    # No call failed: a request caught by the kill fails its first attempt
    # (EPIPE, or EOF instead of the reply) and the library's second attempt,
    # 1 s later, connects to the listener the master still holds, which makes
    # the master fork the new tlsmgr.  A FAIL would need both attempts to fail.
    failed = [r for load in loads for r in load.results if r[0] != Status.OK]
    assert failed == []
    assert inst.tlsmgr_pids() == [new]
    inst.wait_log(rf"process \S+/tlsmgr pid {old} killed by signal 9")
    assert "throttl" not in inst.log()


def test_master_restarts_a_killed_tlsmgr_on_the_next_connection(inst):
    with connect(inst) as sock:
        assert ask(sock, b"request", b"seed", b"size", b"8")[0] == (b"status", OK)
    old = inst.tlsmgr_pid()
    # The reply goes out before the AVAIL that completes the child's first use: killed
    # before the master has counted it, a child is a bad start and throttled, as in
    # Postfix. So the kill waits until master.state shows the use.
    inst.wait_for(lambda: uses(inst, old) >= 1, "the master to count tlsmgr's first use")
    os.kill(old, signal.SIGKILL)
    inst.wait_gone(old)
    inst.wait_log(rf"pid {old} killed by signal 9")
    assert inst.tlsmgr_pids() == []  # nothing is forked before a client comes
    with connect(inst) as sock:
        assert ask(sock, b"request", b"seed", b"size", b"8")[0] == (b"status", OK)
    assert inst.tlsmgr_pid(other_than=old) != old


def uses(inst: MiniInstance, pid: int) -> int:
    """The child's use count in master.state (0 when it is not there yet)."""
    children = (c for s in inst.state()["services"] for c in s["children"])
    return next((c["use_count"] for c in children if c["pid"] == pid), 0)


def test_client_keeps_its_connection(inst):
    """The premise of the kill -9 test: without a kill, no reconnection."""
    with inst.client(timeout=WAIT) as client:
        assert client.seed(8).ok
        held = client._sock  # white box: the library keeps one connection
        for _ in range(3):
            assert client.seed(8).ok
        assert client._sock is held


# Clients that pipeline lookups of a big session and never read --------------------

FLOODERS = 10
# tlsmgr's peak RSS (VmHWM) while FLOODERS connections have each sent 64 KiB of pipelined
# lookups of a 32 KiB session (the largest a cache stores) and read nothing.  Each read is
# 1,524 lookups, whose replies come to 67 MB: answered in full, ten of them would take
# about 670 MB.  With flow
# control a connection holds at most its 256 KiB of output (plus one reply) and one read
# of input, about 4 MB for all ten; tlsmgr itself starts at about 30 MB.  Generous: 100 MB.
FLOOD_RSS_BOUND_KB = 100 * 1024


def test_clients_that_pipeline_big_lookups_and_never_read_stay_bounded(inst):
    session = os.urandom(MAX_SESSION)  # the largest session a cache stores
    reply = b"status\0" + OK + b"\0session\0" + base64.b64encode(session) + b"\0\0"
    good = connect(inst)
    flooders: list[socket.socket] = []
    try:
        good.sendall(update(b"x", session))
        assert read_reply(good) == [(b"status", OK)]
        pid = inst.tlsmgr_pid()
        one = lookup(b"x")  # 43 bytes: 1,524 of them in 64 KiB
        flood = one * (65536 // len(one))
        for _ in range(FLOODERS):
            sock = connect(inst)
            sock.sendall(flood)
            flooders.append(sock)
        # Every flooder has been answered as far as its output has room...
        for sock in flooders:
            assert select.select([sock], [], [], WAIT)[0], "no reply to a flooder"
        # ...and a well-behaved client is answered meanwhile, again and again.
        for n in range(20):
            good.sendall(update(b"good-%d" % n, b"session %d" % n))
            assert read_reply(good) == [(b"status", OK)]
            good.sendall(lookup(b"good-%d" % n))
            want = base64.b64encode(b"session %d" % n)
            assert read_reply(good) == [(b"status", OK), (b"session", want)]
        assert memory_kb(pid)["VmHWM"] < FLOOD_RSS_BOUND_KB
        # The rest was kept, not lost: a flooder that reads gets every reply, in order,
        # and its connection still works afterwards.
        reader = flooders[0]
        got = recv_exactly(reader, len(reply) * (65536 // len(one)))
        assert got[: len(reply)] == reply and got[-len(reply) :] == reply
        assert got.count(b"status\0") == 65536 // len(one)
        assert ask(reader, b"request", b"seed", b"size", b"8")[0] == (b"status", OK)
        assert memory_kb(pid)["VmHWM"] < FLOOD_RSS_BOUND_KB
        assert inst.tlsmgr_pids() == [pid]
    finally:
        good.close()
        for sock in flooders:
            sock.close()


# Malformed requests -----------------------------------------------------------------

FAIL_STATUS_ONLY = b"status\x004294967294\x00\x00"


def _recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # closed with the flood unread
        pass
    return data


def _client_warnings(inst: MiniInstance) -> list[str]:
    return [line for line in inst.log().splitlines() if "tlsmgr" in line and "warning:" in line]


def test_a_flood_of_nul_bytes_gets_three_fail_replies_and_a_closed_connection(inst):
    other = connect(inst)
    flooder = connect(inst)
    try:
        flooder.sendall(b"\0" * 5000)  # 5,000 empty attribute lists
        assert _recv_until_closed(flooder) == FAIL_STATUS_ONLY * 3
        inst.wait_log(r"tlsmgr.*closing the connection from .* after 3 malformed requests")
        assert len(_client_warnings(inst)) == 4  # three malformed requests and the close
        # Everybody else carries on.
        assert ask(other, b"request", b"seed", b"size", b"8")[0] == (b"status", OK)
    finally:
        other.close()
        flooder.close()


def test_malformed_request_warnings_are_rate_limited(inst):
    for _ in range(30):  # 30 connections, each flooding: 120 warnings without a limit
        with connect(inst) as flooder:
            flooder.sendall(b"\0" * 5000)
            assert _recv_until_closed(flooder) == FAIL_STATUS_ONLY * 3
    with inst.client(timeout=WAIT) as client:
        stats = dict(client.stats().items)
    assert stats["requests.malformed"] == "90"
    suppressed = int(stats["warnings.suppressed"])
    # A warning that postlogd's full socket could not take (a loaded machine) is counted
    # as dropped, and reported later by a warning of its own.
    dropped = int(stats["log.dropped"])
    logged = [w for w in _client_warnings(inst) if "earlier log record(s) dropped" not in w]
    assert suppressed + dropped == 120 - len(logged)
    assert 0 < len(logged) <= service.WARN_BURST
