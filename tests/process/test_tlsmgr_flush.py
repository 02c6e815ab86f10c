"""Our tlsmgr saves its PRNG exchange file when it stops and when the master reloads.

Children treat TERM (minipostfix stop) like the master
going away (EOF on fd 5 at reload): caches closed, exchange file saved.
Postfix 3.7's tlsmgr saves at reload but dies on TERM without saving
(TERM keeps its default action there); ours saves on both.  The session caches' side of
flushing is checked with Postfix's postmap in tests/interop/test_postmap_scache.py.
"""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from support.attrs import read_reply, request
from support.instance import MiniInstance, running_tlsmgr

pytestmark = pytest.mark.root

MAIN_CF = {
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
    # The longest period (clamped to INT_MAX / 255 s): no timed rewrite of the
    # exchange file after the one at start, in practice.
    "tls_random_prng_update_period": "3650d",
}


@pytest.fixture
def inst():
    with running_tlsmgr(MAIN_CF) as instance:
        yield instance


def served(inst: MiniInstance) -> int:
    """Send one request (starting tlsmgr if needed); the pid that answered."""
    with inst.connect("private/tlsmgr") as sock:
        read_reply(sock)
        sock.sendall(request(b"request", b"seed", b"size", b"16"))
        assert read_reply(sock)[0] == (b"status", b"0")
    return inst.tlsmgr_pid()


def snapshot(inst: MiniInstance) -> tuple[bytes, int]:
    path = inst.data / "prng_exch"
    return path.read_bytes(), os.stat(path).st_mtime_ns


def check_exchange_file(inst: MiniInstance) -> None:
    st = os.stat(inst.data / "prng_exch")
    owner = pwd.getpwnam("postfix")
    assert (st.st_size, stat.S_IMODE(st.st_mode)) == (1024, 0o600)
    assert (st.st_uid, st.st_gid) == (owner.pw_uid, owner.pw_gid)


def test_exchange_file_is_rewritten_at_stop(inst):
    pid = served(inst)
    before, mtime = snapshot(inst)
    inst.cli("stop").check()
    inst.wait_gone(pid)
    after, new_mtime = snapshot(inst)
    assert new_mtime > mtime
    assert after != before
    check_exchange_file(inst)
    assert "PRNG state not saved" not in inst.log() and "warning" not in inst.log()


def test_exchange_file_is_rewritten_at_reload(inst):
    pid = served(inst)
    before, mtime = snapshot(inst)
    inst.cli("reload").check()
    inst.wait_gone(pid)  # fd 5 EOF: the old tlsmgr saves and leaves
    after, new_mtime = snapshot(inst)
    assert new_mtime > mtime and after != before
    check_exchange_file(inst)
    # The next client gets a new tlsmgr, which reads the saved file.
    assert served(inst) != pid
