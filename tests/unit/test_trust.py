"""trust.open_directory(): a directory reached from / without following links planted by others.

Every directory a name is looked up in must be owned by a trusted owner (root, and
whoever runs us when that is not root) and not writable by group or others unless
sticky; a link is followed only from such a directory (in a sticky one, only a link
of a trusted owner).  The tests that change owners need root; `trusted=` stands in
for a run by an ordinary user (nobody), where that user's own directories count.
"""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from master import trust
from master.errors import ConfigError

NOBODY = pwd.getpwnam("nobody").pw_uid


def opened(path, **kw) -> os.stat_result | None:
    fd = trust.open_directory(str(path), "queue_directory", **kw)
    if fd is None:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def same(st: os.stat_result | None, path) -> bool:
    other = os.stat(path)
    return st is not None and (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def test_opens_an_existing_directory_and_follows_safe_links(folder):
    real = os.path.join(folder, "a", "b")
    os.makedirs(real)
    os.symlink("a/b", os.path.join(folder, "rel"))
    os.symlink(real, os.path.join(folder, "abs"))
    os.symlink("../a/b", os.path.join(folder, "a", "up"))
    for name in ("a/b", "rel", "abs", "a/up", "a/./b", "a/b/../b"):
        assert same(opened(os.path.join(folder, name)), real), name


def test_missing_is_none_or_created_with_mode_0755_despite_the_umask(folder):
    path = os.path.join(folder, "x", "y")
    assert opened(path) is None
    old = os.umask(0o077)
    try:
        st = opened(path, create=True)
    finally:
        os.umask(old)
    assert same(st, path)
    for made in (os.path.join(folder, "x"), path):
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o755


def test_a_file_on_the_way_is_not_a_directory(folder):
    open(os.path.join(folder, "file"), "w").close()
    with pytest.raises(ConfigError, match=f"^not a directory: {folder}/file$"):
        opened(os.path.join(folder, "file", "q"))


def test_a_link_as_last_component_is_refused_without_follow(folder):
    os.mkdir(os.path.join(folder, "real"))
    os.symlink("real", os.path.join(folder, "pid"))
    with pytest.raises(ConfigError, match=r"not a directory: .*/pid \(a symbolic link\)$"):
        opened(os.path.join(folder, "pid"), follow=False)
    assert same(opened(os.path.join(folder, "pid")), os.path.join(folder, "real"))


def test_link_loops_end_with_an_error(folder):
    os.symlink("loop", os.path.join(folder, "loop"))
    with pytest.raises(ConfigError, match="too many levels of symbolic links"):
        opened(os.path.join(folder, "loop"))


def test_group_or_other_writable_parent_is_refused_unless_sticky(folder):
    parent = os.path.join(folder, "open")
    os.makedirs(os.path.join(parent, "q"))
    os.chmod(parent, 0o777)
    queue = os.path.join(parent, "q")
    with pytest.raises(ConfigError) as err:
        opened(queue)
    assert str(err.value) == (
        f"unsafe queue_directory {queue}: parent group or other writable (and not sticky): {parent}"
    )
    os.chmod(parent, 0o1777)
    assert same(opened(queue), queue)


@pytest.mark.root
def test_parent_of_another_owner_is_refused_unless_it_is_ours(folder):
    parent = os.path.join(folder, "theirs")
    os.makedirs(os.path.join(parent, "q"))
    os.chown(parent, NOBODY, -1)
    queue = os.path.join(parent, "q")
    with pytest.raises(ConfigError, match=f"parent not owned by root: {parent}$"):
        opened(queue)
    # Run by nobody: their own directories count, and root's.
    assert same(opened(queue, trusted=frozenset({0, NOBODY})), queue)
    os.chmod(parent, 0o775)
    with pytest.raises(ConfigError, match="parent group or other writable"):
        opened(queue, trusted=frozenset({0, NOBODY}))


@pytest.mark.root
def test_in_a_sticky_directory_only_a_trusted_owners_link_is_followed(folder):
    sticky = os.path.join(folder, "tmp")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    os.mkdir(os.path.join(folder, "etc"))
    link = os.path.join(sticky, "q")
    os.symlink(os.path.join(folder, "etc"), link)
    assert same(opened(link), os.path.join(folder, "etc"))
    os.lchown(link, NOBODY, -1)
    with pytest.raises(ConfigError, match=f"symbolic link in the sticky directory {sticky}"):
        opened(link)


def test_require_safe_wants_a_trusted_owner_and_no_write_for_others(folder):
    mine = frozenset({0, os.geteuid()})
    trust.require_safe(os.stat(folder), folder, "queue_directory", mine)
    os.chmod(folder, 0o1777)
    with pytest.raises(ConfigError, match=f"^unsafe queue_directory {folder}: group or other"):
        trust.require_safe(os.stat(folder), folder, "queue_directory", mine)


@pytest.mark.root
def test_require_safe_names_the_trusted_owners(folder):
    os.chown(folder, 12345, -1)
    with pytest.raises(ConfigError, match=f"^unsafe queue_directory {folder}: not owned by root$"):
        trust.require_safe(os.stat(folder), folder, "queue_directory")
    with pytest.raises(ConfigError, match="not owned by root or nobody$"):
        trust.require_safe(os.stat(folder), folder, "queue_directory", frozenset({0, NOBODY}))


def test_code_paths_name_the_programs_their_interpreters_and_our_packages(folder):
    program = os.path.join(folder, "prog")
    with open(program, "w") as fp:
        fp.write("#!/usr/bin/python3 -S\nprint()\n")
    paths = trust.code_paths(folder, ["prog", "missing"])
    assert paths[:4] == [folder, program, "/usr/bin/python3", os.path.join(folder, "missing")]
    assert trust.__file__ in paths  # this distribution's own modules


def test_code_warnings_in_postfix_scripts_words(folder):
    me = frozenset({0, os.geteuid()})
    code = os.path.join(folder, "bin", "prog")
    os.makedirs(os.path.dirname(code))
    open(code, "w").close()
    os.chmod(code, 0o755)
    assert trust.code_warnings([code], me) == []
    os.chmod(code, 0o775)
    os.chmod(folder, 0o1777)  # a sticky parent is fine, the code itself is not
    assert trust.code_warnings([code], me) == [f"group or other writable: {code}"]
    os.chmod(os.path.dirname(code), 0o777)
    assert trust.code_warnings([code], me) == [
        f"group or other writable: {code}",
        f"group or other writable: {os.path.dirname(code)}",
    ]


@pytest.mark.root
def test_code_of_the_user_who_runs_us_is_trusted(folder):
    code = os.path.join(folder, "prog")
    open(code, "w").close()
    os.chown(code, NOBODY, -1)
    assert trust.code_warnings([code]) == [f"not owned by root: {code}"]
    assert trust.code_warnings([code], frozenset({0, NOBODY})) == []
