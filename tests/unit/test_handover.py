"""master.handover: connections passed from a draining child to its successor, for real.

The test process is the successor (an Inbox on a real EventLoop); a forked child is the
draining one (an Outbox), since a child never hands over to itself.  The connections
passed are socketpairs whose other ends the test keeps: a byte written there must arrive
on the descriptor the successor adopted.
"""

from __future__ import annotations

import os
import pwd
import socket

import pytest

from master.events import EventLoop
from master.handover import BATCH, Inbox, Outbox
from support.waiting import wait_until


@pytest.fixture
def loop():
    events = EventLoop()
    yield events
    events.close()


def _in_child(work) -> int:
    """Run work() in a forked child; its exit status (0 when work() returned True)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if work() else 1)
        except BaseException:
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _run_until(loop: EventLoop, predicate, what: str) -> None:
    wait_until(lambda: loop.run_once(0.05) or predicate(), what)


def test_connections_arrive_in_the_successor_still_connected(folder, loop):
    path = os.path.join(folder, "handover")
    adopted: list[int] = []
    inbox = Inbox(path, loop, adopted.append)
    pairs = [socket.socketpair() for _ in range(BATCH + 5)]  # two messages
    try:

        def drain() -> bool:
            outbox = Outbox(path)
            fds = [ours.fileno() for ours, _theirs in pairs]
            sent = outbox.connected() and outbox.send(fds[:BATCH]) and outbox.send(fds[BATCH:])
            outbox.close()
            return bool(sent)

        assert _in_child(drain) == 0
        _run_until(loop, lambda: len(adopted) == len(pairs), "every descriptor")
        for fd, (_ours, theirs) in zip(adopted, pairs, strict=True):
            assert not os.get_inheritable(fd)
            theirs.sendall(b"still there")
            assert os.read(fd, 100) == b"still there"
            os.close(fd)
    finally:
        inbox.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def test_a_successor_told_to_leave_adopts_what_was_sent_to_it_first(folder, loop):
    """Reloads in quick succession: a predecessor hands a connection over while the
    successor is told to leave.  What was sent before close() is adopted (here its link
    was not even accepted yet: no loop turn ran); a send after it fails, and the sender
    keeps the connection to hand it on elsewhere."""
    path = os.path.join(folder, "handover")
    adopted: list[int] = []
    inbox = Inbox(path, loop, adopted.append)
    first, second = socket.socketpair(), socket.socketpair()
    sent_r, sent_w = os.pipe()
    closed_r, closed_w = os.pipe()

    def predecessor() -> bool:
        outbox = Outbox(path)
        sent = outbox.connected() and outbox.send([first[0].fileno()])
        os.write(sent_w, b"x")
        os.read(closed_r, 1)  # the successor has closed its Inbox
        later = outbox.send([second[0].fileno()])
        return sent and not later

    pid = os.fork()
    if pid == 0:
        os._exit(0 if predecessor() else 1)
    try:
        os.read(sent_r, 1)
        inbox.close()
        os.write(closed_w, b"x")
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert len(adopted) == 1
        first[1].sendall(b"still there")
        assert os.read(adopted[0], 100) == b"still there"
        os.close(adopted[0])
    finally:
        for fd in (sent_r, sent_w, closed_r, closed_w):
            os.close(fd)
        for pair in (first, second):
            for sock in pair:
                sock.close()


def test_the_newest_child_owns_the_name(folder, loop):
    path = os.path.join(folder, "handover")
    first: list[int] = []
    newest: list[int] = []
    older = Inbox(path, loop, first.append)
    inbox = Inbox(path, loop, newest.append)  # renamed over the older one's name
    ours, theirs = socket.socketpair()
    try:
        outbox = Outbox(path)
        assert _in_child(lambda: outbox.connected() and outbox.send([ours.fileno()])) == 0
        _run_until(loop, lambda: newest, "the descriptor")
        assert first == []
        os.close(newest[0])
    finally:
        older.close()
        inbox.close()
        ours.close()
        theirs.close()


def test_a_child_never_hands_over_to_itself(folder, loop):
    path = os.path.join(folder, "handover")
    inbox = Inbox(path, loop, lambda fd: None)
    try:
        assert not Outbox(path).connected()  # its own inbox, still bound
    finally:
        inbox.close()
    assert not Outbox(path).connected()  # closed: the name leads nowhere now


@pytest.mark.root
def test_a_peer_of_another_uid_is_refused(folder, loop):
    path = os.path.join(folder, "handover")
    adopted: list[int] = []
    inbox = Inbox(path, loop, adopted.append)
    os.chmod(folder, 0o777)
    os.chmod(path, 0o777)
    nobody = pwd.getpwnam("nobody").pw_uid
    ours, theirs = socket.socketpair()

    def stranger() -> bool:
        os.setuid(nobody)
        outbox = Outbox(path)
        # Its own check refuses the root-owned successor; go round it as a forger would.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        socket.send_fds(sock, [b"H"], [ours.fileno()])
        return not outbox.connected()

    try:
        assert _in_child(stranger) == 0
        for _ in range(10):
            loop.run_once(0.05)
        assert adopted == []
    finally:
        inbox.close()
        ours.close()
        theirs.close()


def test_without_a_folder_to_bind_in_nothing_is_received(folder, loop):
    inbox = Inbox(os.path.join(folder, "no", "such", "handover"), loop, lambda fd: None)
    inbox.close()
    assert os.listdir(folder) == []
