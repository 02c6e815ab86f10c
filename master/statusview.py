"""What `minipostfix status -v` prints: the master's view and the status providers' lines.

SYNOPSIS
    from master.statusview import master_view, provider_lines, format_duration

    lines = master_view(state, now=None)     # state: the master's state file, as a dict
    lines += provider_lines(config_dir)      # the `minipostfix.status` entry point group
    format_duration(seconds) -> str          # 42s, 3m05s, 2h07m, 2d03h

DESCRIPTION
    master_view() turns pid/master.state (written by the master at most
    once a second, see instance.py) into lines: one for the master (pid,
    version, configuration, uptime, forks), one per service (type,
    endpoint, command, maxproc, children and how many are idle, spawns),
    one per child (pid, idle or busy, uses, uptime), and, when they
    apply, the throttle (seconds left and the reason) and the last exit.
    An empty state (no file yet) is one line that says so.

    format_duration() is how every line of status -v shows a duration
    (the providers' too): 42s, 3m05s, 2h07m or 2d03h, two units at most,
    rounded down; a negative duration reads 0s.

    provider_lines() calls every entry point of the group
    `minipostfix.status` (a callable(config_dir) -> list[str]), in name
    order, and prefixes each line with the entry point's name, so that
    master/ shows tlsmgr's figures without importing tlsmgr/ (the
    framework knows no service).  A provider that fails shows as one line, never
    a traceback: `tlsmgr: status unavailable: TimeoutError: ...`.

SEE ALSO
    control.py (cmd_status), master.py (publish_state), instance.py
"""

from __future__ import annotations

import time

STATUS_GROUP = "minipostfix.status"


def master_view(state: dict, now: float | None = None) -> list[str]:
    """status -v: the master's own view, from its state file."""
    if not state:
        return ["master: no state file yet (it is written within a second of a change)"]
    now = time.time() if now is None else now
    lines = [
        f"master: pid {state['pid']}, version {state['version']}, configuration"
        f" {state['config_directory']}, up {format_duration(now - state['started'])},"
        f" {state['forks']} fork(s)"
    ]
    for svc in state["services"]:
        children = svc["children"]
        idle = sum(1 for c in children if c["state"] == "idle")
        limit = svc["maxproc"] or "unlimited"
        lines.append(
            f"service {svc['name']} ({svc['type']} {svc['endpoint']}): {svc['command']},"
            f" maxproc {limit}, {len(children)} child(ren) ({idle} idle), {svc['spawns']} spawn(s)"
        )
        for c in children:
            lines.append(
                f"  pid {c['pid']} {c['state']}, {c['use_count']} use(s),"
                f" up {format_duration(now - c['started'])}"
            )
        if svc["throttled"]:
            left = max(0, int(svc["throttle_until"] - now))
            lines.append(f"  throttled for {left}s more: {svc['throttle_reason']}")
        if svc["last_exit"]:
            lines.append(f"  last exit: {svc['last_exit']}")
    return lines


def format_duration(seconds: float) -> str:
    """42s, 3m07s, 5h02m, 2d03h: the two largest units, rounded down."""
    secs = int(max(0, seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def provider_lines(config_dir: str) -> list[str]:
    """Lines of every `minipostfix.status` entry point; a failure is one line."""
    from importlib.metadata import entry_points

    lines: list[str] = []
    for ep in sorted(entry_points(group=STATUS_GROUP), key=lambda e: e.name):
        try:
            got = ep.load()(config_dir)
            lines += [f"{ep.name}: {line}" for line in got]
        except Exception as err:  # a provider must never break status
            lines.append(f"{ep.name}: status unavailable: {type(err).__name__}: {err}")
    return lines
