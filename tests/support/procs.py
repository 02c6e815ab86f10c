"""Processes as /proc shows them, and stopping them.

SYNOPSIS
    from support import procs

    procs.processes_of(root)          # live pids whose MAIL_CONFIG or command line names root
    procs.alive(pid); procs.gone(pid) # gone() also reaps pid when it is our child
    procs.cmdline(pid); procs.environ(pid); procs.proc_ids(pid).uids
    procs.parent(pid); procs.children_of(pid); procs.cpu_seconds(pid); procs.memory_kb(pid)["VmRSS"]
    procs.socket_fds(pid)             # sockets it holds
    procs.fd_targets(pid)             # {fd: what /proc/PID/fd/N links to}
    procs.holds(pid, listener)        # has that socket, fifo or file open
    procs.blocked_in(pid, "do_sys_poll")  # asleep in that kernel function (a thread id too)
    procs.waits_in_loop(pid)          # asleep in epoll_wait: its event loop is idle
    procs.is_tlsmgr(pid); procs.is_postlogd(pid); procs.is_program(pid, name)
    procs.tlsmgr_args(pid)
    procs.kill_all(lambda: procs.processes_of(root))
    survivors = procs.stop_pids(pids) # TERM, wait, then KILL what is left

DESCRIPTION
    Every reader returns an empty or None value for a process that is
    gone (or a zombie, for alive() and processes_of()) instead of raising,
    since the processes under test come and go while they are read.

    processes_of() is how the tests find an instance's processes:
    Postfix's master and ours put MAIL_CONFIG in their children's
    environment, and the command lines of both masters name the
    configuration directory.  kill_all() SIGKILLs whatever a getter
    returns until it returns nothing (AssertionError after 10 s).
    stop_pids() sends a signal, waits up to `timeout` for the processes
    to go, SIGKILLs the rest and returns their pids.

    is_program() knows Postfix's binaries (argv[0]) and ours, scripts run
    by their #! interpreter (argv[1]) or by a spawn server, `PYTHON -I
    SCRIPT --spawner` (argv[2]); is_tlsmgr() and is_postlogd() use it.

    blocked_in() reads the kernel stack, /proc/PID/stack (root only).
    waits_in_loop() is blocked_in(pid, "do_epoll_wait"): a child of the
    skeleton asleep there has sent AVAIL for everything it served, since
    the loop announces AVAIL before it waits, so the master will not take
    it for a bad start if it dies now.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields or None


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def gone(pid: int) -> bool:
    """True once `pid` has exited; reaps it first when it is our child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return not alive(pid)


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    blob = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in blob.split("\0") if "=" in item)


def processes_of(root: Path | str) -> list[int]:
    """Live processes (not zombies) of the instance under `root`: MAIL_CONFIG in
    their environment, or the root in their command line, names it."""
    mine = os.getpid()
    marker = str(root).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if (marker in command or b"MAIL_CONFIG=" + marker in env) and alive(int(entry)):
            found.append(int(entry))
    return found


def parent(pid: int) -> int | None:
    """The parent's pid, or None when the process is gone."""
    fields = proc_stat(pid)
    return int(fields[1]) if fields else None


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields and int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process, or None."""
    fields = proc_stat(pid) if pid else None
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    mem = {}
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                mem[key] = int(value.split()[0])
    return mem


@dataclass(frozen=True)
class ProcIds:
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    groups: frozenset[int]
    root: str


def proc_ids(pid: int) -> ProcIds:
    """Real, effective, saved and file-system ids, groups and root directory."""
    status = Path(f"/proc/{pid}/status").read_text()

    def field(name: str) -> list[int]:
        found = re.search(rf"^{name}:[ \t]*(.*)$", status, re.M)
        assert found, f"/proc/{pid}/status has no {name}"
        return [int(x) for x in found.group(1).split()]

    return ProcIds(
        tuple(field("Uid")),
        tuple(field("Gid")),
        frozenset(field("Groups")),
        os.readlink(f"/proc/{pid}/root"),
    )


def socket_fds(pid: int) -> int:
    """How many sockets the process holds (listener, status pair, clients)."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return count


def fd_targets(pid: int) -> dict[int, str]:
    """What each open descriptor of the process links to ("socket:[123]", a path, ...)."""
    targets = {}
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    for name in names:
        try:
            targets[int(name)] = os.readlink(f"{folder}/{name}")
        except OSError:
            pass
    return targets


def holds(pid: int, file: Any) -> bool:
    """Whether the process has `file` (anything with fileno(): a socket, a fifo) open."""
    mine = os.fstat(file.fileno())
    for fd in fd_targets(pid):
        try:
            theirs = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
            return True
    return False


def blocked_in(pid: int, function: str) -> bool:
    """True while the process (or thread) sleeps with `function` on its kernel stack."""
    try:
        stack = Path(f"/proc/{pid}/stack").read_text()
    except OSError:
        return False
    return any(line.split()[-1].split("+")[0] == function for line in stack.splitlines())


def waits_in_loop(pid: int) -> bool:
    """True while the process sleeps in epoll_wait (its event loop has nothing to do)."""
    return blocked_in(pid, "do_epoll_wait")


def is_program(pid: int, name: str) -> bool:
    """Postfix's `name` binary, or our script `name` run by its #! interpreter
    (exec'd, or isolated as a spawn server and the children it forks)."""
    argv = cmdline(pid)
    if argv[1:2] == ["-I"]:
        argv = argv[:1] + argv[2:]
    return any(os.path.basename(arg) == name for arg in argv[:2])


def is_tlsmgr(pid: int) -> bool:
    return is_program(pid, "tlsmgr")


def is_postlogd(pid: int) -> bool:
    return is_program(pid, "postlogd")


def tlsmgr_args(pid: int) -> list[str]:
    """The daemon's arguments after argv[0] (or after the script, for ours)."""
    argv = cmdline(pid)
    first = next(i for i, arg in enumerate(argv) if os.path.basename(arg) == "tlsmgr")
    return argv[first + 1 :]


def kill_all(pids: Callable[[], list[int]], timeout: float = 10.0) -> None:
    """SIGKILL whatever pids() returns until it returns nothing."""
    deadline = time.monotonic() + timeout
    while True:
        found = pids()
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"processes survive SIGKILL: {found}")
        time.sleep(0.05)


def stop_pids(pids: list[int], sig: int = signal.SIGTERM, timeout: float = 10.0) -> list[int]:
    """Signal pids, wait up to timeout for them to go, then SIGKILL (and return) the rest."""
    for pid in pids:
        if not gone(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    survivors = [pid for pid in pids if not gone(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(gone(p) for p in survivors):
        time.sleep(0.05)
    return survivors
