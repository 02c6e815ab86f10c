"""minipostconf (master/postconf.py) on its own: options, output formats, editing, errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from master.builtin import builtin_defaults
from master.errors import ConfigError
from master.postconf import print_line
from master.postconf_edit import edit_main_cf
from master.postconf_master import format_master_entry, normalize_args
from master.postconf_names import daemon_params
from support.postconf_diff import minipostconf


@pytest.fixture(autouse=True)
def no_mail_config(monkeypatch):
    monkeypatch.delenv("MAIL_CONFIG", raising=False)


@pytest.fixture
def confdir(tmp_path):
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("")
    return tmp_path


def pc(confdir, main: str, *args: str, master: str | None = None) -> tuple[int, str, str]:
    (confdir / "main.cf").write_text(main)
    if master is not None:
        (confdir / "master.cf").write_text(master)
    return minipostconf("-c", str(confdir), *args)


# Showing parameters -------------------------------------------------------------------


def test_n_shows_known_settings_sorted_and_config_directory(confdir):
    main = "myhostname = mx.example\nmy_user = v\nrelayhost = [$my_user]\nstray = 1\n"
    status, out, err = pc(confdir, main, "-n")
    assert status == 0
    assert out == (
        f"config_directory = {confdir}\nmy_user = v\nmyhostname = mx.example\n"
        "relayhost = [$my_user]\n"
    )
    assert err == "minipostconf: warning: main.cf:4: unused parameter: stray=1\n"


def test_config_directory_is_added_for_mail_config_too(confdir, monkeypatch):
    (confdir / "main.cf").write_text("relayhost = x\n")
    monkeypatch.setenv("MAIL_CONFIG", str(confdir))
    assert minipostconf("-n")[1] == f"config_directory = {confdir}\nrelayhost = x\n"


def test_config_directory_in_main_cf_wins(confdir):
    status, out, err = pc(confdir, "config_directory = /elsewhere\n", "-n")
    assert out == "config_directory = /elsewhere\n"
    assert "main.cf:1: overriding earlier entry: config_directory=" in err


def test_names_show_effective_values_and_unknown_names_warn(confdir):
    status, out, err = pc(confdir, "relayhost = r\n", "relayhost", "mail_name", "bogus_name")
    assert (status, out) == (0, "relayhost = r\nmail_name = Postfix\n")
    assert err == "minipostconf: warning: bogus_name: unknown parameter\n"


def test_empty_values_print_without_a_trailing_blank(confdir):
    assert pc(confdir, "relayhost =\n", "relayhost")[1] == "relayhost =\n"


def test_x_expands_h_hides_names_H_hides_values(confdir):
    main = "myhostname = mx.example.com\nsmtpd_banner = $myhostname   ${mail_name?{x}}\n"
    assert pc(confdir, main, "-x", "smtpd_banner")[1] == "smtpd_banner = mx.example.com x\n"
    assert pc(confdir, main, "-h", "mydomain")[1] == "example.com\n"
    assert pc(confdir, main, "-nH")[1] == "config_directory\nmyhostname\nsmtpd_banner\n"


def test_d_lists_postfix_defaults_and_every_daemons_rows(confdir):
    status, out, err = pc(confdir, "relayhost = ignored\n", "-d")
    names = [line.split(" =")[0] for line in out.splitlines()]
    assert status == 0 and err == "" and names == sorted(names)
    assert "relayhost =" in out.splitlines() and "virtual_maps" not in names
    assert "tls_session_cache_max_entries = 100000" in out.splitlines()  # tlsmgr's entry point
    # 831 built-ins (empty master.cf) + the daemons' own rows (their Param rows that
    # Postfix's table does not have: tlsmgr's tls_session_cache_max_entries, metrics_timeout)
    ours = {row.name for row in daemon_params() if row.name not in builtin_defaults().values}
    assert {"tls_session_cache_max_entries", "metrics_timeout"} <= ours <= set(names)
    assert len(names) == 831 + len(ours)


def test_service_defined_names_follow_master_cf(confdir):
    master = "relay unix - - n - - smtp\n"
    status, out, _ = pc(confdir, "", "-d", "relay_recipient_limit", master=master)
    assert out == "relay_recipient_limit = $default_recipient_limit\n"


def test_o_overrides_main_cf_for_this_run(confdir):
    assert pc(confdir, "relayhost = a\n", "-o", "relayhost=b", "relayhost")[1] == "relayhost = b\n"
    status, _, err = pc(confdir, "", "-o", "nonsense")
    assert (status, err) == (
        1,
        "minipostconf: fatal: invalid parameter override: nonsense: missing '=' after attribute"
        " name\n",
    )


def test_f_folds_long_lines(confdir):
    value = " ".join(f"word{i:02d}" for i in range(20))
    out = pc(confdir, f"smtpd_banner = {value}\n", "-f", "smtpd_banner")[1]
    lines = out.splitlines()
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("    word")


def test_print_line_normalises_white_space():
    assert print_line("a =  x\t\ty \r\n", False) == "a = x y\n"
    assert print_line("a = ", False) == "a =\n"


def test_legacy_names_are_known_and_read_only_names_warn(confdir):
    status, out, err = pc(confdir, "virtual_maps = x\nprocess_id = 5\n", "-n")
    assert out.endswith("virtual_maps = x\n") and "process_id" not in out
    assert err == "minipostconf: warning: main.cf:2: read-only parameter assignment: process_id=5\n"


def test_undefined_and_restriction_class_names(confdir):
    main = "smtpd_restriction_classes = strict, loose\nstrict = x\nrelayhost = $nothing\n"
    status, out, err = pc(confdir, main, "-n")
    assert "strict = x" in out
    assert sorted(err.splitlines()) == [
        "minipostconf: warning: main.cf:1: undefined parameter: loose",
        "minipostconf: warning: main.cf:3: undefined parameter: nothing",
    ]


def test_master_cf_o_names(confdir):
    master = "s unix - - n - - smtp -o helper=1 -o smtp_helo_name=$helper -o junk=2\n"
    status, out, err = pc(confdir, "", "-n", master=master)
    assert err == "minipostconf: warning: master.cf:1: unused parameter: junk=2\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-dn"], "specify one of -d -n"),
        (["-hH", "x"], "specify one of -h -H"),
        (["-ex", "a=b"], "specify one of -e -x"),
        (["-X#", "a"], "specify one of -X -#"),
        (["-n", "-X", "a"], "specify one of -n -X"),
        (["-d", "a=b"], "specify one of -d -e"),
        (["-Md"], "with option -M, do not specify -d"),
        (["-Mn"], "with option -M, do not specify -n"),
        (["-M", "-e", "a/unix=x"], 'bad field count: "a/unix=x"'),
        (["-Mdh"], "with option -M, do not specify -d -h"),
        (["-FMP"], "specify one of -F -M -P"),
        (["-FX", "a/b/c"], "with option -F, do not specify -X"),
        (["-P#", "a/b/c"], "with option -P, do not specify -#"),
        (["-X"], "missing service argument"),
        (["-e"], "-e requires name=value argument"),
        (["-m"], "option -m is not supported by minipostconf"),
        (["-Z"], "option -Z not recognized (usage: minipostconf"),
        (["-c"], "option -c requires argument"),
        (["-e", "#a=b"], "-e, -X, or -# accepts no comment input"),
        (["-e", "a b=c"], "missing '=' after attribute name: \"a b=c\""),
        (["-X", "a=b"], "specify one of -e -X"),
        (["-X", " "], "-X or -# requires non-blank parameter names"),
        (["-M", "a/b/c"], "-M option requires service_name[/type]"),
    ],
)
def test_command_line_errors(confdir, args, message):
    status, out, err = minipostconf("-c", str(confdir), *args)
    assert (status, out) == (1, "")
    assert err.startswith(f"minipostconf: fatal: {message}")


def test_main_cf_errors_are_one_fatal_line_with_the_line_number(confdir):
    status, out, err = pc(confdir, "relayhost = ok\nsmtpd_banner = ${oops\n", "-n")
    assert (status, out) == (1, "")
    assert err == (
        "minipostconf: fatal: main.cf:2: parameter smtpd_banner: truncated macro reference: "
        '"${oops" (missing "}")\n'
    )
    status, _, err = pc(confdir, "a = $b\nb = $a\nmyorigin = $a\n", "myorigin")
    assert err == "minipostconf: fatal: main.cf:1: parameter a: recursive reference: a -> b -> a\n"


def test_missing_files(tmp_path):
    status, _, err = minipostconf("-c", str(tmp_path), "-n")
    assert status == 1 and err.startswith(f"minipostconf: fatal: open {tmp_path}/main.cf: No such")
    (tmp_path / "main.cf").write_text("")
    status, out, err = minipostconf("-c", str(tmp_path), "mail_name")
    assert (status, out) == (0, "mail_name = Postfix\n")
    assert err == f"minipostconf: warning: open {tmp_path}/master.cf: No such file or directory\n"
    status, _, err = minipostconf("-c", str(tmp_path), "-M")
    assert status == 1 and "fatal: open" in err


def test_the_console_script_never_prints_a_traceback(confdir):
    (confdir / "main.cf").write_text("x = ${\n")
    (confdir / "master.cf").write_text("bad line\n")
    for args in (["-n"], ["-M"], ["-e", "a=b", "c"], ["-q"], ["-x", "x"]):
        proc = subprocess.run(
            [sys.executable, "-m", "master.postconf", "-c", str(confdir), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and "fatal: " in proc.stderr


# Editing main.cf -----------------------------------------------------------------------------

BEFORE = """\
# header
myhostname = old
mydomain = a
    b
# comment inside the entry
  c
relayhost = keep
"""


def test_edit_replaces_in_place_drops_continuations_and_appends_sorted(tmp_path):
    path = tmp_path / "main.cf"
    path.write_text(BEFORE)
    os.chmod(path, 0o640)
    edit_main_cf(str(path), [("zeta", "1"), ("mydomain", "new"), ("alpha", "")])
    assert path.read_text() == (
        "# header\nmyhostname = old\nmydomain = new\n# comment inside the entry\n"
        "relayhost = keep\nalpha = \nzeta = 1\n"
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["main.cf"]


def test_edit_replaces_every_copy_with_a_warning(confdir):
    (confdir / "main.cf").write_text("a = 1\nb = 2\na = 3\n")
    status, out, err = minipostconf("-c", str(confdir), "a=9", "b =  x  y ")
    assert (status, out) == (0, "")
    assert (confdir / "main.cf").read_text() == "a = 9\nb = x  y\na = 9\n"
    assert err == 'minipostconf: warning: main.cf:3: multiple entries for "a"\n'


def test_edit_adds_a_final_newline_and_keeps_other_bytes(tmp_path):
    path = tmp_path / "main.cf"
    path.write_bytes(b"a = 1\r\n\tcont\r\n# x\xc3\xa9\nlast = v")
    edit_main_cf(str(path), [("new", "n")])
    assert path.read_bytes() == b"a = 1\r\n\tcont\r\n# x\xc3\xa9\nlast = v\nnew = n\n"


def test_edit_rejects_bad_settings_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^open .*main.cf for reading: No such file"):
        edit_main_cf(str(tmp_path / "main.cf"), [("a", "1")])
    assert os.listdir(tmp_path) == []
    (tmp_path / "main.cf").write_text("")
    for name, value in (("a b", "1"), ("", "1"), ("a=", "1"), ("a", "x\ny")):
        with pytest.raises(ConfigError, match=r"^bad setting"):
            edit_main_cf(str(tmp_path / "main.cf"), [(name, value)])


def test_exclude_and_comment_out(confdir):
    (confdir / "main.cf").write_text(BEFORE)
    assert minipostconf("-c", str(confdir), "-X", "mydomain", "nothing")[0] == 0
    assert (confdir / "main.cf").read_text() == (
        "# header\nmyhostname = old\n# comment inside the entry\nrelayhost = keep\n"
    )
    (confdir / "main.cf").write_text(BEFORE)
    minipostconf("-c", str(confdir), "-#", "mydomain")
    assert (confdir / "main.cf").read_text() == (
        "# header\nmyhostname = old\n#mydomain = a\n#    b\n# comment inside the entry\n"
        "#  c\nrelayhost = keep\n"
    )


def test_duplicate_requests_keep_the_last(confdir):
    status, _, err = minipostconf("-c", str(confdir), "-e", "a=1", "a=2")
    assert (confdir / "main.cf").read_text() == "a = 2\n"
    assert err == "minipostconf: warning: ignoring earlier request: 'a = 1'\n"


# master.cf ---------------------------------------------------------------------------------------


def test_m_columns_and_normalised_arguments(confdir):
    master = (
        "tlsmgr unix - - y 1000? 1 tlsmgr\n"
        "127.0.0.1:10025 inet n - n - 4 smtpd -o { a = b c } -omax_idle=5 -v {x y} z\n"
    )
    status, out, err = pc(confdir, "", "-M", master=master)
    assert (status, err) == (0, "minipostconf: warning: master.cf:2: unused parameter: a=b c\n")
    assert out == (
        "tlsmgr     unix  -       -       y       1000?   1       tlsmgr\n"
        "127.0.0.1:10025 inet n   -       n       -       4       smtpd -o {a=b c} "
        "-o max_idle=5 -v {x y} z\n"
    )


def test_m_filters_fold_and_expand(confdir):
    master = "relay unix - - n - - smtp -o syslog_name=postfix/$service_name -o max_idle=1\n"
    status, out, err = pc(confdir, "", "-Mfx", "relay/unix", "nothing", master=master)
    assert out == (
        "relay      unix  -       -       n       -       -       smtp\n"
        "    -o syslog_name=postfix/relay\n    -o max_idle=1\n"
    )
    assert err == 'minipostconf: warning: unmatched request: "nothing"\n'


def test_normalize_args():
    assert normalize_args(["-vomax_idle=1", "-o{ a = b }", "{x}", "-ofoo=1"]) == [
        "-v", "-o", "max_idle=1", "-o", "a=b", "x", "-ofoo=1",
    ]  # fmt: skip
    fields = ("a", "unix", "-", "-", "n", "-", "-", "cmd")
    assert format_master_entry(fields, [], False) == (
        "a          unix  -       -       n       -       -       cmd\n"
    )


def test_bytes_that_are_not_utf8_pass_through(confdir):
    (confdir / "main.cf").write_bytes(b"smtpd_banner = caf\xe9\n")
    proc = subprocess.run(
        [sys.executable, "-m", "master.postconf", "-c", str(confdir), "-h", "smtpd_banner"],
        capture_output=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"caf\xe9\n", b"")


# -F and -P ---------------------------------------------------------------------------------

MASTER = (
    "relay unix - - n - - smtp -o syslog_name=postfix/$service_name -o b=2\n"
    "# a comment\n"
    "tlsmgr unix - - y 1000? 1 tlsmgr\n"
)


def test_f_shows_each_field_and_the_command_with_its_arguments(confdir):
    status, out, err = pc(confdir, "", "-F", "relay/unix/command", "tlsmgr", master=MASTER)
    assert out.splitlines() == [
        "relay/unix/command = smtp -o syslog_name=postfix/$service_name -o b=2",
        "tlsmgr/unix/service = tlsmgr", "tlsmgr/unix/type = unix", "tlsmgr/unix/private = -",
        "tlsmgr/unix/unprivileged = -", "tlsmgr/unix/chroot = y", "tlsmgr/unix/wakeup = 1000?",
        "tlsmgr/unix/process_limit = 1", "tlsmgr/unix/command = tlsmgr",
    ]  # fmt: skip
    assert pc(confdir, "", "-Fhx", "relay/*/command", master=MASTER)[1] == (
        "smtp -o syslog_name=postfix/relay -o b=2\n"
    )
    assert pc(confdir, "", "-F", "relay/unix/bogus", master=MASTER)[2] == (
        'minipostconf: fatal: invalid service attribute name: "bogus"\n'
    )


def test_p_shows_the_o_settings_sorted_per_entry(confdir):
    status, out, err = pc(confdir, "", "-P", master=MASTER)
    assert out == "relay/unix/b = 2\nrelay/unix/syslog_name = postfix/$service_name\n"
    assert pc(confdir, "", "-PH", master=MASTER)[1] == "relay/unix/b\nrelay/unix/syslog_name\n"
    status, out, err = pc(confdir, "", "-Px", "relay/unix/syslog_name", "tlsmgr", master=MASTER)
    assert out == "relay/unix/syslog_name = postfix/relay\n"
    assert 'warning: unmatched request: "tlsmgr"' in err  # an entry without -o settings


# Editing master.cf -------------------------------------------------------------------------


def edited(confdir, *args: str) -> tuple[int, str, str]:
    (confdir / "master.cf").write_text(MASTER)
    status, out, err = minipostconf("-c", str(confdir), *args)
    return status, (confdir / "master.cf").read_text(), err


def test_pe_and_px_rewrite_the_entry_in_postconf_columns(confdir):
    status, text, err = edited(confdir, "-Pe", "relay/unix/b=3", "relay/unix/c=4")
    assert (status, err) == (0, "")
    assert text == (  # the comment right after the entry moves above it, as with postconf
        "# a comment\n"
        "relay      unix  -       -       n       -       -       smtp\n"
        "    -o syslog_name=postfix/$service_name\n    -o b=3\n    -o c=4\n"
        "tlsmgr unix - - y 1000? 1 tlsmgr\n"
    )
    status, text, err = edited(confdir, "-PX", "relay/unix/syslog_name", "nosuch/unix/x")
    assert text.splitlines()[:3] == [
        "# a comment",
        "relay      unix  -       -       n       -       -       smtp",
        "    -o b=2",
    ]
    assert err == 'minipostconf: warning: unmatched service_name/type: "nosuch/unix/x"\n'


def test_fe_me_mx_and_m_comment_out(confdir):
    assert edited(confdir, "-Fe", "tlsmgr/unix/wakeup=3600")[1].endswith(
        "tlsmgr     unix  -       -       y       3600    1       tlsmgr\n"
    )
    status, text, err = edited(confdir, "-Me", "tlsmgr/unix=tlsmgr unix - - n - 1 tlsmgr",
                               "new/fifo=new fifo n - n - 1 new")  # fmt: skip
    assert text.splitlines()[-2:] == [
        "tlsmgr     unix  -       -       n       -       1       tlsmgr",
        "new        fifo  n       -       n       -       1       new",
    ]
    assert (
        edited(confdir, "-MX", "relay/unix")[1] == "# a comment\ntlsmgr unix - - y 1000? 1 tlsmgr\n"
    )
    assert edited(confdir, "-M#", "*/unix")[1] == (
        "#relay unix - - n - - smtp -o syslog_name=postfix/$service_name -o b=2\n"
        "# a comment\n#tlsmgr unix - - y 1000? 1 tlsmgr\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-Fe", "tlsmgr/unix/wakeup=soon"], 'invalid wakeup field "soon" in "soon"'),
        (["-Fe", "tlsmgr/unix/*=1"], "-Fe does not accept wild-card field name"),
        (["-Pe", "relay/unix/b=two words"], "-Pe does not accept whitespace in parameter value"),
        (["-PX", "relay/unix"], "-Pe or -PX requires service_name/type/parameter"),
        (["-Me", "x/unix=x unix - -"], 'bad field count: "x/unix=x unix - -"'),
        (["-MX", "relay"], "-Me, -MX or -M# requires service_name/type"),
    ],
)
def test_bad_master_cf_edits_change_nothing(confdir, args, message):
    status, text, err = edited(confdir, *args)
    assert (status, text, err) == (1, MASTER, f"minipostconf: fatal: {message}\n")
    assert sorted(os.listdir(confdir)) == ["main.cf", "master.cf"]
