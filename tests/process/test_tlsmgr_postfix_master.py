"""Our tlsmgr, unchanged, under Postfix's own master(8): it follows Postfix's master/child
conventions, not just our master's.

A private instance run by `/usr/lib/postfix/sbin/master -c DIR -w`: its
daemon_directory holds symlinks to /usr/lib/postfix/sbin/* with tlsmgr
pointing at this venv's console script, master.cf has Debian's line
`tlsmgr unix - - y 1000? 1 tlsmgr` and postlogd for the master's log lines.
The real master runs the child as root with argv `-l -t unix -u -c`,
MAIL_CONFIG and GENERATION in the environment and a status socket on fd 5;
our skeleton does the jail and the privilege drop itself.  The status
records are seen with strace on the way out (12 bytes on fd 5: pid,
generation, TAKEN then AVAIL per request) and are accepted by the real master,
which logs, without -v, any record of the wrong size or generation.  (`master
-v` is no help: with postlogd it stops answering, and its -v reaches every child.)
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import shutil
import signal
import struct
import subprocess

import pytest

from support.attrs import read_reply, request
from support.instance import OUR_TLSMGR, TLSMGR_LINE, PostfixInstance
from support.postfix import postmap_list
from support.procs import environ, proc_ids, tlsmgr_args
from support.waiting import WAIT, wait_until

pytestmark = [pytest.mark.postfix, pytest.mark.root]

MAIN_CF = {
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
    "smtp_tls_loglevel": "2",
}


@pytest.fixture
def pfx():
    with PostfixInstance(main_cf=MAIN_CF, tlsmgr=OUR_TLSMGR) as instance:
        instance.start()
        yield instance
        if instance.processes():
            instance.stop()


def test_our_tlsmgr_serves_under_the_real_master(pfx):
    session = bytes(range(200))
    with pfx.connect("private/tlsmgr") as sock:
        assert read_reply(sock) == [(b"protocol", b"tlsmgr_protocol")]
        sock.sendall(request(b"request", b"seed", b"size", b"32"))
        seed = read_reply(sock)
        assert seed[0] == (b"status", b"0") and len(base64.b64decode(seed[1][1])) == 32
        update = (b"request", b"update", b"cache_type", b"smtp", b"cache_id", b"pfx-id")
        sock.sendall(request(*update, b"session", base64.b64encode(session)))
        assert read_reply(sock) == [(b"status", b"0")]
        sock.sendall(request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"pfx-id"))
        assert read_reply(sock) == [(b"status", b"0"), (b"session", base64.b64encode(session))]
        pid = pfx.tlsmgr_pid()

        # What Postfix's master gave it, and what our skeleton made of it.
        assert tlsmgr_args(pid) == ["-l", "-t", "unix", "-u", "-c"]
        env = environ(pid)
        assert env["MAIL_CONFIG"] == str(pfx.etc)
        assert re.fullmatch(r"[0-7]+", env["GENERATION"])
        assert os.readlink(f"/proc/{pid}/fd/5").startswith("socket:")
        owner = pwd.getpwnam("postfix")
        ids = proc_ids(pid)
        assert ids.uids == (owner.pw_uid,) * 4 and ids.gids == (owner.pw_gid,) * 4
        assert ids.root == str(pfx.queue)

    log = pfx.log()
    assert "ignoring status update" not in log and "partial status update" not in log
    # Our daemon logs from inside the jail, through Postfix's postlogd: it holds no
    # descriptor of maillog_file itself.
    assert str(pfx.maillog) not in [
        os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")
    ]
    assert re.search(
        rf"postfix/tlsmgr\[{pid}\]: put smtp session id=pfx-id \[data 200 bytes\]", log
    )

    # TERM to Postfix's master: it TERMs our tlsmgr, which flushes its cache.
    pfx.stop()
    entries = postmap_list(f"hash:{pfx.data / 'smtp_scache'}")
    assert list(entries) == [b"pfx-id"]
    assert entries[b"pfx-id"].endswith(session.hex().upper().encode())
    assert "bad command startup" not in pfx.log() and "fatal" not in pfx.log()


def test_status_records_on_fd_5_under_the_real_master():
    """Postfix's master reads our records as its own (no complaint in its log): one
    TAKEN/AVAIL pair, after the first request, and none after it, since master.cf gives
    tlsmgr maxproc 1 (docs/skeleton.md, "Status records").  Without the wake-up
    (`1000?` would send a trigger, the first request, before strace is attached)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    line = TLSMGR_LINE.replace("1000?", "-")
    with PostfixInstance(main_cf=MAIN_CF, master_cf=line, tlsmgr=OUR_TLSMGR) as pfx:
        pfx.start()
        _records_of_four_seeds(pfx, strace)


def _records_of_four_seeds(pfx: PostfixInstance, strace: str) -> None:
    with pfx.connect("private/tlsmgr") as sock:
        assert read_reply(sock) == [(b"protocol", b"tlsmgr_protocol")]
        pid = pfx.tlsmgr_pid()
        generation = int(environ(pid)["GENERATION"], 8)
        trace = pfx.root / "strace.out"
        tracer = subprocess.Popen(
            [strace, "-p", str(pid), "-e", "trace=write", "-e", "signal=none", "-xx", "-o", trace],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            attached = tracer.stderr.readline()  # "strace: Process N attached"
            if "attached" not in attached:
                pytest.skip(f"strace cannot attach here: {attached.strip()}")
            sock.sendall(request(b"request", b"seed", b"size", b"8"))
            assert read_reply(sock)[0] == (b"status", b"0")
            # AVAIL goes out when the loop is about to wait again.
            wait_until(lambda: trace.read_text().count("write(5,") >= 2, "TAKEN and AVAIL")
            # Each of these comes after the reply to the one before, so the loop waited
            # between them: a record each would have been written before the next reply.
            for _ in range(3):
                sock.sendall(request(b"request", b"seed", b"size", b"8"))
                assert read_reply(sock)[0] == (b"status", b"0")
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(WAIT)
    records = [
        struct.unpack("=iIi", bytes.fromhex(m.group(1).replace("\\x", "")))
        for m in re.finditer(
            r'^write\(5, "((?:\\x[0-9a-f]{2})*)", 12\) = 12$', trace.read_text(), re.M
        )
    ]
    assert records == [(pid, generation, 0), (pid, generation, 1)]
    log = pfx.log()
    assert "ignoring status update" not in log and "partial status update" not in log
