"""minipostconf -Me -MX -M# -Fe -Pe -PX against the real postconf: the edited master.cf must match.

Each case copies the same files for both tools (support.postconf_diff.edit_both),
runs `postconf -c DIR ARGS` on one copy and minipostconf on the other, and compares
the exit status, stdout, the warnings and errors (in order, without the program name
and the file location) and every file afterwards, byte for byte.  When both fail,
both copies must be unchanged; Postfix also leaves master.cf.tmp behind, which
minipostconf does not (asserted with the other differences in
test_postconf_differences.py).

Bases: the master.cf corpus that both tools read alike (tests/data/config/master,
whose 08-edit-layout.cf has comments, blank lines and continuation lines between and
inside entries), Debian's stock master.cf and the embedded etc/master.cf.
"""

from __future__ import annotations

import os

import pytest

from support.config_corpus import DATA, MASTER_CORPUS, expected_error
from support.postconf_diff import Edited, edit_both, edit_both_many
from support.postfix import DEBIAN_MASTER_CF

pytestmark = pytest.mark.postfix

EMBEDDED = os.path.join(os.path.dirname(__file__), "..", "..", "etc", "master.cf")
BASES = [p for p in MASTER_CORPUS if expected_error(p) is None] + [DEBIAN_MASTER_CF, EMBEDDED]
LAYOUT = os.path.join(DATA, "master", "08-edit-layout.cf")

# Requests that mean something for any master.cf.
ANY_BASE = [
    ["-Pe", "*/*/added_param=1"],
    ["-PX", "*/*/syslog_name"],
    ["-Fe", "*/unix/chroot=y"],
    ["-Fe", "*/*/process_limit=7", "*/inet/wakeup=60?"],
    ["-MX", "*/inet"],
    ["-M#", "*/unix"],
    ["-Me", "new/unix=new unix - - n - - new -o a=1 x {b c}"],
]

# Requests against 08-edit-layout.cf, one behaviour each.
ON_LAYOUT = [
    # -Pe: replace in place, add after the last option, several at once, on a
    # "-oname=value" option, an empty value, a value with $name.
    ["-Pe", "smtp/inet/smtpd_tls_security_level=encrypt"],
    ["-Pe", "smtp/inet/new_param=1"],
    ["-Pe", "submission/inet/syslog_name=x", "submission/inet/added=1"],
    ["-Pe", "relay/unix/smtp_bind_address=::1", "relay/unix/smtp_fallback_relay=host"],
    ["-Pe", "relay/unix/smtp_helo_timeout=9", "relay/unix/x=", "last/unix/z=$myhostname"],
    ["-Pe", "pipe/unix/p=1"],
    ["-Pe", "relay/unix/long_parameter_name=a_value_long_enough_to_make_the_line_wrap_at_80"],
    # -PX: one, two, one that is not there (the entry is still rewritten), after "--".
    ["-PX", "smtp/inet/smtpd_client_restrictions"],
    ["-PX", "smtp/inet/smtpd_tls_security_level", "smtp/inet/smtpd_client_restrictions"],
    ["-PX", "tlsmgr/unix/nothing"],
    ["-PX", "submission/inet/notanoption"],
    # -Fe: each kind of field, the command with its arguments, two fields at once.
    ["-Fe", "relay/unix/chroot=y"],
    ["-Fe", "tlsmgr/unix/wakeup=3600", "tlsmgr/unix/process_limit=2"],
    ["-Fe", "smtp/inet/service=127.0.0.1:2525"],
    ["-Fe", "pickup/fifo/type=unix", "pickup/fifo/private=-"],
    ["-Fe", "pipe/unix/command=pipe flags=F user=x argv=/bin/true ${recipient}"],
    ["-Fe", "last/unix/command=last -o a=b -v -o c=d arg {two words}"],
    ["-Fe", "postlog/unix-dgram/unprivileged=n"],
    # -MX and -M#: entries with continuation and comment lines, several at once.
    ["-MX", "smtp/inet"],
    ["-M#", "smtp/inet"],
    ["-M#", "relay/unix", "last/unix"],
    ["-MX", "relay/unix", "tlsmgr/unix", "nosuch/unix"],
    ["-MX", "pickup/*"],
    # -Me: replace, add, add two, replace by an entry of another name (which also
    # replaces that one), a request matching no line.
    ["-Me", "tlsmgr/unix=tlsmgr unix - - n 1000? 1 tlsmgr -o foo=bar"],
    ["-Me", "smtp/inet=smtp inet n - y - - smtpd -o a=1 -o { b = 2 3 } x"],
    ["-Me", "new/unix=new unix - - n - - new", "other/fifo=other fifo n - n - 1 other"],
    ["-Me", "relay/unix=last unix - - n - - replaced"],
    ["-Me", "*/inet=smtp inet n - n - - smtpd"],
    ["-M", "new/unix = new unix - - n - - implied -e"],
    # No match: a warning for -F and -P, silence for -M.
    ["-Fe", "nosuch/unix/wakeup=1"],
    ["-Pe", "nosuch/unix/a=1", "smtp/inet/b=2"],
    ["-PX", "nosuch/*/x"],
    ["-MX", "nosuch/unix"],
]

# Bad requests: postconf's words, nothing written.
BAD_REQUESTS = [
    ["-Fe", "smtp/inet/wakeup=x"],
    ["-Fe", "smtp/inet/type=bogus"],
    ["-Fe", "smtp/inet/private=yes"],
    ["-Fe", "smtp/inet/unprivileged=1"],
    ["-Fe", "smtp/inet/chroot=-y"],
    ["-Fe", "smtp/inet/process_limit=1?"],
    ["-Fe", "smtp/inet/private=y n"],
    ["-Fe", "smtp/inet/bogus=1"],
    ["-Fe", "smtp/inet/*=1"],
    ["-Fe", "smtp/inet=1"],
    ["-Pe", "smtp/inet/x=a b"],
    ["-Pe", "smtp/inet/*=1"],
    ["-Pe", "smtp/inet=1"],
    ["-PX", "smtp/inet/x=1"],
    ["-MX", "smtp/inet=1"],
    ["-MX", "smtp"],
    ["-M#", "smtp/inet/x"],
    ["-MX", "sm*/inet"],
    ["-MX", "/smtp/inet"],
    ["-Me", "smtp=b"],
    ["-Me", "smtp/inet"],
    ["-Me", "smtp/inet=smtp inet n - y - 1"],
    ["-Me", "smtp/inet=smtp bogus n - y - - x"],
    ["-Me", "smtp/inet=smtp inet x - y - - x"],
    ["-Me", "smtp/inet=smtp inet n - y 5x - x"],
    ["-Pe", " #smtp/inet/x=1"],
    ["-MX", "smtp/inet\nrelay/unix"],
    ["-Pe", "smtp/inet/x"],
]

# Lines of master.cf that the editors cannot work with.
BAD_FILES = [
    "a unix - - n - - x\n  -o y=1\nb=c unix - - n - - x\n",
    "a unix/x - - n - - x\n",
    "a\n unix - - n - - x\n",
]


def assert_same_edit(theirs: Edited, ours: Edited, master: bytes, args) -> None:
    assert (ours.status, ours.stdout, ours.stderr) == (
        theirs.status,
        theirs.stdout,
        theirs.stderr,
    ), args
    if theirs.status == 0:
        assert ours.files == theirs.files, args
        assert ours.listing == theirs.listing == ["main.cf", "master.cf"]
    else:
        assert ours.files["master.cf"] == theirs.files["master.cf"] == master, args
        assert ours.listing == ["main.cf", "master.cf"]


def edits_match(tmp_path, master: bytes, *args: str) -> None:
    assert_same_edit(*edit_both(tmp_path, {"master.cf": master}, *args), master, args)


def read(path: str) -> bytes:
    with open(path, "rb") as fp:
        return fp.read()


@pytest.mark.parametrize("base", BASES, ids=lambda p: os.path.basename(p))
@pytest.mark.parametrize("args", ANY_BASE, ids=" ".join)
def test_edits_of_every_base_match_postconf(base, args, tmp_path):
    edits_match(tmp_path, read(base), *args)


@pytest.mark.parametrize("args", ON_LAYOUT, ids=" ".join)
def test_edits_keep_the_layout_as_postconf_does(args, tmp_path):
    edits_match(tmp_path, read(LAYOUT), *args)


def test_bad_requests_fail_like_postconf(tmp_path):
    master = read(LAYOUT)
    results = edit_both_many(tmp_path, {"master.cf": master}, BAD_REQUESTS)
    for args, (theirs, ours) in zip(BAD_REQUESTS, results, strict=True):
        assert theirs.status == 1, args
        assert_same_edit(theirs, ours, master, args)


def test_lines_the_editor_cannot_use_fail_like_postconf(tmp_path):
    requests = [("-MX", "a/unix"), ("-Pe", "a/unix/y=2"), ("-Me", "a/unix=a unix - - n - - z")]
    for i, master in enumerate(BAD_FILES):
        results = edit_both_many(tmp_path / str(i), {"master.cf": master}, requests)
        for args, (theirs, ours) in zip(requests, results, strict=True):
            assert theirs.status == 1, (master, args)
            assert_same_edit(theirs, ours, master.encode(), (master, args))


def test_a_missing_master_cf_fails_like_postconf(tmp_path):
    theirs, ours = edit_both(tmp_path, {}, "-MX", "a/unix")
    assert ours.status == theirs.status == 1
    assert ours.stderr == [line.replace("/postfix/", "/mini/") for line in theirs.stderr]
    assert ours.stderr[0].startswith("fatal: open ") and "for reading" in ours.stderr[0]
