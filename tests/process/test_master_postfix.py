"""Debian's real tlsmgr under our master, logging through a postlogd (ours, or Debian's).

daemon_directory is a temporary folder with a symlink to
/usr/lib/postfix/sbin/tlsmgr; postlogd is the unix-dgram service `postlog`
that the real daemons send their log lines to when maillog_file is set, with
maillog_file_prefixes covering the test's log file.  With our postlogd, the
real tlsmgr's records take our logging model end to end; with Debian's, our
master's unix-dgram listener serves Postfix's own log server.
"""

from __future__ import annotations

import base64

import pytest

from support.attrs import read_reply
from support.instance import OUR_POSTLOGD, MiniInstance
from support.postfix import SBIN

pytestmark = [pytest.mark.postfix, pytest.mark.root]

MASTER_CF = (
    "tlsmgr unix - - n 1000? 1 tlsmgr\n"
    "postlog unix-dgram n - n - 1 postlogd\n"
)  # fmt: skip


def read_attrs(sock) -> dict[bytes, bytes]:
    return dict(read_reply(sock))


@pytest.fixture(params=["ours", "Postfix's"])
def inst(request):
    with MiniInstance(
        main_cf={"tls_random_source": "dev:/dev/urandom"},
        master_cf=MASTER_CF,
        tlsmgr=SBIN / "tlsmgr",
    ) as instance:
        if request.param != "ours":
            (instance.bin / "postlogd").unlink()
            (instance.bin / "postlogd").symlink_to(SBIN / "postlogd")
        assert (instance.bin / "postlogd").resolve() in (OUR_POSTLOGD.resolve(), SBIN / "postlogd")
        yield instance


def test_real_tlsmgr_answers_a_seed_request_under_our_master(inst):
    inst.cli("start").check()
    with inst.connect("private/tlsmgr") as sock:
        greeting = read_attrs(sock)
        assert greeting == {b"protocol": b"tlsmgr_protocol"}
        sock.sendall(b"request\0seed\0size\x0032\0\0")
        reply = read_attrs(sock)
        assert reply[b"status"] == b"0"
        assert len(base64.b64decode(reply[b"seed"])) == 32
        # A request the real tlsmgr warns about: its log line travels through
        # our unix-dgram listener to the postlogd, into maillog_file.
        sock.sendall(b"request\0policy\0cache_type\0bogus\0\0")
        assert read_attrs(sock)[b"status"] == b"4294967294"
    inst.wait_log(r'postfix/tlsmgr\[\d+\]: warning: bogus cache type "bogus" in "policy" request')
    # The real tlsmgr ran with Postfix's argv and wrote its exchange file as mail_owner.
    tlsmgr = [p for p in inst.children() if open(f"/proc/{p}/comm").read().strip() == "tlsmgr"]
    assert len(tlsmgr) == 1
    argv = open(f"/proc/{tlsmgr[0]}/cmdline").read().split("\0")[:-1]
    assert argv == ["tlsmgr", "-l", "-t", "unix", "-u"]
    assert (inst.data / "prng_exch").exists()
    status = inst.cli("status", "-v").check()
    assert "service tlsmgr (unix private/tlsmgr)" in status.stdout
    inst.cli("stop").check()
    assert inst.processes() == []
    assert "bad command startup" not in inst.log()


def test_real_tlsmgr_is_told_to_leave_at_once_on_reload(inst):
    """Postfix's daemons send no READY status record: at a reload the master does not
    wait for a successor to say it serves; the old tlsmgr sees EOF on fd 5 at once (and
    exits, as Postfix's children do), and the next connection starts the new one."""
    inst.cli("start").check()
    with inst.connect("private/tlsmgr") as sock:
        assert read_attrs(sock) == {b"protocol": b"tlsmgr_protocol"}
        sock.sendall(b"request\0seed\0size\x0032\0\0")
        assert read_attrs(sock)[b"status"] == b"0"
    [old] = inst.tlsmgr_pids()
    inst.cli("reload").check()
    inst.wait_gone(old)
    assert inst.tlsmgr_pids() == []  # no successor started at the reload
    with inst.connect("private/tlsmgr") as sock:
        assert read_attrs(sock) == {b"protocol": b"tlsmgr_protocol"}
    assert inst.tlsmgr_pids() != [old]
    inst.cli("stop").check()
    assert "warning" not in inst.log()
