"""master.maillog: the prefix check, the safe open of maillog_file, appends and rotation.

Root writes maillog_file (postlogd, the master's fallback): what it opens must
be the file the administrator meant, not a link, a second name, a FIFO or a
file someone else can rewrite.
"""

from __future__ import annotations

import os
import pwd
import stat
import time

import pytest

from master import maillog
from master.maillog import MaillogError


def planted(link, target) -> None:
    """A symbolic link as an unprivileged user would make it (as root: chowned to nobody)."""
    link.symlink_to(target)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.lchown(link, nobody.pw_uid, nobody.pw_gid)


def refused(path, why: str) -> None:
    with pytest.raises(MaillogError) as err:
        maillog.open_maillog(str(path))
    assert str(err.value) == f"open logfile '{path}': {why}"


# maillog_file_prefixes ---------------------------------------------------------


def test_a_value_outside_the_prefixes_is_refused_in_postfixs_words():
    with pytest.raises(MaillogError) as err:
        maillog.check_prefixes("/tmp/mail.log", ["/var", "/dev/stdout"])
    assert str(err.value) == (
        "maillog_file value '/tmp/mail.log' does not match any prefix in maillog_file_prefixes"
    )


@pytest.mark.parametrize("path", ["/var/log/mail.log", "/dev/stdout", "/variable/x"])
def test_the_prefix_test_is_a_plain_string_prefix_as_in_postfix(path):
    maillog.check_prefixes(path, ["/var", "/dev/stdout"])


# open_maillog ------------------------------------------------------------------


def test_a_missing_file_is_created_0644_less_the_umask_for_appending(tmp_path):
    path = tmp_path / "maillog"
    old = os.umask(0o077)
    try:
        fd = maillog.open_maillog(str(path))
    finally:
        os.umask(old)
    try:
        os.write(fd, b"one\n")
        assert os.get_inheritable(fd) is False
        assert os.get_blocking(fd)
    finally:
        os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fd = maillog.open_maillog(str(path))
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"two\n")  # O_APPEND: after "one", whatever the offset
    finally:
        os.close(fd)
    assert path.read_text() == "one\ntwo\n"


def test_a_symbolic_link_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    link = tmp_path / "maillog"
    planted(link, victim)
    refused(link, "file is a symbolic link")
    assert victim.read_text() == "keep\n"


def test_a_dangling_link_is_refused_and_nothing_is_created(tmp_path):
    link = tmp_path / "maillog"
    planted(link, tmp_path / "created-through-the-link")
    refused(link, "file is a symbolic link")
    assert not (tmp_path / "created-through-the-link").exists()


def test_a_second_hard_link_is_refused(tmp_path):
    path = tmp_path / "maillog"
    path.write_text("")
    os.link(path, tmp_path / "other-name")
    refused(path, "file has 2 hard links")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "maillog"
    os.mkfifo(path)
    refused(path, "No such device or address")  # no reader: the open itself fails at once
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        # With a reader, the open succeeds: the type check refuses.
        refused(path, "not a regular file or character device")
    finally:
        os.close(reader)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(MaillogError) as err:
        maillog.open_maillog(str(tmp_path))
    assert str(err.value).startswith(f"open logfile '{tmp_path}': ")


def test_a_file_writable_by_group_or_others_is_refused(tmp_path):
    path = tmp_path / "maillog"
    path.write_text("")
    path.chmod(0o664)
    refused(path, "file is writable by group or others (mode 0664)")


def test_a_character_device_is_accepted():
    os.close(maillog.open_maillog("/dev/null"))


def test_dev_stdout_is_this_processs_descriptor_1():
    fd = maillog.open_maillog("/dev/stdout")
    try:
        assert os.path.sameopenfile(fd, 1)
    finally:
        os.close(fd)


@pytest.mark.root
def test_as_root_a_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "maillog"
    path.write_text("")
    nobody = pwd.getpwnam("nobody")
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    refused(path, f"file is owned by uid {nobody.pw_uid}")


@pytest.mark.root
def test_as_root_a_link_made_by_root_in_a_root_directory_is_followed_as_postfix_does(folder):
    # Postfix's safe_open() allows a symbolic link owned by root in a directory owned
    # by root that group and others cannot write (how /dev/stdout itself works).
    target = os.path.join(folder, "current")
    link = os.path.join(folder, "maillog")
    os.symlink(target, link)
    fd = maillog.open_maillog(target)
    os.close(fd)
    fd = maillog.open_maillog(link)
    try:
        assert os.fstat(fd).st_ino == os.stat(target).st_ino
    finally:
        os.close(fd)
    os.chmod(folder, 0o775)  # a directory others may write: the link proves nothing
    refused(link, "file is a symbolic link")


# append_once and rotate -------------------------------------------------------


def test_append_once_opens_appends_and_closes(tmp_path):
    path = tmp_path / "maillog"
    before = len(os.listdir("/proc/self/fd"))
    maillog.append_once(str(path), b"a record\n")
    maillog.append_once(str(path), b"another\n")
    assert path.read_text() == "a record\nanother\n"
    assert len(os.listdir("/proc/self/fd")) == before


def test_append_once_applies_the_same_checks(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("")
    planted(tmp_path / "maillog", victim)
    with pytest.raises(MaillogError):
        maillog.append_once(str(tmp_path / "maillog"), b"x\n")
    assert victim.read_text() == ""


def test_rotate_renames_with_the_strftime_suffix(tmp_path):
    path = tmp_path / "maillog"
    path.write_text("old\n")
    rotated = maillog.rotate(str(path), "%Y%m%d-%H%M%S", now=0)
    assert rotated == f"{path}.{time.strftime('%Y%m%d-%H%M%S', time.localtime(0))}"
    assert not path.exists() and open(rotated).read() == "old\n"


def test_rotate_refuses_dev_names():
    with pytest.raises(MaillogError) as err:
        maillog.rotate("/dev/stdout", "%Y")
    assert str(err.value) == "not rotating '/dev/stdout'"
