"""The smtp test client resumes its session with a real Postfix smtpd, through our tlsmgr.

A private Postfix 3.7 instance under /tmp (Debian's programs on a configuration directory of
the test's own, never the system's /etc/postfix), made by
support.instance.PostfixInstance(tlsmgr=OUR_TLSMGR): the real master
(`/usr/lib/postfix/sbin/master -c DIR -w`), a real smtpd with STARTTLS on a free loopback
port (chroot n), anvil and postlogd; daemon_directory is a folder of symlinks to
/usr/lib/postfix/sbin/* in which `tlsmgr` points to OUR tlsmgr instead. So the real smtpd
takes its seed, ticket keys and smtpd cache from our tlsmgr, and the smtp test client keeps
its session in our tlsmgr's smtp cache. Stopped by TERM to the pid in queue/pid/master.pid;
a process of the instance still there afterwards fails the test, and is killed.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support.instance import OUR_TLSMGR, PostfixInstance
from support.postfix import SMTPD_MAIN_CF
from support.sockets import free_port
from tlsmgr.clients.mkcert import CERT_NAME, KEY_NAME

pytestmark = [pytest.mark.postfix, pytest.mark.root]

WAIT = 60

MAIN_CF = {
    **SMTPD_MAIN_CF,
    "smtpd_tls_loglevel": "2",
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
}

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
"""


@pytest.fixture
def postfix():
    assert OUR_TLSMGR.exists(), f"{OUR_TLSMGR}: our tlsmgr console script is missing"
    port = free_port()
    with PostfixInstance(
        main_cf=MAIN_CF, master_cf=MASTER_CF.format(port=port), tlsmgr=OUR_TLSMGR
    ) as pfx:
        pfx.write_main_cf(
            smtpd_tls_cert_file=str(pfx.etc / CERT_NAME),
            smtpd_tls_key_file=str(pfx.etc / KEY_NAME),
        )
        subprocess.run(
            [sys.executable, "-m", "tlsmgr.clients.mkcert", str(pfx.etc)],
            check=True,
            capture_output=True,
        )
        pfx.start()
        yield pfx, port
        pfx.stop()  # fails when a process of the instance outlives the wait


def _run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *map(str, argv)], capture_output=True, text=True, timeout=WAIT * 3
    )


def test_smtp_client_resumes_with_real_smtpd_through_our_tlsmgr(postfix):
    pfx, port = postfix
    client = ("tlsmgr.clients.smtp", "-c", pfx.etc, "--port", port)

    first = _run(*client)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "220 localhost ESMTP Postfix" in first.stdout
    assert "smtp: new session" in first.stdout
    assert "smtp: stored the session in the smtp cache" in first.stdout

    second = _run(*client)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "smtp: offering the session found in the smtp cache" in second.stdout
    assert "smtp: Reusing old session" in second.stdout

    # The real smtpd saw the resumption, with a ticket made from our tlsmgr's key.
    pfx.wait_log(r"postfix/smtpd\[\d+\]: \S+: Reusing old session", timeout=WAIT)
    log = pfx.log()
    assert re.search(r"postfix/smtpd\[\d+\]: \S+: Issuing session ticket, key expiration", log)
    assert re.search(r"postfix/smtpd\[\d+\]: \S+: Decrypting session ticket", log)
    # The real smtpd stored its session in our smtpd cache, with the id layout
    # that tlsmgr.clients.smtpd copies.
    saved = re.findall(r"postfix/smtpd\[\d+\]: \S+: save session (\S+) to smtpd cache", log)
    assert saved and re.fullmatch(rf"[0-9A-F]{{64}}&s=127\.0\.0\.1:{port}&l=\d+", saved[0])

    stats = _run("tlsmgr.clients.probe", "-c", pfx.etc, "stats")
    assert stats.returncode == 0, stats.stderr
    figures = dict(line.split(" = ", 1) for line in stats.stdout.splitlines()[1:])
    assert int(figures["requests.tktkey"]) >= 1
    assert int(figures["smtp.hits"]) >= 1
    assert int(figures["smtpd.entries"]) >= 1
    lookup = _run("tlsmgr.clients.probe", "-c", pfx.etc, "lookup", "smtpd", saved[0])
    assert lookup.returncode == 0, lookup.stdout
    assert "bad command startup" not in log and "fatal" not in log
