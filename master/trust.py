"""What root may trust on disk: directories opened without following planted links, and owners.

SYNOPSIS
    from master import trust

    fd = trust.open_directory(path, "queue_directory", create=True)
    fd = trust.open_directory(path, "queue_directory")      # None when it does not exist
    trust.require_safe(os.fstat(fd), path, "queue_directory")
    trust.trusted_owners() -> frozenset[int]                # {0}, or {0, euid} when not root

DESCRIPTION
    open_directory() is how the master reaches a directory it will change
    as root (queue_directory and its pid/, private/ and public/ folders,
    data_directory).  It walks the path from `/` one component at a time,
    each opened with O_DIRECTORY|O_NOFOLLOW relative to the descriptor
    of the directory before it, and returns a descriptor of the last one,
    for fstat, fchown and fchmod: no rename or link made between a check
    and a use can send the change elsewhere.

    Every directory a name is looked up in must be safe for what it
    holds: owned by root (when not run as root, by root or whoever runs
    us) and either not writable by group or others, or sticky like /tmp
    (nobody can rename or remove there what another owns).  Otherwise
    whoever may write there could swap the next component for a link of
    their own; the walk stops with a ConfigError that names the
    directory at fault, as postfix-script names what it finds (`not owned
    by root: PATH`, `group or other writable: PATH`).

    A symbolic link met on the way is read in its directory (which passed
    the check above) and its target walked the same way, at most MAX_LINKS
    links; in a sticky directory only a link owned by a trusted owner is
    followed (the kernel's protected_symlinks rule).  With follow=False a
    link as the last component is refused: the master's own folders under
    the queue directory are never links.  With create=True a missing
    component is made, mode 0755 despite the umask so that children can
    traverse it; without, the result is None.

    require_safe() is the check for the queue directory itself, which
    the master never changes: owned by a trusted owner and not writable
    by group or others (sticky or not: everything the master makes in it
    would be at the mercy of whoever may write there).

SECURITY
    The checks follow Postfix's postfix-script (check-warn), which warns
    about a queue directory not owned by root or writable by group or
    others; here that is refused, since the master then changes owners
    and modes below it as root.

DIAGNOSTICS
    ConfigError, e.g.
        unsafe queue_directory /srv/q: parent not owned by root: /srv
        unsafe queue_directory /srv/q: parent group or other writable (and not sticky): /srv
        unsafe queue_directory /srv/q: not owned by root
        not a directory: /srv/q/private (a symbolic link)
        directory /srv/q: Permission denied

SEE ALSO
    conf/postfix-script (check-warn), src/util/safe_open.c (Postfix);
    instance.py (the directories, their owners and modes)
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import pwd
import stat
import sys
from collections.abc import Iterable
from importlib import metadata

from master.errors import ConfigError

__all__ = [
    "DISTRIBUTION",
    "MAX_LINKS",
    "code_paths",
    "code_warnings",
    "open_directory",
    "owner_names",
    "require_safe",
    "trusted_owners",
]

MAX_LINKS = 40  # as the kernel's limit on links in one lookup
OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WRITABLE = stat.S_IWGRP | stat.S_IWOTH
LINK = -1  # _Walk._open(): the name is a symbolic link
DISTRIBUTION = "minipostfix"  # whose packages are the code the master runs


def trusted_owners() -> frozenset[int]:
    """Who may own what root trusts: root, and whoever runs us when that is not root."""
    return frozenset({0, os.geteuid()})


def owner_names(trusted: frozenset[int]) -> str:
    """`root`, or `root or alice`: the trusted owners for a message."""
    names = ["root"] + [_user(uid) for uid in sorted(trusted) if uid != 0]
    return " or ".join(names)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def require_safe(
    st: os.stat_result, path: str, param: str, trusted: frozenset[int] | None = None
) -> None:
    """ConfigError unless `st` is owned by a trusted owner and not group or other writable."""
    trusted = trusted_owners() if trusted is None else trusted
    if st.st_uid not in trusted:
        raise ConfigError(f"unsafe {param} {path}: not owned by {owner_names(trusted)}")
    if st.st_mode & WRITABLE:
        raise ConfigError(f"unsafe {param} {path}: group or other writable")


def _check_parent(
    st: os.stat_result, where: str, path: str, param: str, trusted: frozenset[int]
) -> None:
    if st.st_uid not in trusted:
        raise ConfigError(
            f"unsafe {param} {path}: parent not owned by {owner_names(trusted)}: {where}"
        )
    if st.st_mode & WRITABLE and not st.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"unsafe {param} {path}: parent group or other writable (and not sticky): {where}"
        )


def open_directory(
    path: str,
    param: str,
    *,
    create: bool = False,
    follow: bool = True,
    trusted: frozenset[int] | None = None,
) -> int | None:
    """A descriptor of directory `path`, reached safely (see the module docstring).

    None when a component does not exist and create is false; ConfigError
    for an unsafe directory on the way, a component that is not a
    directory, too many links, or a system error.
    """
    trusted = trusted_owners() if trusted is None else trusted
    walk = _Walk(path, param, trusted)
    try:
        return walk.run(create, follow)
    finally:
        walk.close()


class _Walk:
    """The state of one open_directory(): the directories open so far, the names left."""

    def __init__(self, path: str, param: str, trusted: frozenset[int]) -> None:
        self.path = os.path.abspath(path)
        self.param = param
        self.trusted = trusted
        self.stack: list[tuple[str, int]] = []  # (path, fd) from / to the current directory
        self.checked: set[int] = set()  # fds that passed the parent check
        self.links = 0

    def close(self) -> None:
        for _where, fd in self.stack:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stack.clear()

    def run(self, create: bool, follow: bool) -> int | None:
        self._to_root()
        names = [n for n in self.path.split("/") if n]
        while names:
            name = names.pop(0)
            if name == ".":
                continue
            if name == "..":
                if len(self.stack) > 1:
                    os.close(self.stack.pop()[1])
                continue
            where, dir_fd = self.stack[-1]
            self._check_parent(where, dir_fd)
            target = os.path.join(where, name)
            fd = self._open(name, dir_fd, target, create)
            if fd is None:
                return None
            if fd != LINK:
                self.stack.append((target, fd))
                continue
            if not names and not follow:
                raise ConfigError(f"not a directory: {target} (a symbolic link)")
            link = self._read_link(name, dir_fd, where, target)
            names[:0] = [n for n in link.split("/") if n]
            if link.startswith("/"):
                self._to_root()
        return self.stack.pop()[1]

    def _to_root(self) -> None:
        self.close()
        self.stack.append(("/", os.open("/", OPEN_FLAGS)))

    def _check_parent(self, where: str, fd: int) -> None:
        if fd not in self.checked:
            _check_parent(os.fstat(fd), where, self.path, self.param, self.trusted)
            self.checked.add(fd)

    def _open(self, name: str, dir_fd: int, target: str, create: bool) -> int | None:
        """fd of the directory `name`; LINK for a symbolic link; None when missing (no create)."""
        try:
            return os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return self._make(name, dir_fd, target) if create else None
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise ConfigError(f"directory {target}: {err.strerror}") from None
        if not stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise ConfigError(f"not a directory: {target}")
        return LINK

    def _make(self, name: str, dir_fd: int, target: str) -> int | None:
        """Create the missing directory `name` (0755 despite umask 077: children traverse it)."""
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            return self._open(name, dir_fd, target, create=False)  # made meanwhile: as found
        except OSError as err:
            raise ConfigError(f"directory {target}: {err.strerror}") from None
        fd = self._open(name, dir_fd, target, create=False)
        if fd is None or fd == LINK:
            raise ConfigError(f"directory {target}: replaced while it was made")
        os.fchmod(fd, 0o755)
        return fd

    def _read_link(self, name: str, dir_fd: int, where: str, target: str) -> str:
        self.links += 1
        if self.links > MAX_LINKS:
            raise ConfigError(f"directory {self.path}: too many levels of symbolic links")
        dir_st = os.fstat(dir_fd)
        if dir_st.st_mode & stat.S_ISVTX and dir_st.st_mode & WRITABLE:
            link_st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if link_st.st_uid not in self.trusted:
                raise ConfigError(
                    f"unsafe {self.param} {self.path}: symbolic link in the sticky directory"
                    f" {where} not owned by {owner_names(self.trusted)}: {target}"
                )
        return os.readlink(name, dir_fd=dir_fd)


# The code root runs ------------------------------------------------------


def code_paths(daemon_directory: str, commands: Iterable[str]) -> list[str]:
    """What root runs: daemon_directory, each command in it and the interpreter of its
    `#!` line, the directories on this interpreter's import path, and every file of
    this distribution's packages."""
    paths = [daemon_directory]
    for command in commands:
        program = os.path.join(daemon_directory, command)
        paths.append(program)
        interpreter = _interpreter(program)
        if interpreter:
            paths.append(interpreter)
    paths += [p for p in sys.path if os.path.isabs(p) and os.path.isdir(p)]
    for folder in _package_folders():
        for top, dirs, files in os.walk(folder):
            paths += [os.path.join(top, name) for name in dirs + files]
    return paths


def _interpreter(program: str) -> str | None:
    """The program named by a `#!` line (a console script's Python), or None."""
    try:
        with open(program, "rb") as fp:
            head = fp.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None


def _package_folders() -> list[str]:
    try:
        names = (metadata.distribution(DISTRIBUTION).read_text("top_level.txt") or "").split()
    except metadata.PackageNotFoundError:
        return []
    folders = []
    for name in names:
        spec = importlib.util.find_spec(name)  # a top-level name: nothing is imported
        if spec is not None and spec.submodule_search_locations:
            folders += list(spec.submodule_search_locations)
    return folders


def code_warnings(paths: Iterable[str], trusted: frozenset[int] | None = None) -> list[str]:
    """postfix-script's check-warn words for code that others could change.

    Each path (links resolved) must be owned by a trusted owner and not be
    writable by group or others; each directory above it too, where a
    sticky one (like /tmp) is fine.  One warning per problem and path:
    `not owned by root: PATH`, `group or other writable: PATH`.
    """
    trusted = trusted_owners() if trusted is None else trusted
    owners = owner_names(trusted)
    seen: set[tuple[str, bool]] = set()
    out: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        chain = [(real, False)]
        parent = os.path.dirname(real)
        while True:
            chain.append((parent, True))
            if parent == "/":
                break
            parent = os.path.dirname(parent)
        for where, is_parent in chain:
            if (where, is_parent) in seen:
                continue
            seen.add((where, is_parent))
            try:
                st = os.stat(where)
            except OSError:
                continue  # missing: reported where it is used
            if st.st_uid not in trusted:
                out.append(f"not owned by {owners}: {where}")
            sticky = is_parent and st.st_mode & stat.S_ISVTX
            if st.st_mode & WRITABLE and not sticky:
                out.append(f"group or other writable: {where}")
    return list(dict.fromkeys(out))
