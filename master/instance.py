"""The instance on disk: configuration, directories, lock files, state file, descriptors.

SYNOPSIS
    from master import instance

    config, entries = instance.read_configuration(config_dir)
    owner = instance.lookup_owner(config)            # Owner(name, uid, gid, setgid_gid)
    specs = instance.layout(config, owner)           # [DirSpec]
    instance.make_directories(specs)                 # the master, at start
    instance.check_directory(spec, modes=True)       # `minipostfix check`
    fd = instance.lock_pid_file(instance.PID_FILE)   # held for the master's lifetime
    instance.locked_pid(path) -> int | None          # who holds it (`status`, `stop`)
    instance.write_state(path, text, mode); instance.read_state(path) -> dict
    instance.process_starttime(pid) -> int | None
    keep = instance.reserve_fds(keep)

DESCRIPTION
    What the resident master (master.py) and the control commands
    (control.py) agree on: where things are and how they are locked.

    read_configuration() reads main.cf, checks every typed master
    parameter, then reads master.cf (service names in inet addresses are
    looked up in /etc/services).

    layout() gives Debian's postfix owners and modes (so that our master
    and Postfix's can take turns on one instance): the queue directory
    0755 (kept as found when it exists), pid/ 0755 root, private/ 0700
    mail_owner, public/ 02710 mail_owner:setgid_group (mail_owner's group
    without postdrop), $data_directory 0755 mail_owner.  When not run as root,
    every owner is whoever runs us.  make_directories() reaches each one
    through trust.open_directory() (from /, one component at a time,
    without following links others could have planted), creates what is
    missing (0755 despite umask 077, so children can traverse them),
    refuses a queue directory that is not owned by root (or, when not
    run as root, by us) or is writable by group or others, and an unsafe
    directory above any of them; as root it fixes the owner and mode of
    our own folders through their descriptors (fchown, fchmod).
    check_directory() refuses the same and reports, without changing
    anything, what make_directories() would fix.

    Lock files (pid/master.pid, root 0600; $data_directory/master.lock,
    mail_owner 0600) hold the pid right-aligned in 32 characters plus a
    newline, under an exclusive non-blocking flock held for the master's
    lifetime.  A stale file from a killed master is simply locked and
    rewritten.  locked_pid() tries the same lock: the pid in the file
    while another process holds it (-1 when the file holds no number),
    None when nobody does.

    The state file (pid/master.state, JSON, 0644) is what `minipostfix
    status -v` shows; write_state() replaces it through a temporary file
    and rename, so a reader never sees half of it.  It holds no text a
    child wrote: the last stderr lines of each service are in
    pid/master.stderr (JSON, 0600, `{"NAME/TYPE": {"pid": N, "lines":
    [...]}}`), which status -v reads when run as root.  Each child is
    listed with its pid and `starttime` (process_starttime()), so that a
    forced stop never kills a process that reused a listed pid.

    reserve_fds() closes every inherited descriptor except `keep` (moved
    above 6) and occupies 0-6 with /dev/null, so that no pipe or socket of
    the master lands on a number its children expect.

SECURITY
    Directories are changed by descriptor, never by path: a queue
    directory whose content someone else controls could otherwise send a
    root chown or chmod through a link (see trust.py).
    lock_pid_file() opens with O_NOFOLLOW; callers open master.lock with
    mail_owner's effective ids (privs.saved_eugid), never as root in a
    folder mail_owner owns.

DIAGNOSTICS
    ConfigError: `directory PATH: strerror`, `not a directory: PATH`,
    `unsafe queue_directory PATH: ...` (trust.py), ALREADY_RUNNING, and
    every configuration error.  check_directory()
    warns through master.log (`not owned by postfix: PATH`, `mode 0755,
    expected 0700: PATH`).  OSError from the file operations otherwise.

SEE ALSO
    src/master/master.c, src/util/myflock.c, conf/postfix-script
    (Postfix); master.py, control.py
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import socket
from dataclasses import dataclass
from typing import Any

from master import privs, proto, trust
from master.config import Config
from master.errors import ConfigError
from master.log import msg_warn
from master.mastercf import MASTER_CF, ServiceEntry, read_master_cf

PID_FILE = "pid/master.pid"
STATE_FILE = "pid/master.state"
STDERR_FILE = "pid/master.stderr"
DATA_LOCK = "master.lock"
ALREADY_RUNNING = "the minipostfix mail system is already running"


# Configuration -----------------------------------------------------------


def _port_lookup(name: str) -> str:
    try:
        return str(socket.getservbyname(name, "tcp"))
    except OSError:
        return ""


def read_configuration(config_dir: str) -> tuple[Config, list[ServiceEntry]]:
    """Read main.cf and master.cf; ConfigError on any problem."""
    config = Config.load(config_dir, warn=msg_warn)
    config.check()  # every typed master parameter, before anything starts
    path = os.path.join(config.config_dir, MASTER_CF)
    return config, read_master_cf(path, config, _port_lookup, warn=msg_warn)


@dataclass(frozen=True)
class Owner:
    """mail_owner's identity and the groups the layout needs."""

    name: str
    uid: int
    gid: int
    setgid_gid: int


def lookup_owner(config: Config) -> Owner:
    """mail_owner and setgid_group; when not root, whoever runs us."""
    name = config.get("mail_owner")
    if os.geteuid() != 0:
        return Owner(name, os.geteuid(), os.getegid(), os.getegid())
    uid, gid = privs.lookup_user(name)
    try:
        setgid_gid = grp.getgrnam(config.get("setgid_group")).gr_gid
    except KeyError:
        setgid_gid = gid  # no postdrop group: public/ gets mail_owner's group
    return Owner(name, uid, gid, setgid_gid)


# Directories and lock files ---------------------------------------------


@dataclass(frozen=True)
class DirSpec:
    """One directory of the layout: where, whose, which mode, and how it is treated.

    enforce: the master fixes its owner and mode (else it is only checked
    to be safe, and never changed: the queue directory).  follow: the
    last component may be a symbolic link (queue_directory and
    data_directory may be links an administrator made; the master's own
    folders under the queue directory never are).  param: the parameter
    it comes from, for messages.
    """

    path: str
    uid: int
    gid: int
    mode: int
    enforce: bool
    follow: bool = False
    param: str = "queue_directory"


def layout(config: Config, owner: Owner) -> list[DirSpec]:
    """The directories the master needs, with their owners and modes (see the module docstring)."""
    queue = config.get("queue_directory")
    data = config.get("data_directory")
    me = os.geteuid()
    root_gid = 0 if me == 0 else os.getegid()
    return [
        DirSpec(queue, me, root_gid, 0o755, False, follow=True),
        DirSpec(os.path.join(queue, "pid"), me, root_gid, 0o755, True),
        DirSpec(os.path.join(queue, "private"), owner.uid, root_gid, 0o700, True),
        DirSpec(os.path.join(queue, "public"), owner.uid, owner.setgid_gid, 0o2710, True),
        DirSpec(data, owner.uid, owner.gid, 0o755, True, follow=True, param="data_directory"),
    ]


def make_directories(specs: list[DirSpec]) -> None:
    """Create missing directories, refuse unsafe ones, fix owner and mode of our own (as root).

    Each directory is reached by trust.open_directory() and changed
    through its descriptor (fchown, fchmod), never by path.
    """
    root = os.geteuid() == 0
    for spec in specs:
        fd = trust.open_directory(spec.path, spec.param, create=True, follow=spec.follow)
        if fd is None:
            raise ConfigError(f"directory {spec.path}: removed while it was made")
        try:
            st = os.fstat(fd)
            if not spec.enforce:
                trust.require_safe(st, spec.path, spec.param)
                continue
            chown = root and (st.st_uid, st.st_gid) != (spec.uid, spec.gid)
            if chown:
                os.fchown(fd, spec.uid, spec.gid)  # before fchmod: it clears set-gid
            if chown or st.st_mode & 0o7777 != spec.mode:
                os.fchmod(fd, spec.mode)
        except OSError as err:
            raise ConfigError(f"directory {spec.path}: {err.strerror}") from None
        finally:
            os.close(fd)


def lock_pid_file(path: str) -> int:
    """Open, flock (exclusive, non-blocking) and write our pid; return the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(ALREADY_RUNNING) from None
        record = f"{os.getpid():>32}\n".encode()
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
    except BaseException:
        os.close(fd)
        raise
    return fd


def locked_pid(path: str) -> int | None:
    """The pid in a lock file while another process holds its lock, else None.

    -1 when the file is locked but holds no number; OSError when it
    exists and cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_directory(spec: DirSpec, modes: bool = True) -> None:
    """What make_directories() would refuse (ConfigError) or fix (a warning, with `modes`).

    Nothing is created or changed; a directory that does not exist yet is
    fine (the master creates it).
    """
    fd = trust.open_directory(spec.path, spec.param, follow=spec.follow)
    if fd is None:
        return
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not spec.enforce:
        trust.require_safe(st, spec.path, spec.param)
        return
    if not modes:
        return
    if st.st_uid != spec.uid:
        msg_warn(f"not owned by {_user(spec.uid)}: {spec.path}")
    if st.st_gid != spec.gid:
        msg_warn(f"not owned by group {_group(spec.gid)}: {spec.path}")
    if st.st_mode & 0o7777 != spec.mode:
        msg_warn(f"mode {st.st_mode & 0o7777:04o}, expected {spec.mode:04o}: {spec.path}")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# The state file ------------------------------------------------------------


def write_state(path: str, text: str, mode: int = 0o644) -> None:
    """Replace a state file with text (temporary file + rename, `mode`); OSError."""
    tmp = path + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    with os.fdopen(fd, "w") as fp:
        os.fchmod(fd, mode)
        fp.write(text)
    os.replace(tmp, path)


def process_starttime(pid: int) -> int | None:
    """When process `pid` started (/proc/PID/stat field 22, clock ticks after boot); None if gone.

    A pid may be reused once its process is reaped; the pair (pid,
    starttime) names one process for as long as the system runs.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fp:
            text = fp.read()
    except OSError:
        return None
    fields = text.rsplit(b")", 1)[-1].split()  # the command name may hold blanks and ')'
    try:
        return int(fields[19])  # fields[0] is field 3, the state
    except (IndexError, ValueError):
        return None


def read_state(path: str) -> dict[str, Any]:
    """The state file's content; {} when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as fp:
            state = json.load(fp)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


# Descriptors --------------------------------------------------------------


def reserve_fds(keep: int | None) -> int | None:
    """Close inherited fds, occupy 0-6 with /dev/null; return `keep`'s new number."""
    if keep is not None:
        moved = fcntl.fcntl(keep, fcntl.F_DUPFD_CLOEXEC, proto.MASTER_LISTEN_FD + 1)
        os.close(keep)
        keep = moved
    limit = os.sysconf("SC_OPEN_MAX")
    if keep is None:
        os.closerange(proto.MASTER_FLOW_READ, limit)
    else:
        os.closerange(proto.MASTER_FLOW_READ, keep)
        os.closerange(keep + 1, limit)
    for fd in range(proto.MASTER_LISTEN_FD + 1):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
    return keep
