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
    queue/, data/, bin/ (daemon_directory) and the maillog file, which
    postlogd writes (maillog_file_prefixes = /tmp covers it).
    write_main_cf(**changes) rewrites main.cf from `inst.main` (a dict in
    file order); write_master_cf(text) writes master.cf, adding
    POSTLOG_LINE unless the text has a postlog line or inst.postlog is
    False.  log() reads the maillog once every record sent so far is in
    it (sync_log(): a marker record through the postlog socket, waited
    for, and left out of what log() returns); wait_log() and wait_for()
    poll it (a failed wait shows it); connect() reaches a unix socket
    under queue/;
    processes() are the live processes whose MAIL_CONFIG or command line
    names the root.  Leaving the `with` block (close()) kills every one
    of them, waits until they are gone and removes the root (not with
    keep=True).  defaults() gives a kind's main.cf before the caller's
    settings, populate() puts its programs and folders into the tree.

    MasterInstance adds the API both masters share:
        start()        returns once the master is ready; StartError says why not
        stop()         returns once the instance has stopped
        running()      a context: start(), then stop() and no process left
        master_pid()   from queue/pid/master.pid; children(): the others,
                       postlogd aside (postlogd_pids())
        workers()      the master's own children other than spawn_servers()
        tlsmgr views   socket_path, client(), tlsmgr_pids(), tlsmgr_pid(),
                       wait_gone()
    With tlsmgr=PROGRAM, bin/tlsmgr is a link to PROGRAM (OUR_TLSMGR, this
    venv's console script, or Postfix's SBIN/tlsmgr) and master.cf
    defaults to TLSMGR_LINE, the embedded master.cf's tlsmgr line.

    MiniInstance is our master, with our postlogd (bin/postlogd, this
    venv's console script): start() is `minipostfix start` (it waits
    for the master's readiness byte), stop() `minipostfix stop` (it waits
    for the master to be gone, and the master for its children).  cli()
    runs any `minipostfix -c ETC` command; state() reads master.state,
    spawn_server(NAME) a service's spawn server in it, and
    wait_spawn_server(NAME) waits until that one is ready;
    bin/testd is installed (support.testd) and records() reads what a
    `testd record` service wrote.  running_tlsmgr(main_cf) is the usual
    case of the tlsmgr tests: a MiniInstance with OUR_TLSMGR, running().

    PostfixInstance is Debian's master(8) on the same tree, never
    /etc/postfix: bin/ holds links to SBIN/* (tlsmgr to the chosen
    program, by default Postfix's own; postlogd to Postfix's, or to ours
    with postlogd=OUR_POSTLOGD), so that the real daemons' lines reach
    the maillog file through a postlogd.  The queue's private/,
    public/ and pid/ folders and data_directory are made with Postfix's
    owners first, as postfix(1) would.  start(*options) is `master -c
    ETC -w`, stop() a TERM to the master and a wait (AssertionError after
    3 * WAIT) until every process of the instance is gone.

    LabInstance is a tree without a master, for support.fake_master: its
    main.cf has only the directories, mail_owner, maillog_file,
    maillog_file_prefixes and echo_trace_file (a test's own parameters
    start at line 8), the queue's private/ and public/ folders and the
    trace file (writable by anyone) exist from the start, and bin/postlogd
    is ours (support.lab starts it on public/postlog, with postlogd_etc/,
    a main.cf of the defaults alone, so that a test's bad main.cf stops
    its daemon, not the lab's postlogd).  trace_lines() reads the echo
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
import time
import uuid
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
OUR_POSTLOGD = VENV_BIN / "postlogd"
TLSMGR_LINE = "tlsmgr unix - - y 1000? 1 tlsmgr\n"
POSTLOG_LINE = "postlog unix-dgram n - n - 1 postlogd\n"
SYNC_MARK = "mpfx-log-sync"  # sync_log()'s marker records, left out of log()
SYNC_WAIT = 5.0


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
    postlog = False  # whether write_master_cf() adds POSTLOG_LINE

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
            "maillog_file_prefixes": "/tmp",
            "inet_interfaces": "loopback-only",
        }

    # Configuration -----------------------------------------------------

    def write_main_cf(self, **changes: str) -> None:
        self.main.update(changes)
        text = "".join(f"{k} = {v}\n" for k, v in self.main.items())
        (self.etc / "main.cf").write_text(text)

    def write_master_cf(self, text: str) -> None:
        if self.postlog and not re.search(r"(?m)^postlog\s", text):
            text += POSTLOG_LINE
        (self.etc / "master.cf").write_text(text)

    # Logs and waits ----------------------------------------------------

    def log(self) -> str:
        """The maillog, once postlogd has written every record sent so far."""
        self.sync_log()
        return "".join(line for line in self._read_log().splitlines(True) if SYNC_MARK not in line)

    def _read_log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sync_log(self, timeout: float = SYNC_WAIT) -> bool:
        """Send a marker record through the postlog socket and wait until it is in
        the maillog: records are written in the order they came, so every earlier
        one is there too.  False when nobody listens or it did not come in time."""
        token = f"{SYNC_MARK} {uuid.uuid4().hex}"
        record = f"{time.strftime('%b %d %H:%M:%S')} localhost mpfx/sync[0]: {token}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(str(self.queue / "public" / "postlog"))
            sock.send(record.encode(), socket.MSG_DONTWAIT)
        except OSError:
            return False
        finally:
            sock.close()
        deadline = time.monotonic() + timeout
        while token not in self._read_log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        """wait_until(), with the instance's log in the failure message."""
        return wait_until(predicate, what, timeout, detail=lambda: f"\nlog:\n{self.log()}")

    def wait_log(self, pattern: str, timeout: float = WAIT, count: int = 1) -> list[str]:
        """Wait until `pattern` (a regex) matches `count` log lines; return them."""

        def found() -> list[str] | None:
            text = self._read_log()
            lines = [line for line in text.splitlines() if re.search(pattern, line)]
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
        self.trace.touch()
        self.trace.chmod(0o666)
        (self.bin / "postlogd").symlink_to(OUR_POSTLOGD)
        self.postlogd_etc.mkdir(mode=0o755)
        text = "".join(f"{k} = {v}\n" for k, v in self.defaults().items())
        (self.postlogd_etc / "main.cf").write_text(text)

    @property
    def postlogd_etc(self) -> Path:
        """postlogd's own configuration: the defaults, whatever a test puts in main.cf."""
        return self.root / "postlogd-etc"

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
            "maillog_file_prefixes": "/tmp",
            "echo_trace_file": str(self.trace),
        }

    def trace_lines(self) -> list[str]:
        return self.trace.read_text().splitlines()


class MasterInstance(Instance):
    """A tree run by a master: the API our master and Postfix's share."""

    postlog = True

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
        """Processes of this instance other than the master and postlogd."""
        try:
            master = self.master_pid()
        except (OSError, ValueError):
            master = -1
        logger = set(self.postlogd_pids())
        return [pid for pid in self.processes() if pid != master and pid not in logger]

    def postlogd_pids(self) -> list[int]:
        """The instance's postlogd processes (Postfix's or ours)."""
        return [pid for pid in self.processes() if procs.is_postlogd(pid)]

    # tlsmgr ------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return str(self.queue / "private" / "tlsmgr")

    def client(self, **options: Any) -> TlsmgrClient:
        return TlsmgrClient(self.socket_path, **options)

    def spawn_servers(self) -> list[int]:
        """The master's spawn servers (none for Postfix's master)."""
        return []

    def workers(self) -> list[int]:
        """The master's own children that serve: not a spawn server, nor what one forks
        ahead (whose cmdline a spawned child shares: they are told apart by parent)."""
        try:
            master = self.master_pid()
        except (OSError, ValueError):
            return []
        servers = self.spawn_servers()
        return [p for p in self.children() if procs.parent(p) == master and p not in servers]

    def tlsmgr_pids(self) -> list[int]:
        return [pid for pid in self.workers() if procs.is_tlsmgr(pid)]

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
        (self.bin / "postlogd").symlink_to(OUR_POSTLOGD)

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

    def spawn_servers(self) -> list[int]:
        """From master.state, which the master rewrites whenever a spawn server changes."""
        try:
            services = self.state()["services"]
        except (OSError, ValueError, KeyError):
            return []
        return [s["spawn_server"]["pid"] for s in services if s.get("spawn_server")]

    def spawn_server(self, service: str) -> dict | None:
        """master.state's view of a service's spawn server: pid, state, forks, ..."""
        for svc in self.state()["services"]:
            if svc["name"] == service:
                return svc["spawn_server"]
        raise AssertionError(f"no service {service} in master.state")

    def wait_spawn_server(self, service: str, other_than: int | None = None) -> int:
        """The pid of the service's spawn server (not `other_than`) once it is ready."""

        def ready() -> int | None:
            try:
                server = self.spawn_server(service)
            except FileNotFoundError:  # the master writes it just after it said it is ready
                return None
            if server and server["state"] == "ready" and server["pid"] != other_than:
                return server["pid"]
            return None

        return self.wait_for(ready, f"a ready spawn server for {service}")

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
        postlogd: Path = SBIN / "postlogd",
        keep: bool = False,
    ) -> None:
        self.postlogd = postlogd
        super().__init__(
            main_cf, TLSMGR_LINE if master_cf is None else master_cf, tlsmgr=tlsmgr, keep=keep
        )

    def populate(self) -> None:
        super().populate()
        for path in SBIN.iterdir():
            if path.name not in ("tlsmgr", "postlogd"):
                (self.bin / path.name).symlink_to(path)
        (self.bin / "postlogd").symlink_to(self.postlogd)
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
