"""master_service_disable in the running master: honoured at start and at every reload.

A disabled service's listeners are never opened and no child starts; a reload that
disables a running service stops it as if its line had been removed, and a reload
that enables it again brings it back.  Which patterns match is checked in
tests/unit/test_mastercf.py, and against Postfix's own master in
tests/interop/test_service_disable_postfix.py.
"""

from __future__ import annotations

import socket

import pytest

from support.instance import MiniInstance
from support.sockets import connectable, free_port

ECHO = "echo unix - n n - 0 testd echo 30\n"


@pytest.fixture
def inst():
    port = free_port()
    master_cf = ECHO + f"127.0.0.1:{port} inet n n n - 1 testd echo 30\n"
    with MiniInstance(main_cf={"master_service_disable": "inet"}, master_cf=master_cf) as inst:
        inst.port = port
        yield inst


def inet_open(inst: MiniInstance) -> bool:
    try:
        socket.create_connection(("127.0.0.1", inst.port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def echo_child(inst: MiniInstance) -> int:
    with inst.connect("private/echo") as sock:
        sock.sendall(b"ping\n")
        return int(sock.makefile("rb").readline().split()[0])


def services(inst: MiniInstance) -> list[str]:
    """The running services, postlogd's (which writes the instance's log) aside."""
    names = (f"{s['name']}/{s['type']}" for s in inst.state()["services"])
    return sorted(name for name in names if name != "postlog/unix-dgram")


def test_start_and_reload_honour_master_service_disable(inst):
    with inst.running():
        assert connectable(inst.queue / "private" / "echo")
        assert not inet_open(inst)
        assert services(inst) == ["echo/unix"]
        child = echo_child(inst)

        # Disabling a running service stops it like a removed one: its child leaves,
        # its listener closes; the inet service, enabled now, listens.
        inst.write_main_cf(master_service_disable="!inet, echo/unix")
        inst.cli("reload").check()
        inet = f"127.0.0.1:{inst.port}/inet"
        inst.wait_for(lambda: services(inst) == [inet], "the new service table")
        inst.wait_gone(child)
        assert not connectable(inst.queue / "private" / "echo")
        assert inet_open(inst)

        inst.write_main_cf(master_service_disable="")
        inst.cli("reload").check()
        inst.wait_for(lambda: len(services(inst)) == 2, "both services")
        assert echo_child(inst) != child
        assert inet_open(inst)


def test_everything_disabled_still_starts_an_idle_master(inst):
    inst.write_main_cf(master_service_disable="unix inet")
    with inst.running():
        assert services(inst) == []
        assert not (inst.queue / "private" / "echo").exists()
        assert not inet_open(inst)
        assert inst.children() == []
