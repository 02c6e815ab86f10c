"""master/events.py: I/O callbacks, timers, signals, interrupts, watchdog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from master.events import EventLoop, Interrupted

WAIT = 10.0  # hang guard only


@pytest.fixture
def loop():
    lp = EventLoop()
    yield lp
    lp.close()


def test_read_and_write_callbacks(loop):
    a, b = socket.socketpair()
    seen = []
    with a, b:
        loop.enable_read(a.fileno(), lambda fd, lp: seen.append(("read", a.recv(10))))
        loop.enable_write(b.fileno(), lambda fd, lp: seen.append(("write", fd)))
        loop.run_once(WAIT)
        assert seen == [("write", b.fileno())]
        loop.disable_write(b.fileno())
        assert not loop.watching(b.fileno())
        b.send(b"hi")
        loop.run_once(WAIT)
        assert seen[-1] == ("read", b"hi")
        loop.disable(a.fileno())
        b.send(b"again")
        loop.run_once(0)
        assert seen[-1] == ("read", b"hi")


def test_read_and_write_on_one_fd(loop):
    a, b = socket.socketpair()
    seen = []
    with a, b:
        loop.enable_read(a.fileno(), lambda fd, lp: seen.append("read") or a.recv(10))
        loop.enable_write(a.fileno(), lambda fd, lp: seen.append("write"))
        b.send(b"x")
        loop.run_once(WAIT)
        assert sorted(seen) == ["read", "write"]
        loop.disable_write(a.fileno())
        assert loop.watching(a.fileno())
        seen.clear()
        b.send(b"y")
        loop.run_once(WAIT)
        assert seen == ["read"]


def test_descriptor_disabled_in_the_same_turn_gets_no_callback(loop):
    # Two descriptors ready in one turn; whichever callback runs first closes
    # the other and puts a new registration on the same number.  The old
    # callback must not run, and the new one must not see the old readiness.
    pairs = [socket.socketpair() for _ in range(2)]
    calls = []
    replacement = []

    def make(i):
        def cb(fd, lp):
            calls.append(i)
            other = pairs[1 - i][0]
            number = other.fileno()
            lp.disable(number)
            other.close()
            new_r, new_w = socket.socketpair()
            replacement.extend([new_r, new_w])
            if new_r.fileno() == number or new_w.fileno() == number:
                reused = new_r if new_r.fileno() == number else new_w
                lp.enable_read(reused.fileno(), lambda fd, lp: calls.append("new"))

        return cb

    for i, (r, w) in enumerate(pairs):
        w.send(b"x")
        loop.enable_read(r.fileno(), make(i))
    loop.run_once(WAIT)
    assert len(calls) == 1 and calls[0] in (0, 1)
    for s in replacement + [s for p in pairs for s in p]:
        s.close()


def test_readable_looks_without_dispatching(loop):
    a, b = socket.socketpair()
    calls = []
    loop.enable_read(a.fileno(), lambda fd, _loop: calls.append(fd))
    assert not loop.readable(a.fileno())
    b.send(b"x")
    assert loop.readable(a.fileno())
    assert calls == []  # nothing was called, and the byte is still there
    assert a.recv(1) == b"x"
    assert not loop.readable(a.fileno())
    loop.disable(a.fileno())
    a.close()
    b.close()


def test_timers_run_in_order_once(loop):
    seen = []
    loop.request_timer(0.02, lambda lp: seen.append("b"))
    loop.request_timer(0.0, lambda lp: seen.append("a"))
    cancelled = loop.request_timer(0.01, lambda lp: seen.append("never"))
    loop.cancel_timer(cancelled)
    deadline = time.monotonic() + WAIT
    while len(seen) < 2 and time.monotonic() < deadline:
        loop.run_once(WAIT)
    assert seen == ["a", "b"]
    assert loop.next_timer_delay() is None


def test_cancelled_timers_do_not_accumulate(loop):
    # A timer re-armed per request must not grow the queue without bound.
    for _ in range(10000):
        loop.cancel_timer(loop.request_timer(3600, lambda lp: None))
    assert len(loop._timers) < 200
    keep = loop.request_timer(3600, lambda lp: None)
    assert 0 < loop.next_timer_delay() <= 3600
    loop.cancel_timer(keep)
    loop.cancel_timer(keep)  # twice is harmless
    assert loop.next_timer_delay() is None


def test_signal_callback_runs_from_the_loop(loop):
    seen = []
    loop.on_signal(signal.SIGUSR1, lambda signum, lp: seen.append(signum))
    os.kill(os.getpid(), signal.SIGUSR1)
    assert seen == []  # the handler only records
    loop.run_once(WAIT)
    assert seen == [signal.SIGUSR1]


def test_signals_interrupt_raises_inside_the_block(loop):
    loop.on_signal(signal.SIGUSR1, lambda signum, lp: None)
    with pytest.raises(Interrupted) as info:
        with loop.signals_interrupt([signal.SIGUSR1]):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(WAIT)  # a blocking call, ended by the signal
    assert info.value.signum == signal.SIGUSR1


def test_signals_interrupt_pending_signal_raises_at_entry(loop):
    seen = []
    loop.on_signal(signal.SIGUSR1, lambda signum, lp: seen.append(signum))
    os.kill(os.getpid(), signal.SIGUSR1)
    with pytest.raises(Interrupted):
        with loop.signals_interrupt([signal.SIGUSR1]):
            pytest.fail("a pending signal must raise before the block runs")
    loop.run_once(0)
    assert seen == []  # consumed by the interrupt


def test_signals_interrupt_ignores_other_signals(loop):
    seen = []
    loop.on_signal(signal.SIGUSR1, lambda signum, lp: seen.append(signum))
    loop.on_signal(signal.SIGUSR2, lambda signum, lp: seen.append(signum))
    with loop.signals_interrupt([signal.SIGUSR2]):
        os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_once(WAIT)
    assert seen == [signal.SIGUSR1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_watchdog_kills_a_stuck_turn():
    result = _run(
        """
        import time
        from master.events import EventLoop
        loop = EventLoop()
        loop.set_watchdog(1)
        loop.request_timer(0, lambda lp: time.sleep(30))
        loop.run_once(None)
        print("survived")
        """
    )
    assert result.returncode == -signal.SIGALRM, result
    assert "survived" not in result.stdout


def test_watchdog_spares_an_idle_loop():
    # The wait is capped below the watchdog, so idling past it is safe.
    result = _run(
        """
        from master.events import EventLoop
        loop = EventLoop()
        loop.set_watchdog(1)
        done = []
        loop.request_timer(1.6, lambda lp: done.append(1))
        while not done:
            loop.run_once(None)
        loop.close()
        print("idle ok")
        """
    )
    assert result.returncode == 0, result
    assert result.stdout.strip() == "idle ok"


def test_close_restores_default_handlers():
    lp = EventLoop()
    lp.on_signal(signal.SIGUSR1, lambda signum, loop: None)
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
