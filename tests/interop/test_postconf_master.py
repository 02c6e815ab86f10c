"""minipostconf -M against the real postconf on master.cf corpora.

Corpora: tests/data/config/master/*.cf, Debian's stock master.cf and the
embedded etc/master.cf.  Both tools print -M, -Mf and -Mx byte for byte alike,
and -n agrees (service-defined names, unused -o names).  Malformed files fail
in both (exit 1); our message, which names the line and the field, is checked
by tests/unit/test_mastercf.py.
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.config_corpus import DATA, MASTER_CORPUS, expected_error
from support.postconf_diff import assert_same
from support.postfix import DEBIAN_MASTER_CF

pytestmark = pytest.mark.postfix

EMBEDDED = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "master.cf")
CORPUS = MASTER_CORPUS + [DEBIAN_MASTER_CF, EMBEDDED]


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
    for args in (["-M"], ["-Mf"], ["-Mx"], ["-n"]):
        assert assert_same(d, *args)[0] == 0


@pytest.mark.parametrize(
    "patterns",
    [["smtp"], ["relay/unix"], ["smtp/inet", "smtp/unix"], ["nosuch"], ["*/unix"], ["smtp/*"]],
)
def test_service_filters_match_postconf(patterns, confdir):
    shutil.copy(DEBIAN_MASTER_CF, confdir / "master.cf")
    assert_same(str(confdir), "-M", *patterns)


def test_master_o_values_expand_in_the_service_name_space(confdir):
    (confdir / "main.cf").write_text("helper = global\nsmtpd_banner = $helper\n")
    (confdir / "master.cf").write_text(
        "a unix - - n - - smtp -o helper=local -o smtp_helo_name=$helper/$service_name\n"
        "b unix - - n - - smtp -o smtp_helo_name=$helper/$service_name\n"
    )
    assert "-o smtp_helo_name=local/a" in assert_same(str(confdir), "-Mx")[1]
    assert_same(str(confdir), "-nx")
