"""kill -9 of tlsmgr, a hundred times under load: it is always back, and its files stay whole.

Our master and our tlsmgr (chrooted, unprivileged), under a closed loop of
one-request connections that seed, store and look up sessions in both caches.
Each round waits until the current tlsmgr serves and rests in its event loop (so
the master has counted its use and does not take it for a bad start), kills it
with SIGKILL, and checks the PRNG exchange file.  The master starts the next
tlsmgr at the next connection.  Afterwards every cache file and age index, those a
killed tlsmgr left as well as those a stopped one flushed, is read by Berkeley DB
and by Postfix's `postmap -s`, and no temporary file is left.  Requests in flight
at a kill fail (nothing retries them here); that is not what this test is about.
"""

from __future__ import annotations

import base64
import os
import signal
import stat

import pytest

from support import procs
from support.attrs import request
from support.caches import table_records
from support.instance import MiniInstance, running_tlsmgr
from support.load import ClosedLoop
from support.postfix import postmap_list
from tlsmgr.exchange import EXCH_SIZE, MIN_DISTINCT

pytestmark = [pytest.mark.root, pytest.mark.postfix, pytest.mark.slow]

KILLS = 100
MAIN_CF = {
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
}
CACHES = {"smtpd_scache": "btree", "smtp_scache": "hash"}
SESSION = base64.b64encode(os.urandom(1500))


def _requests() -> list[bytes]:
    """Seeds, and updates and lookups of 100 sessions per cache: pages get dirty."""
    asked = [request(b"request", b"seed", b"size", b"32")]
    for n in range(100):
        for cache in (b"smtpd", b"smtp"):
            key = (b"request", b"update", b"cache_type", cache, b"cache_id", b"id-%d" % n)
            asked.append(request(*key, b"session", SESSION))
            lookup = (b"request", b"lookup", b"cache_type", cache, b"cache_id", b"id-%d" % n)
            asked.append(request(*lookup))
    return asked


@pytest.fixture
def inst():
    with running_tlsmgr(MAIN_CF) as instance:
        yield instance


def resting(inst: MiniInstance, pid: int) -> None:
    """Wait until tlsmgr `pid` sleeps in its event loop: it has sent AVAIL for its work."""
    inst.wait_for(lambda: procs.waits_in_loop(pid), f"tlsmgr {pid} to rest in its loop")


def kill_9(inst: MiniInstance, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    inst.wait_gone(pid)


def check_exchange_file(inst: MiniInstance) -> None:
    """1024 random-looking bytes, mode 0600: never torn, short or empty."""
    path = inst.data / "prng_exch"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = path.read_bytes()
    assert len(data) == EXCH_SIZE
    assert len(set(data)) >= MIN_DISTINCT


def check_cache_files(inst: MiniInstance) -> dict[str, dict[bytes, bytes]]:
    """Every cache file and age index read by Berkeley DB, every cache by postmap -s;
    no temporary file.  The caches' entries as postmap lists them."""
    names = sorted(os.listdir(inst.data))
    assert [n for n in names if n.endswith(".tmp")] == []
    for name in names:
        if name.endswith(".db"):
            table_records(str(inst.data / name))
    return {name: postmap_list(f"{kind}:{inst.data / name}") for name, kind in CACHES.items()}


def test_kill_9_a_hundred_times_under_load(inst):
    with ClosedLoop(inst.socket_path, _requests(), clients=3) as load:
        load.wait_served(50)
        previous = None
        for _ in range(KILLS):
            pid = inst.tlsmgr_pid(other_than=previous)  # back: started at the next connection
            load.wait_served(20)
            resting(inst, pid)
            kill_9(inst, pid)
            check_exchange_file(inst)
            previous = pid
        inst.tlsmgr_pid(other_than=previous)
        load.wait_served(20)  # back after the last kill too
    log = inst.log()
    assert log.count("killed by signal 9") == KILLS
    assert "throttl" not in log and "bad command startup" not in log
    for bad in ("error:", "fatal:", "panic:", "Traceback"):
        assert bad not in log

    # What a kill -9 leaves behind is readable: kill the last one with no load, so that
    # nothing starts a successor, and stop.
    last = inst.tlsmgr_pid()
    resting(inst, last)
    kill_9(inst, last)
    inst.cli("stop").check()
    check_exchange_file(inst)
    check_cache_files(inst)

    # A clean stop after all that flushes the caches: postmap lists what was stored.
    inst.cli("start").check()
    client = inst.client(timeout=20.0)
    assert client.update("smtp", "after-the-storm", b"session bytes").ok
    inst.cli("stop").check()
    entries = check_cache_files(inst)
    assert set(entries["smtp_scache"]) == {b"after-the-storm"}
    check_exchange_file(inst)
