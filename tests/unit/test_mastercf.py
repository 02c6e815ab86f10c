"""master/mastercf.py: fields, defaults, names, arguments, and every error path."""

from __future__ import annotations

import os

import pytest

from master.config import Config, parse_main_cf
from master.errors import ConfigError
from master.mastercf import (
    daemon_overrides,
    master_lines,
    parse_master_cf,
    read_master_cf,
    split_args,
)
from support.config_corpus import MASTER_CORPUS, expected_error

PORTS = {"smtp": "25", "submission": "587"}


def parse(text: str, main: dict[str, str] | None = None, warn=None):
    config = Config(main if main is not None else {"compatibility_level": "3.6"})
    return parse_master_cf(text, config, port_lookup=PORTS.get, warn=warn)


def one(text: str, **kwargs):
    (entry,) = parse(text, **kwargs)
    return entry


def test_the_eight_fields_and_explicit_values():
    entry = one("tlsmgr unix y n y 1000? 1 tlsmgr -v\n")
    assert (entry.name, entry.type, entry.private, entry.unpriv, entry.chroot) == (
        "tlsmgr", "unix", True, False, True,
    )  # fmt: skip
    assert (entry.wakeup, entry.wakeup_conditional, entry.maxproc) == (1000, True, 1)
    assert (entry.command, entry.args, entry.lineno) == ("tlsmgr", ["-v"], 1)
    assert entry.fields == ("tlsmgr", "unix", "y", "n", "y", "1000?", "1", "tlsmgr")
    assert entry.identity == ("private/tlsmgr", "unix") and entry.socket_path == "private/tlsmgr"


def test_dash_selects_the_defaults():
    entry = one("qmgr unix - - - - - qmgr\n", main={"compatibility_level": "3.6"})
    assert (entry.private, entry.unpriv, entry.chroot, entry.wakeup, entry.maxproc) == (
        True, True, False, 0, 100,
    )  # fmt: skip
    limited = one("qmgr unix - - - - - qmgr\n", main={"default_process_limit": "7"})
    assert limited.maxproc == 7


def test_chroot_default_is_y_below_compatibility_level_1_with_a_warning():
    warnings: list[str] = []
    entry = one("qmgr unix - - - - - qmgr\n", main={}, warn=warnings.append)
    assert entry.chroot is True
    assert warnings == [
        "master.cf:1: service qmgr/unix: using backwards-compatible default setting "
        "chroot=y (set compatibility_level in main.cf, or write y or n)"
    ]
    assert one("qmgr unix - - n - - qmgr\n", main={}).chroot is False


def test_wakeup_forms_and_unlimited_maxproc():
    assert one("a unix - - n 60 0 a\n").wakeup_conditional is False
    assert one("a unix - - n 0? 0 a\n").wakeup_conditional is False  # only matters when N > 0
    assert one("a unix - - n 60 0 a\n").maxproc == 0


@pytest.mark.parametrize("stype", ["unix", "unix-dgram", "fifo", "pass"])
def test_private_and_public_socket_paths(stype):
    assert one(f"x {stype} y - n - 1 x\n").socket_path == "private/x"
    assert one(f"x {stype} n - n - 1 x\n").socket_path == "public/x"


@pytest.mark.parametrize(
    ("name", "host", "port", "internal"),
    [
        ("smtp", "", "25", "25"),
        ("2525", "", "2525", "2525"),
        ("127.0.0.1:smtp", "127.0.0.1", "25", "[127.0.0.1]:25"),
        ("[127.0.0.1]:10025", "127.0.0.1", "10025", "[127.0.0.1]:10025"),
        ("[::1]:587", "::1", "587", "[::1]:587"),
        ("localhost:0025", "localhost", "25", "[localhost]:25"),
    ],
)
def test_inet_names(name, host, port, internal):
    entry = one(f"{name} inet n - n - - smtpd\n")
    assert entry.inet_address == (host, port)
    assert entry.identity == (internal, "inet") and entry.socket_path == ""


def test_continuations_comments_and_option_forms():
    text = (
        "smtp inet n - n - - smtpd\n"
        "# comment inside\n"
        "  -o smtpd_banner=$myhostname\n"
        "\n"
        "\t-o { smtpd_client_restrictions = permit_mynetworks, reject }\n"
        "  -omax_idle=3600 -vo{ a = b c } -D\n"
        "  non-option -o not_an_override=1\n"
    )
    entry = one(text)
    assert entry.args == [
        "-o", "smtpd_banner=$myhostname",
        "-o", "smtpd_client_restrictions = permit_mynetworks, reject",
        "-omax_idle=3600", "-vo", "a = b c", "-D",
        "non-option", "-o", "not_an_override=1",
    ]  # fmt: skip
    assert entry.overrides == [
        ("smtpd_banner", "$myhostname"),
        ("smtpd_client_restrictions", "permit_mynetworks, reject"),
        ("max_idle", "3600"),
        ("a", "b c"),
    ]
    assert entry.raw_args[3] == "{ smtpd_client_restrictions = permit_mynetworks, reject }"


def test_braces_group_arguments():
    assert split_args("a {b c} { d {e} f } -x") == ["a", "b c", "d {e} f", "-x"]
    assert split_args("{}") == [""]


def test_per_service_parameter_views():
    config = Config({"max_idle": "100s", "ten": "10"})
    (entry,) = parse_master_cf("s unix - - n - - s -o max_idle=3600 -o max_use=$ten\n", config)
    view = entry.params(config)
    assert view.get_time("max_idle") == 3600 and view.get_int("max_use") == 10
    assert config.get_time("max_idle") == 100
    (bad,) = parse_master_cf("s unix - - n - - s\n  -o max_idle=0\n", config)
    with pytest.raises(ConfigError, match=r"^master.cf:1: -o max_idle=0: invalid max_idle: 0"):
        bad.params(config).get_time("max_idle")


def test_duplicates_warn_and_the_last_entry_wins():
    warnings: list[str] = []
    entries = parse(
        "smtp inet n - n - - smtpd\nx unix - - n - - x\n25 inet n - n - 3 other\n",
        warn=warnings.append,
    )
    assert [(e.name, e.command) for e in entries] == [("x", "x"), ("25", "other")]
    assert warnings == [
        'master.cf:3: duplicate master.cf entry for service "25/inet" (25) -- using the last '
        "entry (the first is at line 1)"
    ]


def test_daemon_overrides_stop_at_the_first_non_option():
    pairs = daemon_overrides(["-v", "-o", "a=1", "x", "-o", "b=2"])
    assert pairs == [(("a", "1"), "a=1")]
    assert daemon_overrides(["-o"]) == [("missing name=value after -o", "")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x unix - - n - - \n", 'master.cf:1: missing "command" field'),
        ("x\n", 'master.cf:1: missing "type" field'),
        ("x tcp - - n - - x\n", 'master.cf:1: field "type": bad value: "tcp" (expected inet,'),
        ("x unix yes - n - - x\n", 'master.cf:1: field "private": bad value: "yes"'),
        ("x unix - Y n - - x\n", 'master.cf:1: field "unpriv": bad value: "Y"'),
        ("x unix - - no - - x\n", 'master.cf:1: field "chroot": bad value: "no"'),
        ("x unix - - n 10x - x\n", 'master.cf:1: field "wakeup": bad value: "10x"'),
        ("x unix - - n ? - x\n", 'master.cf:1: field "wakeup": bad value: "?"'),
        ("x unix - - n - x x\n", 'master.cf:1: field "maxproc": bad value: "x" (expected a'),
        ("x unix - - n - 1? x\n", 'master.cf:1: field "maxproc": bad value: "1?"'),
        ("x unix - - n - -1 x\n", 'master.cf:1: field "maxproc": bad value: "-1"'),
        ("smtp inet - - n - - x\n", 'master.cf:1: field "private": inet service cannot be'),
        ("smtp inet y - n - - x\n", 'master.cf:1: field "private": inet service cannot be'),
        ("nosuch inet n - n - - x\n", 'master.cf:1: field "service": bad value: "nosuch" (unk'),
        ("1.2.3.4: inet n - n - - x\n", 'master.cf:1: field "service": bad value: "1.2.3.4:" (m'),
        ("[::1 inet n - n - - x\n", 'master.cf:1: field "service": bad value: "[::1" (expected'),
        ("70000 inet n - n - - x\n", 'master.cf:1: field "service": bad value: "70000" (port'),
        ("x unix - - n - - x {a\n", 'master.cf:1: field "arguments": missing "}" in "{a"'),
        ("x unix - - n - - x {a}b\n", 'master.cf:1: field "arguments": syntax error after "}"'),
        ("x unix - - n - - x -o\n", 'master.cf:1: field "arguments": -o "": missing name=value'),
        ("x unix - - n - - x -o =v\n", 'master.cf:1: field "arguments": -o "=v": missing att'),
        ("x unix - - n - - x -o v\n", 'master.cf:1: field "arguments": -o "v": missing \'=\''),
    ],
)
def test_each_malformed_line_names_its_line_and_field(text, message):
    with pytest.raises(ConfigError) as err:
        parse("# header\n" + text.replace("\n", "", 0))
    assert str(err.value).startswith(message.replace("master.cf:1", "master.cf:2"))


def test_the_line_number_is_the_first_line_of_the_entry():
    with pytest.raises(ConfigError, match=r'^master.cf:3: field "maxproc"'):
        parse("a unix - - n - - a\n\nb unix - - n - x\n  b\n")


def test_bad_default_process_limit_is_reported_against_the_entry():
    with pytest.raises(ConfigError, match=r'^master.cf:1: field "maxproc": main.cf:1: bad num'):
        parse_master_cf("a unix - - n - - a\n", Config(parse_main_cf("default_process_limit =\n")))


def test_master_lines_check_syntax_only():
    (line,) = master_lines("smtp inet - - y - - smtpd -o{ a = b }\n")
    assert line.fields[:3] == ("smtp", "inet", "-") and line.args == ("-o", "a = b")


def test_read_master_cf(tmp_path):
    with pytest.raises(ConfigError, match=r"^open .*master.cf: No such file or directory"):
        read_master_cf(str(tmp_path / "master.cf"), Config({}))
    (tmp_path / "master.cf").write_text("tlsmgr unix - - n 1000? 1 tlsmgr\n")
    (entry,) = read_master_cf(str(tmp_path / "master.cf"), Config({}))
    assert entry.filename == "master.cf" and entry.chroot is False


def test_the_embedded_master_cf_parses():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "master.cf")
    config = Config({"compatibility_level": "3.6"})
    entries = read_master_cf(path, config, PORTS.get)
    tlsmgr = next(e for e in entries if e.name == "tlsmgr")
    assert (tlsmgr.wakeup, tlsmgr.wakeup_conditional, tlsmgr.maxproc) == (1000, True, 1)


@pytest.mark.parametrize("path", MASTER_CORPUS, ids=os.path.basename)
def test_corpus(path):
    with open(path) as fp:
        text = fp.read()
    expected = expected_error(path)
    if expected is not None:
        with pytest.raises(ConfigError) as err:
            master_lines(text)
        assert str(err.value).startswith(expected)
    else:
        assert parse(text, main={"compatibility_level": "3.6"})


# master_service_disable -----------------------------------------------------------

DISABLE_CF = (
    "smtp inet n - n - - smtpd\n"
    "127.0.0.1:2525 inet n - n - - smtpd\n"
    "tlsmgr unix - - n 1000? 1 tlsmgr\n"
    "my.relay unix - - n - - smtp\n"
    "postlog unix-dgram n - n - 1 postlogd\n"
    "pickup fifo n - n 60 1 pickup\n"
)


@pytest.mark.parametrize(
    ("setting", "left"),
    [
        ("", ["smtp/inet", "127.0.0.1:2525/inet", "tlsmgr/unix", "my.relay/unix",
              "postlog/unix-dgram", "pickup/fifo"]),
        ("smtp/inet", ["127.0.0.1:2525/inet", "tlsmgr/unix", "my.relay/unix",
                       "postlog/unix-dgram", "pickup/fifo"]),
        ("inet", ["tlsmgr/unix", "my.relay/unix", "postlog/unix-dgram", "pickup/fifo"]),
        ("!smtp/inet, inet", ["smtp/inet", "tlsmgr/unix", "my.relay/unix",
                              "postlog/unix-dgram", "pickup/fifo"]),
        ("inet !smtp/inet", ["tlsmgr/unix", "my.relay/unix", "postlog/unix-dgram",
                             "pickup/fifo"]),  # the first match decides
        ("!!inet", ["tlsmgr/unix", "my.relay/unix", "postlog/unix-dgram", "pickup/fifo"]),
        ("UNIX,FIFO", ["smtp/inet", "127.0.0.1:2525/inet", "postlog/unix-dgram"]),
        ("tlsmgr.unix 127.0.0.1:2525/inet", ["smtp/inet", "my.relay/unix",
                                              "postlog/unix-dgram", "pickup/fifo"]),
        ("my.relay/unix unix-dgram", ["smtp/inet", "127.0.0.1:2525/inet", "tlsmgr/unix",
                                      "pickup/fifo"]),
        # Neither a name alone, nor the old ".type" form (an empty name), nor wildcards.
        ("tlsmgr .inet */inet all", ["smtp/inet", "127.0.0.1:2525/inet", "tlsmgr/unix",
                                     "my.relay/unix", "postlog/unix-dgram", "pickup/fifo"]),
    ],
)  # fmt: skip
def test_master_service_disable_leaves_services_out(setting, left):
    entries = parse(DISABLE_CF, main={"compatibility_level": "3.6",
                                      "master_service_disable": setting})  # fmt: skip
    assert [f"{e.name}/{e.type}" for e in entries] == left


def test_a_disabled_entry_is_still_checked_and_does_not_hide_its_twin():
    with pytest.raises(ConfigError, match='master.cf:1: field "maxproc"'):
        parse("smtp inet n - n - x smtpd\n", main={"master_service_disable": "inet"})
    # "smtp" and "25" are one listener; disabling the name smtp leaves the other entry.
    main = {"compatibility_level": "3.6", "master_service_disable": "smtp/inet"}
    (entry,) = parse("25 inet n - n - - a\nsmtp inet n - n - - b\n", main=main)
    assert (entry.name, entry.command) == ("25", "a")
