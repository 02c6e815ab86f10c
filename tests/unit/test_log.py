"""master.log: one record per call, Postfix's printable(), and the postlog client.

With maillog_file set, a process sends each record as one datagram to postlogd's
unix-dgram socket (here a socket the test binds and reads), without ever
blocking: a master or control command appends what the socket cannot take to
maillog_file itself, a daemon counts it as dropped and says so once records get
through again.
"""

from __future__ import annotations

import os
import re
import socket

import pytest

from master import log
from master.config import Config
from master.maillog import MaillogError

RECORD = re.compile(
    r"^[A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} "  # Mmm dd hh:mm:ss
    r"(?P<host>\S+) (?P<tag>\S+)\[(?P<pid>\d+)\]: (?P<text>.*)$",
    re.S,
)


@pytest.fixture
def postlogd(tmp_path):
    """A bound unix-dgram socket standing where postlogd listens; restores logging after."""
    path = str(tmp_path / "postlog")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()
    log.log_init("pytest", maillog_file="/dev/stderr")


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536).decode())
        except BlockingIOError:
            return out


def fill(sock_path: str) -> int:
    """Queue datagrams on the socket until it takes no more; how many it took."""
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.connect(sock_path)
    count = 0
    try:
        while True:
            filler.send(b"filler", socket.MSG_DONTWAIT)
            count += 1
    except BlockingIOError:
        return count
    finally:
        filler.close()


# printable() ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "utf8", "shown"),
    [
        (b"printable", True, b"printable"),
        (b"non\bn-printable", True, b"non?n-printable"),  # Postfix's own test case
        (b"a\nb\rc\td\x1be\x7ff\0g", True, b"a?b?c?d?e?f?g"),
        (b"na\xc3\xafve", True, b"na\xc3\xafve"),  # UTF-8 stays
        (b"na\xc3\xafve", False, b"na??ve"),  # without UTF-8: each byte is "?"
        (b"na\xc3ve", True, b"na?ve"),  # a leader without its continuation
        (b"x\xffy", True, b"x?y"),
        # Postfix 3.7's test is lenient: a leader and the continuation bytes after it.
        (b"\xed\xa0\x80", True, b"\xed\xa0\x80"),
        (b"\xc2\x85", True, b"\xc2\x85"),
        (b"\xc2\x85", False, b"??"),
    ],
)
def test_printable_is_postfixs_replacement_with_question_marks(data, utf8, shown):
    assert log.printable(data, utf8) == shown


def test_text_bytes_gives_back_the_bytes_a_client_sent():
    raw = b"id-\xff\xc3\xa9"
    assert log.text_bytes(raw.decode("utf-8", "surrogateescape")) == raw
    assert log.text_bytes("\ud800") == b"?"


# Records through postlogd ---------------------------------------------------


def test_a_record_is_one_datagram_in_postlogs_format(postlogd):
    sock, path = postlogd
    log.log_init("tlsmgr", maillog_file="/var/x", postlog=path, hostname="mail.example.com")
    log.msg_warn('bogus seed length "0"')
    log.msg_info("plain")
    first, second = received(sock)
    match = RECORD.match(first)
    assert match, first
    assert match["host"] == "mail"  # the first label of myhostname
    assert match["tag"] == "postfix/tlsmgr" and int(match["pid"]) == os.getpid()
    assert match["text"] == 'warning: bogus seed length "0"'
    assert not first.endswith("\n")  # postlogd adds the newline
    assert RECORD.match(second)["text"] == "plain"


def test_a_newline_in_a_text_cannot_start_a_line_of_its_own(postlogd):
    sock, path = postlogd
    log.log_init("tlsmgr", maillog_file="/var/x", postlog=path, utf8=True)
    log.msg_info("lookup smtp session id=x\nDec 04 12:00:00 mail postfix/master[1]: forged")
    (record,) = received(sock)
    assert "\n" not in record
    assert RECORD.match(record)["text"] == (
        "lookup smtp session id=x?Dec 04 12:00:00 mail postfix/master[1]: forged"
    )


def test_a_long_text_is_cut_at_2000_bytes_as_postfix_does(postlogd):
    sock, path = postlogd
    log.log_init("tlsmgr", maillog_file="/var/x", postlog=path)
    log.msg_warn("x" * 5000)
    (record,) = received(sock)
    assert RECORD.match(record)["text"] == "warning: " + "x" * log.RECORD_LIMIT


def test_a_daemon_counts_what_a_full_socket_refused_and_says_so_later(postlogd, tmp_path):
    sock, path = postlogd
    logfile = tmp_path / "maillog"
    log.log_init("tlsmgr", maillog_file=str(logfile), postlog=path)
    fill(path)
    for n in range(3):
        log.msg_info(f"lost {n}")  # returns at once: MSG_DONTWAIT
    assert log.dropped_records() == 3
    assert not logfile.exists()  # a daemon never writes maillog_file
    received(sock)
    log.msg_info("back")
    texts = [RECORD.match(r)["text"] for r in received(sock)]
    assert texts == ["back", f"warning: 3 earlier log record(s) dropped: {log.DROPPED_WHY}"]
    assert log.dropped_records() == 3


def test_the_master_appends_to_maillog_file_what_the_socket_cannot_take(postlogd, tmp_path):
    sock, path = postlogd
    logfile = tmp_path / "maillog"
    log.log_init("master", maillog_file=str(logfile), postlog=path, fallback=True)
    taken = fill(path)
    log.msg_info("straight to the file")
    assert len(received(sock)) == taken  # the socket's own queue, nothing more
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1 and RECORD.match(lines[0])["text"] == "straight to the file"
    log.msg_info("through postlogd again")
    assert [RECORD.match(r)["text"] for r in received(sock)] == ["through postlogd again"]
    assert log.dropped_records() == 0


def test_without_postlogd_the_master_writes_the_file_and_reconnects_later(tmp_path):
    path = str(tmp_path / "postlog")
    logfile = tmp_path / "maillog"
    try:
        log.log_init("master", maillog_file=str(logfile), postlog=path, fallback=True)
        log.msg_info("before the socket exists")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        log.msg_info("once it listens")
        assert "before the socket exists" in logfile.read_text()
        assert [RECORD.match(r)["text"] for r in received(sock)] == ["once it listens"]
        # A new socket at the same name (a restarted master): connect again.
        sock.close()
        os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        log.msg_info("to the new socket")
        assert [RECORD.match(r)["text"] for r in received(sock)] == ["to the new socket"]
        sock.close()
    finally:
        log.log_init("pytest", maillog_file="/dev/stderr")


def test_fallback_only_writes_the_file_directly(postlogd, tmp_path):
    sock, path = postlogd
    logfile = tmp_path / "maillog"
    log.log_init("master", maillog_file=str(logfile), postlog=path, fallback=True)
    log.fallback_only()
    log.msg_info("last words")
    assert received(sock) == []
    assert "last words" in logfile.read_text()


# log_config ------------------------------------------------------------------


def config(**main: str) -> Config:
    return Config({"queue_directory": "/q", "compatibility_level": "3.6", **main})


def test_log_config_refuses_a_maillog_file_outside_the_prefixes():
    with pytest.raises(MaillogError) as err:
        log.log_config("master", config(maillog_file="/tmp/x.log"), "fallback")
    assert str(err.value) == (
        "maillog_file value '/tmp/x.log' does not match any prefix in maillog_file_prefixes"
    )


def test_log_config_sends_to_the_postlog_service_under_the_queue_directory(postlogd, tmp_path):
    sock, path = postlogd
    public = tmp_path / "q" / "public"
    public.mkdir(parents=True)
    os.rename(path, public / "mylog")
    settings = config(
        queue_directory=str(tmp_path / "q"),
        maillog_file="/var/log/x",
        postlog_service_name="mylog",
        myhostname="relay.example.org",
        syslog_name="edge",
    )
    assert log.postlog_path(settings) == str(public / "mylog")
    log.log_config("tlsmgr", settings, "daemon")
    log.msg_info("h\u00e9")  # compatibility_level 3.6: smtputf8_enable, UTF-8 shown
    match = RECORD.match(received(sock)[0])
    assert (match["host"], match["tag"], match["text"]) == ("relay", "edge/tlsmgr", "h\u00e9")


def test_log_config_writer_mode_opens_the_file_itself(tmp_path):
    logfile = tmp_path / "maillog"
    try:
        log.log_config(
            "postlogd",
            config(maillog_file=str(logfile), maillog_file_prefixes=str(tmp_path)),
            "writer",
        )
        fd = log.maillog_fd()
        assert fd is not None and os.fstat(fd).st_ino == logfile.stat().st_ino
        log.msg_warn("own record")
        assert RECORD.match(logfile.read_text().rstrip("\n"))["text"] == "warning: own record"
    finally:
        log.log_init("pytest", maillog_file="/dev/stderr")
