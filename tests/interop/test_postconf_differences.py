"""Every deliberate difference between minipostconf and Postfix 3.7.11's postconf, asserted.

Each test shows what postconf does and what minipostconf does instead; the
reasons are in docs/configuration.md ("Differences from Postfix").
"""

from __future__ import annotations

import os
import stat

import pytest

from support.postconf_diff import edit_both, mini, real

pytestmark = pytest.mark.postfix


@pytest.fixture
def confdir(tmp_path):
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("")
    return tmp_path


def both(confdir, main: str, *args: str, master: str | None = None):
    (confdir / "main.cf").write_text(main)
    if master is not None:
        (confdir / "master.cf").write_text(master)
    return real(str(confdir), *args), mini(str(confdir), *args)


@pytest.mark.parametrize(
    "name, default",
    [("tls_session_cache_max_entries", "100000"), ("tls_session_cache_size_limit", "1073741824")],
)
def test_our_own_parameters_are_known(confdir, name, default):
    theirs, ours = both(confdir, f"{name} = 5\n", "-n")
    assert name not in theirs[1]
    assert f"unused parameter: {name}=5" in theirs[2]
    assert f"{name} = 5\n" in ours[1] and ours[2] == ""
    theirs, ours = both(confdir, "", "-d", name)
    assert theirs[1] == "" and "unknown parameter" in theirs[2]
    assert ours[1] == f"{name} = {default}\n"


def test_process_name_is_ours(confdir):
    theirs, ours = both(confdir, "", "process_name")
    assert theirs[1] == "process_name = postconf\n"
    assert ours[1] == "process_name = minipostconf\n"


def test_locations_name_the_file_and_line(confdir):
    main = "a = 1\na = 2\nmyorigin = $nothing\nstray = x\n"
    theirs, ours = both(confdir, main, "-n")
    assert (
        f"postconf: warning: {confdir}/main.cf, line 2: overriding earlier entry: a=1"
        in (theirs[2])
    )
    assert f"postconf: warning: {confdir}/main.cf: undefined parameter: nothing" in theirs[2]
    assert ours[2].splitlines() == [
        "minipostconf: warning: main.cf:2: overriding earlier entry: a=1",
        "minipostconf: warning: main.cf:3: undefined parameter: nothing",
        "minipostconf: warning: main.cf:2: unused parameter: a=2",
        "minipostconf: warning: main.cf:4: unused parameter: stray=x",
    ]


def test_expansion_errors_are_one_located_line(confdir):
    theirs, ours = both(confdir, "myorigin = $a\na = $b\nb = $a\n", "-n")
    assert theirs[0] == ours[0] == 1
    assert theirs[2] == (
        'postconf: warning: unreasonable macro call nesting: "b"\n'
        "postconf: fatal: macro processing error\n"
    )
    assert ours[2] == (
        "minipostconf: fatal: main.cf:2: parameter a: recursive reference: a -> b -> a\n"
    )


def test_master_cf_errors_name_line_and_field(confdir):
    theirs, ours = both(confdir, "", "-M", master="x unix - - n - 1? x\n")
    assert theirs[2] == (
        'postconf: fatal: invalid process_limit field "1?" in "x unix - - n - 1? x"\n'
    )
    assert ours[2] == (
        'minipostconf: fatal: master.cf:1: field "maxproc": bad value: "1?" (expected a number'
        " or -)\n"
    )


def test_unbalanced_brace_in_master_cf_is_fatal(confdir):
    theirs, ours = both(confdir, "", "-M", master="x unix - - n - - x {a b\n")
    assert theirs[0] == 0 and "missing '}'" in theirs[2]
    assert ours[0] == 1 and 'field "arguments": missing "}" in "{a b"' in ours[2]


def test_edit_keeps_the_file_mode(confdir):
    for tool, mode in ((real, 0o644), (mini, 0o600)):
        (confdir / "main.cf").write_text("a = 1\n")
        os.chmod(confdir / "main.cf", 0o600)
        old = os.umask(0o022)
        try:
            tool(str(confdir), "-e", "a=2")
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(confdir / "main.cf").st_mode) == mode


def test_attached_option_letters_are_split_like_getopt(confdir):
    theirs, ours = both(confdir, "", "-M", master="x unix - - n - - smtp -ofoo=$x\n")
    assert theirs[1].endswith("smtp -o f -o -o=$x\n")  # postconf splits at the "o" of "foo"
    assert ours[1].endswith("smtp -o foo=$x\n")


def test_edit_adds_the_missing_final_newline(confdir):
    (confdir / "main.cf").write_text("last = x")
    real(str(confdir), "-e", "new=1")
    assert (confdir / "main.cf").read_text() == "last = xnew = 1\n"  # glued onto the last line
    (confdir / "main.cf").write_text("last = x")
    mini(str(confdir), "-e", "new=1")
    assert (confdir / "main.cf").read_text() == "last = x\nnew = 1\n"


def test_edit_appends_new_names_sorted(confdir):
    names = [f"n{i}=1" for i in "fbdaec"]
    mini(str(confdir), "-e", *names)
    assert (confdir / "main.cf").read_text().split() == [
        w for i in "abcdef" for w in (f"n{i}", "=", "1")
    ]
    (confdir / "main.cf").write_text("")
    real(str(confdir), "-e", *names)
    assert sorted((confdir / "main.cf").read_text().splitlines()) == [f"n{i} = 1" for i in "abcdef"]


def test_legacy_dbms_parameters_are_not_recognised(confdir):
    main = "virtual_alias_maps = ldap:mydb\nmydb_server_host = ldap.example\n"
    theirs, ours = both(confdir, main, "-n")
    assert "mydb_server_host = ldap.example" in theirs[1]
    assert "mydb_server_host" not in ours[1]
    assert "main.cf:2: unused parameter: mydb_server_host=ldap.example" in ours[2]


def test_a_nul_byte_is_an_error_not_the_end_of_the_line(confdir):
    theirs, ours = both(confdir, "myorigin = a\0b\nmydomain = c\n", "-n")
    assert theirs[0] == 0 and "myorigin = a\n" in theirs[1]  # the rest of the line is gone
    assert ours[0] == 1 and ours[1] == ""
    assert ours[2] == "minipostconf: fatal: main.cf:1: line contains a NUL byte\n"
    theirs, ours = both(confdir, "", "-M", master="echo unix - n n - 0 te\0std\n")
    assert theirs[0] == 0 and theirs[1].split()[-1] == "te"
    assert ours[2] == "minipostconf: fatal: master.cf:1: line contains a NUL byte\n"


# master.cf: -M, -F, -P and their edits ------------------------------------------------


def test_the_first_command_argument_with_blanks_keeps_its_braces(confdir, tmp_path):
    master = "x unix - - n - - cmd {a b} {c d}\n"
    theirs, ours = both(confdir, "", "-M", master=master)
    assert theirs[1].endswith("cmd a b {c d}\n")  # three arguments, read back
    assert ours[1].endswith("cmd {a b} {c d}\n")
    theirs, ours = edit_both(tmp_path, {"master.cf": master}, "-Pe", "x/unix/p=1")
    assert theirs.files["master.cf"].endswith(b"    -o p=1\n    a b {c d}\n")
    assert ours.files["master.cf"].endswith(b"    -o p=1\n    {a b} {c d}\n")


def test_a_failed_edit_leaves_no_temporary_file(tmp_path):
    theirs, ours = edit_both(
        tmp_path, {"master.cf": "a unix - - n - - a\n"}, "-Fe", "a/unix/wakeup=x"
    )
    assert theirs.status == ours.status == 1
    assert theirs.listing == ["main.cf", "master.cf", "master.cf.tmp"]
    assert ours.listing == ["main.cf", "master.cf"]


def test_an_edit_adds_the_missing_final_newline_to_master_cf(tmp_path):
    args = ("-Me", "b/unix=b unix - - n - - b")
    theirs, ours = edit_both(tmp_path, {"master.cf": "a unix - - n - - a"}, *args)
    assert theirs.files["master.cf"] == (
        b"a unix - - n - - ab          unix  -       -       n       -       -       b\n"
    )
    assert ours.files["master.cf"] == (
        b"a unix - - n - - a\nb          unix  -       -       n       -       -       b\n"
    )


@pytest.mark.parametrize(
    ("args", "main"),
    [(("-MX", "a/unix  "), False), (("-X", "a  "), True)],
    ids=["master.cf", "main.cf"],
)
def test_trailing_blanks_after_a_name_to_remove_are_ignored(tmp_path, args, main):
    files = {"main.cf": "a = 1\n", "master.cf": "a unix - - n - - a\n"}
    theirs, ours = edit_both(tmp_path, files, *args)
    name = "main.cf" if main else "master.cf"
    assert theirs.files[name] == files[name].encode()  # "a  " matches nothing
    assert ours.files[name] == b""


def test_an_empty_command_is_refused_where_postconf_crashes(tmp_path):
    theirs, ours = edit_both(
        tmp_path, {"master.cf": "a unix - - n - - a\n"}, "-Fe", "a/unix/command="
    )
    assert theirs.status < 0  # killed by a signal
    assert ours.status == 1 and ours.stderr == ['fatal: bad field count: "a/unix/command="']


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-Fe", "a/unix/wakeup="), 'invalid wakeup field "" in ""'),
        (
            ("-Me", "a/unix=a unix - - n -? - a"),
            'invalid wakeup field "-?" in "a unix - - n -? - a"',
        ),
        (("-Me", "a/unix=a unix - - n - - a -o x"), 'field "arguments": -o "x": missing'),
    ],
    ids=["empty wakeup", "-? wakeup", "-o without ="],
)
def test_edits_postconf_writes_and_the_master_would_misread_are_refused(tmp_path, args, message):
    theirs, ours = edit_both(tmp_path, {"master.cf": "a unix - - n - - a\n"}, *args)
    assert theirs.status == 0
    assert ours.status == 1 and ours.stderr[0].startswith(f"fatal: {message}")
    assert ours.files["master.cf"] == b"a unix - - n - - a\n"


def test_an_entry_of_master_cf_that_an_edit_cannot_read_names_its_line(tmp_path):
    master = "a unix - - n - - a\nb unix - - n - x b\n"
    theirs, ours = edit_both(tmp_path, {"master.cf": master}, "-Pe", "*/unix/p=1")
    assert theirs.stderr == ['fatal: invalid process_limit field "x" in "b unix - - n - x b "']
    assert ours.stderr == [
        'fatal: field "maxproc": bad value: "x" (expected a number or -)'
    ]  # after the location, which is "master.cf:2: " (see support.postconf_diff)
