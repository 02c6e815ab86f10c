"""A short, seeded fuzz of main.cf and master.cf through `minipostfix check`: no traceback.

The corpus files (tests/data/config) are mutated a few bytes or lines at a time
(bytes inserted, replaced or deleted, NUL and non-UTF-8 bytes among them, lines
duplicated, swapped or cut) and run through control.check() in this process, the
check that `minipostfix check` and `start` run.  Whatever the input, check()
either accepts it (never with a NUL byte in it: Postfix would silently cut the
line there) or raises Fatal whose first line names the file and line at
fault (`main.cf:LINE: ...`, `master.cf:LINE: ...`) or is one of the few messages
that have no line of their own (a value that comes from a default, a directory,
an account).  A few mutants go through the real console script as well, to show
that what the user sees is the same message and no traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from master import log
from master.control import Fatal, check
from support.config_corpus import MAIN_CORPUS, MASTER_CORPUS
from support.instance import MINIPOSTFIX

LOCATED = re.compile(r"^(main|master)\.cf:\d+: \S")
# Errors that have no line: a value from a default, an account, a directory.
UNLOCATED = re.compile(
    r"^(parameter \S+: |unsafe (queue|data)_directory |not a directory: |directory /)"
)
SPECIAL = [b"\0", b"\n", b" ", b"\t", b"#", b"=", b"$", b"{", b"}", b"(", b")", b"?", b":",
           b",", b"-", b"\xff", b"\xc3", b"\r", b"y", b"n", b"0", b"9"]  # fmt: skip
INSERTED = st.one_of(st.sampled_from(SPECIAL), st.binary(min_size=1, max_size=3))
VALID_MAIN = "compatibility_level = 3.6\n"
VALID_MASTER = "echo unix - n n - 0 testd echo 30\n"
EXAMPLES = 300


def read(path: str) -> bytes:
    with open(path, "rb") as fp:
        return fp.read()


@st.composite
def mutant(draw, corpus: list[str]) -> bytes:
    """A corpus file with one to four mutations."""
    data = bytearray(read(draw(st.sampled_from(corpus))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "replace", "delete", "dup", "swap", "cut"]))
        at = draw(st.integers(0, len(data)))
        if kind == "insert":
            data[at:at] = draw(INSERTED)
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "cut":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "dup":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


class Tree:
    """A configuration directory for check(), its daemon_directory and its log."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mpfx-fuzz-", dir="/tmp"))
        self.root.chmod(0o755)
        (self.root / "bin").mkdir()
        self.log = self.root / "log"

    def write(self, main: bytes, master: bytes) -> str:
        settings = (
            f"config_directory = {self.root}\ndaemon_directory = {self.root}/bin\n"
            f"queue_directory = {self.root}/queue\ndata_directory = {self.root}/data\n"
        )
        # After the text under test (last definition wins), on lines of their own.
        (self.root / "main.cf").write_bytes(main + b"\n" + settings.encode())
        (self.root / "master.cf").write_bytes(master)
        return str(self.root)

    def check(self) -> str | None:
        """check() on the tree: None when accepted, else the Fatal text; other exceptions fail."""
        log.log_init("minipostfix", maillog_file=str(self.log), tool=True)
        try:
            check(str(self.root))
        except Fatal as err:
            return str(err)
        finally:
            log.log_init("pytest", maillog_file="/dev/stderr")
        return None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def tree():
    tree = Tree()
    yield tree
    tree.close()


def assert_clean(error: str | None, main: bytes, master: bytes) -> None:
    if error is None:
        assert b"\0" not in main + master, "a NUL byte was accepted"
        return
    first = error.splitlines()[0]
    assert LOCATED.match(first) or UNLOCATED.match(first), (error, main, master)
    # No error may point at the lines of the fixed settings, after the text under test.
    at = re.match(r"^main\.cf:(\d+): ", first)
    assert not at or int(at.group(1)) <= main.count(b"\n") + 1, (error, main)


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(main=mutant(MAIN_CORPUS))
def test_mutated_main_cf(tree, main):
    tree.write(main, VALID_MASTER.encode())
    assert_clean(tree.check(), main, b"")


@FUZZ
@given(master=mutant(MASTER_CORPUS))
def test_mutated_master_cf(tree, master):
    tree.write(VALID_MAIN.encode(), master)
    assert_clean(tree.check(), b"", master)


@pytest.mark.parametrize(
    ("main", "master", "expected"),
    [
        (b"myhostname = a\0b\n", b"", "main.cf:1: line contains a NUL byte"),
        (b"\0foo = b\n", b"", "main.cf:1: line contains a NUL byte"),
        (b"# comment\0\n", b"", "main.cf:1: line contains a NUL byte"),
        (b"", b"# x\necho unix - n n - 0 te\0std\n", "master.cf:2: line contains a NUL byte"),
        (b"fo\xffo\n", b"", "main.cf:1: missing '=' after attribute name"),
        (b"# only \\n ends a line\rx = 1\nfo\xffo\n", b"", "main.cf:2: missing '='"),
        (b"max_idle = 1\xff\n", b"", "main.cf:1: parameter max_idle: bad time value"),
    ],
)
def test_the_console_script_prints_the_message_and_no_traceback(tree, main, master, expected):
    config_dir = tree.write(main, master)
    result = subprocess.run(
        [MINIPOSTFIX, "-c", config_dir, "check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"minipostfix: fatal: {expected}"), result.stderr
    assert lines[-1] == "minipostfix: fatal: minipostfix integrity check failed!"
