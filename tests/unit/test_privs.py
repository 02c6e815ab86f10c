"""master/privs.py: mail_owner checks, the jail and the drop, saved effective IDs.

The drop cannot be undone, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from master.errors import ConfigError
from master.privs import lookup_user

SETPRIV = shutil.which("setpriv")


def _postfix() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postfix")
    except KeyError:
        pytest.skip("no postfix account")


def _run(code: str, *prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def jail():
    path = tempfile.mkdtemp(prefix="mpfx-jail-", dir="/tmp")
    os.chmod(path, 0o755)
    open(os.path.join(path, "inside-the-jail"), "w").close()
    yield path
    shutil.rmtree(path)


def test_lookup_user_returns_uid_and_gid():
    pw = _postfix()
    assert lookup_user("postfix") == (pw.pw_uid, pw.pw_gid)


def test_lookup_user_unknown():
    with pytest.raises(ConfigError, match="parameter mail_owner: unknown user name value: nosuch"):
        lookup_user("nosuchuser-mpfx")


def test_lookup_user_refuses_root():
    with pytest.raises(ConfigError, match="user root has privileged user ID: 0"):
        lookup_user("root")


def test_lookup_user_missing_ok_tolerates_only_a_missing_account():
    assert lookup_user("nosuchuser-mpfx", missing_ok=True) is None
    with pytest.raises(ConfigError, match="user root has privileged user ID: 0"):
        lookup_user("root", missing_ok=True)


def test_lookup_user_names_the_parameter():
    with pytest.raises(ConfigError, match="parameter default_privs: "):
        lookup_user("nosuchuser-mpfx", param="default_privs")


_REPORT = """
    import json, os
    from master import privs
    privs.chroot_uid({root!r}, {user!r})
    print(json.dumps({{
        "res_uid": os.getresuid(), "res_gid": os.getresgid(),
        "groups": sorted(os.getgroups()), "cwd": os.getcwd(), "ls": os.listdir("/"),
    }}))
"""


@pytest.mark.root
def test_chroot_uid_jails_and_drops(jail):
    pw = _postfix()
    result = _run(_REPORT.format(root=jail, user="postfix"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["res_uid"] == [pw.pw_uid] * 3
    assert report["res_gid"] == [pw.pw_gid] * 3
    # initgroups: mail_owner's own groups, none of root's
    assert report["groups"] == sorted(set(os.getgrouplist("postfix", pw.pw_gid)))
    assert report["cwd"] == "/"
    assert report["ls"] == ["inside-the-jail"]


@pytest.mark.root
def test_chroot_uid_user_only_keeps_the_file_system():
    pw = _postfix()
    result = _run(_REPORT.format(root=None, user="postfix"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["res_uid"] == [pw.pw_uid] * 3
    assert "etc" in report["ls"]


def test_chroot_uid_failure_is_fatal_with_the_reason():
    result = _run(_REPORT.format(root="/nonexistent-mpfx", user=None))
    assert result.returncode == 1
    expected = (
        "fatal: chroot /nonexistent-mpfx: No such file or directory"
        if os.geteuid() == 0
        else "fatal: chroot /nonexistent-mpfx: Operation not permitted"
    )
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.root
@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv")
def test_chroot_uid_without_privilege_is_fatal(jail):
    result = _run(
        _REPORT.format(root=jail, user=None),
        SETPRIV,
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    )
    assert result.returncode == 1
    assert f"fatal: chroot {jail}: Operation not permitted" in result.stderr


def test_chroot_uid_unknown_user_is_fatal():
    result = _run(_REPORT.format(root=None, user="nosuchuser-mpfx"))
    assert result.returncode == 1
    assert "fatal: unknown user: nosuchuser-mpfx" in result.stderr


@pytest.mark.root
def test_saved_eugid_creates_files_as_mail_owner_and_restores(jail):
    pw = _postfix()
    data = os.path.join(jail, "data")
    os.mkdir(data, 0o755)
    os.chown(data, pw.pw_uid, pw.pw_gid)
    result = _run(
        f"""
        import json, os
        from master import privs
        before = (os.getresuid(), os.getresgid(), sorted(os.getgroups()))
        with privs.saved_eugid({pw.pw_uid}, {pw.pw_gid}):
            inside = (os.geteuid(), os.getegid(), os.getgroups())
            open({data!r} + "/owned", "w").close()
        after = (os.getresuid(), os.getresgid(), sorted(os.getgroups()))
        print(json.dumps([before, inside, after]))
        """
    )
    assert result.returncode == 0, result.stderr
    before, inside, after = json.loads(result.stdout)
    assert inside == [pw.pw_uid, pw.pw_gid, [pw.pw_gid]]
    assert after == before
    st = os.stat(os.path.join(data, "owned"))
    assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)


def test_saved_eugid_is_a_no_op_without_root():
    prefix = ()
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("needs setpriv to run as an ordinary user")
        prefix = (SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups")
    result = _run(
        """
        import os
        from master import privs
        ids = (os.geteuid(), os.getegid())
        with privs.saved_eugid(1, 1):
            assert (os.geteuid(), os.getegid()) == ids
        print("ok")
        """,
        *prefix,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
