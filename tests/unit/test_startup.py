"""What an exec'd child pays before its first request: the modules it imports.

A Python service that the master fork+execs (no spawn server, or one not ready) imports its
daemon module, the skeleton and their libraries before it can answer.  These stay off that
path, each for a reason its module states: dataclasses (inspect, ast, dis, tokenize),
traceback (linecache, tokenize, textwrap), tempfile (shutil, random), ctypes and subprocess
(pycryptodome's backend), cffi's C parser, platform (a `file` subprocess).
"""

from __future__ import annotations

import subprocess
import sys
import traceback

import pytest

from master.errors import ConfigError
from master.skeleton import _traceback_lines

OFF_THE_START_PATH = (
    "dataclasses",
    "inspect",
    "traceback",
    "linecache",
    "tempfile",
    "shutil",
    "ctypes",
    "subprocess",
    "cffi",
    "pycparser",
    "platform",
    "Crypto",
)

SCRIPT = """\
import sys
import {module}
print(" ".join(m for m in {modules!r} if m in sys.modules))
"""


@pytest.mark.parametrize("module", ["tlsmgr.daemon", "master.multi_server", "master.skeleton"])
def test_a_childs_start_up_imports_none_of_the_costly_modules(module):
    script = SCRIPT.format(module=module, modules=OFF_THE_START_PATH)
    proc = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []


def _raise_chain() -> BaseException:
    try:
        try:
            raise ConfigError("main.cf:3: bad line")
        except ConfigError as err:
            raise ValueError("while reading") from err
    except ValueError:
        try:
            raise OSError(2, "No such file")
        except OSError as last:
            return last
    raise AssertionError("not reached")


def test_traceback_lines_are_the_traceback_modules_without_source_text():
    """A jailed child cannot read its source, so its logged traceback has none either."""
    exc = _raise_chain()
    expected = [
        line
        for chunk in traceback.format_exception(exc)
        for line in chunk.rstrip("\n").split("\n")
        if not line.startswith("    ")  # source text and its ^^^^ markers
    ]
    assert _traceback_lines(exc) == expected
    assert expected[0] == "Traceback (most recent call last):"
    assert "The above exception was the direct cause of the following exception:" in expected
    assert "master.errors.ConfigError: main.cf:3: bad line" in expected
    assert expected[-1] == "FileNotFoundError: [Errno 2] No such file"
