"""The main.cf corpus (tests/data/config/main) through minipostconf, without Postfix.

A file whose first line is `# expect-error: MESSAGE` must make minipostconf -n
fail with exactly that message (prefix); every other file must read cleanly
with -n and -nx.  tests/interop/test_postconf_main.py runs the same files
against the real postconf.
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.config_corpus import MAIN_CORPUS, expected_error
from support.postconf_diff import minipostconf


def test_the_corpus_is_big_enough():
    assert len(MAIN_CORPUS) >= 30


@pytest.mark.parametrize("path", MAIN_CORPUS, ids=os.path.basename)
def test_main_corpus(path, tmp_path, monkeypatch):
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    shutil.copy(path, tmp_path / "main.cf")
    (tmp_path / "master.cf").write_text("")
    expected = expected_error(path)
    status, out, err = minipostconf("-c", str(tmp_path), "-n")
    if expected is not None:
        assert (status, out) == (1, "")
        assert err.startswith(f"minipostconf: fatal: {expected}")
        assert err.count("\n") == 1
    else:
        assert status == 0 and "\nconfig_directory = " in "\n" + out
        assert minipostconf("-c", str(tmp_path), "-nx")[0] == 0
