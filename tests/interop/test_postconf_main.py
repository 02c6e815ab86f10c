"""minipostconf against the real postconf on the main.cf corpus (tests/data/config/main).

Each file is installed as main.cf beside Debian's stock master.cf (so the
service-defined names of its delivery services exist) and both tools answer
-n, -nx, the names the file sets (raw, -x and -h) and -d for a few names.
Exit status and stdout must be identical; warnings are compared after the
normalisation described in postconf_oracle.py.  Files that must fail
(`# expect-error:`) fail in both tools; the message itself is checked by
tests/unit/test_config_corpus.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from master.builtin import builtin_defaults
from master.config import parse_main_cf
from master.errors import ConfigError
from master.postconf_names import daemon_params
from support.config_corpus import DATA, MAIN_CORPUS, expected_error
from support.postconf_diff import assert_same, mini, real
from support.postfix import DEBIAN_MASTER_CF, settled

pytestmark = pytest.mark.postfix

# Names whose values depend on the process that asks (see test_postconf_differences.py).
PER_PROCESS = {"process_id", "process_name"}
# minipostfix's own parameters (the rows of the `minipostfix.params` group that are not
# Postfix's names), which Postfix's postconf does not list.
OURS = tuple(
    f"{row.name} =" for row in daemon_params() if row.name not in builtin_defaults().values
)
ALWAYS = ["myhostname", "mydomain", "myorigin", "mynetworks", "relay_domains"]


@pytest.fixture
def confdir(tmp_path):
    shutil.copy(DEBIAN_MASTER_CF, tmp_path / "master.cf")
    return tmp_path


def names_in(path: str) -> list[str]:
    try:
        with open(path, errors="surrogateescape") as fp:
            names = list(parse_main_cf(fp.read()))
    except ConfigError:
        names = []
    return [n for n in names + ALWAYS if n not in PER_PROCESS]


@pytest.mark.parametrize("path", MAIN_CORPUS, ids=os.path.basename)
def test_main_corpus_matches_postconf(path, confdir):
    shutil.copy(path, confdir / "main.cf")
    d = str(confdir)
    if expected_error(path) is not None:
        # Postfix sleeps 1 s before a fatal exit: one run per file.
        assert assert_same(d, "-n")[0] == 1
        return
    assert assert_same(d, "-n")[0] == 0
    assert_same(d, "-nx")
    names = names_in(path)
    assert_same(d, *names)
    assert_same(d, "-x", *names)


@pytest.mark.parametrize("name", ["03-continuation.cf", "26-whitespace.cf", "29-long-lists.cf"])
def test_values_only_names_only_and_folding(name, confdir):
    path = os.path.join(DATA, "main", name)
    shutil.copy(path, confdir / "main.cf")
    names = names_in(path)
    for flags in ("-h", "-H", "-f", "-xf", "-nf", "-nhx"):
        assert_same(str(confdir), flags, *([] if "n" in flags else names))


def test_defaults_listing_matches_postconf_for_postfix_names(confdir):
    (confdir / "main.cf").write_text("")
    theirs, ours = real(str(confdir), "-d")[1], mini(str(confdir), "-d")[1]
    ours_lines = [line for line in ours.splitlines() if not line.startswith(OURS)]
    theirs_lines = theirs.splitlines()
    differ = [(a, b) for a, b in zip(theirs_lines, ours_lines, strict=True) if a != b]
    assert [a.split(" =")[0] for a, _ in differ] == ["process_id", "process_name"]


def test_full_listing_and_expansion_of_every_default(confdir):
    (confdir / "main.cf").write_text("compatibility_level = 3.6\nmyhostname = mx.example.com\n")
    for args in ([], ["-x"], ["-d", "-x"]):
        theirs, ours = real(str(confdir), *args), mini(str(confdir), *args)
        assert theirs[0] == ours[0] == 0
        skip = ("process_id =", "process_name =", *OURS)
        keep = [line for line in ours[1].splitlines() if not line.startswith(skip)]
        assert keep == [line for line in theirs[1].splitlines() if not line.startswith(skip)]


@pytest.mark.parametrize(
    "setting",
    [
        "",
        "mynetworks_style = host",
        "mynetworks_style = class",
        "inet_interfaces = loopback-only",
        "inet_protocols = ipv4",
        "inet_protocols = ipv6",
        "inet_interfaces = 127.0.0.1",
        "compatibility_level = 2",
    ],
)
def test_computed_mynetworks_matches_postconf_on_this_host(confdir, setting):
    (confdir / "main.cf").write_text(setting + "\n")
    assert_same(str(confdir), "mynetworks", "myhostname", "mydomain")
    assert_same(str(confdir), "-d", "mynetworks", "myhostname", "mydomain")


@pytest.mark.parametrize(
    "main",
    [
        "myhostname = $mail_version\n",
        "mydomain = dom.example\n",
        "mydomain = $mail_name\n",
        "myhostname = host\nmydomain = example.org\n",
        "config_directory = /x\nmyorigin = $config_directory\n",
    ],
)
def test_computed_names_follow_main_cf_like_postconf(confdir, main):
    (confdir / "main.cf").write_text(main)
    assert_same(str(confdir), "myhostname", "mydomain", "myorigin")
    assert_same(str(confdir), "-x", "myhostname", "mydomain", "myorigin")


def test_the_console_script_with_mail_config_matches(confdir, monkeypatch):
    (confdir / "main.cf").write_text("relayhost = r\n")
    monkeypatch.setenv("MAIL_CONFIG", str(confdir))
    script = os.path.join(os.path.dirname(sys.executable), "minipostconf")
    settled(confdir / "main.cf", confdir / "master.cf")
    theirs = subprocess.run(["postconf", "-n"], capture_output=True, text=True, check=False)
    ours = subprocess.run([script, "-n"], capture_output=True, text=True, check=False)
    assert ours.stdout == theirs.stdout == f"config_directory = {confdir}\nrelayhost = r\n"
    assert ours.returncode == theirs.returncode == 0
