"""Private instances under /tmp: our master, Postfix's master(8), or none (the skeleton lab).

SYNOPSIS
    from support.instance import OUR_TLSMGR, MiniInstance, PostfixInstance

    with MiniInstance(master_cf="echo unix - n n - 0 testd echo 30\\n") as inst:
        inst.cli("start").check()                   # the real console script
        inst.wait_log("daemon started")
        inst.connect("private/echo")                # a socket under the queue directory

    with running_tlsmgr(main_cf={...}) as inst:     # our master running our tlsmgr
        inst.tlsmgr_pid(); inst.client().seed(32)   # (MiniInstance, tlsmgr=OUR_TLSMGR)

    with PostfixInstance(tlsmgr=OUR_TLSMGR, main_cf={...}) as pfx:
        pfx.start()                                 # master -c DIR -w: returns once ready
        ...
        pfx.stop()                                  # TERM; returns once every process is gone

DESCRIPTION
    Instance is the tree every kind shares: a world-searchable root under
    /tmp (mail_owner must search it) with etc/ (main.cf, master.cf),
    queue/, data/, bin/ (daemon_directory) and the maillog file.
    write_main_cf(**changes) rewrites main.cf from `inst.main` (a dict in
    file order); log(), wait_log() and wait_for() read the maillog (a
    failed wait shows it); connect() reaches a unix socket under queue/;
    processes() are the live processes whose MAIL_CONFIG or command line
    names the root.  Leaving the `with` block (close()) kills every one
    of them, waits until they are gone and removes the root (not with
    keep=True).  defaults() gives a kind's main.cf before the caller's
    settings, populate() puts its programs and folders into the tree.

    MasterInstance adds the API both masters share:
        start()        returns once the master is ready; StartError says why not
        stop()         returns once the instance has stopped
        running()      a context: start(), then stop() and no process left
        master_pid()   from queue/pid/master.pid; children(): the others
        tlsmgr views   socket_path, client(), tlsmgr_pids(), tlsmgr_pid(),
                       wait_gone()
    With tlsmgr=PROGRAM, bin/tlsmgr is a link to PROGRAM (OUR_TLSMGR, this
    venv's console script, or Postfix's SBIN/tlsmgr) and master.cf
    defaults to TLSMGR_LINE, the embedded master.cf's tlsmgr line.

    MiniInstance is our master: start() is `minipostfix start` (it waits
    for the master's readiness byte), stop() `minipostfix stop` (it waits
    for the master to be gone, and the master for its children).  cli()
    runs any `minipostfix -c ETC` command; state() reads master.state;
    bin/testd is installed (support.testd) and records() reads what a
    `testd record` service wrote.  running_tlsmgr(main_cf) is the usual
    case of the tlsmgr tests: a MiniInstance with OUR_TLSMGR, running().

    PostfixInstance is Debian's master(8) on the same tree, never
    /etc/postfix: bin/ holds links to SBIN/* (tlsmgr to the chosen
    program, by default Postfix's own), master.cf gets POSTLOG_LINE and
    main.cf maillog_file_prefixes = /tmp so that the real daemons' lines
    reach the maillog file through postlogd.  The queue's private/,
    public/ and pid/ folders and data_directory are made with Postfix's
    owners first, as postfix(1) would.  start(*options) is `master -c
    ETC -w`, stop() a TERM to the master and a wait (AssertionError after
    3 * WAIT) until every process of the instance is gone.

    LabInstance is a tree without a master, for support.fake_master: its
    main.cf has only the directories, mail_owner, maillog_file and
    echo_trace_file (a test's own parameters start at line 7), and the
    queue's private/ and public/ folders, the trace file and the maillog
    exist from the start, writable by anyone.  trace_lines() reads the echo
    daemon's hook traces.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from support import procs
from support.postfix import SBIN, settled
from support.testd import install_testd
from support.waiting import WAIT, wait_until
from tlsmgr.client import TlsmgrClient

VENV_BIN = Path(sys.executable).parent
MINIPOSTFIX = str(VENV_BIN / "minipostfix")
OUR_TLSMGR = VENV_BIN / "tlsmgr"
TLSMGR_LINE = "tlsmgr unix - - y 1000? 1 tlsmgr\n"
POSTLOG_LINE = "postlog unix-dgram n - n - 1 postlogd\n"


class StartError(Exception):
    """A master did not start; the message has the command, its exit status and stderr."""


class Result:
    """What a `minipostfix` command did: returncode, stdout, stderr; check() asserts 0."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def check(self) -> Result:
        assert self.returncode == 0, f"rc {self.returncode}\n{self.stdout}\n{self.stderr}"
        return self

    def __repr__(self) -> str:
        return f"Result(rc={self.returncode}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class Instance:
    """The tree every kind of instance shares; see the module docstring."""

    prefix = "mpfx-"

    def __init__(
        self, main_cf: dict[str, str] | None = None, master_cf: str = "", *, keep: bool = False
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.keep = keep
        self.etc = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.bin = self.root / "bin"
        self.maillog = self.root / "maillog"
        for folder in (self.etc, self.bin):
            folder.mkdir(mode=0o755)
        self.main = self.defaults()
        self.main.update(main_cf or {})
        self.write_main_cf()
        self.write_master_cf(master_cf)
        self.populate()

    def populate(self) -> None:
        """Put a kind's own programs and folders into the tree (none here)."""

    def defaults(self) -> dict[str, str]:
        """main.cf before the caller's settings, in file order."""
        return {
            "compatibility_level": "3.6",
            "config_directory": str(self.etc),
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "daemon_directory": str(self.bin),
            "mail_owner": "postfix",
            "maillog_file": str(self.maillog),
            "inet_interfaces": "loopback-only",
        }

    # Configuration -----------------------------------------------------

    def write_main_cf(self, **changes: str) -> None:
        self.main.update(changes)
        text = "".join(f"{k} = {v}\n" for k, v in self.main.items())
        (self.etc / "main.cf").write_text(text)

    def write_master_cf(self, text: str) -> None:
        (self.etc / "master.cf").write_text(text)

    # Logs and waits ----------------------------------------------------

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        """wait_until(), with the instance's log in the failure message."""
        return wait_until(predicate, what, timeout, detail=lambda: f"\nlog:\n{self.log()}")

    def wait_log(self, pattern: str, timeout: float = WAIT, count: int = 1) -> list[str]:
        """Wait until `pattern` (a regex) matches `count` log lines; return them."""

        def found() -> list[str] | None:
            lines = [line for line in self.log().splitlines() if re.search(pattern, line)]
            return lines if len(lines) >= count else None

        return self.wait_for(found, f"{count} log line(s) matching {pattern!r}", timeout)

    # Sockets and processes ---------------------------------------------

    def connect(self, name: str, timeout: float = 10) -> socket.socket:
        """A connection to a unix service (path relative to the queue directory)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(self.queue / name))
        return sock

    def processes(self) -> list[int]:
        """Every live process that belongs to this instance (not zombies)."""
        return procs.processes_of(self.root)

    def kill_all(self) -> None:
        procs.kill_all(self.processes)

    def close(self) -> None:
        try:
            self.kill_all()
        finally:
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LabInstance(Instance):
    """A tree without a master, for the fake master of the skeleton tests."""

    prefix = "mpfx-child-"

    def populate(self) -> None:
        for path in (self.queue, self.data, self.queue / "private", self.queue / "public"):
            path.mkdir(mode=0o755)
        for path in (self.maillog, self.trace):
            path.touch()
            path.chmod(0o666)

    @property
    def trace(self) -> Path:
        return self.root / "trace"

    def defaults(self) -> dict[str, str]:
        return {
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "daemon_directory": str(self.bin),
            "mail_owner": "postfix",
            "maillog_file": str(self.maillog),
            "echo_trace_file": str(self.trace),
        }

    def trace_lines(self) -> list[str]:
        return self.trace.read_text().splitlines()


class MasterInstance(Instance):
    """A tree run by a master: the API our master and Postfix's share."""

    def __init__(
        self,
        main_cf: dict[str, str] | None = None,
        master_cf: str | None = None,
        *,
        tlsmgr: Path | None = None,
        keep: bool = False,
    ) -> None:
        if master_cf is None:
            master_cf = TLSMGR_LINE if tlsmgr is not None else ""
        self.tlsmgr = tlsmgr
        super().__init__(main_cf, master_cf, keep=keep)

    def populate(self) -> None:
        if self.tlsmgr is not None:
            (self.bin / "tlsmgr").symlink_to(self.tlsmgr)

    def start(self) -> None:
        """Start the master; return once it is ready (StartError when it is not)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the master; return once the instance has stopped."""
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self) -> Iterator[MasterInstance]:
        """start(); afterwards stop() (when the test did not get that far) and check
        that no process is left."""
        self.start()
        yield self
        self.stop()
        assert self.processes() == []

    def master_pid(self) -> int:
        return int((self.queue / "pid" / "master.pid").read_text().strip())

    def children(self) -> list[int]:
        """Processes of this instance other than the master."""
        try:
            master = self.master_pid()
        except (OSError, ValueError):
            master = -1
        return [pid for pid in self.processes() if pid != master]

    # tlsmgr ------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return str(self.queue / "private" / "tlsmgr")

    def client(self, **options: Any) -> TlsmgrClient:
        return TlsmgrClient(self.socket_path, **options)

    def tlsmgr_pids(self) -> list[int]:
        return [pid for pid in self.children() if procs.is_tlsmgr(pid)]

    def tlsmgr_pid(self, other_than: int | None = None, timeout: float = WAIT) -> int:
        """The one live tlsmgr (not `other_than`), once there is exactly one."""

        def one() -> int | None:
            pids = [p for p in self.tlsmgr_pids() if p != other_than]
            return pids[0] if len(pids) == 1 else None

        return self.wait_for(one, "a tlsmgr process", timeout)

    def wait_gone(self, pid: int, timeout: float = WAIT) -> None:
        self.wait_for(lambda: not procs.alive(pid), f"process {pid} to exit", timeout)


class MiniInstance(MasterInstance):
    """Our master on the tree, through the `minipostfix` console script."""

    def populate(self) -> None:
        super().populate()
        install_testd(self.bin)

    def cli(self, *args: str, timeout: float = 60) -> Result:
        """`minipostfix -c ETC ARGS...`."""
        proc = subprocess.run(
            [MINIPOSTFIX, "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(proc)

    def start(self) -> None:
        result = self.cli("start")
        if result.returncode != 0:
            raise StartError(f"minipostfix start: exit {result.returncode}: {result.stderr}")

    def stop(self) -> None:
        self.cli("stop")  # exit 1 when it is not running: then there is nothing to stop

    def state(self) -> dict:
        return json.loads((self.queue / "pid" / "master.state").read_text())

    def records(self, name: str) -> list[dict]:
        """The events a `testd record ROOT/name` service wrote."""
        try:
            text = (self.root / name).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


@contextlib.contextmanager
def running_tlsmgr(main_cf: dict[str, str] | None = None) -> Iterator[MiniInstance]:
    """Our master running our tlsmgr on a new MiniInstance; afterwards stopped, no process left."""
    with MiniInstance(main_cf, tlsmgr=OUR_TLSMGR) as inst, inst.running():
        yield inst


class PostfixInstance(MasterInstance):
    """Postfix's own master(8) on the tree; see the module docstring."""

    def __init__(
        self,
        main_cf: dict[str, str] | None = None,
        master_cf: str | None = None,
        *,
        tlsmgr: Path = SBIN / "tlsmgr",
        keep: bool = False,
    ) -> None:
        master_cf = (TLSMGR_LINE if master_cf is None else master_cf) + POSTLOG_LINE
        super().__init__(main_cf, master_cf, tlsmgr=tlsmgr, keep=keep)

    def populate(self) -> None:
        super().populate()
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

    def defaults(self) -> dict[str, str]:
        return {**super().defaults(), "maillog_file_prefixes": "/tmp"}

    def start(self, *options: str) -> None:
        """`master -c ETC -w [options]`; returns once it is ready."""
        settled(self.etc / "main.cf", self.etc / "master.cf")
        command = [str(SBIN / "master"), "-c", str(self.etc), "-w", *options]
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=WAIT * 3, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise StartError(f"{' '.join(command)}: exit {proc.returncode}: {proc.stderr}")

    def stop(self) -> None:
        """TERM to the pid in pid/master.pid; wait until every process is gone."""
        if not self.processes():
            return
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.master_pid(), signal.SIGTERM)
        self.wait_for(lambda: not self.processes(), "the private Postfix to stop", WAIT * 3)
