"""The main.cf corpus (tests/data/config/main) through minipostconf, without Postfix.

A file whose first line is `# expect-error: MESSAGE` must make minipostconf -n
fail with exactly that message (prefix); every other file must read cleanly
with -n and -nx.  tests/interop/test_postconf_main.py runs the same files
against the real postconf.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pytest

from master import postconf

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "config")
MAIN_CORPUS = sorted(glob.glob(os.path.join(DATA, "main", "*.cf")))
EXPECT = "# expect-error: "


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = postconf.main(list(args))
    return status, out.getvalue(), err.getvalue()


def test_the_corpus_is_big_enough():
    assert len(MAIN_CORPUS) >= 30


@pytest.mark.parametrize("path", MAIN_CORPUS, ids=os.path.basename)
def test_main_corpus(path, tmp_path, monkeypatch):
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    shutil.copy(path, tmp_path / "main.cf")
    (tmp_path / "master.cf").write_text("")
    with open(path, errors="surrogateescape") as fp:
        first = fp.readline().rstrip("\n")
    status, out, err = run("-c", str(tmp_path), "-n")
    if first.startswith(EXPECT):
        assert (status, out) == (1, "")
        assert err.startswith(f"minipostconf: fatal: {first[len(EXPECT) :]}")
        assert err.count("\n") == 1
    else:
        assert status == 0 and "\nconfig_directory = " in "\n" + out
        assert run("-c", str(tmp_path), "-nx")[0] == 0
