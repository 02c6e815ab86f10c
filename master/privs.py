"""Privileges: the jail and the drop to mail_owner. The only chroot, set*id and initgroups calls.

SYNOPSIS
    from master import privs

    uid, gid = privs.lookup_user(name, param="mail_owner")
    ids = privs.lookup_user(name, missing_ok=True)    # None: no such account
    privs.chroot_uid(root, user)        # root: str | None, user: str | None
    with privs.saved_eugid(uid, gid):   # act as uid/gid, then back to root
        ...

DESCRIPTION
    lookup_user() is Postfix's mail_params_init() check of mail_owner:
    getpwnam() (to be called before any jail, which hides /etc/passwd),
    and a refusal of an account whose user ID or primary group ID is 0.
    With missing_ok, an account that does not exist gives None instead
    (`minipostfix check` run by an ordinary user only warns about it);
    a privileged one is refused all the same.

    chroot_uid() is Postfix's chroot_uid(3), in its order, each step
    checked:
        1. getpwnam(user)
        2. setgid(gid)
        3. initgroups(user, gid): the supplementary groups become
           mail_owner's own (not setgroups([]), not root's)
        4. chroot(root), chdir("/")
        5. setuid(uid)
    Either argument may be None: no user means no change of identity, no
    root means no jail.  After setuid the process cannot regain root; this
    is checked.

    saved_eugid() is Postfix's SAVE_AND_SET_EUGID / RESTORE_SAVED_EUGID:
    setgroups([gid]), setegid(gid), seteuid(uid) for the body of the
    `with`, then back to the saved effective IDs and the saved
    supplementary groups (Postfix leaves only the saved group; we restore
    the whole list).  Used to create files as mail_owner before the jail.
    When the process is not running as root it does nothing: files are
    then created as whoever runs the program.

SECURITY
    Call lookup_user() and everything that needs name services before
    chroot_uid(root=...): inside the jail there is no /etc/passwd.
    Order matters: groups are set while still root, setuid() comes last.

DIAGNOSTICS
    lookup_user() raises ParamError (master/errors.py):
        parameter mail_owner: unknown user name value: NAME
        parameter mail_owner: user NAME has privileged user ID: 0
        parameter mail_owner: user NAME has privileged group ID: 0
    chroot_uid() and saved_eugid() end the process with msg_fatal() when a
    system call fails, e.g.
        fatal: chroot /var/spool/postfix: Operation not permitted
    which the master counts as a bad command startup and throttles.

SEE ALSO
    src/util/chroot_uid.c, set_eugid.c, src/global/mail_params.c (Postfix)
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Callable, Iterator
from typing import Literal, overload

from master import log
from master.errors import ParamError
from master.log import msg_fatal, msg_info


@overload
def lookup_user(
    name: str, param: str = ..., *, missing_ok: Literal[False] = ...
) -> tuple[int, int]: ...
@overload
def lookup_user(name: str, param: str = ..., *, missing_ok: bool) -> tuple[int, int] | None: ...
def lookup_user(
    name: str, param: str = "mail_owner", *, missing_ok: bool = False
) -> tuple[int, int] | None:
    """(uid, gid) of an unprivileged account; ParamError otherwise (see DESCRIPTION)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if missing_ok:
            return None
        raise ParamError(f"unknown user name value: {name}", param) from None
    if pw.pw_uid == 0:
        raise ParamError(f"user {name} has privileged user ID: 0", param)
    if pw.pw_gid == 0:
        raise ParamError(f"user {name} has privileged group ID: 0", param)
    return pw.pw_uid, pw.pw_gid


def _checked(what: str, call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except OSError as err:
        msg_fatal(f"{what}: {err.strerror}")


def warm_up() -> None:
    """Load the name service modules (libnss_*, nsswitch.conf) with one lookup.

    A spawn server calls it before it forks: the first passwd or group lookup
    of a process loads them (some 0.6 ms), and each child's initgroups() would
    pay that again.  What is looked up (root) does not matter.
    """
    os.getgrouplist(pwd.getpwuid(0).pw_name, 0)


def chroot_uid(root: str | None, user: str | None) -> None:
    """Enter the jail `root` and become `user`, in Postfix's order (see DESCRIPTION)."""
    uid = gid = -1
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            msg_fatal(f"unknown user: {user}")
        uid, gid = pw.pw_uid, pw.pw_gid
        _checked(f"setgid {gid}", os.setgid, gid)
        _checked(f"initgroups {user} {gid}", os.initgroups, user, gid)
    if root is not None:
        _checked(f"chroot {root}", os.chroot, root)
        _checked("chdir /", os.chdir, "/")
    if user is not None:
        _checked(f"setuid {uid}", os.setuid, uid)
        # Sanity check: with every uid now `uid`, root must be out of reach.
        if uid != 0 and 0 in os.getresuid():
            msg_fatal(f"setuid {uid}: root privileges still held")
    if log.msg_verbose > 1:
        msg_info(f"chroot {root or '(none)'} user {user or '(none)'}")


@contextlib.contextmanager
def saved_eugid(uid: int, gid: int) -> Iterator[None]:
    """Run the body with effective IDs uid/gid and groups [gid]; restore after."""
    if os.geteuid() != 0:
        yield
        return
    saved_uid, saved_gid, saved_groups = os.geteuid(), os.getegid(), os.getgroups()
    _checked(f"setgroups {gid}", os.setgroups, [gid])
    _checked(f"setegid {gid}", os.setegid, gid)
    _checked(f"seteuid {uid}", os.seteuid, uid)
    try:
        yield
    finally:
        _checked("seteuid 0", os.seteuid, 0)
        _checked(f"setegid {saved_gid}", os.setegid, saved_gid)
        _checked("setgroups", os.setgroups, saved_groups)
        _checked(f"seteuid {saved_uid}", os.seteuid, saved_uid)
