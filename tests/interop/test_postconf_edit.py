"""minipostconf -e, -X and -# against the real postconf: the edited files must be identical.

Base files are main.cf corpus files (all end with a newline); each case edits
a copy with both tools and compares the results byte for byte, plus exit
status and normalised warnings.  One exception: Postfix 3.7
appends several in hash-table order, which changes from run to run, and
minipostconf sorts them: for those runs the appended block is compared sorted
(see also test_postconf_differences.py).
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.config_corpus import DATA
from support.postconf_diff import mini, normalized, real

pytestmark = pytest.mark.postfix

BASES = ["02-comments.cf", "03-continuation.cf", "04-comment-inside-logical.cf", "06-last-wins.cf",
         "26-whitespace.cf", "29-long-lists.cf"]  # fmt: skip
EDITS = [
    ["-e", "myhostname = new.example"],
    ["-e", "smtpd_banner=replaced"],
    ["-e", "mynetworks =  spaced   value  "],
    ["-e", "relayhost="],
    ["-e", "brand_new = 1"],
    ["-e", "myhostname=a", "mydomain=b", "smtpd_banner=c"],
    ["myhostname=implicit-e"],
    ["-e", "myhostname=first", "myhostname=second"],
    ["-X", "myhostname", "smtpd_banner", "not_there"],
    ["-X", "smtpd_recipient_restrictions"],
    ["-#", "myhostname", "mynetworks"],
    ["-#", "smtpd_banner"],
]


def edit_both(base: str, args: list[str], root) -> tuple[str, str]:
    results = []
    for tool, name in ((real, "postfix"), (mini, "mini")):
        confdir = root / name
        confdir.mkdir(exist_ok=True)
        shutil.copy(os.path.join(DATA, "main", base), confdir / "main.cf")
        (confdir / "master.cf").write_text("")
        status, out, err = tool(str(confdir), *args)
        results.append((status, out, normalized(err), (confdir / "main.cf").read_bytes()))
        assert sorted(os.listdir(confdir)) == ["main.cf", "master.cf"]
    (want, got) = results
    assert got[:3] == want[:3], (base, args)
    theirs, ours = want[3].decode().splitlines(), got[3].decode().splitlines()
    if theirs != ours:
        # Several new names: Postfix 3.7 appends them in random order, we sort them.
        start = next(i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b)
        assert sorted(theirs[start:]) == ours[start:], (base, args)
        assert all(" = " in line for line in ours[start:])
    return want[3].decode(), got[3].decode()


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("args", EDITS, ids=lambda a: " ".join(a))
def test_edits_match_postconf(base, args, tmp_path):
    edit_both(base, args, tmp_path)


@pytest.mark.parametrize(
    "args",
    [["-e", "a b=c"], ["-e", "#x=1"], ["-e", "=v"], ["-X", "a=b"], ["-X", ""], ["-e"]],
    ids=lambda a: " ".join(a),
)
def test_bad_edit_requests_fail_like_postconf(args, tmp_path):
    edit_both("02-comments.cf", args, tmp_path)
