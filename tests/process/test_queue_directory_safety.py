"""As root: an unsafe queue directory is refused by `start` and `check`, and nothing is changed.

The master changes owners and modes under the queue directory as root.  When the
queue directory is owned by someone else (here mail_owner), or a directory above it
is writable by others, its content can be swapped for links: `private` made a link
to a root directory would have that directory turned into postfix:root 0700.  So
the queue directory must be root-owned and not group or other writable, and each
parent root-owned and either not writable by group or others or sticky like /tmp.
"""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from support.instance import MiniInstance

pytestmark = pytest.mark.root

ECHO = "echo unix - n n - 0 testd echo 30\n"
FAILED = "minipostfix: fatal: minipostfix integrity check failed!"


@pytest.fixture
def inst():
    with MiniInstance(master_cf=ECHO) as instance:
        yield instance


def mode_owner(path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def refused(inst, text: str) -> None:
    """`check` and `start` both fail with `text` in a fatal line, and nothing runs."""
    check = inst.cli("check")
    assert check.returncode == 1, check
    assert f"minipostfix: fatal: {text}" in check.stderr
    assert check.stderr.splitlines()[-1] == FAILED
    assert "Traceback" not in check.stderr
    start = inst.cli("start")
    assert start.returncode == 1, start
    assert f"minipostfix: fatal: {text}" in start.stderr
    assert "Traceback" not in start.stderr
    assert inst.processes() == []


def test_private_linked_to_a_root_directory_in_a_postfix_owned_queue(inst):
    postfix = pwd.getpwnam("postfix")
    target = inst.root / "precious"
    target.mkdir(mode=0o755)
    inst.queue.mkdir(mode=0o755)
    os.chown(inst.queue, postfix.pw_uid, postfix.pw_gid)
    (inst.queue / "private").symlink_to(target)
    refused(inst, f"unsafe queue_directory {inst.queue}: not owned by root")
    assert mode_owner(target) == (0o755, 0, 0)
    assert not (inst.data / "master.lock").exists()


def test_group_writable_queue_directory_is_refused(inst):
    inst.queue.mkdir(mode=0o755)
    os.chmod(inst.queue, 0o775)
    refused(inst, f"unsafe queue_directory {inst.queue}: group or other writable")


@pytest.mark.parametrize(
    ("mode", "owner", "problem"),
    [
        (0o777, "root", "parent group or other writable (and not sticky)"),
        (0o755, "nobody", "parent not owned by root"),
    ],
)
def test_unsafe_parent_of_the_queue_directory_is_refused(inst, mode, owner, problem):
    parent = inst.root / "spool"
    parent.mkdir()
    os.chmod(parent, mode)
    os.chown(parent, pwd.getpwnam(owner).pw_uid, 0)
    queue = parent / "queue"
    inst.write_main_cf(queue_directory=str(queue))
    refused(inst, f"unsafe queue_directory {queue}: {problem}: {parent}")
    assert not queue.exists()


def test_sticky_parent_is_safe_like_tmp(inst):
    parent = inst.root / "spool"
    parent.mkdir()
    os.chmod(parent, 0o1777)
    queue = parent / "queue"
    inst.write_main_cf(queue_directory=str(queue))
    inst.cli("check").check()
    inst.cli("start").check()
    assert mode_owner(queue) == (0o755, 0, 0)
    inst.cli("stop").check()


def test_unsafe_parent_of_the_data_directory_is_refused(inst):
    parent = inst.root / "lib"
    parent.mkdir()
    os.chmod(parent, 0o777)
    data = parent / "data"
    inst.write_main_cf(data_directory=str(data))
    refused(inst, f"unsafe data_directory {data}: parent group or other writable (and not sticky)")


def test_a_link_among_the_masters_own_folders_is_refused(inst):
    target = inst.root / "precious"
    target.mkdir(mode=0o755)
    inst.queue.mkdir(mode=0o755)
    (inst.queue / "pid").symlink_to(target)
    refused(inst, f"not a directory: {inst.queue}/pid (a symbolic link)")
    assert mode_owner(target) == (0o755, 0, 0)


def test_a_linked_queue_directory_in_a_safe_parent_is_followed(inst):
    real = inst.root / "real-queue"
    real.mkdir(mode=0o755)
    linked = inst.root / "queue-link"
    linked.symlink_to(real)
    inst.write_main_cf(queue_directory=str(linked))
    inst.cli("start").check()
    postfix = pwd.getpwnam("postfix")
    assert mode_owner(real / "private") == (0o700, postfix.pw_uid, 0)
    inst.cli("stop").check()
