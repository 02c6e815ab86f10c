"""Postfix 3.7's logging model under our master: every process logs through postlogd.

With maillog_file set, the master, the control commands and every daemon send
their records to public/postlog, where our postlogd (`postlog unix-dgram n - n
- 1 postlogd`) appends them to maillog_file; the master and the commands write
the file themselves while postlogd cannot take a record.  Daemons keep no
descriptor of the file.  As root, with our tlsmgr (cache logging on) and the
skeleton's echo daemon.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from support.attrs import read_reply, request
from support.echo_daemon import write_daemon_script
from support.instance import MINIPOSTFIX, OUR_TLSMGR, TLSMGR_LINE, MiniInstance
from support.procs import processes_of
from support.waiting import WAIT, wait_until

pytestmark = pytest.mark.root

MAIN_CF = {
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
    "smtp_tls_loglevel": "2",
}
TAG = re.compile(r"^[A-Z][a-z]{2} \d{2} [\d:]{8} \S+ (\S+)\[(\d+)\]: (.*)$")


def lookup(inst: MiniInstance, cache_id: bytes) -> None:
    with inst.connect("private/tlsmgr") as sock:
        assert read_reply(sock) == [(b"protocol", b"tlsmgr_protocol")]
        sock.sendall(request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", cache_id))
        assert read_reply(sock)[0] == (b"status", b"4294967295")  # ERR: not found


def holders(path) -> list[int]:
    """Processes with a descriptor open on `path`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if str(path) in links:
            pids.append(int(pid))
    return pids


@pytest.fixture
def inst():
    with MiniInstance(main_cf=MAIN_CF, tlsmgr=OUR_TLSMGR) as instance:
        write_daemon_script(instance.bin / "echo", "multi")
        instance.write_master_cf(TLSMGR_LINE + "echo unix - n n - 1 echo\n")
        yield instance


def test_every_process_logs_through_postlogd_and_only_postlogd_holds_the_file(inst):
    assert "postlog unix-dgram n - n - 1 postlogd" in (inst.etc / "master.cf").read_text()
    inst.cli("start").check()
    lookup(inst, b"through-postlogd")
    with inst.connect("private/echo") as sock:
        sock.settimeout(WAIT)
        assert sock.recv(100) == b"hello\n"
    old = inst.tlsmgr_pid()
    inst.cli("reload").check()
    inst.wait_log("reload -- version")
    inst.wait_gone(old)  # it served until its successor did, then left
    lookup(inst, b"through-postlogd")  # the new tlsmgr
    tlsmgr = inst.tlsmgr_pid()
    # Daemons log through the socket: only postlogd has the file open.
    assert wait_until(lambda: holders(inst.maillog), "postlogd") == inst.postlogd_pids()
    assert tlsmgr not in holders(inst.maillog)
    text = inst.log()
    tags = {TAG.match(line)[1] for line in text.splitlines()}
    assert {"postfix/master", "postfix/minipostfix", "postfix/tlsmgr"} <= tags, text
    assert re.search(rf"postfix/tlsmgr\[{tlsmgr}\]: lookup smtp session id=through-postlogd", text)
    inst.cli("stop").check()
    assert inst.processes() == []
    # postlogd is stopped last: what tlsmgr logs as it leaves is written too.
    lines = inst.log().splitlines()
    stop = next(i for i, line in enumerate(lines) if "terminating on signal 15" in line)
    assert any(f"tlsmgr[{tlsmgr}]: close smtp TLS cache" in line for line in lines[stop:])


def test_a_cache_id_with_a_newline_cannot_forge_a_log_line(inst):
    inst.cli("start").check()
    forged = b"x\nDec 04 12:00:00 mail postfix/master[1]: forged by a client"
    lookup(inst, forged)
    tlsmgr = inst.tlsmgr_pid()
    (line,) = inst.wait_log("forged by a client")
    match = TAG.match(line)
    assert match[1] == "postfix/tlsmgr" and int(match[2]) == tlsmgr
    assert match[3] == (
        "lookup smtp session id=x?Dec 04 12:00:00 mail postfix/master[1]: forged by a client"
    )
    assert not [ln for ln in inst.log().splitlines() if ln.startswith("Dec 04 12:00:00")]
    inst.cli("stop").check()


def test_a_log_file_planted_as_a_link_stops_the_start(inst):
    victim = inst.root / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    inst.maillog.symlink_to(victim)
    nobody = pwd.getpwnam("nobody")
    os.lchown(inst.maillog, nobody.pw_uid, nobody.pw_gid)  # made by someone else
    result = inst.cli("start")
    assert result.returncode == 1
    assert f"open logfile '{inst.maillog}': file is a symbolic link" in result.stderr
    assert victim.read_text() == "precious\n"
    inst.wait_for(lambda: not inst.processes(), "the refused master to be gone")


def test_maillog_file_outside_its_prefixes(inst):
    inst.write_main_cf(maillog_file_prefixes="/var")
    message = (
        f"maillog_file value '{inst.maillog}' does not match any prefix in maillog_file_prefixes"
    )
    for command in ("start", "check"):
        result = inst.cli(command)
        assert result.returncode == 1 and f"fatal: {message}" in result.stderr
    assert inst.processes() == [] and not inst.maillog.exists()
    # Started while the prefixes allowed the file, then changed: stop and status
    # still work, with a warning; the log file is not written by them.
    inst.write_main_cf(maillog_file_prefixes="/tmp")
    inst.cli("start").check()
    inst.wait_log("daemon started")
    wait_until(inst.postlogd_pids, "postlogd")  # started with the old prefixes
    inst.write_main_cf(maillog_file_prefixes="/var")
    status = inst.cli("status")
    assert status.returncode == 0 and f"warning: {message}" in status.stderr
    assert "is running" in status.stderr
    # reload refuses; a SIGHUP all the same keeps the running configuration.
    reload = inst.cli("reload")
    assert reload.returncode == 1 and f"fatal: {message}" in reload.stderr
    os.kill(inst.master_pid(), signal.SIGHUP)
    inst.wait_log(rf"error: reload: {re.escape(message)}; keeping the running configuration")
    stop = inst.cli("stop")
    assert stop.returncode == 0 and f"warning: {message}" in stop.stderr
    assert inst.processes() == []
    assert "stopping the minipostfix mail system" not in inst.maillog.read_text()


def test_check_wants_a_postlog_service_when_maillog_file_is_set(inst):
    inst.postlog = False
    inst.write_master_cf(TLSMGR_LINE)
    result = inst.cli("check")
    assert result.returncode == 1
    assert (
        "fatal: missing 'postlog' service in master.cf (maillog_file is set): "
        "add 'postlog unix-dgram n - n - 1 postlogd'"
    ) in result.stderr


@contextlib.contextmanager
def start_fg_on_stdout(inst: MiniInstance, *wrapper: str) -> Iterator[subprocess.Popen]:
    """`minipostfix start-fg` (run by `wrapper`, e.g. unshare) with maillog_file =
    /dev/stdout; yields the process once tlsmgr's socket exists, killed after if it
    is still running."""
    inst.write_main_cf(maillog_file="/dev/stdout", maillog_file_prefixes="/dev/stdout")
    proc = subprocess.Popen(
        [*wrapper, MINIPOSTFIX, "-c", str(inst.etc), "start-fg"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_until(lambda: (inst.queue / "private" / "tlsmgr").exists(), "tlsmgr's socket")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_start_fg_with_dev_stdout_shows_every_processs_lines_in_order(inst):
    with start_fg_on_stdout(inst) as proc:
        lookup(inst, b"on-stdout")
        with inst.connect("private/echo") as sock:
            sock.settimeout(WAIT)
            sock.recv(100)
        wait_until(lambda: inst.tlsmgr_pids(), "tlsmgr")
        inst.cli("stop").check()
        out, _ = proc.communicate(timeout=WAIT)
    lines = out.splitlines()
    tags = [TAG.match(line)[1] for line in lines]
    # In order: the command's and the master's first lines, tlsmgr's, the stop.
    first = lambda text: next(i for i, line in enumerate(lines) if text in line)  # noqa: E731
    assert first("starting the minipostfix mail system") < first("daemon started")
    assert first("daemon started") < first("lookup smtp session id=on-stdout")
    assert first("lookup smtp session id=on-stdout") < first("stopping the minipostfix")
    assert first("stopping the minipostfix") < first("terminating on signal")
    assert {"postfix/minipostfix", "postfix/master", "postfix/tlsmgr"} <= set(tags)
    assert processes_of(inst.root) == []


def test_logrotate_renames_reopens_and_compresses(inst):
    inst.write_main_cf(maillog_file_rotate_suffix="rotated-%Y")
    inst.cli("start").check()
    lookup(inst, b"before-rotation")
    inst.wait_log("id=before-rotation")
    result = inst.cli("logrotate")
    assert result.returncode == 0, result.stderr
    rotated = inst.root / f"maillog.rotated-{time.strftime('%Y')}.gz"
    assert rotated.exists()
    old = subprocess.run(["zcat", str(rotated)], capture_output=True, text=True).stdout
    assert "id=before-rotation" in old
    lookup(inst, b"after-rotation")
    inst.wait_log("id=after-rotation")
    assert "id=before-rotation" not in inst.log()
    assert "reload -- version" in old + inst.log()
    inst.cli("stop").check()


def test_logrotate_refuses_what_postfix_refuses(inst):
    inst.write_main_cf(maillog_file_compressor="")
    result = inst.cli("logrotate")
    assert result.returncode == 1
    assert (
        "fatal: empty 'maillog_file_compressor' parameter value - logfile rotation failed"
        in result.stderr
    )
    inst.write_main_cf(
        maillog_file_compressor="gzip",
        maillog_file="/dev/stdout",
        maillog_file_prefixes="/dev/stdout",
    )
    result = inst.cli("logrotate")
    assert result.returncode == 1 and "fatal: not rotating '/dev/stdout'" in result.stderr
    inst.write_main_cf(
        maillog_file=str(inst.maillog),
        maillog_file_compressor="/nonexistent/gz",
        maillog_file_prefixes="/tmp",
    )
    inst.maillog.write_text("")
    inst.maillog.chmod(0o600)
    result = inst.cli("logrotate")
    assert result.returncode == 1
    assert f"fatal: logfile '{inst.maillog}' rotation failed: /nonexistent/gz:" in result.stderr


def test_start_fg_as_pid_1_of_a_container_logs_on_stdout_and_stops_on_term(inst):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed")
    with start_fg_on_stdout(inst, unshare, "--pid", "--fork", "--kill-child") as proc:
        lookup(inst, b"in-a-container")
        # tlsmgr answered the lookup. (The pid file holds the namespace's pids, so the
        # instance's own views of its children do not apply here.)
        (master,) = [pid for pid in processes_of(inst.root) if ns_pid(pid) == 1]
        os.kill(master, signal.SIGTERM)  # what `docker stop` sends
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    assert "postfix/master[1]: daemon started" in out
    assert "lookup smtp session id=in-a-container" in out
    assert "postfix/master[1]: terminating on signal 15" in out
    assert "daemon started" not in err  # not repeated on stderr
    assert processes_of(inst.root) == []


def ns_pid(pid: int) -> int:
    """The process's pid in its own (innermost) PID namespace."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("NSpid:"))
    return int(line.split()[-1])


def test_records_queued_while_no_postlogd_runs_are_written_at_stop(inst):
    # postlogd leaves after max_idle; at stop the master starts no child, so what
    # tlsmgr logs as it leaves stays on the socket until the master writes it.
    inst.write_master_cf(TLSMGR_LINE + "postlog unix-dgram n - n - 1 postlogd -o max_idle=1s\n")
    inst.cli("start").check()
    lookup(inst, b"before-idle")
    tlsmgr = inst.tlsmgr_pid()
    inst.wait_log("id=before-idle")
    inst.wait_for(lambda: not inst.postlogd_pids(), "postlogd to leave after max_idle")
    inst.cli("stop").check()
    assert inst.processes() == []
    lines = inst.maillog.read_text().splitlines()
    stop = next(i for i, line in enumerate(lines) if "terminating on signal 15" in line)
    assert any(f"tlsmgr[{tlsmgr}]: close smtp TLS cache" in line for line in lines[stop:])


def test_a_reload_loses_no_record_and_keeps_their_order(inst):
    # The old postlogd stops reading at the reload (the trigger server's drain);
    # what is queued on the socket then, or sent meanwhile, goes to its successor.
    inst.cli("start").check()
    old = set(wait_until(inst.postlogd_pids, "postlogd"))
    reload = threading.Thread(target=lambda: inst.cli("reload").check())
    reload.start()
    sent, after = 0, 0
    deadline = time.monotonic() + WAIT
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.connect(str(inst.queue / "public" / "postlog"))
        sender.settimeout(WAIT)  # blocking: waits while the queue is full
        while after < 200 and time.monotonic() < deadline:
            sender.send(f"Dec 04 00:00:00 localhost test/sender[1]: record {sent}".encode())
            sent += 1
            if not old & set(inst.postlogd_pids()):
                after += 1  # the old postlogd is gone: these go to its successor
    reload.join()
    assert after == 200, "the old postlogd did not leave"
    inst.wait_log(f"record {sent - 1}$")
    got = [int(line.split()[-1]) for line in inst.log().splitlines() if "test/sender" in line]
    assert got == list(range(sent))
    assert "reload -- version" in inst.log()
    assert inst.postlogd_pids()  # the successor
    inst.cli("stop").check()
