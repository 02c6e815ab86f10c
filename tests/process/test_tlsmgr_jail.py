"""Our tlsmgr under our master, chrooted and unprivileged, as the embedded master.cf runs it.

`tlsmgr unix - - y 1000? 1 tlsmgr`: the child chroots into queue_directory and
runs as mail_owner.  Every request type is answered from inside the jail (so
no lazy import, no file opened late, breaks after the chroot), the PRNG timers
(reseed from the device, exchange-file rewrites) run there, cache logging
reaches maillog_file, and the files tlsmgr made belong to mail_owner, mode
0600.  Checked through /proc and the file system, as root.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import socket
import stat

import pytest

from support.attrs import ask, read_reply, request
from support.instance import OUR_TLSMGR, MiniInstance
from support.procs import proc_ids, tlsmgr_args
from support.waiting import wait_until

pytestmark = pytest.mark.root

MAIN_CF = {
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
    "smtp_tls_loglevel": "2",
    "smtpd_tls_loglevel": "1",
    # Timers fire at random moments within these periods: several reseeds
    # and exchange-file rewrites happen while the tests run.
    "tls_random_reseed_period": "1s",
    "tls_random_prng_update_period": "1s",
}
OK, ERR, FAIL = b"0", b"4294967295", b"4294967294"


@pytest.fixture(scope="module")
def jailed():
    with MiniInstance(main_cf=MAIN_CF, tlsmgr=OUR_TLSMGR) as inst:
        inst.cli("start").check()
        inst.wait_spawn_server("tlsmgr")  # the usual way: tlsmgr forked by its spawn server
        with inst.connect("private/tlsmgr") as sock:  # the master forks tlsmgr now
            assert read_reply(sock) == [(b"protocol", b"tlsmgr_protocol")]
        pid = inst.tlsmgr_pid()
        yield inst, pid
        assert inst.tlsmgr_pids() == [pid], "tlsmgr was restarted during the tests"
        inst.cli("stop").check()
        assert inst.processes() == []
        assert_clean_log(inst)


def assert_clean_log(inst: MiniInstance) -> None:
    text = inst.log()
    for bad in ("fatal:", "panic:", "error:", "Traceback", "bad command startup", "killed"):
        assert bad not in text, f"{bad!r} in the log:\n{text}"


class Conn:
    """One client connection, one request at a time, as real clients do."""

    def __init__(self, inst: MiniInstance) -> None:
        self.sock = inst.connect("private/tlsmgr")
        assert read_reply(self.sock) == [(b"protocol", b"tlsmgr_protocol")]

    def ask(self, *attrs: bytes) -> list[tuple[bytes, bytes]]:
        return ask(self.sock, *attrs)

    def close(self) -> None:
        self.sock.close()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_tlsmgr_is_chrooted_and_runs_as_mail_owner(jailed):
    inst, pid = jailed
    owner = pwd.getpwnam("postfix")
    ids = proc_ids(pid)
    assert ids.root == str(inst.queue)
    assert ids.uids == (owner.pw_uid,) * 4
    assert ids.gids == (owner.pw_gid,) * 4
    # initgroups(mail_owner), as chroot_uid.c: exactly mail_owner's own groups, none of root's.
    assert ids.groups == frozenset(os.getgrouplist("postfix", owner.pw_gid))
    # Forked by its spawn server, it shows the server's command line; that the argv it
    # runs with is the master's is checked in test_spawn_server.py.
    assert tlsmgr_args(pid) == ["--spawner"]


def test_files_belong_to_mail_owner_mode_0600(jailed):
    inst, _ = jailed
    owner = pwd.getpwnam("postfix")
    names = ["prng_exch", "smtp_scache.db", "smtpd_scache.db"]
    names += [n for n in os.listdir(inst.data) if n.endswith(".age.db")]
    for name in names:
        st = os.stat(inst.data / name)
        got = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        assert got == (0o600, owner.pw_uid, owner.pw_gid), f"{name}: {got}"
    assert not (inst.data / "lmtp_scache.db").exists()


def test_every_request_is_answered_in_the_jail(jailed):
    inst, pid = jailed
    conn = Conn(inst)
    session = bytes(range(256)) * 4
    try:
        seed = conn.ask(b"request", b"seed", b"size", b"32")
        assert [n for n, _ in seed] == [b"status", b"seed"] and seed[0][1] == OK
        assert len(base64.b64decode(seed[1][1])) == 32

        lookup = (b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"jail-id")
        assert conn.ask(*lookup) == [(b"status", ERR), (b"session", b"")]
        update = (b"request", b"update", b"cache_type", b"smtp", b"cache_id", b"jail-id")
        assert conn.ask(*update, b"session", b64(session)) == [(b"status", OK)]
        assert conn.ask(*lookup) == [(b"status", OK), (b"session", b64(session))]
        smtpd_update = (b"request", b"update", b"cache_type", b"smtpd", b"cache_id", b"s-id")
        assert conn.ask(*smtpd_update, b"session", b"QUJD") == [(b"status", OK)]
        delete = (b"request", b"delete", b"cache_type", b"smtp", b"cache_id", b"jail-id")
        assert conn.ask(*delete) == [(b"status", OK)]
        assert conn.ask(*delete) == [(b"status", ERR)]
        assert conn.ask(*lookup) == [(b"status", ERR), (b"session", b"")]
        disabled = (b"request", b"lookup", b"cache_type", b"lmtp", b"cache_id", b"x")
        assert conn.ask(*disabled) == [(b"status", FAIL), (b"session", b"")]

        new = conn.ask(b"request", b"tktkey", b"keyname", b"")
        assert new[0] == (b"status", OK)
        keybuf = base64.b64decode(new[1][1])
        assert len(keybuf) == 88
        known = conn.ask(b"request", b"tktkey", b"keyname", b64(keybuf[:16]))
        assert known == [(b"status", OK), (b"keybuf", new[1][1])]
        unknown = b64(bytes(16))
        assert conn.ask(b"request", b"tktkey", b"keyname", unknown) == [
            (b"status", ERR),
            (b"keybuf", unknown),
        ]
        bad_length = conn.ask(b"request", b"tktkey", b"keyname", b64(b"abc"))
        assert bad_length == [(b"status", FAIL), (b"keybuf", b"")]

        assert conn.ask(b"request", b"policy", b"cache_type", b"smtp") == [
            (b"status", OK),
            (b"cachable", b"1"),
            (b"timeout", b"3600"),
        ]
        assert conn.ask(b"request", b"policy", b"cache_type", b"lmtp") == [
            (b"status", OK),
            (b"cachable", b"0"),
            (b"timeout", b"3600"),
        ]
        assert conn.ask(b"request", b"policy", b"cache_type", b"bogus") == [
            (b"status", FAIL),
            (b"cachable", b"0"),
            (b"timeout", b"0"),
        ]

        stats = dict(conn.ask(b"request", b"stats"))
        assert stats[b"status"] == OK
        assert stats[b"smtp.entries"] == b"0" and stats[b"smtpd.entries"] == b"1"
        assert stats[b"lmtp.enabled"] == b"0"
        assert int(stats[b"requests.tktkey"]) >= 4

        # minipostfix answers an unknown request (3.7.11 does not: the client hangs).
        assert conn.ask(b"request", b"frobnicate") == [(b"status", FAIL)]
        # The connection is still usable after every one of these.
        assert conn.ask(*lookup)[0] == (b"status", ERR)
    finally:
        conn.close()
    # Cache logging (smtp_tls_loglevel = 2) and warnings reach maillog_file from the jail.
    inst.wait_log(rf"postfix/tlsmgr\[{pid}\]: put smtp session id=jail-id \[data 1024 bytes\]")
    inst.wait_log(rf"postfix/tlsmgr\[{pid}\]: delete smtp session id=jail-id")
    inst.wait_log(rf'postfix/tlsmgr\[{pid}\]: warning: bogus cache type "bogus" in "policy"')
    inst.wait_log(rf"postfix/tlsmgr\[{pid}\]: warning: invalid session ticket key name length: 3")
    assert "smtpd session id=s-id" not in inst.log()  # smtpd_tls_loglevel 1: no cache logging
    assert inst.tlsmgr_pids() == [pid]
    assert_clean_log(inst)


FAILED = b"status\x004294967294\x00"
UPDATE_X = (b"request", b"update", b"cache_type", b"smtp", b"cache_id", b"x", b"session")


@pytest.mark.parametrize(
    "sent, reply",
    [
        # Malformed requests: FAIL with the request's reply shape, connection kept.
        (request(b"request", b"lookup", b"cache_type", b"smtp"), FAILED + b"session\0\0\0"),
        (request(b"request", b"seed", b"sizex", b"32"), FAILED + b"seed\0\0\0"),
        (request(b"request", b"seed", b"size", b"0x10"), FAILED + b"seed\0\0\0"),
        (request(*UPDATE_X, b"!!"), FAILED + b"\0"),
        (b"\xff\xfe\0garbage\0\0", FAILED + b"\0"),
    ],
    ids=["missing-attr", "wrong-name", "bad-number", "bad-base64", "garbage"],
)
def test_malformed_requests_get_fail_and_the_connection_stays(jailed, sent, reply):
    inst, pid = jailed
    conn = Conn(inst)
    try:
        conn.sock.sendall(sent)
        got = b""
        while len(got) < len(reply):
            chunk = conn.sock.recv(len(reply) - len(got))
            assert chunk, f"connection closed after {got!r}"
            got += chunk
        assert got == reply
        assert conn.ask(b"request", b"policy", b"cache_type", b"smtp")[0] == (b"status", OK)
    finally:
        conn.close()
    assert inst.tlsmgr_pids() == [pid]


def test_over_limit_request_gets_fail_then_close(jailed):
    inst, pid = jailed
    conn = Conn(inst)
    try:
        conn.sock.sendall(request(b"request", b"seed", b"n" * 65, b"32"))
        assert read_reply(conn.sock) == [(b"status", FAIL)]
        assert conn.sock.recv(1) == b""
    finally:
        conn.close()
    inst.wait_log(
        rf"postfix/tlsmgr\[{pid}\]: warning: attribute name longer than 64 bytes from local pid"
    )
    assert inst.tlsmgr_pids() == [pid]


def test_wakeup_trigger_closes_without_reply(jailed):
    inst, pid = jailed
    with inst.connect("private/tlsmgr") as sock:
        assert read_reply(sock) == [(b"protocol", b"tlsmgr_protocol")]
        sock.sendall(b"W")  # two writes, as the master's trigger
        sock.sendall(b"\0")
        assert sock.recv(100) == b""
    assert inst.tlsmgr_pids() == [pid]


def test_prng_timers_run_in_the_jail(jailed):
    inst, pid = jailed
    exch = inst.data / "prng_exch"
    before = exch.read_bytes()

    def stats() -> dict[bytes, bytes]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(inst.socket_path)
            read_reply(sock)
            sock.sendall(request(b"request", b"stats"))
            return dict(read_reply(sock))

    first = int(stats()[b"prng.reseeds"])
    # Reseeds read /dev/urandom, opened before the chroot, from inside the jail.
    wait_until(lambda: int(stats()[b"prng.reseeds"]) >= first + 2, "two more reseeds")
    # The exchange file is rewritten in place from inside the jail.
    wait_until(lambda: exch.read_bytes() != before, "an exchange-file rewrite")
    assert len(exch.read_bytes()) == 1024
    assert re.fullmatch(r"\d+", stats()[b"prng.bytes_reseeded"].decode())
    assert inst.tlsmgr_pids() == [pid]
    assert_clean_log(inst)
