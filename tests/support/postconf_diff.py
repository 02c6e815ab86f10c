"""postconf against minipostconf: run both on one configuration, compare, normalise.

SYNOPSIS
    from support.postconf_diff import assert_same, mini, minipostconf, normalized, real

    real(confdir, "-n")            # Postfix's postconf: (status, stdout, stderr)
    mini(confdir, "-n")            # minipostconf, in this process: the same triple
    minipostconf("-n")             # the same with the caller's arguments and MAIL_CONFIG
    assert_same(confdir, "-n")     # both agree (see below); returns mini's triple

DESCRIPTION
    What may differ by design is normalised here and nowhere else:
      - the program name ("postconf: " / "minipostconf: ");
      - the location in front of a warning or error: Postfix writes
        "DIR/main.cf, line N: " or "DIR/main.cf: ", minipostconf "main.cf:N: ";
      - duplicate warnings (Postfix re-reads a main.cf younger than a second and
        repeats them; support.postfix.settled() avoids that, the set comparison
        tolerates it);
      - the order of warnings (Postfix's follows a randomly seeded hash table).
    Everything on stdout is compared byte for byte.  The differences that remain
    are asserted, one by one, in tests/interop/test_postconf_differences.py.
    real() and mini() run without MAIL_CONFIG, so that only -c DIR counts.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from contextlib import redirect_stderr, redirect_stdout

from master import postconf
from support.postfix import settled

LOCATION = re.compile(
    r"^(?:mini)?postconf: (warning|fatal): (?:\S*/)?(?:main|master)\.cf(?:, line \d+|:\d+)?: "
)
PROGRAM = re.compile(r"^(?:mini)?postconf: ")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    return env


def real(confdir: str, *args: str) -> tuple[int, str, str]:
    settled(os.path.join(confdir, "main.cf"), os.path.join(confdir, "master.cf"))
    proc = subprocess.run(
        ["postconf", "-c", confdir, *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=environment(),
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def minipostconf(*args: str) -> tuple[int, str, str]:
    """minipostconf's main() in this process (same code as the console script, much faster)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = postconf.main(list(args))
    return status, out.getvalue(), err.getvalue()


def mini(confdir: str, *args: str) -> tuple[int, str, str]:
    """minipostconf -c confdir, in this process, without MAIL_CONFIG."""
    saved = os.environ.pop("MAIL_CONFIG", None)
    try:
        return minipostconf("-c", confdir, *args)
    finally:
        if saved is not None:
            os.environ["MAIL_CONFIG"] = saved


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
