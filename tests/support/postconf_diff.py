"""postconf against minipostconf: run both on one configuration, compare, normalise.

SYNOPSIS
    from support.postconf_diff import assert_same, edit_both, edit_both_many, mini
    from support.postconf_diff import minipostconf, normalized, real

    real(confdir, "-n")            # Postfix's postconf: (status, stdout, stderr)
    mini(confdir, "-n")            # minipostconf, in this process: the same triple
    minipostconf("-n")             # the same with the caller's arguments and MAIL_CONFIG
    assert_same(confdir, "-n")     # both agree (see below); returns mini's triple
    theirs, ours = edit_both(root, {"master.cf": text}, "-Me", "a/unix=...")
                                   # each tool edits its own copy: Edited tuples
    edit_both_many(root, files, [args, ...])    # the same for many cases at once

DESCRIPTION
    What may differ by design is normalised here and nowhere else:
      - the program name ("postconf: " / "minipostconf: ");
      - the location in front of a warning or error: Postfix writes
        "DIR/main.cf, line N: ", "DIR/main.cf: " or "file DIR/master.cf: line N: ",
        minipostconf "main.cf:N: ";
      - duplicate warnings (Postfix re-reads a main.cf younger than a second and
        repeats them; support.postfix.settled() avoids that, the set comparison
        tolerates it);
      - the order of warnings (Postfix's follows a randomly seeded hash table).
    Everything on stdout is compared byte for byte.  The differences that remain
    are asserted, one by one, in tests/interop/test_postconf_differences.py.
    real() and mini() run without MAIL_CONFIG, so that only -c DIR counts.

    edit_both() writes the same files (name -> text; main.cf defaults to
    compatibility_level = 3.6) into ROOT/postfix and ROOT/mini, runs each tool
    on its own copy and returns one Edited per tool: status, stdout, the
    normalised stderr lines (a list, in order: edits warn in request order),
    the bytes of every file afterwards, and the directory listing.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from master import postconf
from support.postfix import settled

LOCATION = re.compile(
    r"^(?:mini)?postconf: (warning|fatal): (?:file )?(?:\S*/)?(?:main|master)\.cf"
    r"(?:, line \d+|:\d+|: line \d+)?: "
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


def normalized_lines(stderr: str) -> list[str]:
    """stderr's lines without the program name and the location, in order."""
    return [PROGRAM.sub("", LOCATION.sub(r"\1: ", line)) for line in stderr.splitlines()]


def normalized(stderr: str) -> set[str]:
    return set(normalized_lines(stderr))


@dataclass
class Edited:
    """What one tool did to its copy of the files."""

    status: int
    stdout: str
    stderr: list[str]
    files: dict[str, bytes]
    listing: list[str]


def _copy(confdir: Path, files: dict[str, str | bytes]) -> None:
    confdir.mkdir(parents=True)
    for fname, text in {"main.cf": "compatibility_level = 3.6\n", **files}.items():
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        (confdir / fname).write_bytes(data)
    settled(confdir / "main.cf", confdir / "master.cf")


def _edited(confdir: Path, status: int, out: str, err: str) -> Edited:
    listing = sorted(os.listdir(confdir))
    contents = {f: (confdir / f).read_bytes() for f in listing}
    return Edited(status, out, normalized_lines(err), contents, listing)


def edit_both_many(
    root: Path, files: dict[str, str | bytes], cases: list[tuple[str, ...]]
) -> list[tuple[Edited, Edited]]:
    """edit_both() for several argument lists; Postfix's runs go concurrently, because
    postconf sleeps a second before each fatal exit."""
    procs = []
    for i, args in enumerate(cases):
        confdir = root / str(i) / "postfix"
        _copy(confdir, files)
        command = ["postconf", "-c", str(confdir), *args]
        procs.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="surrogateescape",
                env=environment(),
            )
        )
    results = []
    for i, (args, proc) in enumerate(zip(cases, procs, strict=True)):
        out, err = proc.communicate(timeout=60)
        theirs = _edited(root / str(i) / "postfix", proc.returncode, out, err)
        confdir = root / str(i) / "mini"
        _copy(confdir, files)
        ours = _edited(confdir, *mini(str(confdir), *args))
        results.append((theirs, ours))
    return results


def edit_both(root: Path, files: dict[str, str | bytes], *args: str) -> tuple[Edited, Edited]:
    """Postfix's postconf and minipostconf, each on its own copy of `files`: (theirs, ours)."""
    return edit_both_many(root, files, [args])[0]


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
