"""What `minipostfix status -v` prints: a status report as lines.

SYNOPSIS
    from master.statusview import report_lines, master_view, format_duration

    lines = report_lines(report)             # report: statusreport.StatusReport
    lines = master_view(master, now)         # master: statusreport.MasterStatus | None
    format_duration(seconds) -> str          # 42s, 3m05s, 2h07m, 2d03h

DESCRIPTION
    report_lines() is the text rendering of a StatusReport (the JSON one
    is StatusReport.to_json()): while the master runs, master_view()'s
    lines, then every status provider's lines prefixed with its name
    (`tlsmgr: uptime 4m42s`); a provider that failed shows as its one
    error line (`tlsmgr: not reachable: ...`).

    master_view() gives one line for the master (pid, version,
    configuration, uptime, forks), one per service (type, endpoint,
    command, maxproc, children and how many are idle and draining,
    spawns), one per child (pid, idle, busy or draining, uses, uptime),
    one for the service's spawn server when it has one (pid, starting,
    ready or down, uptime, children forked, its last exit), and, when they
    apply, the throttle (seconds left and the reason), the last exit and
    the last stderr line of the service's last abnormal exit (only root
    reads those: see statusreport.py).  A draining child is one that a
    reload told to leave: it finishes what it holds, then exits.  No
    state file yet (None) is one line that says so.

    format_duration() is how every line of status -v shows a duration
    (the providers' too): 42s, 3m05s, 2h07m or 2d03h, two units at most,
    rounded down; a negative duration reads 0s.

SEE ALSO
    statusreport.py (the model), control.py (cmd_status)
"""

from __future__ import annotations

from master.statusreport import MasterStatus, StatusReport

__all__ = ["format_duration", "master_view", "report_lines"]


def report_lines(report: StatusReport) -> list[str]:
    """status -v's lines: the master's view while it runs, then the providers'."""
    lines = master_view(report.master, report.time) if report.running else []
    for provider in report.providers:
        lines += [f"{provider.name}: {line}" for line in provider.lines]
    return lines


def master_view(master: MasterStatus | None, now: float) -> list[str]:
    """The master's own view, from its state file's model."""
    if master is None:
        return ["master: no state file yet (it is written within a second of a change)"]
    lines = [
        f"master: pid {master.pid}, version {master.version}, configuration"
        f" {master.config_directory}, up {format_duration(master.uptime(now))},"
        f" {master.forks} fork(s)"
    ]
    for svc in master.services:
        limit = svc.maxproc or "unlimited"
        draining = svc.count("draining")
        counts = f"{svc.count('idle')} idle" + (f", {draining} draining" if draining else "")
        lines.append(
            f"service {svc.name} ({svc.type} {svc.endpoint}): {svc.command},"
            f" maxproc {limit}, {len(svc.children)} child(ren) ({counts}),"
            f" {svc.spawns} spawn(s)"
        )
        for c in svc.children:
            lines.append(
                f"  pid {c.pid} {c.state}, {c.uses} use(s), up {format_duration(c.age(now))}"
            )
        server = svc.spawn_server
        if server:
            lines.append(
                f"  spawn server pid {server.pid} {server.state},"
                f" up {format_duration(server.age(now))}, {server.forks} fork(s)"
                + (f", last exit: {server.last_exit}" if server.last_exit else "")
            )
        if svc.throttle:
            lines.append(
                f"  throttled for {svc.throttle.remaining(now)}s more: {svc.throttle.reason}"
            )
        if svc.last_exit:
            lines.append(f"  last exit: {svc.last_exit}")
        if svc.last_stderr:
            tail = svc.last_stderr
            lines.append(f'  last stderr line (pid {tail.pid}): "{tail.lines[-1]}"')
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
