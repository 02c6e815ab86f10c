"""Spawn servers: children forked from a Python service's imported program are what exec'd ones are.

A real master with two services running the same echo daemon (support/echo_daemon.py): `echo`
is fork+exec'd, `spawned-echo` (a name registered in the minipostfix.spawners entry-point group)
gets a spawn server.  Workers are told apart by master.state, never by their command line alone:
a forked child keeps its spawn server's /proc cmdline.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from support import procs
from support.echo_daemon import SPAWNED_ECHO, write_daemon_script
from support.instance import OUR_TLSMGR, VENV_BIN, MiniInstance
from support.postfix import SBIN
from support.sockets import recv_line

pytestmark = pytest.mark.root

# -u and -c: both children drop to mail_owner and are jailed in the queue directory.
MASTER_CF = f"""\
echo unix - - y - 1 echo
{SPAWNED_ECHO} unix - - y - 1 {SPAWNED_ECHO}
"""


@pytest.fixture
def inst():
    with MiniInstance({"service_throttle_time": "2s"}, MASTER_CF) as instance:
        for name in ("echo", SPAWNED_ECHO):
            write_daemon_script(instance.bin / name, "multi")
        with instance.running():
            yield instance


def ask(inst: MiniInstance, service: str, line: bytes) -> bytes:
    """One request on a new connection; the reply line."""
    with inst.connect(f"private/{service}") as sock:
        assert recv_line(sock) == b"hello\n"
        sock.sendall(line + b"\n")
        return recv_line(sock)


def worker(inst: MiniInstance, service: str, other_than: int | None = None) -> int:
    """The service's one child, as master.state lists it."""

    def one() -> int | None:
        svc = next(s for s in inst.state()["services"] if s["name"] == service)
        pids = [c["pid"] for c in svc["children"] if c["pid"] != other_than]
        return pids[0] if len(pids) == 1 and procs.alive(pids[0]) else None

    return inst.wait_for(one, f"a child of {service}")


def fd_table(pid: int) -> dict[int, str]:
    """fd -> what it is: a path, or `socket:`, `pipe:`, `anon_inode:[eventpoll]`."""
    table = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        table[int(name)] = re.sub(r"\[\d+\]$", "", os.readlink(f"/proc/{pid}/fd/{name}"))
    return table


def signal_masks(pid: int) -> dict[str, str]:
    text = open(f"/proc/{pid}/status").read()
    return dict(re.findall(r"^(Sig(?:Blk|Ign|Cgt)):\s*(\S+)$", text, re.M))


def forked(pid: int) -> bool:
    """A spawned child shows its spawn server's command line (`PYTHON -I PROGRAM --spawner`)."""
    return procs.cmdline(pid)[-1] == "--spawner"


def test_a_spawned_child_is_what_an_exec_d_child_is(inst):
    inst.wait_spawn_server(SPAWNED_ECHO)
    argv = {name: json.loads(ask(inst, name, b"argv")) for name in ("echo", SPAWNED_ECHO)}
    env = {name: json.loads(ask(inst, name, b"environ")) for name in ("echo", SPAWNED_ECHO)}
    execd, spawned = worker(inst, "echo"), worker(inst, SPAWNED_ECHO)
    assert not forked(execd) and forked(spawned)
    # argv: the program's path, as Python shows an exec'd script's, then Postfix's options.
    for name in ("echo", SPAWNED_ECHO):
        assert argv[name] == [str(inst.bin / name), "-l", "-t", "unix", "-u", "-c"]
    # The environment is the master's, GENERATION the child's own.
    gens = {env[name].pop("GENERATION") for name in env}
    assert len(gens) == 2 and all(re.fullmatch(r"[0-7]+", gen) for gen in gens)
    assert env["echo"] == env[SPAWNED_ECHO] and env["echo"]["MAIL_CONFIG"] == str(inst.etc)
    # Identity, jail, parent, process name.
    assert procs.proc_ids(execd) == procs.proc_ids(spawned)
    assert procs.proc_ids(spawned).root == str(inst.queue)
    assert procs.proc_ids(spawned).uids[0] != 0
    assert procs.parent(execd) == procs.parent(spawned) == inst.master_pid()
    for pid, name in ((execd, "echo"), (spawned, SPAWNED_ECHO)):
        assert open(f"/proc/{pid}/comm").read().strip() == name[:15]
    assert signal_masks(execd) == signal_masks(spawned)
    # The same descriptors, to the same kinds of file; 3-4 the master's one flow pipe.
    fds = fd_table(execd)
    assert fds == fd_table(spawned)
    assert fds[0] == fds[1] == "/dev/null" and fds[2] == fds[3] == fds[4] == "pipe:"
    assert fds[5] == fds[6] == "socket:"
    flow = [os.readlink(f"/proc/{pid}/fd/3") for pid in (execd, spawned)]
    assert flow[0] == flow[1]
    # Nothing of the spawn server: its end of the socketpair with the master is not open.
    server = inst.spawn_server(SPAWNED_ECHO)["pid"]
    link = os.readlink(f"/proc/{server}/fd/3")
    assert link.startswith("socket:")
    child_fds = [os.readlink(f"/proc/{spawned}/fd/{n}") for n in os.listdir(f"/proc/{spawned}/fd")]
    assert link not in child_fds


def test_the_warm_up_runs_once_in_the_spawn_server_before_it_forks(inst):
    """A daemon's warm_up calls (and the skeleton's: the name service modules, Postfix's
    defaults table) run in the spawn server; its children inherit what they set up, and
    an exec'd child runs none of them."""
    server = inst.wait_spawn_server(SPAWNED_ECHO)
    assert ask(inst, SPAWNED_ECHO, b"warmed") == b"%d\n" % server
    assert worker(inst, SPAWNED_ECHO) != server
    assert ask(inst, "echo", b"warmed") == b"none\n"


def test_the_spawn_server_is_isolated_and_reads_only_the_master(inst):
    server = inst.wait_spawn_server(SPAWNED_ECHO)
    program = str(inst.bin / SPAWNED_ECHO)
    interpreter = open(program).readline()[2:].strip()
    assert procs.cmdline(server) == [interpreter, "-I", program, "--spawner"]
    assert procs.proc_ids(server).uids[0] == 0  # root, unjailed: its children drop privileges
    # Nothing it could read from anyone else: no listener, only its socketpair with the master.
    fds = fd_table(server)
    assert fds == {0: "/dev/null", 1: "/dev/null", 2: "pipe:", 3: "socket:"}


def test_every_registered_program_gets_a_ready_spawn_server():
    """The console scripts registered in minipostfix.spawners (tlsmgr, testsmtpd) start as
    spawn servers: each recognises `--spawner` however its main() passes argv on."""
    services = {"tlsmgr": "unix - - y - 1", "testsmtpd": "unix - - y - 1"}
    master_cf = "".join(f"{name} {fields} {name}\n" for name, fields in services.items())
    with MiniInstance({}, master_cf) as inst:
        for name in services:
            (inst.bin / name).symlink_to(VENV_BIN / name)
        with inst.running():
            for name in services:
                assert inst.wait_spawn_server(name)
            assert "did not start" not in inst.log()


def test_status_v_shows_the_spawn_server(inst):
    server = inst.wait_spawn_server(SPAWNED_ECHO)
    ask(inst, SPAWNED_ECHO, b"hi")
    status = inst.wait_for(
        lambda: (out := inst.cli("status", "-v").stdout).count(" 1 fork(s)") and out,
        "status -v to count the fork",
    )
    assert f"  spawn server pid {server} ready, up " in status
    assert sum("spawn server" in line for line in status.splitlines()) == 1  # not for echo


def test_siblings_draw_different_prng_output():
    cf = f"{SPAWNED_ECHO} unix - - y - 1 {SPAWNED_ECHO} -o max_use=1\n"
    with MiniInstance({}, cf) as inst:
        write_daemon_script(inst.bin / SPAWNED_ECHO, "multi")
        with inst.running():
            inst.wait_spawn_server(SPAWNED_ECHO)
            children = {}
            for _ in range(3):  # max_use=1: each child serves one connection
                with inst.connect(f"private/{SPAWNED_ECHO}") as sock:
                    assert recv_line(sock) == b"hello\n"
                    sock.sendall(b"pid\nrandom\n")
                    pid = int(recv_line(sock))
                    children[pid] = recv_line(sock)
                inst.wait_gone(pid)
            assert len(children) == 3 and len(set(children.values())) == 3, children
            inst.wait_for(lambda: inst.spawn_server(SPAWNED_ECHO)["forks"] == 3, "3 forks")


@pytest.mark.postfix
def test_postfix_s_own_tlsmgr_is_fork_exec_d_as_before():
    """tlsmgr is a registered spawner name, but Postfix's tlsmgr is no Python script."""
    with MiniInstance({}, tlsmgr=SBIN / "tlsmgr") as inst, inst.running():
        answer = inst.client().seed(32)
        assert answer.ok and len(answer.data) == 32
        pid = inst.tlsmgr_pid()
        assert os.readlink(f"/proc/{pid}/exe") == str(SBIN / "tlsmgr")
        assert procs.cmdline(pid) == ["tlsmgr", "-l", "-t", "unix", "-u", "-c"]
        assert procs.parent(pid) == inst.master_pid()
        assert inst.spawn_server("tlsmgr") is None and inst.spawn_servers() == []


def test_kill_9_of_a_child_brings_a_new_one_from_the_spawn_server():
    with MiniInstance({}, tlsmgr=OUR_TLSMGR) as inst, inst.running():
        server = inst.wait_spawn_server("tlsmgr")
        first = inst.client().seed(32)
        old = inst.tlsmgr_pid()
        assert forked(old)
        # Killed before the master counted its first request, it would be a bad start.
        inst.wait_for(lambda: _uses(inst, "tlsmgr") >= 1, "its first request counted")
        os.kill(old, signal.SIGKILL)
        inst.wait_gone(old)
        second = inst.client().seed(32)
        new = inst.tlsmgr_pid(other_than=old)
        assert forked(new) and procs.parent(new) == inst.master_pid()
        assert first.ok and second.ok and first.data != second.data
        assert inst.spawn_server("tlsmgr")["pid"] == server
        inst.wait_log(rf"process \S+/tlsmgr pid {old} killed by signal 9")
        assert "bad command startup" not in inst.log()  # it had served a request


def test_a_dead_spawn_server_falls_back_to_exec_and_comes_back(inst):
    server = inst.wait_spawn_server(SPAWNED_ECHO)
    # What the server forked ahead reads the next request: stop it, so that a request
    # is pending when the server dies (it and its intermediate die with it).
    (intermediate,) = procs.children_of(server)
    (ahead,) = procs.children_of(intermediate)
    os.kill(ahead, signal.SIGSTOP)
    with inst.connect(f"private/{SPAWNED_ECHO}") as sock:
        inst.wait_for(lambda: _starting(inst) == 1, "a request to the spawn server")
        os.kill(server, signal.SIGKILL)
        assert recv_line(sock) == b"hello\n"  # served: no request lost
        sock.sendall(b"argv\n")
        assert json.loads(recv_line(sock))[0] == str(inst.bin / SPAWNED_ECHO)
    execd = worker(inst, SPAWNED_ECHO)
    assert not forked(execd)  # fork+exec: its command line is its own
    inst.wait_log(rf"spawn server \S+/{SPAWNED_ECHO} pid {server} killed by signal 9")
    inst.wait_log(rf"spawn server \S+/{SPAWNED_ECHO} pid {server} is gone -- restarting it")
    for pid in (intermediate, ahead):
        inst.wait_gone(pid)
    # It comes back, and the next child is forked again.
    inst.wait_spawn_server(SPAWNED_ECHO, other_than=server)
    os.kill(execd, signal.SIGTERM)
    inst.wait_gone(execd)
    ask(inst, SPAWNED_ECHO, b"hi")
    assert forked(worker(inst, SPAWNED_ECHO, other_than=execd))


def _uses(inst: MiniInstance, service: str) -> int:
    """Requests the master counted for the service's children (master.state)."""
    svc = next(s for s in inst.state()["services"] if s["name"] == service)
    return sum(child["use_count"] for child in svc["children"])


def _starting(inst: MiniInstance) -> int:
    """Children asked of the spawn server whose pid has not come, as master.state says."""
    return next(s for s in inst.state()["services"] if s["name"] == SPAWNED_ECHO)["starting"]


def test_reload_re_execs_a_changed_spawn_server_program(inst):
    server = inst.wait_spawn_server(SPAWNED_ECHO)
    inst.cli("reload").check()
    inst.wait_log("reload -- version")
    assert inst.spawn_server(SPAWNED_ECHO)["pid"] == server  # unchanged program: kept
    write_daemon_script(inst.bin / SPAWNED_ECHO, "multi")  # a new file: new mtime
    inst.cli("reload").check()
    inst.wait_log(rf"spawn server \S+ pid {server}: program changed -- restarting it")
    new = inst.wait_spawn_server(SPAWNED_ECHO, other_than=server)
    inst.wait_gone(server)
    assert f"pid {server} exit" not in inst.log()  # it left quietly (exit 0 on EOF)
    ask(inst, SPAWNED_ECHO, b"hi")
    assert forked(worker(inst, SPAWNED_ECHO))
    # A service removed by reload takes its spawn server with it.
    inst.write_master_cf("echo unix - - y - 1 echo\n")
    inst.cli("reload").check()
    inst.wait_gone(new)


def test_a_spawn_server_that_cannot_start_is_retried_after_the_throttle_time(inst):
    # A program that fails as a spawn server (and only then): children are fork+exec'd.
    script = inst.bin / SPAWNED_ECHO
    text = script.read_text().replace(
        "from support import echo_daemon\n",
        "if sys.argv[1:] == ['--spawner']:\n    sys.exit('cannot be a spawn server')\n"
        "from support import echo_daemon\n",
    )
    script.write_text(text)
    inst.cli("reload").check()  # a changed program: a new spawn server, which fails
    path = rf"\S+/{SPAWNED_ECHO}"
    inst.wait_log(rf"spawn server {path} pid \d+ exit status 1")
    inst.wait_log(rf"spawn server {path} pid \d+ stderr: cannot be a spawn server")
    inst.wait_log(rf"spawn server {path} pid \d+ did not start -- fork\+exec, and again in 2s")
    assert ask(inst, SPAWNED_ECHO, b"hi") == b"hi\n"
    assert not forked(worker(inst, SPAWNED_ECHO))
    inst.wait_log(r"did not start -- fork\+exec", count=2)  # tried again after 2 s
    assert "throttling" not in inst.log()  # the service itself is not throttled
