"""tlsmgr.tempfiles: temporary files made locked, and removed only when their maker is gone."""

from __future__ import annotations

import os
import re
import stat

from tlsmgr.tempfiles import create_locked, remove_stale


def test_create_locked_makes_a_private_locked_file_next_to_the_name(tmp_path):
    path = str(tmp_path / "smtp_scache.db")
    old_umask = os.umask(0)
    try:
        fd, tmp = create_locked(path)
    finally:
        os.umask(old_umask)
    try:
        assert re.fullmatch(re.escape(path) + r"\.[a-z0-9_]{8}\.tmp", tmp)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert not os.get_inheritable(fd)
        assert remove_stale(path) == []  # locked: its maker is alive
        assert os.path.exists(tmp)
    finally:
        os.close(fd)
    assert remove_stale(path) == [tmp]  # now it is what a killed maker leaves
    assert os.listdir(tmp_path) == []


def test_remove_stale_touches_only_unlocked_temporary_files_of_that_name(tmp_path, maillog):
    tmp_path = tmp_path / "data"  # the maillog fixture writes beside it
    tmp_path.mkdir()
    path = str(tmp_path / "t.db")
    stale = path + ".abcdefgh.tmp"
    keep = {
        "t.db": b"the file itself",
        "t.db.abcdefgh.tmp.x": b"another suffix",
        "t.db.abc.tmp": b"not a temporary name",
        "u.db.abcdefgh.tmp": b"another file's",
    }
    for name, content in {**keep, os.path.basename(stale): b"stale"}.items():
        (tmp_path / name).write_bytes(content)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not ours")
    os.symlink(target, path + ".symlink.tmp")
    os.mkfifo(path + ".fifo1234.tmp")
    assert remove_stale(path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [*keep, "elsewhere", "t.db.symlink.tmp", "t.db.fifo1234.tmp"]
    )
    assert target.read_bytes() == b"not ours"
    assert f"removed stale temporary file {stale}" in maillog()


def test_a_missing_folder_is_nothing_to_remove(tmp_path):
    assert remove_stale(str(tmp_path / "no" / "t.db")) == []
