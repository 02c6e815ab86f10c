"""master/config.py: logical lines, expansion, typed values, Config, and every error path."""

from __future__ import annotations

import os

import pytest

from master.config import (
    Config,
    Entry,
    Param,
    config_directory,
    logical_lines,
    parse_main_cf,
    read_main_cf,
    split_nameval,
)
from master.errors import ConfigError, MacroError
from master.macro import (
    compat_level,
    expand_macros,
    parse_bool,
    parse_int,
    parse_time,
    scan_macros,
    split_list,
)


def cfg(text: str, params=(), overrides=(), origin=None) -> Config:
    config = Config(parse_main_cf(text), params, config_dir="/cfg")
    return config.with_overrides(overrides, origin) if overrides else config


def expand(text: str, **values: str) -> str:
    return expand_macros(text, values.get)


# Logical lines -------------------------------------------------------------------------


def test_comments_blank_lines_and_hash_inside_a_value():
    text = "# c\n\n   \n  # indented comment\na = x # not a comment\n\t\nb=y\n"
    assert logical_lines(text, "main.cf") == [(5, "a = x # not a comment"), (7, "b=y")]


def test_continuation_keeps_leading_white_space_and_skips_comment_lines():
    text = "a = x\n   y\n# comment inside\n\n\tz\nb = 1\n"
    assert logical_lines(text, "main.cf") == [(1, "a = x   y\tz"), (6, "b = 1")]


def test_a_continuation_with_nothing_before_it_is_warned_about_and_skipped():
    warnings: list[str] = []
    text = "  orphan = 1\n   more\nname = v\n"
    assert logical_lines(text, "main.cf", warnings.append) == [(3, "name = v")]
    assert warnings == [
        'main.cf:1: logical line must not start with whitespace: "  orphan = 1   more"'
    ]


def test_the_whitespace_warning_shows_at_most_30_characters():
    warnings: list[str] = []
    logical_lines(" " + "x" * 40 + "\n", "main.cf", warnings.append)
    assert warnings == [f'main.cf:1: logical line must not start with whitespace: " {"x" * 29}..."']


def test_last_definition_wins_and_a_changed_value_is_warned_about():
    warnings: list[str] = []
    entries = parse_main_cf("a = 1\nb = 2\na = 1\na = 3\n", warn=warnings.append)
    assert entries["a"] == Entry("3", 4)
    assert list(entries) == ["b", "a"]
    assert warnings == ["main.cf:4: overriding earlier entry: a=1"]


def test_blanks_around_the_equals_sign_and_at_the_end_are_removed():
    entries = parse_main_cf("a\t=\t x  y \t\nb=\nc = =v\nd=e=f\n")
    assert {k: e.value for k, e in entries.items()} == {"a": "x  y", "b": "", "c": "=v", "d": "e=f"}


def test_carriage_returns_count_as_trailing_white_space():
    assert parse_main_cf("a = b\r\n")["a"].value == "b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = 1\njust words\n", "main.cf:2: missing '=' after attribute name: \"just words\""),
        ("a = 1\n\n= value\n", 'main.cf:3: missing attribute name: "= value"'),
        ("x\n  y\n", "main.cf:1: missing '=' after attribute name: \"x  y\""),
        ("# c\nname\n", "main.cf:2: missing '=' after attribute name: \"name\""),
    ],
)
def test_syntax_errors_name_the_first_line_of_the_logical_line(text, message):
    with pytest.raises(ConfigError) as err:
        parse_main_cf(text)
    assert str(err.value) == message


def test_split_nameval_is_postfixs_for_main_cf_and_every_dash_o():
    assert split_nameval("  a =  b c \t") == ("a", "b c")
    assert split_nameval("a=") == ("a", "")
    for text, message in [
        ("= b", "missing attribute name"),
        ("a b = c", "missing '=' after attribute name"),
        ("a", "missing '=' after attribute name"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}$"):
            split_nameval(text)


def test_read_main_cf_reports_a_missing_file_and_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"open .*/main.cf: No such file or directory \(use -c"):
        read_main_cf(str(tmp_path / "main.cf"))


def test_config_directory_order(monkeypatch):
    monkeypatch.setenv("MAIL_CONFIG", "/from/env")
    assert config_directory("/from/cli") == "/from/cli"
    assert config_directory(None) == "/from/env"
    monkeypatch.delenv("MAIL_CONFIG")
    assert config_directory(None) == "/etc/postfix"


# Expansion -------------------------------------------------------------------------------


def test_dollar_forms():
    values = {"a": "A", "a_b": "AB", "empty": ""}
    assert expand_macros("$a.$a_b-${a}-$(a)-$$a-$$$a", values.get) == "A.AB-A-A-$a-$A"
    assert expand_macros("<$undefined><${empty}>", values.get) == "<><>"


def test_values_are_expanded_recursively():
    assert expand("$x", x="1$y", y="2$z", z="3") == "123"


def test_legacy_conditionals_take_the_rest_as_text():
    values = {"b": "1", "e": ""}
    assert expand("${b?x:y}", **values) == "x:y"
    assert expand("${e:x:y}", **values) == "x:y"
    assert expand("${b:x}${e?x}${nothing?x}", **values) == ""
    assert expand("${b? lead}", **values) == " lead"
    assert expand("${nothing:$b}", **values) == "1"


def test_braced_conditionals():
    values = {"b": "1", "e": ""}
    assert expand("${b?{then}:{else}}", **values) == "then"
    assert expand("${e?{then}:{else}}", **values) == "else"
    assert expand("${e?{then}:else text}", **values) == "else text"
    assert expand("${ b ? {t} : {f} }", **values) == "t"
    assert expand("${b?{x{y}z}}", **values) == "x{y}z"


def test_conditions_test_the_raw_value_not_its_expansion():
    assert expand("${a?set}", a="$empty", empty="") == "set"


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("${{a} == {a}}", "true"),
        ("${{a} != {a}}", ""),
        ("${{10} > {9}}", "true"),
        ("${{a10} > {a9}}", ""),
        ("${{02} == {2}}", "true"),
        ("${{} == {}}", "true"),
        ("${{ 5 } == {5}}", ""),
        ("${{3.10} >level {3.9}}", "true"),
        ("${{2} <=level {2.0.0}}", "true"),
        ("${{1} < {2} ? {lt} : {ge}}", "lt"),
        ("${{b} >= {a} ? {ge}}", "ge"),
        ("${{x}=={y}:{differ}}", "differ"),
    ],
)
def test_relational_expressions(text, result):
    assert expand(text) == result


def test_relational_operands_are_expanded():
    assert expand("${{$level} <level {2} ? {old} : {new}}", level="3.6") == "new"


def test_a_reference_cycle_is_an_error_naming_the_chain():
    with pytest.raises(MacroError) as err:
        expand_macros("$a", {"a": "x$b", "b": "${a}"}.get, owner="top")
    assert err.value.owner == "a"
    assert str(err.value) == "parameter a: recursive reference: a -> b -> a"


def test_nesting_deeper_than_100_is_an_error():
    chain = {f"n{i}": f"$n{i + 1}" for i in range(1, 101)}
    chain["n101"] = ""
    assert expand_macros("$n1", chain.get) == ""
    chain["n100"], chain["n101"] = "$n101", "text"
    with pytest.raises(MacroError, match="unreasonable macro call nesting"):
        expand_macros("$n1", chain.get, owner="top")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${a", 'truncated macro reference: "${a" (missing "}")'),
        ("$(a", 'truncated macro reference: "$(a" (missing ")")'),
        ("a $ b", 'empty macro name: "a $ b" (write $$ for a literal $)'),
        ("x$", 'empty macro name: "x$" (write $$ for a literal $)'),
        ("${a-b}", 'attribute name syntax error at: "...a>>>-b"'),
        ("${a?{x}junk}", '":" expected at: "...x}>>>junk"'),
        ("${a:{x}junk}", 'unexpected input at: "...x}>>>junk"'),
        ("${{a} <> {b}}", '"==", "!=", "<", "<=", ">=" or ">" expected at: "...{a}>>><> {b}"'),
        ("${{a} == b}", '"{expression}" expected at: "...{a} ==>>> b"'),
        ("${{a} <foo {b}}", 'bad operator suffix at: "...<>>>foo" (only "level")'),
        ("${{x} <level {2}}", 'malformed compatibility level syntax: "x"'),
        ("${{a} == {b} x}", '"?" or ":" expected at: "...}>>>x"'),
        ("$({a)", 'unbalanced {} in attribute expression: "{a"'),
        ("${{99999999999999999999} == {1}}", "bad numerical comparison"),
    ],
)
def test_expansion_syntax_errors_blame_the_owner(text, message):
    with pytest.raises(MacroError) as err:
        expand_macros(text, {"a": "1"}.get, owner="smtpd_banner")
    assert err.value.owner == "smtpd_banner"
    assert message in str(err.value)


def test_syntax_errors_inside_a_referenced_value_blame_that_value():
    with pytest.raises(MacroError) as err:
        expand_macros("$inner", {"inner": "${broken"}.get, owner="outer")
    assert err.value.owner == "inner"


def test_scan_finds_names_in_every_branch():
    text = "$a ${b?$c} ${d:{$e}} ${{$f} == {x} ? {$g} : {$h}} $$i"
    assert scan_macros(text) == ["a", "b", "c", "d", "e", "f", "g", "h"]
    with pytest.raises(MacroError):
        scan_macros("${a")


def test_compat_level():
    assert compat_level("0") < compat_level("1") < compat_level("2") < compat_level("3.6")
    assert compat_level("3.9") < compat_level("3.10") < compat_level("3.10.1")
    assert compat_level("3") == compat_level("3.0") == compat_level("3.0.0")
    for bad in ("", "x", "3.x", "3..6", "3.6.", "-1", "3.1024", "1.2.3.4"):
        with pytest.raises(ValueError, match="malformed compatibility level"):
            compat_level(bad)


# Typed values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100", 100),
        ("100s", 100),
        ("3600sec", 3600),
        ("2m", 120),
        ("1h", 3600),
        ("1d", 86400),
        ("1w", 604800),
        (" 5", 5),
        ("+5", 5),
        ("5s5", 5),
    ],
)
def test_time_values(text, seconds):
    assert parse_time("t", text) == seconds


def test_time_default_unit():
    assert parse_time("t", "2", "h") == 7200


@pytest.mark.parametrize("text", ["", "x", "-5", "5x", "5 s", "5S", "99999999999", "9999999h"])
def test_bad_time_values(text):
    with pytest.raises(ConfigError, match=r"parameter t: bad time value or unit: "):
        parse_time("t", text)


def test_integers_and_booleans_and_lists():
    assert parse_int("n", "42") == 42 and parse_int("n", "-7") == -7 and parse_int("n", " 3") == 3
    for bad in ("", "4x", "4 ", "0x10", "99999999999"):
        with pytest.raises(ConfigError, match=r"bad numerical configuration: n = "):
            parse_int("n", bad)
    assert parse_int("n", "99999999999", long=True) == 99999999999
    assert parse_bool("b", "YES") is True and parse_bool("b", "no") is False
    with pytest.raises(ConfigError, match=r"bad boolean configuration: b = true \(use yes or no\)"):
        parse_bool("b", "true")
    assert split_list(" a, b\tc,,\n d ") == ["a", "b", "c", "d"]


# Config -----------------------------------------------------------------------------------

ROWS = (
    Param("t_time", "10s", "time", 1, 100),
    Param("t_hours", "2h", "time"),
    Param("t_int", "5", "int", 1, 10),
    Param("t_bool", "no", "bool"),
    Param("t_list", "a b", "list"),
)


def test_defaults_rows_then_postfix_then_undefined():
    config = cfg("", ROWS)
    assert config.get_time("t_time") == 10 and config.get_int("t_int") == 5
    assert config.get("mail_name") == "Postfix"  # Postfix's built-in table
    assert config.get("relay_domains") == config.get("mydestination")  # compatibility_level 0
    assert config.raw("mail_name") is None and config.get("no_such_name") == ""
    assert config.get("config_directory") == "/cfg"


def test_main_cf_values_override_defaults_and_are_expanded():
    config = cfg("t_int = $seven\nseven = 7\nt_list = x, y\nt_bool = yes\n", ROWS)
    assert config.get_int("t_int") == 7 and config.raw("t_int") == "$seven"
    assert config.get_list("t_list") == ["x", "y"] and config.get_bool("t_bool") is True


def test_time_without_unit_takes_the_unit_of_the_default():
    assert cfg("t_hours = 3\n", ROWS).get_time("t_hours") == 3 * 3600


def test_postfix_defaults_follow_compatibility_level():
    assert cfg("").get_bool("smtputf8_enable") is False
    assert cfg("compatibility_level = 3.6\n").get_bool("smtputf8_enable") is True
    assert cfg("compatibility_level = 3.6\n").get("mynetworks_style") == "host"


def test_computed_myhostname_and_mydomain():
    host = os.uname().nodename
    expected = host if "." in host else host + ".localdomain"
    assert cfg("").get("myhostname") == expected
    assert cfg("myhostname = mx.example.org\n").get("mydomain") == "example.org"
    assert cfg("myhostname = single\n").get("mydomain") == "localdomain"
    assert cfg("mydomain = example.net\n").get("myorigin") == (
        host if "." in host else host + ".example.net"
    )


def test_mydomain_uses_main_cf_names_only():
    # Postfix evaluates myhostname with main.cf's names only: $mail_version is undefined there.
    assert cfg("myhostname = $mail_version\n").get("mydomain") == "localdomain"
    assert cfg("myhostname = $a\na = b.c\n").get("mydomain") == "c"


def test_process_id_is_ours():
    assert cfg("").get("process_id") == str(os.getpid())


def test_raw_postfix_parameters_are_not_expanded():
    assert cfg("forward_path = $home/x\n").get("forward_path") == "$home/x"


def test_value_errors_name_the_main_cf_line():
    config = cfg("# c\nt_time = 0\nt_int = 11\nt_bool = maybe\nt_hours = 5x\n", ROWS)
    cases = {
        "t_time": "main.cf:2: invalid t_time: 0 (min 1)",
        "t_int": "main.cf:3: invalid t_int: 11 (max 10)",
        "t_bool": "main.cf:4: bad boolean configuration: t_bool = maybe (use yes or no)",
        "t_hours": "main.cf:5: parameter t_hours: bad time value or unit: 5x",
    }
    getters = {"t_time": config.get_time, "t_int": config.get_int}
    getters |= {"t_bool": config.get_bool, "t_hours": config.get_time}
    for name, message in cases.items():
        with pytest.raises(ConfigError) as err:
            getters[name](name)
        assert str(err.value).startswith(message)


def test_the_example_of_the_brief():
    config = cfg("x = 1\ny = 2\nz = 3\nw = 4\nv = 5\nmyorigin = $a\na = $b\nb = $a\n")
    with pytest.raises(ConfigError) as err:
        config.get("myorigin")
    assert str(err.value) == "main.cf:7: parameter a: recursive reference: a -> b -> a"


def test_syntax_errors_found_through_a_reference_name_the_bad_line():
    config = cfg("smtpd_banner = $broken\nbroken = ${oops\n")
    with pytest.raises(ConfigError, match=r"^main.cf:2: parameter broken: truncated macro"):
        config.get("smtpd_banner")


def test_override_errors_name_the_override_and_its_origin():
    config = cfg("t_int = 3\n", ROWS, [("t_int", "x")], origin="master.cf:12")
    assert config.raw("t_int") == "x"
    with pytest.raises(ConfigError) as err:
        config.get_int("t_int")
    assert str(err.value).startswith("master.cf:12: -o t_int=x: bad numerical configuration")
    assert (err.value.origin, err.value.filename) == ("master.cf:12: -o t_int=x", None)
    bare = Config({}, ROWS, [("t_time", "0")])
    with pytest.raises(ConfigError, match=r"^-o t_time=0: invalid t_time: 0 \(min 1\)$"):
        bare.get_time("t_time")


def test_default_value_errors_have_no_line():
    rows = (Param("t_bad", "$t_other", "int"), Param("t_other", "zz"))
    with pytest.raises(ConfigError, match=r"^bad numerical configuration: t_bad = zz"):
        cfg("", rows).get_int("t_bad")


def test_check_reads_every_row():
    cfg("", ROWS).check()
    with pytest.raises(ConfigError, match=r"^main.cf:1: invalid t_int"):
        cfg("t_int = 0\n", ROWS).check()
    with pytest.raises(ConfigError, match=r"^main.cf:1: invalid max_idle: 0 \(min 1\)"):
        cfg("max_idle = 0\n").check(["max_idle"])


def test_with_overrides_keeps_main_cf_and_lines():
    base = cfg("t_int = 3\nt_time = 0\n", ROWS)
    view = base.with_overrides([("t_int", "4")], "master.cf:2")
    assert view.get_int("t_int") == 4 and base.get_int("t_int") == 3
    with pytest.raises(ConfigError, match=r"^main.cf:2: invalid t_time") as err:
        view.get_time("t_time")
    assert (err.value.filename, err.value.lineno, err.value.message) == (
        "main.cf",
        2,
        "invalid t_time: 0 (min 1)",
    )
    # Each layer of overrides keeps its own origin.
    twice = view.with_overrides([("t_time", "0")], "service x")
    with pytest.raises(ConfigError, match=r"^service x: -o t_time=0: invalid t_time"):
        twice.get_time("t_time")
    assert twice.get_int("t_int") == 4


def test_a_config_error_formats_its_place_and_moves_only_as_data():
    err = ConfigError("bad", filename="main.cf", lineno=7)
    assert str(err) == "main.cf:7: bad" and err.located
    assert str(ConfigError("open /x/main.cf: gone", filename="/x/main.cf")) == (
        "open /x/main.cf: gone"
    )  # a whole file: the text names it
    assert not ConfigError("parameter a: bad").located
    moved = ConfigError("parameter a: bad", origin="-o a=b").at("master.cf", 3)
    assert (str(moved), moved.lineno) == ("master.cf:3: -o a=b: parameter a: bad", 3)


def test_load_reads_the_directory(tmp_path, monkeypatch):
    (tmp_path / "main.cf").write_text("queue_directory = /q\nqueue_directory = /r\n")
    warnings: list[str] = []
    config = Config.load(str(tmp_path), warn=warnings.append)
    assert config.get("queue_directory") == "/r" and config.config_dir == str(tmp_path)
    assert warnings == ["main.cf:2: overriding earlier entry: queue_directory=/q"]
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
    assert Config.load().get("queue_directory") == "/r"


def test_mynetworks_style_errors_name_the_parameter():
    with pytest.raises(ConfigError) as err:
        cfg("# c\nmynetworks_style = bogus\n").get("mynetworks")
    assert str(err.value) == (
        'main.cf:2: parameter mynetworks_style: unknown mynetworks mask style value "bogus" '
        "(use host, subnet or class)"
    )


def test_mynetworks_loopback_only():
    config = cfg(
        "inet_interfaces = loopback-only\ninet_protocols = ipv4\nmynetworks_style = host\n"
    )
    assert config.get("mynetworks") == "127.0.0.1/32"
    assert cfg("inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n").get("mynetworks") == (
        "127.0.0.0/8"
    )
