"""As root: what the master trusts on disk, checked by `start` and `check`.

The queue directory.  The master changes owners and modes under it as root.
When it is owned by someone else (here mail_owner), or a directory above it is
writable by others, its content can be swapped for links: `private` made a link
to a root directory would have that directory turned into postfix:root 0700.  So
the queue directory must be root-owned and not group or other writable, and each
parent root-owned and either not writable by group or others or sticky like /tmp;
otherwise both commands refuse, and nothing is changed.

The code root runs.  daemon_directory, the programs master.cf names in it (links
resolved: a `#!` script's own directory is the first place its Python imports
from) and their interpreters: one not owned by root, or writable by group or
others, is warned about by both commands, in postfix-script's words.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
from pathlib import Path

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
    queue = moved_below(inst, "queue_directory", mode, owner)
    refused(inst, f"unsafe queue_directory {queue}: {problem}: {queue.parent}")
    assert not queue.exists()


def test_sticky_parent_is_safe_like_tmp(inst):
    queue = moved_below(inst, "queue_directory", 0o1777)
    inst.cli("check").check()
    inst.cli("start").check()
    assert mode_owner(queue) == (0o755, 0, 0)
    inst.cli("stop").check()


def test_unsafe_parent_of_the_data_directory_is_refused(inst):
    data = moved_below(inst, "data_directory", 0o777)
    refused(inst, f"unsafe data_directory {data}: parent group or other writable (and not sticky)")


def moved_below(inst, param: str, mode: int, owner: str = "root") -> Path:
    """Set `param` to a folder below a new directory of that mode and owner."""
    parent = inst.root / "parent"
    parent.mkdir()
    os.chmod(parent, mode)
    os.chown(parent, pwd.getpwnam(owner).pw_uid, 0)
    inst.write_main_cf(**{param: str(parent / param)})
    return parent / param


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


# The code root runs ---------------------------------------------------------


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": warning: " in line]


def test_writable_daemon_directory_is_warned_about(inst):
    os.chmod(inst.bin, 0o775)
    warning = f"minipostfix: warning: group or other writable: {inst.bin}"
    assert warnings_of(inst.cli("check").check()) == [warning]
    started = inst.cli("start").check()
    assert warning in warnings_of(started)
    inst.cli("stop").check()


def test_program_of_another_owner_is_warned_about(inst):
    os.chown(inst.bin / "testd", pwd.getpwnam("nobody").pw_uid, 0)
    assert warnings_of(inst.cli("check").check()) == [
        f"minipostfix: warning: not owned by root: {inst.bin}/testd"
    ]


def test_a_linked_program_is_checked_where_it_lives(inst):
    """A `#!` Python script imports from its own (resolved) directory first."""
    elsewhere = inst.root / "theirs"
    elsewhere.mkdir()
    (inst.bin / "testd").rename(elsewhere / "testd")
    (inst.bin / "testd").symlink_to(elsewhere / "testd")
    os.chown(elsewhere, pwd.getpwnam("nobody").pw_uid, 0)
    assert warnings_of(inst.cli("check").check()) == [
        f"minipostfix: warning: not owned by root: {elsewhere}"
    ]


def test_interpreter_of_a_script_is_checked(inst):
    private_copy = inst.root / "py"
    private_copy.mkdir()
    interpreter = private_copy / "python3"
    shutil.copy(os.path.realpath(sys.executable), interpreter)
    os.chmod(interpreter, 0o777)
    script = (inst.bin / "testd").read_text().split("\n", 1)
    (inst.bin / "testd").write_text(f"#!{interpreter} -S\n{script[1]}")
    assert warnings_of(inst.cli("check").check()) == [
        f"minipostfix: warning: group or other writable: {interpreter}"
    ]
