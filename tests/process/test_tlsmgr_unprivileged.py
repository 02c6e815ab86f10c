"""Our tlsmgr started by an ordinary user: no jail, no drop, one warning, files its own.

As root the test runs the child as `nobody` through setpriv (can_run_as), with the
instance's data directory and queue owned by nobody, as `make run` for an ordinary user has
them: nothing may be redirected, and the caches and the exchange file belong to that user.
"""

from __future__ import annotations

import os
import pwd

import pytest

from support.fake_master import can_run_as
from support.instance import OUR_TLSMGR
from support.lab import Lab

SEED = b"request\0seed\0size\x0032\0\0"
UPDATE = b"request\0update\0cache_type\0smtp\0cache_id\0id-1\0session\0AQJzZXNzaW9u\0\0"
LOOKUP = b"request\0lookup\0cache_type\0smtp\0cache_id\0id-1\0\0"


def _ask(sock, request: bytes) -> bytes:
    sock.sendall(request)
    reply = b""
    while not reply.endswith(b"\0\0") or reply.count(b"\0") < 3:
        chunk = sock.recv(4096)
        assert chunk, "tlsmgr closed the connection"
        reply += chunk
    return reply


def test_unprivileged_tlsmgr_keeps_its_own_files():
    run_as = None
    if os.geteuid() == 0:
        if not can_run_as("nobody"):
            pytest.skip("needs setpriv, and this Python runnable by nobody")
        run_as = "nobody"
    uid = os.geteuid() if run_as is None else pwd.getpwnam(run_as).pw_uid
    gid = os.getegid() if run_as is None else pwd.getpwnam(run_as).pw_gid
    with Lab() as lab:
        inst = lab.instance(smtp_tls_session_cache_database="btree:${data_directory}/smtp_scache")
        for path in (inst.data, inst.queue, os.path.join(inst.queue, "private")):
            os.chown(path, uid, gid)
        os.symlink(
            OUR_TLSMGR,
            os.path.join(inst.bin, "tlsmgr"),
        )
        fm = lab.master(inst, "tlsmgr", unpriv=True, chroot=True)
        child = fm.spawn(run_as=run_as)
        sock = fm.connect()
        assert sock.recv(100) == b"protocol\0tlsmgr_protocol\0\0"
        assert _ask(sock, SEED).startswith(b"status\x000\x00seed\x00")
        assert _ask(sock, UPDATE) == b"status\x000\x00\x00"
        assert _ask(sock, LOOKUP) == b"status\x000\x00session\x00AQJzZXNzaW9u\x00\x00"
        assert child.proc_root() == "/"
        assert child.proc_status()["Uid"].split()[0] == str(uid)
        for name in ("smtp_scache.db", "prng_exch"):
            st = os.stat(os.path.join(inst.data, name))
            assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600), name
        warnings = [line for line in inst.log().splitlines() if "warning:" in line]
        assert len(warnings) == 1, warnings
        assert "not started as root" in warnings[0]
        sock.close()
        child.kill(15)
        assert child.wait() == 0
