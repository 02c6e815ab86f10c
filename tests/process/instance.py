"""Instances running a tlsmgr for the process and interop tests: ours or Postfix's, under
our master or under Postfix's master(8).

SYNOPSIS
    from instance import TlsmgrInstance, PostfixInstance, postmap_list, read_reply, started

    with TlsmgrInstance(main_cf={...}) as inst:        # our master, our tlsmgr, chroot y
        inst.cli("start").check()
        with inst.connect("private/tlsmgr") as sock:
            assert read_reply(sock) == GREETING_ATTRS
        pid = inst.tlsmgr_pid()                         # waits for the child
        client = inst.client()                          # a tlsmgr.client.TlsmgrClient
        inst.cli("stop").check()
        postmap_list("hash:" + str(inst.data / "smtp_scache"))   # {key: value}

    with started(main_cf={...}) as inst:               # the same, started; at the end
        ...                                             # stopped, no process left

    with PostfixInstance(tlsmgr="ours"|"postfix", main_cf={...}) as pfx:
        pfx.start()                                     # master -c DIR -w
        ...
        pfx.stop()                                      # TERM to pid/master.pid, wait

DESCRIPTION
    TlsmgrInstance is test_master_helpers.Instance (a world-searchable
    root under /tmp with etc/, queue/, data/, bin/ = daemon_directory and
    maillog; every process of the instance killed and the root removed on
    exit) with bin/tlsmgr linked to a tlsmgr program (this venv's console
    script unless told otherwise) and master.cf's line as the embedded
    master.cf has it: `tlsmgr unix - - y 1000? 1 tlsmgr`.

    PostfixInstance is the same root run by Debian's master(8) itself
    (postfix-facts.md 6, decisions.md 6): daemon_directory bin/ holds
    symlinks to /usr/lib/postfix/sbin/* with tlsmgr pointing at the real
    one (tlsmgr="postfix") or at ours (tlsmgr="ours"); master.cf adds
    `postlog unix-dgram n - n - 1 postlogd` and main.cf sets
    maillog_file_prefixes so that the real daemons' lines reach the
    maillog file.  The queue's private/, public/ and pid/ folders and
    data_directory are made with Postfix's owners first, as postfix(1)
    would.  Never touches /etc/postfix.

    postmap_list() runs `postmap -c PRIVATE_DIR -s TYPE:PATH` with a
    private, empty main.cf and returns the entries as bytes.
    read_reply() reads one attribute list (Postfix's "0" format) from a
    blocking socket and returns it as a list of (name, value) pairs;
    parse_list() is the same on bytes, request() builds one.  WAIT and
    wait_until() come from test_master_helpers.
    proc_ids() reads uids, gids, supplementary groups and the root of a
    process from /proc.

    This file has no tests of its own.
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
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from test_master_helpers import VENV_BIN, WAIT, Instance
from test_master_helpers import wait_until as wait_until  # for the tlsmgr tests

from tlsmgr.client import TlsmgrClient

SBIN = Path("/usr/lib/postfix/sbin")
OUR_TLSMGR = VENV_BIN / "tlsmgr"
TLSMGR_LINE = "tlsmgr unix - - y 1000? 1 tlsmgr\n"
POSTLOG_LINE = "postlog unix-dgram n - n - 1 postlogd\n"
GREETING = b"protocol\0tlsmgr_protocol\0\0"


class TlsmgrInstance(Instance):
    """Our master running a tlsmgr; see the module docstring."""

    def __init__(
        self,
        main_cf: dict[str, str] | None = None,
        master_cf: str = TLSMGR_LINE,
        program: Path = OUR_TLSMGR,
    ) -> None:
        super().__init__(master_cf=master_cf, main_cf=main_cf)
        (self.bin / "tlsmgr").symlink_to(program)

    @property
    def socket_path(self) -> str:
        return str(self.queue / "private" / "tlsmgr")

    def client(self, **options: Any) -> TlsmgrClient:
        return TlsmgrClient(self.socket_path, **options)

    def tlsmgr_pids(self) -> list[int]:
        return [pid for pid in self.children() if is_tlsmgr(pid)]

    def tlsmgr_pid(self, other_than: int | None = None, timeout: float = WAIT) -> int:
        """The one live tlsmgr (not `other_than`), once there is exactly one."""

        def one() -> int | None:
            pids = [p for p in self.tlsmgr_pids() if p != other_than]
            return pids[0] if len(pids) == 1 else None

        return self.wait_for(one, "a tlsmgr process", timeout)

    def wait_gone(self, pid: int, timeout: float = WAIT) -> None:
        self.wait_for(lambda: not alive(pid), f"process {pid} to exit", timeout)


@contextlib.contextmanager
def started(main_cf: dict[str, str] | None = None) -> Iterator[TlsmgrInstance]:
    """A TlsmgrInstance after `minipostfix start`; afterwards stopped (when the
    test did not get that far) and checked to have left no process."""
    with TlsmgrInstance(main_cf=main_cf) as inst:
        inst.cli("start").check()
        yield inst
        inst.cli("stop")  # when a test failed before its own stop
        assert inst.processes() == []


class PostfixInstance(TlsmgrInstance):
    """Postfix's own master(8) on a private root; see the module docstring."""

    def __init__(
        self,
        tlsmgr: str = "postfix",
        main_cf: dict[str, str] | None = None,
        master_cf: str = TLSMGR_LINE,
    ) -> None:
        program = SBIN / "tlsmgr" if tlsmgr == "postfix" else OUR_TLSMGR
        settings = {"maillog_file_prefixes": "/tmp"}
        settings.update(main_cf or {})
        super().__init__(settings, master_cf + POSTLOG_LINE, program)
        for path in SBIN.iterdir():
            if path.name != "tlsmgr":
                (self.bin / path.name).symlink_to(path)
        owner = pwd.getpwnam("postfix")
        for sub, mode, group in (("private", 0o700, None), ("public", 0o2710, "postdrop")):
            folder = self.queue / sub
            folder.mkdir(parents=True)
            shutil.chown(folder, "postfix", group)
            folder.chmod(mode)
        (self.queue / "pid").mkdir()
        self.data.mkdir()
        os.chown(self.data, owner.pw_uid, owner.pw_gid)

    def start(self, *options: str) -> None:
        """`master -c DIR -w [options]`; returns once it is ready."""
        settled(self.etc / "main.cf", self.etc / "master.cf")
        proc = subprocess.run(
            [str(SBIN / "master"), "-c", str(self.etc), "-w", *options],
            capture_output=True,
            text=True,
            timeout=WAIT * 3,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, f"master -w: {proc.returncode}\n{proc.stderr}"

    def stop(self) -> None:
        """TERM to the pid in pid/master.pid; wait until every process is gone."""
        os.kill(self.master_pid(), signal.SIGTERM)
        self.wait_for(lambda: not self.processes(), "the private Postfix to stop", WAIT * 3)


# Helpers ------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def is_tlsmgr(pid: int) -> bool:
    """Postfix's tlsmgr binary, or our script run by its #! interpreter."""
    return any(os.path.basename(arg) == "tlsmgr" for arg in cmdline(pid)[:2])


def tlsmgr_args(pid: int) -> list[str]:
    """The daemon's arguments after argv[0] (or after the script, for ours)."""
    argv = cmdline(pid)
    first = next(i for i, arg in enumerate(argv) if os.path.basename(arg) == "tlsmgr")
    return argv[first + 1 :]


def environ(pid: int) -> dict[str, str]:
    blob = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in blob.split("\0") if "=" in item)


@dataclass(frozen=True)
class ProcIds:
    uids: tuple[int, ...]
    gids: tuple[int, ...]
    groups: frozenset[int]
    root: str


def proc_ids(pid: int) -> ProcIds:
    status = Path(f"/proc/{pid}/status").read_text()

    def field(name: str) -> list[int]:
        found = re.search(rf"^{name}:\s*(.*)$", status, re.M)
        assert found, f"/proc/{pid}/status has no {name}"
        return [int(x) for x in found.group(1).split()]

    return ProcIds(
        tuple(field("Uid")),
        tuple(field("Gid")),
        frozenset(field("Groups")),
        os.readlink(f"/proc/{pid}/root"),
    )


def socket_fds(pid: int) -> int:
    """How many sockets the process holds (listener, status pair, clients)."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except OSError:
            pass
    return count


def settled(*paths: Path) -> None:
    """Date files 10 s back.  Postfix's load_file() sleeps while a file it reads
    (main.cf, master.cf) changed within the last second or two: 1-2 s per
    command on a configuration a test has just written."""
    then = time.time() - 10
    for path in paths:
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


def parse_list(buf: bytes) -> tuple[list[tuple[bytes, bytes]], int] | None:
    """One complete attribute list at the start of buf and its length; None if partial."""
    attrs, pos = [], 0
    while True:
        end = buf.find(b"\0", pos)
        if end < 0:
            return None
        name = buf[pos:end]
        if not name:
            return attrs, end + 1
        vend = buf.find(b"\0", end + 1)
        if vend < 0:
            return None
        attrs.append((name, buf[end + 1 : vend]))
        pos = vend + 1


def read_reply(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """Read exactly one attribute list (byte by byte: never more than it)."""
    buf = b""
    while (parsed := parse_list(buf)) is None:
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"EOF inside an attribute list: {buf!r}")
        buf += chunk
    return parsed[0]


def request(*attrs: bytes) -> bytes:
    """name, value, name, value, ... -> one request in the "0" format."""
    return b"".join(a + b"\0" for a in attrs) + b"\0"
