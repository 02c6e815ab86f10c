"""Helpers shared by the test_postconf_*.py differential tests: run both tools, normalise.

(A test module too: the normalisation itself is tested at the end.)

What may differ by design is normalised here and nowhere else:
  - the program name ("postconf: " / "minipostconf: ");
  - the location in front of a warning or error: Postfix writes
    "DIR/main.cf, line N: " or "DIR/main.cf: ", minipostconf "main.cf:N: ";
  - duplicate warnings (Postfix re-reads a main.cf younger than a second and
    repeats them; backdate() avoids that, the set comparison tolerates it);
  - the order of warnings (Postfix's follows a randomly seeded hash table).
Everything on stdout is compared byte for byte.  The differences that remain
are asserted, one by one, in test_postconf_differences.py.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout

from master import postconf

DEBIAN_MASTER_CF = "/usr/share/postfix/master.cf.dist"
DATA = os.path.join(os.path.dirname(__file__), "..", "data", "config")
EXPECT = "# expect-error: "
LOCATION = re.compile(
    r"^(?:mini)?postconf: (warning|fatal): (?:\S*/)?(?:main|master)\.cf(?:, line \d+|:\d+)?: "
)
PROGRAM = re.compile(r"^(?:mini)?postconf: ")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    return env


def backdate(confdir: str) -> None:
    """Workaround: Postfix re-reads a main.cf younger than a second, 300 ms at a time
    (dict_load_file waits for an editor to finish), so fresh test files cost ~2 s."""
    past = time.time() - 60
    for name in ("main.cf", "master.cf"):
        path = os.path.join(confdir, name)
        if os.path.exists(path):
            os.utime(path, (past, past))


def real(confdir: str, *args: str) -> tuple[int, str, str]:
    backdate(confdir)
    proc = subprocess.run(
        ["postconf", "-c", confdir, *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=environment(),
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def mini(confdir: str, *args: str) -> tuple[int, str, str]:
    """minipostconf in this process (same code as the console script, much faster)."""
    saved = os.environ.pop("MAIL_CONFIG", None)
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            status = postconf.main(["-c", confdir, *args])
    finally:
        if saved is not None:
            os.environ["MAIL_CONFIG"] = saved
    return status, out.getvalue(), err.getvalue()


def normalized(stderr: str) -> set[str]:
    lines = set()
    for line in stderr.splitlines():
        line = LOCATION.sub(r"\1: ", line)
        lines.add(PROGRAM.sub("", line))
    return lines


def assert_same(confdir: str, *args: str) -> tuple[int, str, str]:
    """Both tools agree: exit status and stdout exactly, warnings as normalised sets."""
    want, got = real(confdir, *args), mini(confdir, *args)
    assert got[0] == want[0], (args, want, got)
    assert got[1] == want[1], (args, want[2], got[2])
    if want[0] == 0:
        theirs, ours = normalized(want[2]), normalized(got[2])
        overriding = {line for line in theirs if "overriding earlier entry" in line}
        assert ours - overriding == theirs - overriding, args
        assert ours & overriding <= overriding, args
    return got


def first_line(path: str) -> str:
    with open(path, errors="surrogateescape") as fp:
        return fp.readline().rstrip("\n")


def test_normalisation_of_locations_and_program_names():
    theirs = (
        "postconf: warning: /tmp/x/main.cf, line 4: overriding earlier entry: a=1\n"
        "postconf: warning: ./main.cf: unused parameter: b=2\n"
        "postconf: warning: ./main.cf: unused parameter: b=2\n"
        "postconf: warning: nosuch: unknown parameter\n"
    )
    ours = (
        "minipostconf: warning: main.cf:4: overriding earlier entry: a=1\n"
        "minipostconf: warning: main.cf:7: unused parameter: b=2\n"
        "minipostconf: warning: nosuch: unknown parameter\n"
    )
    assert (
        normalized(theirs)
        == normalized(ours)
        == {
            "warning: overriding earlier entry: a=1",
            "warning: unused parameter: b=2",
            "warning: nosuch: unknown parameter",
        }
    )
