"""The configuration corpus: main.cf and master.cf files, some of which expect an error.

SYNOPSIS
    from support.config_corpus import DATA, MAIN_CORPUS, MASTER_CORPUS, expected_error

    for path in MAIN_CORPUS:                 # tests/data/config/main/*.cf, sorted
        expected = expected_error(path)      # None, or the error text the file expects

DESCRIPTION
    DATA is tests/data/config.  A file that must be rejected says so on
    its first line, `# expect-error: TEXT`, TEXT being the start of the
    error message (after the file and line); expected_error() returns
    TEXT, or None for a file that must be accepted.  Files are read with
    surrogateescape: some hold bytes that are not UTF-8 on purpose.
"""

from __future__ import annotations

import glob
import os

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "config")
MAIN_CORPUS = sorted(glob.glob(os.path.join(DATA, "main", "*.cf")))
MASTER_CORPUS = sorted(glob.glob(os.path.join(DATA, "master", "*.cf")))
EXPECT = "# expect-error: "


def expected_error(path: str) -> str | None:
    """The error a corpus file expects (its first line after EXPECT), or None."""
    with open(path, errors="surrogateescape") as fp:
        first = fp.readline().rstrip("\n")
    return first[len(EXPECT) :] if first.startswith(EXPECT) else None
