"""The event manager: selectors, a timer queue, signals and a watchdog, in one loop.

SYNOPSIS
    from master.events import EventLoop, Interrupted

    loop = EventLoop()
    loop.enable_read(fd, callback)      # callback(fd, loop) when readable
    loop.enable_write(fd, callback)     # callback(fd, loop) when writable
    loop.disable_read(fd); loop.disable_write(fd); loop.disable(fd)
    loop.watching(fd) -> bool
    loop.readable(fd) -> bool           # input waiting now (nothing dispatched)
    handle = loop.request_timer(delay, callback)   # callback(loop)
    loop.cancel_timer(handle)
    loop.next_timer_delay() -> float | None
    loop.on_signal(signum, callback)    # callback(signum, loop), run by the loop
    loop.ignore_signal(signum); loop.default_signal(signum)
    with loop.signals_interrupt(signums): ...  # those signals raise Interrupted
    loop.set_watchdog(seconds)          # 0 turns it off
    reset_signals()                     # a forked child: signals as a fresh exec has them
    loop.run_once(timeout)              # timeout None = wait for an event
    loop.run_once(timeout, before_wait=f)   # f() only when about to wait
    loop.close()

DESCRIPTION
    One event manager per process (Postfix's events.c).  The only module
    that touches `selectors` or installs signal handlers: a signal handler
    only records the signal number and writes a byte to a self-pipe
    (signal.set_wakeup_fd); run_once() then calls the registered callback
    from the loop, in the order the signals arrived, after the I/O and
    timer callbacks of that turn.

    run_once(timeout) waits for the earliest of: I/O readiness, the first
    timer, a signal, or `timeout` seconds; then runs what is ready: I/O
    callbacks, then due timers, then signal callbacks.  A timer callback
    runs once; re-arm it from the callback for periodic work (Postfix's
    event_request_timer idiom).  Timers use the monotonic clock.

    Callbacks may register, disable or close descriptors freely, including
    their own and those of other ready descriptors: a descriptor disabled
    during a turn gets no further callback in that turn, even when its
    number is reused at once by accept() (each registration is its own
    object, and the turn checks it is still the current one).

    Cancelled timers are dropped lazily; when they outnumber the live ones
    the queue is rebuilt, so re-arming a timer per request does not grow
    memory.

    signals_interrupt() is for code that blocks outside the loop (a
    single_server service talking to its one client): inside the `with`
    block, a signal among `signums` that was registered with on_signal()
    raises Interrupted(signum) from the handler instead of being recorded
    (one already pending raises at entry), so a blocking recv() or
    sleep ends at once.  Interrupted derives from BaseException, so that a
    service's `except Exception` does not swallow it.

    set_watchdog(seconds) is Postfix's watchdog(3) done with the kernel's
    alarm(2) and SIGALRM's default action: when a wait ends, the alarm is
    re-armed to `seconds` if it was last armed a second (a quarter of
    the watchdog, when that is shorter) or more ago; before a wait it is
    re-armed if half the watchdog has passed, and the wait never lasts
    more than seconds/2.  A turn whose callbacks run longer than about
    `seconds` - 1 (a request stuck in Python or in C code) kills the
    process with SIGALRM; the master logs it as "killed by signal 14".
    An idle loop never trips it, and a busy one pays for alarm(2) at most
    once a second, not twice a turn.

    An exception in a callback propagates out of run_once(): the caller
    (the top of the daemon's loop) decides to log it and exit.

    reset_signals() is for a process forked by a spawn server (zygote.py)
    that is to be what an exec'd program is: every disposition as a
    freshly started Python has it (SIGINT its KeyboardInterrupt handler,
    SIGPIPE and SIGXFSZ ignored, all others default), no wake-up fd, no
    pending alarm, an empty signal mask.  Call it before any EventLoop
    exists in that process.

SECURITY
    Signal handlers do nothing but record (no logging, no I/O beyond the
    wake-up byte), except inside signals_interrupt(), where they raise.

DIAGNOSTICS
    enable_read()/enable_write() on a closed descriptor raise
    ValueError/OSError from selectors.

BUGS
    The watchdog has one-second granularity (alarm(2)); a watchdog of 1 s
    may fire after 1 s of work in the same turn.  It leaves no log line of
    its own: the process dies by the signal.

SEE ALSO
    src/util/events.c, watchdog.c (Postfix), selectors(3), signal.set_wakeup_fd
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import select
import selectors
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

IOCallback = Callable[[int, "EventLoop"], Any]
TimerCallback = Callable[["EventLoop"], Any]
SignalCallback = Callable[[int, "EventLoop"], Any]

# Rebuild the timer queue when this many cancelled timers are waiting in
# it and they are more than half of it.
_COMPACT_MIN = 64


# What a freshly started CPython does with signals (Python/pylifecycle.c):
# SIGPIPE and SIGXFSZ ignored, SIGINT raises KeyboardInterrupt, all else default.
_FRESH_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def reset_signals() -> None:
    """Signal state as a freshly exec'd Python has it; see the module docstring."""
    signal.set_wakeup_fd(-1)
    signal.alarm(0)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if signum == signal.SIGINT:
            fresh: Any = signal.default_int_handler
        elif signum in _FRESH_IGNORED:
            fresh = signal.SIG_IGN
        else:
            fresh = signal.SIG_DFL
        if signal.getsignal(signum) is not fresh:
            # Some numbers (glibc's own real-time signals) cannot be set: they stay.
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, fresh)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


class Interrupted(BaseException):
    """A signal arrived inside EventLoop.signals_interrupt()."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Timer:
    """A timer handle: request_timer() returns it, cancel_timer() takes it.

    Timers order by (when, seq), the order in which they fire.
    """

    __slots__ = ("when", "seq", "callback", "cancelled")

    def __init__(self, when: float, seq: int, callback: TimerCallback) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def __repr__(self) -> str:
        return f"Timer(when={self.when!r}, seq={self.seq!r}, cancelled={self.cancelled!r})"


class _Watch:
    """One registration of one descriptor; the selector key's data."""

    __slots__ = ("read", "write")

    def __init__(self) -> None:
        self.read: IOCallback | None = None
        self.write: IOCallback | None = None

    def mask(self) -> int:
        return (selectors.EVENT_READ if self.read else 0) | (
            selectors.EVENT_WRITE if self.write else 0
        )


class EventLoop:
    """Selectors + timers + signal wake-ups + watchdog; see the module docstring."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._watches: dict[int, _Watch] = {}
        self._timers: list[Timer] = []
        self._cancelled = 0
        self._seq = itertools.count()
        self._signal_callbacks: dict[int, SignalCallback] = {}
        self._pending_signals: list[int] = []
        self._interrupting: frozenset[int] = frozenset()
        self._wakeup_r: int | None = None
        self._wakeup_w: int | None = None
        self._watchdog = 0
        self._watchdog_step = 0.0
        self._watchdog_armed = 0.0

    # I/O ---------------------------------------------------------------

    def enable_read(self, fd: int, callback: IOCallback) -> None:
        """Call callback(fd, loop) whenever fd is readable."""
        self._update(fd, "read", callback)

    def enable_write(self, fd: int, callback: IOCallback) -> None:
        """Call callback(fd, loop) whenever fd is writable."""
        self._update(fd, "write", callback)

    def disable_read(self, fd: int) -> None:
        self._update(fd, "read", None)

    def disable_write(self, fd: int) -> None:
        self._update(fd, "write", None)

    def disable(self, fd: int) -> None:
        """Forget fd entirely (call before closing it)."""
        if self._watches.pop(fd, None) is not None:
            self._selector.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._watches

    def readable(self, fd: int) -> bool:
        """Whether fd has input waiting now: a zero-timeout poll, no callback runs
        (cheaper than a non-blocking read or accept() that finds nothing)."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    def _update(self, fd: int, which: str, callback: IOCallback | None) -> None:
        watch = self._watches.get(fd)
        if watch is None:
            if callback is None:
                return
            watch = _Watch()
            setattr(watch, which, callback)
            self._selector.register(fd, watch.mask(), watch)
            self._watches[fd] = watch
            return
        old_mask = watch.mask()
        setattr(watch, which, callback)
        new_mask = watch.mask()
        if not new_mask:
            self.disable(fd)
        elif new_mask != old_mask:
            self._selector.modify(fd, new_mask, watch)

    # Timers ------------------------------------------------------------

    def request_timer(self, delay: float, callback: TimerCallback) -> Timer:
        """Run callback(loop) once, `delay` seconds from now (0 = next turn)."""
        timer = Timer(time.monotonic() + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def cancel_timer(self, timer: Timer | None) -> None:
        """Cancel a timer; harmless when it already ran or was cancelled."""
        if timer is None or timer.cancelled:
            return
        timer.cancelled = True
        self._cancelled += 1
        if self._cancelled > _COMPACT_MIN and self._cancelled * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t.cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0

    def next_timer_delay(self) -> float | None:
        """Seconds until the first live timer, or None when there is none."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
            self._cancelled = max(0, self._cancelled - 1)
        if not self._timers:
            return None
        return max(0.0, self._timers[0].when - time.monotonic())

    # Signals -----------------------------------------------------------

    def on_signal(self, signum: int, callback: SignalCallback) -> None:
        """Install a recording handler for signum; callback runs from the loop."""
        if self._wakeup_r is None:
            self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
            self.enable_read(self._wakeup_r, self._drain_wakeup)
        self._signal_callbacks[signum] = callback
        signal.signal(signum, self._record_signal)

    def ignore_signal(self, signum: int) -> None:
        self._signal_callbacks.pop(signum, None)
        signal.signal(signum, signal.SIG_IGN)

    def default_signal(self, signum: int) -> None:
        self._signal_callbacks.pop(signum, None)
        signal.signal(signum, signal.SIG_DFL)

    @contextlib.contextmanager
    def signals_interrupt(self, signums: Iterable[int]) -> Iterator[None]:
        """Inside the block, these handled signals raise Interrupted (see DESCRIPTION)."""
        wanted = frozenset(signums)
        for signum in self._pending_signals:
            if signum in wanted:
                self._pending_signals.remove(signum)
                raise Interrupted(signum)
        self._interrupting = wanted
        try:
            yield
        finally:
            self._interrupting = frozenset()

    def _record_signal(self, signum: int, _frame: Any) -> None:
        if signum in self._interrupting:
            self._interrupting = frozenset()
            raise Interrupted(signum)
        self._pending_signals.append(signum)

    def _drain_wakeup(self, fd: int, _loop: EventLoop) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _run_signals(self) -> None:
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            callback = self._signal_callbacks.get(signum)
            if callback is not None:
                callback(signum, self)

    # Watchdog ----------------------------------------------------------

    def set_watchdog(self, seconds: int) -> None:
        """Kill the process by SIGALRM when one turn runs longer than seconds (0: off)."""
        self._watchdog = max(0, int(seconds))
        self._watchdog_step = min(1.0, self._watchdog / 4)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(self._watchdog)
        self._watchdog_armed = time.monotonic()

    def _pet_watchdog(self, age: float) -> None:
        """Re-arm the alarm when it was armed `age` seconds ago or more.

        Calling alarm(2) on every turn would cost two system calls per
        turn; re-arming at most once per _watchdog_step keeps the kill
        for a turn that runs longer than seconds - 1 (seconds * 3/4 for
        a watchdog under 4 s)."""
        now = time.monotonic()
        if now - self._watchdog_armed >= age:
            signal.alarm(self._watchdog)
            self._watchdog_armed = now

    # The loop ----------------------------------------------------------

    def run_once(
        self, timeout: float | None = None, before_wait: Callable[[], Any] | None = None
    ) -> None:
        """Wait for one batch of events (at most `timeout` s) and dispatch it.

        With before_wait, first look without waiting; only when nothing is
        ready is before_wait() called, and then the loop waits as usual."""
        delay = self.next_timer_delay()
        if delay is not None:
            timeout = delay if timeout is None else min(timeout, delay)
        if self._pending_signals:
            timeout = 0
        if self._watchdog:
            # Sanity check: an idle wait must end well before the alarm.
            cap = self._watchdog / 2
            timeout = cap if timeout is None else min(timeout, cap)
            self._pet_watchdog(cap)
        ready = self._select(0) if before_wait is not None else None
        if not ready:
            if before_wait is not None:
                before_wait()
            ready = self._select(timeout) if ready is None or timeout != 0 else ready
        if self._watchdog:
            self._pet_watchdog(self._watchdog_step)
        for key, mask in ready:
            watch: _Watch = key.data
            fd = key.fd
            # A callback earlier in this turn may have disabled (and even
            # reused) this descriptor: only the current registration runs.
            if mask & selectors.EVENT_READ and watch.read and self._watches.get(fd) is watch:
                watch.read(fd, self)
            if mask & selectors.EVENT_WRITE and watch.write and self._watches.get(fd) is watch:
                watch.write(fd, self)
        self._run_timers()
        self._run_signals()

    def _select(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        try:
            return self._selector.select(timeout)
        except InterruptedError:
            return []

    def _run_timers(self) -> None:
        now = time.monotonic()
        due: list[Timer] = []
        while self._timers and self._timers[0].when <= now:
            due.append(heapq.heappop(self._timers))
        for timer in due:
            if timer.cancelled:
                self._cancelled = max(0, self._cancelled - 1)
                continue
            timer.cancelled = True
            timer.callback(self)

    def close(self) -> None:
        """Release the selector and the wake-up pipe; restore default handlers."""
        if self._watchdog:
            signal.alarm(0)
            self._watchdog = 0
        for signum in list(self._signal_callbacks):
            signal.signal(signum, signal.SIG_DFL)
        self._signal_callbacks.clear()
        if self._wakeup_r is not None and self._wakeup_w is not None:
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            self._wakeup_r = self._wakeup_w = None
        self._selector.close()
        self._watches.clear()
