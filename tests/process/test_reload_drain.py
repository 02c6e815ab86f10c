"""A reload loses nothing: our master and our tlsmgr (chrooted, unprivileged) across reloads.

The master gives the service a new status channel and starts a successor at once;
once the successor says it serves, the old tlsmgr sees EOF on fd 5 and drains
(answers what it has read, hands its connections over or closes each once
answered, leaves when none is left or at the 1 s deadline).  Old and new run side
by side for a moment, each on its own cache files; the exchange file is the one they
share.  Not timed: the reload figures (failures, longest gap) are bench/ figures.
"""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest

from support import procs
from support.attrs import read_reply, request
from support.instance import MiniInstance, running_tlsmgr
from support.load import ClosedLoop
from support.sockets import recv_all
from tlsmgr.protocol import Status

pytestmark = pytest.mark.root

MAIN_CF = {
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
}
SEED = request(b"request", b"seed", b"size", b"32")
GREETING = [(b"protocol", b"tlsmgr_protocol")]


@pytest.fixture
def inst():
    with running_tlsmgr(MAIN_CF) as instance:
        yield instance


def assert_clean_log(inst: MiniInstance) -> None:
    for line in inst.log().splitlines():
        assert not any(w in line for w in ("warning:", "error:", "fatal:", "panic:")), line


def greeted(inst: MiniInstance):
    """A new connection, greeting read: the tlsmgr that accepted it holds it."""
    sock = inst.connect("private/tlsmgr")
    assert read_reply(sock) == GREETING
    return sock


def seed_ok(sock) -> None:
    sock.sendall(SEED)
    assert read_reply(sock)[0] == (b"status", b"0")


def served_by_one(inst: MiniInstance) -> int:
    """Start tlsmgr (one request) and wait until it rests; its pid."""
    with greeted(inst) as sock:
        seed_ok(sock)
    pid = inst.tlsmgr_pid()
    inst.wait_for(lambda: procs.waits_in_loop(pid), f"tlsmgr {pid} to wait for work")
    return pid


def reload(inst: MiniInstance) -> None:
    os.kill(inst.master_pid(), signal.SIGHUP)


def wait_draining(inst: MiniInstance, pid: int) -> None:
    """Wait until the master's state file shows tlsmgr's child `pid` draining."""

    def states() -> dict[int, str]:
        return {c["pid"]: c["state"] for c in inst.state()["services"][0]["children"]}

    inst.wait_for(lambda: states().get(pid) == "draining", f"the state to show {pid} draining")


def listener_closed(pid: int, listener: str) -> bool:
    return listener not in procs.fd_targets(pid).values()


def cache_inodes(pid: int) -> set[int]:
    """The inodes of the cache files (and age indexes) the process has open."""
    found = set()
    for fd, target in procs.fd_targets(pid).items():
        if "_scache" in target:
            found.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
    return found


def exchange_inode(pid: int) -> int:
    [fd] = [fd for fd, target in procs.fd_targets(pid).items() if "prng_exch" in target]
    return os.stat(f"/proc/{pid}/fd/{fd}").st_ino


def test_twenty_reloads_under_load_lose_no_request(inst):
    served_by_one(inst)
    server = inst.wait_spawn_server("tlsmgr")
    with ClosedLoop(inst.socket_path, [SEED], clients=4) as load:
        load.wait_served(100)
        for n in range(1, 21):
            reload(inst)
            # The master has taken this SIGHUP (one that came before it took the last
            # would be one reload for two); the old tlsmgr serves until its successor does.
            inst.wait_log("reload -- version", count=n)
            load.wait_served(100)
    assert load.failures == []
    # Every reload started a successor; the drained tlsmgrs all left, cleanly.
    inst.wait_for(lambda: len(inst.tlsmgr_pids()) == 1, "the drained tlsmgrs to leave")
    inst.wait_for(lambda: inst.state()["services"][0]["spawns"] == 21, "the state file")
    # The successors came from the one spawn server, kept across the reloads (its program
    # did not change), and were told to leave and drained as exec'd children are.
    forks = inst.wait_for(lambda: inst.spawn_server("tlsmgr")["forks"] >= 20 or None, "20 forks")
    assert forks and inst.spawn_server("tlsmgr")["pid"] == server
    inst.wait_log("reload -- version", count=20)
    assert_clean_log(inst)


def forked_ahead(inst: MiniInstance) -> int:
    """The tlsmgr the spawn server forked ahead, waiting for its request: the next child."""
    server = inst.wait_spawn_server("tlsmgr")

    def one() -> int | None:
        waiting = [pid for mid in procs.children_of(server) for pid in procs.children_of(mid)]
        return waiting[0] if len(waiting) == 1 else None

    return inst.wait_for(one, "the spawn server's child forked ahead")


def test_the_old_tlsmgr_serves_until_its_successor_does(inst):
    """The master starts the successor at the reload and tells the old tlsmgr to leave
    only when the successor says it serves: meanwhile the old one keeps its listener
    and answers new clients, so no client waits for a tlsmgr to start."""
    old = served_by_one(inst)
    listener = procs.fd_targets(old)[6]
    successor = forked_ahead(inst)
    os.kill(successor, signal.SIGSTOP)  # it cannot take its request, nor start
    try:
        reload(inst)
        wait_draining(inst, old)  # replaced: it counts no more
        starting = lambda: inst.state()["services"][0]["starting"] == 1  # noqa: E731
        inst.wait_for(starting, "the master to ask for the successor at once")
        with greeted(inst) as sock:  # accepted by the old tlsmgr, the only one serving
            seed_ok(sock)
        assert not listener_closed(old, listener)
    finally:
        os.kill(successor, signal.SIGCONT)
    inst.wait_gone(old)  # the successor serves: the old one was told, drained, left
    assert inst.tlsmgr_pids() == [successor]
    with greeted(inst) as sock:
        seed_ok(sock)
    assert_clean_log(inst)


def test_a_client_connected_just_before_the_reload_keeps_its_connection(inst):
    """Its first request is answered by the old tlsmgr, which then hands the connection
    to the successor: the client never sees it close."""
    old = served_by_one(inst)
    sock = greeted(inst)  # accepted by the old tlsmgr, nothing sent yet
    listener = procs.fd_targets(old)[6]
    reload(inst)
    inst.wait_for(lambda: listener_closed(old, listener), "the old tlsmgr to stop accepting")
    seed_ok(sock)
    with greeted(inst) as other:  # the master starts the successor
        seed_ok(other)
    inst.wait_gone(old)  # it handed both over and left
    new = inst.tlsmgr_pid()
    assert new != old
    seed_ok(sock)  # answered by the successor, on the same connection
    inst.wait_log(rf"tlsmgr\[{old}\]: drained: 1 connection\(s\) handed over to the successor")
    assert_clean_log(inst)


def test_status_shows_the_draining_child(inst):
    old = served_by_one(inst)
    os.kill(old, signal.SIGSTOP)  # it cannot finish its drain while the test looks
    try:
        reload(inst)
        wait_draining(inst, old)
        status = inst.cli("status", "-v").check().stdout
        assert re.search(r"child\(ren\) \([01] idle, 1 draining\)", status)  # its successor?
        assert f"  pid {old} draining, " in status
    finally:
        os.kill(old, signal.SIGCONT)
    inst.wait_gone(old)


def test_old_and_new_tlsmgr_never_share_a_cache_inode(inst):
    old = served_by_one(inst)
    held = greeted(inst)  # keeps the old one draining once it runs again
    old_caches = cache_inodes(old)
    assert len(old_caches) == 4  # smtpd (btree) and smtp (hash), each with its age index
    os.kill(old, signal.SIGSTOP)  # the old tlsmgr holds its files, frozen mid-drain
    try:
        reload(inst)
        wait_draining(inst, old)
        with greeted(inst) as sock:  # the master starts the successor at once
            seed_ok(sock)
        new = inst.tlsmgr_pid(other_than=old)
        new_caches = cache_inodes(new)
        assert len(new_caches) == 4 and new_caches.isdisjoint(old_caches)
        assert cache_inodes(old) == old_caches  # still its own, now without names
        names = {os.stat(inst.data / f).st_ino for f in os.listdir(inst.data) if "_scache" in f}
        assert names == new_caches
        assert exchange_inode(old) == exchange_inode(new)  # one file, written in place
    finally:
        os.kill(old, signal.SIGCONT)
    seed_ok(held)  # the old one finishes its drain
    inst.wait_gone(old)
    assert not [f for f in os.listdir(inst.data) if f.endswith(".tmp")]
    assert_clean_log(inst)


def test_the_drain_deadline_closes_stragglers(inst):
    """A connection in the middle of a request is closed at the deadline; one that is
    between requests (it had its greeting) goes to the successor, which the master
    started at the reload."""
    old = served_by_one(inst)
    silent = greeted(inst)  # never sends anything
    half = greeted(inst)
    half.sendall(SEED[:10])  # half a request
    reload(inst)
    assert recv_all(half) == b""
    inst.wait_gone(old)
    inst.wait_log(r"tlsmgr\[\d+\]: drain deadline: closing 1 connection\(s\)")
    seed_ok(silent)  # answered by the successor
    assert inst.tlsmgr_pid() != old
    assert_clean_log(inst)


def test_the_client_library_retries_when_tlsmgr_dies(inst):
    """attr_clnt's two attempts: a killed tlsmgr costs the client nothing but time."""
    client = inst.client(timeout=20.0)
    assert client.seed(16).ok
    first = inst.tlsmgr_pid()
    inst.wait_for(lambda: procs.waits_in_loop(first), "tlsmgr to wait for work")
    # Killed between two requests: the next one finds the connection closed and
    # goes to a new tlsmgr.
    os.kill(first, signal.SIGKILL)
    inst.wait_gone(first)
    assert client.seed(16).ok
    second = inst.tlsmgr_pid(other_than=first)
    inst.wait_for(lambda: procs.waits_in_loop(second), "the new tlsmgr to wait for work")
    # Killed with the request sent and no reply yet: the connection ends before a
    # reply, and the request is sent again on a new connection after 1 s.
    results = _killed_while_asked(inst, client, second)
    assert results.status == Status.OK
    assert inst.tlsmgr_pid() not in (first, second)
    # Without the second attempt the same death is a FAIL.
    once = inst.client(timeout=20.0, attempts=1)
    assert once.seed(16).ok
    third = inst.tlsmgr_pid()
    inst.wait_for(lambda: procs.waits_in_loop(third), "the newest tlsmgr to wait for work")
    result = _killed_while_asked(inst, once, third)
    assert result.status == Status.FAIL
    assert result.reason.startswith(f"problem talking to server {inst.socket_path}: ")


def _killed_while_asked(inst: MiniInstance, client, pid: int):
    """client.seed() over its open connection to tlsmgr `pid`, which is killed once the
    request is sent and the client waits for the reply; the client's Result."""
    os.kill(pid, signal.SIGSTOP)  # it cannot answer now
    asked: dict = {}

    def ask() -> None:
        asked["tid"] = threading.get_native_id()
        asked["result"] = client.seed(16)

    thread = threading.Thread(target=ask)
    thread.start()
    inst.wait_for(lambda: "tid" in asked and procs.blocked_in(asked["tid"], "do_sys_poll"),
                  "the client to wait for its reply")  # fmt: skip
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    return asked["result"]
