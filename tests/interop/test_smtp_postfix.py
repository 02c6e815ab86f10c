"""The smtp test client resumes its session with a real Postfix smtpd, through our tlsmgr.

A private Postfix 3.7 instance under /tmp (decisions.md 6, postfix-facts.md 6): the real
master (`/usr/lib/postfix/sbin/master -c DIR -w`), a real smtpd with STARTTLS on a free
loopback port (chroot n), anvil and postlogd; daemon_directory is a folder of symlinks
to /usr/lib/postfix/sbin/* in which `tlsmgr` points to OUR tlsmgr instead.  So the real
smtpd takes its seed, ticket keys and smtpd cache from our tlsmgr, and the smtp test
client keeps its session in our tlsmgr's smtp cache.  Stopped by TERM to the pid in
queue/pid/master.pid; whatever of the instance is left is killed and the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postfix, pytest.mark.root]

SBIN = Path("/usr/lib/postfix/sbin")
BIN = Path(sys.executable).parent
WAIT = 60

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
daemon_directory = {root}/libexec
mail_owner = postfix
inet_interfaces = loopback-only
maillog_file = {root}/maillog
maillog_file_prefixes = /tmp
myhostname = localhost
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
smtpd_tls_security_level = may
smtpd_tls_cert_file = {root}/etc/testsmtpd-cert.pem
smtpd_tls_key_file = {root}/etc/testsmtpd-key.pem
smtpd_tls_loglevel = 2
smtpd_tls_session_cache_database = btree:${{data_directory}}/smtpd_scache
smtp_tls_session_cache_database = btree:${{data_directory}}/smtp_scache
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
postlog unix-dgram n - n - 1 postlogd
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _instance_pids(root: Path) -> list[int]:
    marks = (f"MAIL_CONFIG={root}/etc".encode(), f"{root}/".encode())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{entry}/environ").read_bytes()
            blob += Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if any(m in blob for m in marks):
            found.append(int(entry))
    return found


def _build(root: Path, port: int) -> None:
    for sub in ("etc", "queue/private", "queue/public", "queue/pid", "data", "libexec"):
        (root / sub).mkdir(parents=True)
    shutil.chown(root / "queue/private", "postfix")
    (root / "queue/private").chmod(0o700)
    shutil.chown(root / "queue/public", "postfix", "postdrop")
    (root / "queue/public").chmod(0o2710)
    shutil.chown(root / "data", "postfix")
    for program in SBIN.iterdir():
        if program.name != "tlsmgr":
            (root / "libexec" / program.name).symlink_to(program)
    ours = BIN / "tlsmgr"
    assert ours.exists(), f"{ours}: our tlsmgr console script is missing"
    (root / "libexec/tlsmgr").symlink_to(ours)
    (root / "etc/main.cf").write_text(MAIN_CF.format(root=root))
    (root / "etc/master.cf").write_text(MASTER_CF.format(port=port))
    subprocess.run(
        [sys.executable, "-m", "tlsmgr.clients.mkcert", str(root / "etc")],
        check=True,
        capture_output=True,
    )


def _stop(root: Path) -> list[int]:
    pidfile = root / "queue/pid/master.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pid = None
    deadline = time.monotonic() + WAIT
    while _instance_pids(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _instance_pids(root)
    for leftover in left:
        try:
            os.kill(leftover, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture
def postfix():
    root = Path(tempfile.mkdtemp(prefix="pfx.", dir="/tmp"))
    root.chmod(0o755)
    port = _free_port()
    left: list[int] = []
    try:
        _build(root, port)
        started = subprocess.run(
            [str(SBIN / "master"), "-c", str(root / "etc"), "-w"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert started.returncode == 0, started.stderr
        yield root, port
    finally:
        left = _stop(root)
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes of the private Postfix left behind: {left}"


def _run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *map(str, argv)], capture_output=True, text=True, timeout=WAIT * 3
    )


def _wait_log(root: Path, pattern: str) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = (root / "maillog").read_text() if (root / "maillog").exists() else ""
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    pytest.fail(f"no log line matching {pattern!r} in:\n{text}")


def test_smtp_client_resumes_with_real_smtpd_through_our_tlsmgr(postfix):
    root, port = postfix
    client = ("tlsmgr.clients.smtp", "-c", root / "etc", "--port", port)

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
    log = _wait_log(root, r"postfix/smtpd\[\d+\]: \S+: Reusing old session")
    assert re.search(r"postfix/smtpd\[\d+\]: \S+: Issuing session ticket, key expiration", log)
    assert re.search(r"postfix/smtpd\[\d+\]: \S+: Decrypting session ticket", log)
    # The real smtpd stored its session in our smtpd cache, with the id layout
    # that tlsmgr.clients.smtpd copies.
    saved = re.findall(r"postfix/smtpd\[\d+\]: \S+: save session (\S+) to smtpd cache", log)
    assert saved and re.fullmatch(rf"[0-9A-F]{{64}}&s=127\.0\.0\.1:{port}&l=\d+", saved[0])

    stats = _run("tlsmgr.clients.probe", "-c", root / "etc", "stats")
    assert stats.returncode == 0, stats.stderr
    figures = dict(line.split(" = ", 1) for line in stats.stdout.splitlines()[1:])
    assert int(figures["requests.tktkey"]) >= 1
    assert int(figures["smtp.hits"]) >= 1
    assert int(figures["smtpd.entries"]) >= 1
    lookup = _run("tlsmgr.clients.probe", "-c", root / "etc", "lookup", "smtpd", saved[0])
    assert lookup.returncode == 0, lookup.stdout
    assert "bad command startup" not in log and "fatal" not in log
