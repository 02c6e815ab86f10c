"""minipostconf -M, -F and -P against the real postconf on master.cf corpora.

Corpora: tests/data/config/master/*.cf, Debian's stock master.cf and the
embedded etc/master.cf.  Both tools print -M, -F and -P, with -f, -x, -h and -H
where they apply, byte for byte alike, and -n agrees (service-defined names,
unused -o names).  Malformed files fail in both (exit 1); our message, which
names the line and the field, is checked by tests/unit/test_mastercf.py.  The
option combinations that postconf refuses are refused with its words.
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.config_corpus import DATA, MASTER_CORPUS, expected_error
from support.postconf_diff import assert_same, edit_both_many
from support.postfix import DEBIAN_MASTER_CF

pytestmark = pytest.mark.postfix

EMBEDDED = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "master.cf")
CORPUS = MASTER_CORPUS + [DEBIAN_MASTER_CF, EMBEDDED]


SHOW_FIELDS = [["-F"], ["-Ff"], ["-Fx"], ["-Fh"], ["-Ffh"], ["-FH"]]
SHOW_PARAMS = [["-P"], ["-Pf"], ["-Px"], ["-Ph"], ["-PH"], ["-Pfx"]]


@pytest.fixture
def confdir(tmp_path):
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    return tmp_path


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: os.path.relpath(p, DATA))
def test_master_corpus_matches_postconf(path, confdir):
    shutil.copy(path, confdir / "master.cf")
    d = str(confdir)
    if expected_error(path) is not None:
        assert assert_same(d, "-M")[0] == 1  # Postfix sleeps 1 s before a fatal exit
        return
    for args in (["-M"], ["-Mf"], ["-Mx"], ["-n"], *SHOW_FIELDS, *SHOW_PARAMS):
        assert assert_same(d, *args)[0] == 0


@pytest.mark.parametrize(
    "patterns",
    [["smtp"], ["relay/unix"], ["smtp/inet", "smtp/unix"], ["nosuch"], ["*/unix"], ["smtp/*"]],
)
def test_service_filters_match_postconf(patterns, confdir):
    shutil.copy(DEBIAN_MASTER_CF, confdir / "master.cf")
    assert_same(str(confdir), "-M", *patterns)


FILTERS = [
    ("-F", "smtp"), ("-F", "smtp/inet/command", "pipe/unix/command", "*/*/chroot"),
    ("-Fh", "nosuch", "smtp/*/type"), ("-FH", "smtp//inet", "relay/*/command"),
    ("-P", "relay"), ("-P", "relay/unix/syslog_name", "smtp"), ("-PH", "*/*/*"),
    ("-Ph", "relay/unix/nosuch", "relay/*"), ("-Px", "relay/unix/syslog_name"),
]  # fmt: skip


@pytest.mark.parametrize("args", FILTERS, ids=" ".join)
def test_field_and_parameter_filters_match_postconf(args, confdir):
    shutil.copy(DEBIAN_MASTER_CF, confdir / "master.cf")
    assert assert_same(str(confdir), *args)[0] == 0


# Refused: option combinations and malformed patterns (postconf's words; it sleeps a
# second before each fatal exit, so they run concurrently).
REFUSED = [
    ("-MF",), ("-FP",), ("-Mp",), ("-Fp", "x"), ("-Fd",), ("-Fn",), ("-Pd",), ("-Pn",),
    ("-Mh",), ("-MH",), ("-Mdh",), ("-FhH",), ("-PhH",), ("-Pe", "-f", "a/b/c=1"),
    ("-Fe", "-x", "a/b/c=d"), ("-FX", "a/unix/b"), ("-F#", "a/unix/b"), ("-P#", "a/unix/b"),
    ("-M", "-X"), ("-M", "-#"), ("-M", "-e"), ("-F", "-e"), ("-P", "-X"), ("-X",), ("-#",),
    ("-Me", "-X", "a/unix"), ("-MX#",), ("-F", "a/unix/c=b"), ("-M", "a/b/c"),
    ("-F", "a/b/c/d"), ("-F", "/smtp"), ("-F", "sm*"), ("-F", "smtp/inet/bogus"),
    ("-P", "a/b/c/d"), ("-P", "x*"), ("-M", "*x"),
]  # fmt: skip


def test_refused_combinations_match_postconf(tmp_path):
    files = {"master.cf": open(DEBIAN_MASTER_CF).read()}
    for args, (theirs, ours) in zip(REFUSED, edit_both_many(tmp_path, files, REFUSED), strict=True):
        assert theirs.status == 1 and theirs.stdout == "", args
        assert (ours.status, ours.stdout, ours.stderr) == (1, "", theirs.stderr), args


def test_master_o_values_expand_in_the_service_name_space(confdir):
    (confdir / "main.cf").write_text("helper = global\nsmtpd_banner = $helper\n")
    (confdir / "master.cf").write_text(
        "a unix - - n - - smtp -o helper=local -o smtp_helo_name=$helper/$service_name\n"
        "b unix - - n - - smtp -o smtp_helo_name=$helper/$service_name\n"
    )
    assert "-o smtp_helo_name=local/a" in assert_same(str(confdir), "-Mx")[1]
    assert_same(str(confdir), "-nx")
