"""master/spawn.py and avail.py: status records, availability, throttling, reaping, real processes.

The Spawner runs inside the test process here (a real EventLoop, real
socketpairs, real children from small scripts); the test process does not
reserve fds 3-6 as the master does, which also exercises the DUP2 sanity
check that moves low source descriptors out of the way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import pytest

from master import proto
from master.avail import Child, Service
from master.config import Config
from master.events import EventLoop
from master.mastercf import parse_master_cf
from master.spawn import Spawner, describe_status

REPORT = """#!{python} -S
import json, os, sys
fds = {{}}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[name] = os.readlink("/proc/self/fd/" + name)
    except OSError:
        pass
with open({out!r}, "w") as fp:
    json.dump(dict(argv=sys.argv, gen=os.environ.get("GENERATION"), fds=fds), fp)
sys.stderr.write("line one\\nlast words\\n")
sys.exit(int(sys.argv[-1]))
"""


@pytest.fixture
def loop():
    ev = EventLoop()
    yield ev
    ev.close()


def make_service(loop: EventLoop, line: str, path: str = "/bin/true", **kw) -> Service:
    entry = parse_master_cf(line + "\n", Config({"compatibility_level": "3.6"}))[0]
    a, b = socket.socketpair()
    service = Service(entry, path, [entry.command], [a.detach()], loop, kw.get("throttle", 60))
    service._peer = b  # the test's end of the listener pair, closed by the fixture owner
    return service


def spawn_one(spawner: Spawner, service: Service) -> Child:
    """spawn() (fork+exec here: no spawn server) and the child it made."""
    assert spawner.spawn(service)
    return max(spawner.children.values(), key=lambda child: child.generation)


def close_service(service: Service) -> None:
    service.close_status_channel()
    for fd in service.listen_fds:
        os.close(fd)
    service._peer.close()


def fake_child(service: Service, pid: int, gen: int) -> Child:
    """A table entry as spawn() makes one (a new child counts as available)."""
    child = Child(pid, gen, service, avail=-1)
    service.children[pid] = child
    service.avail_more(child)
    return child


def send(service: Service, loop: EventLoop, *records: tuple[int, int, int]) -> None:
    data = b"".join(proto.encode_status(*r) for r in records)
    os.write(service.child_status_fd, data)
    loop.run_once(1)


def _inheritable(fd: int) -> bool:
    try:
        return fd > 6 and os.get_inheritable(fd)
    except OSError:
        return False


def test_describe_status():
    assert describe_status(0) == "exit status 0"
    assert describe_status(3 << 8) == "exit status 3"
    assert describe_status(signal.SIGKILL) == "killed by signal 9 (SIGKILL)"


def test_status_records_drive_availability_and_listening(loop):
    service = make_service(loop, "echo unix - n n - 2 testd")
    try:
        service.update_listen()
        assert service.listening  # nobody available, room for a child
        child = fake_child(service, 4242, 7)
        assert service.avail_proc == 1 and not service.listening
        send(service, loop, (4242, 7, proto.STATUS_TAKEN))
        assert child.avail == proto.STATUS_TAKEN and service.listening
        send(service, loop, (4242, 7, proto.STATUS_AVAIL))
        assert child.use_count == 1 and not service.listening
        # A repeated state, a stale generation and an unknown pid change nothing.
        send(service, loop, (4242, 7, proto.STATUS_AVAIL), (4242, 6, proto.STATUS_TAKEN))
        send(service, loop, (999999, 7, proto.STATUS_TAKEN))
        assert child.use_count == 1 and child.avail == proto.STATUS_AVAIL
        # Records split across reads are put back together.
        record = proto.encode_status(4242, 7, proto.STATUS_TAKEN)
        os.write(service.child_status_fd, record[:5])
        loop.run_once(1)
        assert child.avail == proto.STATUS_AVAIL
        os.write(service.child_status_fd, record[5:])
        loop.run_once(1)
        assert child.avail == proto.STATUS_TAKEN
    finally:
        close_service(service)


def test_process_limit_stops_listening(loop):
    service = make_service(loop, "echo unix - n n - 2 testd")
    try:
        fake_child(service, 1001, 1)
        send(service, loop, (1001, 1, proto.STATUS_TAKEN))
        assert service.listening
        fake_child(service, 1002, 2)
        send(service, loop, (1002, 2, proto.STATUS_TAKEN))
        assert not service.limit_ok() and not service.listening and not service.can_spawn()
    finally:
        close_service(service)


def test_reload_swaps_the_status_channel(loop):
    service = make_service(loop, "echo unix - n n - 0 testd")
    try:
        old_child_end = os.dup(service.child_status_fd)
        service.open_status_channel()
        # The old children's fd 5 now reads EOF: the master's end is gone.
        assert os.read(old_child_end, 1) == b""
        os.close(old_child_end)
    finally:
        close_service(service)


def test_children_of_the_old_channel_drain_outside_the_counts(loop):
    """After a reload the old children finish what they hold: they count neither as
    available nor toward maxproc, so the first connection starts a successor."""
    service = make_service(loop, "echo unix - n n - 1 testd")
    try:
        idle = fake_child(service, 1001, 1)  # available: the master would not listen
        assert not service.listening and not service.limit_ok()
        service.open_status_channel()  # reload
        assert idle.draining and idle.state == "draining"
        assert service.avail_proc == 0 and service.total_proc == 0
        assert service.listening and service.can_spawn()
        successor = fake_child(service, 1002, 2)
        assert service.total_proc == 1 and not service.listening
        send(service, loop, (1002, 2, proto.STATUS_TAKEN))
        assert successor.state == "busy"
        service.open_status_channel()  # a second reload before the first child left
        assert service.total_proc == 0 and service.draining_proc == 2
        assert [c["state"] for c in service.snapshot()["children"]] == ["draining"] * 2
        service.child_gone(idle)
        service.child_gone(successor)
        assert (service.avail_proc, service.draining_proc, service.children) == (0, 0, {})
    finally:
        close_service(service)


def _eof(fd: int) -> bool:
    """Whether a child's end of a status channel reads EOF (its master's end is closed)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096) == b""
    except BlockingIOError:
        return False


@pytest.mark.parametrize(
    "says",
    [proto.STATUS_READY, proto.STATUS_TAKEN],
    ids=["READY", "first record of a daemon without READY"],
)
def test_a_handoff_tells_the_old_children_once_a_successor_serves(loop, says):
    """With handoff the old children keep their channel (they go on serving) until a
    child of the new one says it serves; what they write meanwhile counts no more."""
    service = make_service(loop, "echo unix - n n - 1 testd")
    try:
        old = fake_child(service, 1001, 1)
        old_end = os.dup(service.child_status_fd)
        service.open_status_channel(handoff=True)  # reload
        assert old.draining and service.can_spawn()  # a successor may start at once
        assert not _eof(old_end)  # not told yet
        os.write(old_end, proto.encode_status(1001, 1, proto.STATUS_TAKEN))
        loop.run_once(0.1)
        assert old.state == "draining" and service.avail_proc == 0
        successor = fake_child(service, 1002, 2)
        send(service, loop, (1002, 2, says))
        assert _eof(old_end) and service.retiring == []
        assert successor.ready == (says == proto.STATUS_READY)
        assert successor.state == ("idle" if says == proto.STATUS_READY else "busy")
        os.close(old_end)
    finally:
        close_service(service)


def test_a_handoff_ends_without_a_successor(loop, monkeypatch):
    """The old children are told after HANDOFF_TIME at the latest, and at once by
    retire_old() or when the service goes."""
    monkeypatch.setattr("master.avail.HANDOFF_TIME", 0.05)
    service = make_service(loop, "echo unix - n n - 1 testd")
    try:
        fake_child(service, 1001, 1)
        first = os.dup(service.child_status_fd)
        service.open_status_channel(handoff=True)
        loop.run_once(1)  # the timer
        assert _eof(first)
        second = os.dup(service.child_status_fd)
        service.open_status_channel(handoff=True)
        service.retire_old()
        assert _eof(second)
        third = os.dup(service.child_status_fd)
        service.open_status_channel(handoff=True)
        service.close_status_channel()  # removed at a reload, or the master stops
        assert _eof(third)
        for fd in (first, second, third):
            os.close(fd)
    finally:
        close_service(service)


def test_spawn_places_fds_and_bad_startup_throttles(loop, tmp_path):
    out = tmp_path / "report.json"
    script = tmp_path / "report"
    script.write_text(REPORT.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    spawner = Spawner(loop, {"MAIL_CONFIG": str(tmp_path)})
    service = make_service(loop, "rep unix - n n - 1 report", str(script), throttle=3600)
    service.argv = ["report", "-l", "-t", "unix", "1"]
    inherited = {n for n in os.listdir("/proc/self/fd") if _inheritable(int(n))}
    try:
        child = spawn_one(spawner, service)
        assert child.generation == 1 and service.avail_proc == 1
        _, status = os.waitpid(child.pid, 0)  # reap it ourselves, then let the table catch up
        spawner._child_died(spawner.children.pop(child.pid), status)
        report = json.loads(out.read_text())
        assert report["gen"] == "1"
        assert report["argv"][1:] == ["-l", "-t", "unix", "1"]
        fds = report["fds"]
        # Nothing of ours leaks beyond fd 6; only what this test process itself
        # inherited without close-on-exec (the master closes those at start).
        assert set(fds) - {"0", "1", "2", "3", "4", "5", "6"} <= inherited
        assert fds["0"] == "/dev/null" and fds["2"].startswith("pipe:")
        assert fds["5"].startswith("socket:") and fds["6"].startswith("socket:")
        # exit 1 before any TAKEN -> AVAIL cycle: throttled, with the reason; what the
        # child wrote to stderr is kept apart (the reason is published to everyone).
        assert service.throttled and not service.listening
        assert service.throttle_reason == f"pid {child.pid} exit status 1 before its first request"
        assert service.last_stderr == {"pid": child.pid, "lines": ["line one", "last words"]}
        assert "last words" not in json.dumps(service.snapshot())
        assert not spawner.spawn(service)  # no forks while throttled
        service.unthrottle()
        assert service.listening
    finally:
        close_service(service)
        spawner.close()


def test_exit_zero_is_not_throttled_and_reap_collects(loop, tmp_path):
    out = tmp_path / "report.json"
    script = tmp_path / "report"
    script.write_text(REPORT.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    spawner = Spawner(loop, {})
    service = make_service(loop, "rep unix - n n - 1 report", str(script))
    service.argv = ["report", "0"]
    try:
        child = spawn_one(spawner, service)
        deadline = time.monotonic() + 20
        while spawner.children and time.monotonic() < deadline:
            loop.run_once(0.05)
            spawner.reap()
        assert child.pid not in spawner.children and not service.children
        assert not service.throttled and service.avail_proc == 0
        assert service.last_exit == f"pid {child.pid} exit status 0"
    finally:
        close_service(service)
        spawner.close()


def test_exec_failure_throttles_with_reason(loop, tmp_path):
    spawner = Spawner(loop, {})
    service = make_service(loop, "nope unix - n n - 1 nope", str(tmp_path / "nope"))
    try:
        assert not spawner.spawn(service)
        assert service.throttled
        reason = f"cannot execute {tmp_path}/nope: No such file or directory"
        assert service.throttle_reason == reason
        assert spawner.generation == 1 and not spawner.children
    finally:
        close_service(service)
        spawner.close()


def test_signal_service_and_wait_all(loop, tmp_path):
    script = tmp_path / "sleeper"
    script.write_text(f"#!{sys.executable} -S\nimport time\ntime.sleep(60)\n")
    script.chmod(0o755)
    spawner = Spawner(loop, {})
    service = make_service(loop, "sl unix - n n - 0 sleeper", str(script))
    try:
        first = spawn_one(spawner, service)
        send(service, loop, (first.pid, first.generation, proto.STATUS_TAKEN))
        second = spawn_one(spawner, service)
        assert len(spawner.children) == 2
        spawner.stopping = True
        spawner.signal_service(service, signal.SIGTERM)
        spawner.wait_all(20)
        assert not spawner.children and {first.pid, second.pid}.isdisjoint(service.children)
        assert not service.throttled  # deaths by our own TERM while stopping
    finally:
        for pid in list(spawner.children):
            os.kill(pid, signal.SIGKILL)
        spawner.wait_all(20)
        close_service(service)
        spawner.close()
