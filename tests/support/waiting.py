"""Hang guards: wait for a condition, fail with a message after a generous deadline.

SYNOPSIS
    from support.waiting import WAIT, spin, wait_until

    pid = wait_until(lambda: find_pid(), "the tlsmgr process")
    wait_until(ready, "the socket", timeout=WAIT * 3, detail=lambda: "\\nlog:\\n" + log())
    spin(loop, predicate, "the reply")     # run an EventLoop until predicate() is true

DESCRIPTION
    wait_until() polls predicate() every 50 ms and returns its first true
    value.  After `timeout` seconds it raises AssertionError("timed out
    waiting for WHAT" + detail()), so a test that would hang fails instead.
    spin() does the same for code that runs in a test's own
    master.events.EventLoop: it runs the loop (20 ms at a time) instead
    of sleeping.  WAIT is the default deadline: a hang guard, never a
    measurement; no test asserts how long something took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

WAIT = 20.0  # seconds: a hang guard, never a measurement


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = WAIT,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll predicate() every 50 ms until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}{detail() if detail else ''}")
        time.sleep(0.05)


def spin(loop: Any, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Run loop.run_once() until predicate() returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        loop.run_once(0.02)
    return value
