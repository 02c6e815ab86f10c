"""A full disk costs one cache's updates, not tlsmgr: they get FAIL, everything else goes on.

The smtp cache lives on a small tmpfs mounted by the test (root only, owned by mail_owner so
that nothing is redirected); the smtpd cache and the exchange file stay in data_directory.
Updates of large sessions fill the smtp cache's file system up to the room tlsmgr keeps
free: further updates get FAIL and a warning is logged, while the same tlsmgr process serves
lookups of that cache, the smtpd cache, seeds and ticket keys.  When room comes back, updates
are stored again.  When the disk is full at stop, the last flush of the smtp cache fails with
a warning and tlsmgr exits normally.  Before this, the Berkeley DB error ended tlsmgr and the
master's next tlsmgr truncated every cache.
"""

from __future__ import annotations

import os
import pwd
import re

import pytest

from support.disks import fill
from support.instance import running_tlsmgr
from tlsmgr.protocol import Status

pytestmark = [pytest.mark.root, pytest.mark.slow]

SESSION = b"s" * 30000


@pytest.fixture
def disk(tmpfs):
    folder = tmpfs("32m")
    owner = pwd.getpwnam("postfix")
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    return folder


def test_a_full_disk_fails_updates_and_tlsmgr_carries_on(disk):
    main_cf = {
        "smtp_tls_session_cache_database": f"btree:{disk}/smtp_scache",
        "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    }
    ballast = fill(disk, 24 << 20)
    with running_tlsmgr(main_cf) as inst:
        client = inst.client()
        assert client.update("smtpd", "kept", b"server session").ok
        pid = inst.tlsmgr_pid()
        statuses = []
        for i in range(600):  # 36 MB to store, on 24 MB
            statuses.append(client.update("smtp", f"id{i}", SESSION).status)
            if statuses[-1] != Status.OK:
                break
        assert inst.tlsmgr_pid() == pid, inst.log()
        assert statuses[-1] == Status.FAIL, f"{len(statuses)} updates, none failed"
        assert len(statuses) > 10
        inst.wait_log(
            r"warning: smtp TLS cache: .*smtp_scache.*updates refused until there is room"
        )
        # The same process serves on, that cache's lookups included.
        assert client.update("smtp", "next", b"x").status == Status.FAIL
        assert client.lookup("smtp", "id0").data == SESSION
        assert client.seed(32).ok
        assert client.tktkey(b"").ok
        assert client.lookup("smtpd", "kept").data == b"server session"
        assert client.update("smtpd", "more", b"another").ok
        stats = dict(client.stats().items)
        assert (stats["smtp.no_room"], stats["smtp.errors"]) == ("1", "0")
        assert int(stats["smtp.refused"]) == 2
        assert stats["smtpd.entries"] == "2"
        os.unlink(ballast)  # room again
        assert client.update("smtp", "next", b"x").ok
        inst.wait_log(r"smtp TLS cache: room again: updates resumed")
        fill(disk, 0)  # and none at all when tlsmgr flushes at stop
        inst.cli("stop").check()
        inst.wait_gone(pid)
        log = inst.log()
    assert re.search(rf"tlsmgr\[{pid}\]: warning: smtp TLS cache: sync database .*smtp_scache", log)
    assert "Traceback" not in log and "fatal" not in log and "exit status" not in log, log
