"""The event manager: selectors, a timer queue and signals, in one loop.

SYNOPSIS
    from master.events import EventLoop

    loop = EventLoop()
    loop.enable_read(fd, callback)      # callback(fd, loop) when readable
    loop.enable_write(fd, callback)     # callback(fd, loop) when writable
    loop.disable_read(fd); loop.disable_write(fd); loop.disable(fd)
    handle = loop.request_timer(delay, callback)   # callback(loop)
    loop.cancel_timer(handle)
    loop.on_signal(signum, callback)    # callback(signum, loop), run by the loop
    loop.run_once(timeout)              # timeout None = wait for an event
    loop.close()

DESCRIPTION
    One event manager per process (Postfix's events.c).  The only module
    that touches `selectors` or installs signal handlers: a signal handler
    only records the signal number and writes a byte to a self-pipe
    (signal.set_wakeup_fd); run_once() then calls the registered callback
    from the loop, in the order the signals arrived, after the I/O and
    timer callbacks of that turn.

    run_once(timeout) waits for the earliest of: I/O readiness, the first
    timer, a signal, or `timeout` seconds; then runs what is ready.  A
    timer callback runs once; re-arm it from the callback for periodic
    work (Postfix's event_request_timer idiom).  Timers use the monotonic
    clock.

    Callbacks may register, disable or close descriptors freely, including
    their own.  An exception in a callback propagates out of run_once():
    the caller (the top of the daemon's loop) decides to log it and exit.

SECURITY
    Signal handlers do nothing but record: no logging, no I/O beyond the
    wake-up byte.

DIAGNOSTICS
    enable_read()/enable_write() on a closed descriptor raise
    ValueError/OSError from selectors.

SEE ALSO
    src/util/events.c (Postfix), selectors(3), signal.set_wakeup_fd
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IOCallback = Callable[[int, "EventLoop"], Any]
TimerCallback = Callable[["EventLoop"], Any]
SignalCallback = Callable[[int, "EventLoop"], Any]


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    callback: TimerCallback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


@dataclass
class _Watch:
    read: IOCallback | None = None
    write: IOCallback | None = None


class EventLoop:
    """Selectors + timers + signal wake-ups; see the module docstring."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._watches: dict[int, _Watch] = {}
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._signal_callbacks: dict[int, SignalCallback] = {}
        self._pending_signals: list[int] = []
        self._wakeup_r: int | None = None
        self._wakeup_w: int | None = None

    # I/O ---------------------------------------------------------------

    def enable_read(self, fd: int, callback: IOCallback) -> None:
        self._update(fd, read=callback)

    def enable_write(self, fd: int, callback: IOCallback) -> None:
        self._update(fd, write=callback)

    def disable_read(self, fd: int) -> None:
        self._update(fd, read=None)

    def disable_write(self, fd: int) -> None:
        self._update(fd, write=None)

    def disable(self, fd: int) -> None:
        """Forget fd entirely (call before closing it)."""
        if self._watches.pop(fd, None) is not None:
            self._selector.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._watches

    _KEEP = object()

    def _update(self, fd: int, read: Any = _KEEP, write: Any = _KEEP) -> None:
        watch = self._watches.get(fd)
        new = _Watch(watch.read if watch else None, watch.write if watch else None)
        if read is not self._KEEP:
            new.read = read
        if write is not self._KEEP:
            new.write = write
        mask = (selectors.EVENT_READ if new.read else 0) | (
            selectors.EVENT_WRITE if new.write else 0
        )
        if watch is None and mask:
            self._selector.register(fd, mask)
        elif watch is not None and not mask:
            self._selector.unregister(fd)
        elif watch is not None:
            self._selector.modify(fd, mask)
        if mask:
            self._watches[fd] = new
        else:
            self._watches.pop(fd, None)

    # Timers ------------------------------------------------------------

    def request_timer(self, delay: float, callback: TimerCallback) -> _Timer:
        """Run callback(loop) once, `delay` seconds from now (0 = next turn)."""
        timer = _Timer(time.monotonic() + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def cancel_timer(self, timer: _Timer | None) -> None:
        if timer is not None:
            timer.cancelled = True

    def next_timer_delay(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
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

    def _record_signal(self, signum: int, _frame: Any) -> None:
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

    # The loop ----------------------------------------------------------

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for one batch of events (at most `timeout` s) and dispatch it."""
        delay = self.next_timer_delay()
        if delay is not None:
            timeout = delay if timeout is None else min(timeout, delay)
        if self._pending_signals:
            timeout = 0
        try:
            ready = self._selector.select(timeout)
        except InterruptedError:
            ready = []
        for key, mask in ready:
            fd = key.fd
            if mask & selectors.EVENT_READ:
                watch = self._watches.get(fd)
                if watch and watch.read:
                    watch.read(fd, self)
            if mask & selectors.EVENT_WRITE:
                watch = self._watches.get(fd)
                if watch and watch.write:
                    watch.write(fd, self)
        self._run_timers()
        self._run_signals()

    def _run_timers(self) -> None:
        now = time.monotonic()
        due: list[_Timer] = []
        while self._timers and self._timers[0].when <= now:
            due.append(heapq.heappop(self._timers))
        for timer in due:
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback(self)

    def close(self) -> None:
        """Release the selector and the wake-up pipe; restore default handlers."""
        for signum in list(self._signal_callbacks):
            signal.signal(signum, signal.SIG_DFL)
        self._signal_callbacks.clear()
        if self._wakeup_r is not None:
            signal.set_wakeup_fd(-1)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)  # type: ignore[arg-type]
            self._wakeup_r = self._wakeup_w = None
        self._selector.close()
        self._watches.clear()
