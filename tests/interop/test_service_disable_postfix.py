"""master_service_disable: our master opens the listeners Postfix's master(8) opens.

Both masters start on the same master.cf with the same setting; the listeners they
made are compared: the socket or fifo files in the queue (a fresh queue each time,
so a file means the master created it) and whether the inet port is taken (probed by
binding it, so no connection reaches a service).  No service is ever started.
"""

from __future__ import annotations

import errno
import socket

import pytest

from support.instance import MasterInstance, MiniInstance, PostfixInstance
from support.sockets import free_port

pytestmark = [pytest.mark.postfix, pytest.mark.root]

NAMES = ["private/a", "private/b.x", "public/c", "public/d"]
MASTER_CF = (
    "a unix - n n - - nothing\n"
    "b.x unix - n n - - nothing\n"
    "c fifo n n n - 1 nothing\n"
    "d unix n n n - - nothing\n"
    "127.0.0.1:{port} inet n n n - - nothing\n"
)


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            assert err.errno == errno.EADDRINUSE
            return True
    return False


def listeners(kind: type[MasterInstance], setting: str) -> list[str]:
    port = free_port()
    main = {"master_service_disable": setting}
    with kind(main, MASTER_CF.format(port=port)) as inst, inst.running():
        found = [name for name in NAMES if (inst.queue / name).exists()]
        return found + (["inet"] if port_taken(port) else [])


@pytest.mark.parametrize(
    "setting",
    ["", "inet", "a/unix, fifo", "!a/unix unix", "b.x/unix", "A.UNIX .unix", "!!unix !fifo"],
)
def test_the_same_listeners_as_postfix(setting):
    theirs = listeners(PostfixInstance, setting)
    assert listeners(MiniInstance, setting) == theirs
