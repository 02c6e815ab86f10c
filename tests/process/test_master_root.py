"""As root: the master's directories, files and sockets, and what its children run as.

Checked through the file system and /proc, with the real master (console
script) and a child on the project's multi_server skeleton (the echo daemon of
support/echo_daemon.py) asked for -u and -c by master.cf.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

import pytest

from support.echo_daemon import write_daemon_script
from support.instance import MiniInstance

pytestmark = pytest.mark.root


def owner_ids() -> tuple[int, int, int]:
    pw = pwd.getpwnam("postfix")
    try:
        setgid_gid = grp.getgrnam("postdrop").gr_gid
    except KeyError:
        setgid_gid = pw.pw_gid
    return pw.pw_uid, pw.pw_gid, setgid_gid


@pytest.fixture
def inst():
    with MiniInstance() as instance:
        write_daemon_script(instance.bin / "mecho", "multi")
        yield instance


def mode_owner(path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_directories_files_and_sockets_have_postfix_ownership(inst):
    uid, gid, setgid_gid = owner_ids()
    inst.write_master_cf(
        "mecho unix - - n - 0 mecho\n"
        "pickup fifo n - n - 1 mecho\n"
        "postlog unix-dgram n - n - 1 mecho\n"
    )
    inst.cli("start").check()
    q = inst.queue
    assert mode_owner(q) == (0o755, 0, 0)
    assert mode_owner(q / "pid") == (0o755, 0, 0)
    assert mode_owner(q / "pid" / "master.pid") == (0o600, 0, 0)
    assert mode_owner(q / "private") == (0o700, uid, 0)
    assert mode_owner(q / "public") == (0o2710, uid, setgid_gid)
    assert mode_owner(inst.data) == (0o755, uid, gid)
    assert mode_owner(inst.data / "master.lock")[:2] == (0o600, uid)
    # Local endpoints are made as mail_owner, never as root.
    assert mode_owner(q / "private" / "mecho")[:2] == (0o666, uid)
    assert mode_owner(q / "public" / "pickup")[:2] == (0o622, uid)
    assert mode_owner(q / "public" / "postlog")[:2] == (0o666, uid)
    # The state file is readable by anyone, for `status -v`.
    inst.wait_for(lambda: (q / "pid" / "master.state").exists(), "state file")
    assert mode_owner(q / "pid" / "master.state") == (0o644, 0, 0)
    # The children's stderr lines are root's only.
    assert mode_owner(q / "pid" / "master.stderr") == (0o600, 0, 0)
    # `check` agrees with what the master made.
    result = inst.cli("check").check()
    assert "warning" not in result.stderr
    inst.cli("stop").check()


def test_wrong_modes_are_repaired_and_reported_by_check(inst):
    uid, _gid, _sg = owner_ids()
    inst.write_master_cf("mecho unix - - n - 0 mecho\n")
    inst.cli("start").check()
    inst.cli("stop").check()
    os.chmod(inst.queue / "private", 0o755)
    os.chown(inst.data, 0, 0)
    result = inst.cli("check").check()
    assert f"mode 0755, expected 0700: {inst.queue}/private" in result.stderr
    assert f"not owned by postfix: {inst.data}" in result.stderr
    inst.cli("start").check()
    assert mode_owner(inst.queue / "private")[:2] == (0o700, uid)
    assert mode_owner(inst.data)[1] == uid
    inst.cli("stop").check()


def test_child_runs_as_mail_owner_in_the_jail(inst):
    uid, gid, _sg = owner_ids()
    inst.write_master_cf("mecho unix - - y - 0 mecho\n")
    inst.cli("start").check()
    with inst.connect("private/mecho") as sock:
        assert sock.makefile("rb").readline() == b"hello\n"
        (pid,) = inst.children()
        status = {}
        for line in open(f"/proc/{pid}/status"):
            key, _, value = line.partition(":")
            status[key] = value.split()
        assert status["Uid"] == [str(uid)] * 4
        assert status["Gid"] == [str(gid)] * 4
        # Exactly mail_owner's own supplementary groups (initgroups), none of root's.
        assert sorted(map(int, status["Groups"])) == sorted(set(os.getgrouplist("postfix", gid)))
        assert os.readlink(f"/proc/{pid}/root") == str(inst.queue)
        # The master itself stays root.
        master = inst.master_pid()
        assert os.stat(f"/proc/{master}").st_uid == 0
    inst.cli("stop").check()
    assert inst.processes() == []


def test_child_without_chroot_or_drop_stays_root(inst):
    inst.write_master_cf("mecho unix - n n - 0 mecho\n")
    inst.cli("start").check()
    with inst.connect("private/mecho") as sock:
        assert sock.makefile("rb").readline() == b"hello\n"
        (pid,) = inst.children()
        assert os.stat(f"/proc/{pid}").st_uid == 0
        assert os.readlink(f"/proc/{pid}/root") == "/"
    inst.cli("stop").check()
