"""Debian's Postfix as the oracle: where it is, whether it is there, its file-age quirk, postmap.

SYNOPSIS
    from support.postfix import DEBIAN_MASTER_CF, SBIN, installed, postmap_list, settled, version
    from support.postfix import SMTPD_MAIN_CF

    if installed(): ...                        # postconf on PATH and SBIN present
    settled(etc / "main.cf", etc / "master.cf")
    postmap_list("hash:" + str(data / "smtp_scache"))     # {key: value}, as bytes
    version()                                  # mail_version, e.g. "3.7.11"

DESCRIPTION
    SBIN is /usr/lib/postfix/sbin (master, tlsmgr, postlogd, smtpd, ...);
    DEBIAN_MASTER_CF is the package's stock master.cf.  SMTPD_MAIN_CF is
    the main.cf of a real smtpd that offers STARTTLS and delivers nothing
    here (no local domain, no aliases): what a test or a benchmark adds
    its certificate and caches to.

    settled() dates files 10 s back.  Postfix's load_file() (and
    dict_load_file) waits while a file it reads changed within the last
    second or two, so a configuration a test has just written would cost
    1-2 s per Postfix command.

    postmap_list() runs `postmap -c PRIVATE_DIR -s TYPE:PATH` with a
    private, empty main.cf (never /etc/postfix) and returns the entries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from support.waiting import WAIT

SBIN = Path("/usr/lib/postfix/sbin")
DEBIAN_MASTER_CF = "/usr/share/postfix/master.cf.dist"
SMTPD_MAIN_CF = {
    "myhostname": "localhost",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "smtpd_tls_security_level": "may",
}


def installed() -> bool:
    """Whether Debian's postfix package is there (postconf on PATH, SBIN present)."""
    return shutil.which("postconf") is not None and SBIN.is_dir()


def version() -> str:
    """Postfix's mail_version, "?" when postconf says nothing, or "not installed"."""
    try:
        out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True)
    except FileNotFoundError:
        return "not installed"
    return out.stdout.decode().strip() or "?"


def settled(*paths: Path | str) -> None:
    """Date files 10 s back, so that Postfix does not wait for them to settle."""
    then = time.time() - 10
    for path in paths:
        if os.path.exists(path):
            os.utime(path, (then, then))


def postmap_list(table: str) -> dict[bytes, bytes]:
    """`postmap -s TYPE:PATH` with a private empty main.cf: {key: value}."""
    config = tempfile.mkdtemp(prefix="postmap-", dir="/tmp")
    try:
        Path(config, "main.cf").write_text("")
        settled(Path(config, "main.cf"))
        proc = subprocess.run(
            ["postmap", "-c", config, "-s", table], capture_output=True, timeout=WAIT
        )
    finally:
        shutil.rmtree(config, ignore_errors=True)
    assert proc.returncode == 0, f"postmap -s {table}: {proc.stderr!r}"
    entries = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(b"\t")
        entries[key] = value
    return entries
