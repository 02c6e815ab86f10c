"""A service's children as the master counts them: status records, availability, throttle.

SYNOPSIS
    from master.avail import Service, Child

    service = Service(entry, path, argv, listen_fds, loop, throttle_delay)  # fd 5 ready
    service.update_listen()
    service.configure(entry, path, argv, throttle_delay, stress)   # reload: new settings,
    service.open_status_channel(handoff)                           # and a fresh fd 5
    service.retire_old()            # the old children see EOF on fd 5 (with handoff: later)
    service.can_spawn() -> bool; service.wanted       # set by a readable listener
    service.add_child(child)                        # a new child, available at once
    service.spawn_started(); service.spawn_settled()  # a child asked of a spawn server
    service.avail_more(child); service.avail_less(child)
    service.child_gone(child)                       # reaped: its counts undone
    service.throttle(reason); service.unthrottle()
    service.snapshot() -> dict      # for the state file (statusreport.from_state)
    service.close_status_channel()

DESCRIPTION
    The runtime state of one master.cf service (Postfix's MASTER_SERV,
    master_avail.c and master_status.c); spawn.py creates and reaps the
    processes that this state counts.

    Listening.  A service is watched for connection requests only while
    it is not throttled, no child of it is available and its process
    limit (maxproc, 0 = none) allows one more; a readable listener marks
    the service `wanted` and the master calls Spawner.spawn() from its
    loop.  A new child counts as available from the moment it is
    created, so the master stops watching until the child reports TAKEN
    or dies.  A child asked of the service's spawn server (spawn.py,
    zygote.py) counts as available, and toward maxproc, from the request
    on (spawn_started) until its pid comes (spawn_settled, add_child).
    At the limit, a service under stress warns once per STRESS_TIME
    seconds.

    Status records.  Each 12-byte record on the service's socketpair
    (pid, generation, avail) updates one child: an unknown pid is ignored
    (it may already be reaped), a stale generation is ignored with a
    message, a repeated state is ignored, AVAIL after TAKEN counts one
    use.  Records may be read several at a time, and split anywhere.
    While children asked of a spawn server have no pid yet, records from
    unknown pids are kept (up to EARLY_MAX) and replayed by add_child(),
    since such a child may write before the master reads its pid.
    A Service is built with its socketpair; open_status_channel() makes a
    fresh one at reload: children of the old one see EOF on fd 5 and
    leave.

    Handoff.  With open_status_channel(handoff=True) the old children
    are not told at once: the master keeps its end of their socketpair
    (reading and dropping what they write) until a child of the new one
    says it serves, its READY record (proto.STATUS_READY, which our
    master asks every child for), or its first TAKEN or AVAIL (a child
    that does not know READY), or HANDOFF_TIME seconds have passed, or
    retire_old() is called; then it closes that end and they see EOF.
    So the old children go on accepting while their successor starts,
    and no connection waits for a child to start.  Child.ready marks a
    child that sent READY: the master hands off only from such children
    (a daemon that never says READY is told at once, as in Postfix).

    Draining.  The children of a replaced status channel are draining:
    they finish the requests they hold and exit (the skeleton's drain,
    docs/skeleton.md), after the handoff when there is one.  Their
    records no longer count, and they count neither as available nor
    toward maxproc, so a successor may start at once (the master starts
    one at reload when it hands off) or at the first connection while
    the old ones finish.  They stay in `children` until reaped, for
    status, signals and throttling.  A child asked of the spawn server
    before the reload whose pid comes after it belongs to the old
    channel: it enters the table draining.

    Throttling.  throttle(reason) stops forking and listening for
    throttle_delay seconds and keeps the reason for status; a timer
    releases it (`throttle released for command PATH`).  `throttles`
    counts them since the service started (kept across reloads).

DIAGNOSTICS
    `ignoring status update from child pid N generation G`, `ignoring
    unknown status S allegedly from pid N`, `service NAME: read status:
    ERROR`, and Postfix's `service "NAME" (ENDPOINT) has reached its
    process limit "N": new clients may experience noticeable delays`.

SEE ALSO
    src/master/master_avail.c, master_status.c, master.h (Postfix); spawn.py
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from master import proto
from master.events import EventLoop, Timer
from master.instance import process_starttime
from master.log import msg_info, msg_warn
from master.mastercf import ServiceEntry

STRESS_TIME = 1000  # seconds a service stays under stress after reaching its limit
# Seconds old children go on serving at most while their successor gets ready: as long
# as a spawn server may take to answer (spawn.ZYGOTE_TIMEOUT), so well above a start.
HANDOFF_TIME = 5.0
EARLY_MAX = 64  # status records kept for children whose pid has not come yet


@dataclass
class Child:
    """One child process (Postfix's MASTER_PROC)."""

    pid: int
    generation: int
    service: Service
    started: float = field(default_factory=time.time)
    avail: int = proto.STATUS_AVAIL
    use_count: int = 0
    stderr_fd: int | None = None
    stderr_tail: bytearray = field(default_factory=bytearray)
    draining: bool = False  # of a replaced status channel: finishing, then leaving
    ready: bool = False  # it said READY: it serves, and its successors will say so too
    # With the pid, names this process even after the pid is reused (instance.py).
    starttime: int | None = None

    def __post_init__(self) -> None:
        if self.starttime is None:
            self.starttime = process_starttime(self.pid)

    @property
    def state(self) -> str:
        """idle, busy or draining, as `status -v` shows it."""
        if self.draining:
            return "draining"
        return "idle" if self.avail == proto.STATUS_AVAIL else "busy"


class Service:
    """The runtime state of one master.cf service (Postfix's MASTER_SERV)."""

    def __init__(
        self,
        entry: ServiceEntry,
        path: str,
        argv: list[str],
        listen_fds: list[int],
        loop: EventLoop,
        throttle_delay: int,
        stress: bool = False,
    ) -> None:
        self.loop = loop
        self.listen_fds = listen_fds
        self.status_fd: int | None = None  # the master's end
        self.child_status_fd: int | None = None  # given to children as fd 5
        self.channel = 0  # counts status channels: which one a spawn request used
        self.retiring: list[int] = []  # our ends of replaced channels, until the handoff
        self.handoff_timer: Timer | None = None
        self.children: dict[int, Child] = {}
        self.starting = 0  # children asked of the spawn server, pid not known yet
        self._early: list[proto.StatusRecord] = []
        self.avail_proc = 0
        self.draining_proc = 0
        self.listening = False
        self.wanted = False
        self.removed = False
        self.throttled = False
        self.throttle_timer: Timer | None = None
        self.throttle_reason = ""
        self.throttle_until = 0.0
        self.spawns = 0
        self.throttles = 0
        self.last_exit = ""
        # The last stderr lines of an abnormal exit, {"pid": N, "lines": [...]}: not in
        # snapshot(), which anyone may read (master.py publishes them for root only).
        self.last_stderr: dict[str, object] | None = None
        self.stress_expire = 0.0
        self._busy_warn = 0.0
        self._partial = b""
        self.configure(entry, path, argv, throttle_delay, stress)
        self.open_status_channel()

    def configure(
        self, entry: ServiceEntry, path: str, argv: list[str], throttle_delay: int, stress: bool
    ) -> None:
        """Take (new) settings from master.cf; used at start and by reload."""
        self.entry = entry
        self.path = path
        self.argv = argv
        self.throttle_delay = throttle_delay
        self.stress = stress

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def total_proc(self) -> int:
        """Children that count toward maxproc: all but the draining ones, and those
        asked of the spawn server whose pid is not known yet."""
        return len(self.children) - self.draining_proc + self.starting

    def limit_ok(self, extra: int = 0) -> bool:
        return self.entry.maxproc == 0 or self.total_proc + extra < self.entry.maxproc

    def can_spawn(self) -> bool:
        return not self.throttled and not self.removed and self.avail_proc == 0 and self.limit_ok()

    # Status channel ------------------------------------------------------

    def open_status_channel(self, handoff: bool = False) -> None:
        """A fresh socketpair; children of the old one drain: they see EOF on fd 5
        now, or with handoff once a successor serves (see "Handoff")."""
        drained = [self._drain(child) for child in self.children.values()]
        if handoff and self.status_fd is not None:
            self._keep_old_channel(self.status_fd)
            self.status_fd = None
        else:
            self.retire_old()
        self._close_current_channel()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.setblocking(False)
        self.status_fd, self.child_status_fd = mine.detach(), theirs.detach()
        self.channel += 1
        self._partial = b""
        self.loop.enable_read(self.status_fd, self._status_event)
        if any(drained):
            self.update_listen()  # they no longer count: a successor may be wanted

    def close_status_channel(self) -> None:
        """Close our ends of the status channel, the replaced ones' too (retire_old)."""
        self.retire_old()
        self._close_current_channel()

    def _close_current_channel(self) -> None:
        if self.status_fd is not None:
            self.loop.disable(self.status_fd)
            os.close(self.status_fd)
        if self.child_status_fd is not None:
            os.close(self.child_status_fd)
        self.status_fd = self.child_status_fd = None

    def _keep_old_channel(self, fd: int) -> None:
        """Hold our end of a replaced channel until the handoff, dropping what comes."""
        self.loop.disable(fd)
        self.loop.enable_read(fd, self._old_status_event)
        self.retiring.append(fd)
        self.loop.cancel_timer(self.handoff_timer)
        self.handoff_timer = self.loop.request_timer(HANDOFF_TIME, self._handoff_late)

    def retire_old(self) -> None:
        """Tell the children of replaced channels to leave: EOF on their fd 5."""
        self.loop.cancel_timer(self.handoff_timer)
        self.handoff_timer = None
        for fd in self.retiring:
            self.loop.disable(fd)
            os.close(fd)
        self.retiring.clear()

    def _handoff_late(self, _loop: EventLoop) -> None:
        self.handoff_timer = None
        self.retire_old()

    def _old_status_event(self, fd: int, _loop: EventLoop) -> None:
        """Records of replaced children count no more; EOF: all of them are gone."""
        try:
            data = os.read(fd, proto.STATUS_SIZE * 256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.disable(fd)
            os.close(fd)
            self.retiring.remove(fd)

    def _status_event(self, fd: int, _loop: EventLoop) -> None:
        try:
            data = os.read(fd, proto.STATUS_SIZE * 256)
        except BlockingIOError:
            return
        except OSError as err:
            msg_warn(f"service {self.name}: read status: {err.strerror}")
            return
        if not data:  # cannot happen while we hold both ends
            return
        data = self._partial + data
        whole = len(data) - len(data) % proto.STATUS_SIZE
        self._partial = data[whole:]
        for off in range(0, whole, proto.STATUS_SIZE):
            self._status_record(proto.decode_status(data[off : off + proto.STATUS_SIZE]))

    def _status_record(self, rec: proto.StatusRecord) -> None:
        child = self.children.get(rec.pid)
        if child is None:
            if self.starting and len(self._early) < EARLY_MAX:
                self._early.append(rec)  # perhaps a spawned child whose pid is on its way
            return  # else reaped before its last record arrived, or a stranger
        if child.generation != rec.generation:
            msg_info(f"ignoring status update from child pid {rec.pid} generation {rec.generation}")
            return
        if child.draining:
            return  # of an old channel (it started after the reload): replaced
        if self.retiring:
            self.retire_old()  # a successor serves: READY, or the first record of one that
            # does not know READY
        if rec.avail == proto.STATUS_READY:
            child.ready = True
            return
        if child.avail == rec.avail:
            return
        if rec.avail == proto.STATUS_AVAIL:
            child.use_count += 1
            self.avail_more(child)
        elif rec.avail == proto.STATUS_TAKEN:
            self.avail_less(child)
        else:
            msg_warn(f"ignoring unknown status {rec.avail} allegedly from pid {rec.pid}")

    # Children ------------------------------------------------------------

    def add_child(self, child: Child) -> None:
        """A new child: available at once (draining, when asked for on a replaced
        channel); records it wrote before it was known count."""
        self.children[child.pid] = child
        self.spawns += 1
        if child.draining:
            child.avail = proto.STATUS_AVAIL
            self.draining_proc += 1
        else:
            self.avail_more(child)
        early = [rec for rec in self._early if rec.pid == child.pid]
        if early:
            self._early = [rec for rec in self._early if rec.pid != child.pid]
            for rec in early:
                self._status_record(rec)

    def spawn_started(self) -> None:
        """A child was asked of the spawn server: it counts as one, available."""
        self.starting += 1
        self.avail_proc += 1
        self.update_listen()

    def spawn_settled(self) -> None:
        """Its pid came (add_child follows) or it never will (the caller decides)."""
        self.starting -= 1
        self.avail_proc -= 1
        if not self.starting:
            self._early.clear()

    # Availability and listening ----------------------------------------

    def _drain(self, child: Child) -> bool:
        """Count a child of the old status channel as draining, no longer available;
        False when it already was."""
        if child.draining:
            return False
        if child.avail == proto.STATUS_AVAIL:
            self.avail_proc -= 1
        child.draining = True
        self.draining_proc += 1
        return True

    def child_gone(self, child: Child) -> None:
        """A reaped child leaves the table and the counts it was part of."""
        del self.children[child.pid]
        if child.draining:
            self.draining_proc -= 1
        elif child.avail == proto.STATUS_AVAIL:
            self.avail_proc -= 1

    def avail_more(self, child: Child) -> None:
        child.avail = proto.STATUS_AVAIL
        self.avail_proc += 1
        self.update_listen()

    def avail_less(self, child: Child) -> None:
        child.avail = proto.STATUS_TAKEN
        self.avail_proc -= 1
        self.update_listen()

    def update_listen(self) -> None:
        """Watch the listeners exactly when a connection would make us fork."""
        flag = self.can_spawn()
        if not flag and not self.throttled and not self.removed and not self.limit_ok():
            self._warn_at_limit()
        if flag and not self.listening:
            for fd in self.listen_fds:
                self.loop.enable_read(fd, self._listen_event)
        elif not flag and self.listening:
            for fd in self.listen_fds:
                self.loop.disable(fd)
        self.listening = flag

    def _listen_event(self, _fd: int, _loop: EventLoop) -> None:
        self.wanted = True  # the master's start_wanted() step forks

    def _warn_at_limit(self) -> None:
        now = time.monotonic()
        if self.stress and now - self._busy_warn > STRESS_TIME:
            self._busy_warn = now
            msg_warn(
                f'service "{self.name}" ({self.entry.internal_name}) has reached its process'
                f' limit "{self.entry.maxproc}": new clients may experience noticeable delays'
            )

    # Throttling ----------------------------------------------------------

    def throttle(self, reason: str) -> None:
        if self.throttled:
            return
        self.throttled = True
        self.throttles += 1
        self.throttle_reason = reason
        self.throttle_until = time.time() + self.throttle_delay
        self.throttle_timer = self.loop.request_timer(self.throttle_delay, self._unthrottle_event)
        self.update_listen()

    def _unthrottle_event(self, _loop: EventLoop) -> None:
        self.unthrottle()

    def unthrottle(self) -> None:
        if self.throttled:
            self.throttled = False
            self.loop.cancel_timer(self.throttle_timer)
            self.throttle_timer = None
            self.throttle_until = 0.0
            msg_info(f"throttle released for command {self.path}")
            self.update_listen()

    def snapshot(self) -> dict[str, object]:
        """This service in the state file (read by statusreport.MasterStatus.from_state)."""
        return {
            "name": self.name,
            "type": self.entry.type,
            "endpoint": self.entry.internal_name,
            "command": self.path,
            "maxproc": self.entry.maxproc,
            "spawns": self.spawns,
            "throttles": self.throttles,
            "starting": self.starting,
            "avail": self.avail_proc,
            "throttled": self.throttled,
            "throttle_until": self.throttle_until,
            "throttle_reason": self.throttle_reason,
            "last_exit": self.last_exit,
            "children": [
                {
                    "pid": c.pid,
                    "generation": c.generation,
                    "state": c.state,
                    "use_count": c.use_count,
                    "started": c.started,
                    "starttime": c.starttime,
                }
                for c in self.children.values()
            ],
        }
