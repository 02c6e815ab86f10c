"""skeleton.run_loop's status records, with a real EventLoop and a real socketpair.

Busy turns in a row stay TAKEN: AVAIL goes out when the loop is about to wait, or after
MAX_BUSY_TURNS busy turns at the latest; a turn without requests writes nothing.
"""

from __future__ import annotations

import os
import socket
import types

from master import proto, skeleton
from master.events import EventLoop


def _run(
    turns: int, always_ready: bool, alone: bool = False, asked: bool = False
) -> tuple[list[int], int]:
    """Run `turns` loop turns whose read callback counts as a request.

    Returns the avail flags sent and the number of requests served."""
    master_end, child_end = socket.socketpair()
    rfd, wfd = os.pipe()
    events = EventLoop()
    status = skeleton.StatusChannel(child_end.fileno(), os.getpid(), 1, lambda: None, alone, asked)
    ctx = types.SimpleNamespace(status=status, events=events)
    os.write(wfd, b"x")
    left, served = [turns], [0]

    def on_read(fd: int, _loop: EventLoop) -> None:
        served[0] += 1
        status.busy()
        if not always_ready:
            os.read(fd, 1)  # drained: the next request comes while the loop waits
            events.request_timer(0.002, lambda _loop: os.write(wfd, b"x"))

    def keep_going() -> bool:
        left[0] -= 1
        return left[0] >= 0

    events.enable_read(rfd, on_read)
    try:
        skeleton.run_loop(ctx, keep_going, lambda _ctx: 0.01)
        master_end.setblocking(False)
        data = b""
        while True:
            try:
                data += master_end.recv(4096)
            except BlockingIOError:
                break
    finally:
        events.close()
        for fd in (rfd, wfd):
            os.close(fd)
        master_end.close()
        child_end.close()
    records = [data[i : i + proto.STATUS_SIZE] for i in range(0, len(data), proto.STATUS_SIZE)]
    return [proto.decode_status(r).avail for r in records], served[0]


def test_busy_turns_stay_taken_until_the_bound():
    turns = 3 * skeleton.MAX_BUSY_TURNS + 5
    avails, served = _run(turns, always_ready=True)
    assert served == turns
    # TAKEN, then AVAIL after MAX_BUSY_TURNS further busy turns, and so on; AVAIL at the end.
    assert avails == [0, 1] * (len(avails) // 2)
    cycles = len(avails) // 2
    assert turns // (skeleton.MAX_BUSY_TURNS + 1) <= cycles <= turns // skeleton.MAX_BUSY_TURNS + 1


def test_avail_before_the_loop_waits():
    avails, served = _run(20, always_ready=False)
    # A request, then a turn that finds nothing ready: one TAKEN/AVAIL pair per request.
    assert served >= 5 and avails == [0, 1] * served


def test_a_service_of_maxproc_1_sends_one_pair_then_nothing():
    # The master can never start a second child of it: after the first cycle, which shows
    # the master a good start, records would only cost a system call and a wake-up each.
    avails, served = _run(20, always_ready=False, alone=True)
    assert served >= 5 and avails == [0, 1]
    avails, served = _run(3 * skeleton.MAX_BUSY_TURNS, always_ready=True, alone=True)
    assert avails == [0, 1]


def test_asked_by_our_master_a_child_says_ready_once_when_its_loop_starts():
    # READY (2) before any request: at a reload the master tells the old children to
    # leave once it came. Unasked (Postfix's master), nothing is sent at start-up.
    avails, served = _run(20, always_ready=False, alone=True, asked=True)
    assert served >= 5 and avails == [proto.STATUS_READY, 0, 1]
