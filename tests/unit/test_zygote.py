"""master/zygote.py: the spawn server's messages, who gets one, how a program knows it is one;
and what the exec path (a daemon started without one) does not do.

The spawn server's processes are exercised by tests/process/test_spawn_server.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from master import proto, zygote
from master.zygote import Reply, Request

TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20)
NAMES = TEXT.filter(lambda name: name and "=" not in name)


def test_a_request_travels_whole():
    env = {"MAIL_CONFIG": "/etc/minipostfix", "GENERATION": "12", "EMPTY": ""}
    request = Request(7, "/usr/libexec/tlsmgr", ["tlsmgr", "-l", "-t", "unix"], env)
    assert zygote.decode_request(zygote.encode_request(request)) == request


@given(st.integers(0, 2**63), TEXT, st.lists(TEXT, min_size=1), st.dictionaries(NAMES, TEXT))
def test_any_request_travels_whole(seq, path, argv, env):
    request = Request(seq, path, argv, env)
    assert zygote.decode_request(zygote.encode_request(request)) == request


def test_environment_values_may_hold_equal_signs_and_undecodable_bytes():
    env = {"X": "a=b=c", "Y": b"\xff\xfe".decode("utf-8", "surrogateescape")}
    request = Request(1, "/p", ["p"], env)
    assert zygote.decode_request(zygote.encode_request(request)).env == env


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"spawn",
        b"fork\x001\x00/p\x001\x00p",
        b"spawn\x00x\x00/p\x001\x00p",  # bad sequence number
        b"spawn\x001\x00/p\x000",  # no argv[0]
        b"spawn\x001\x00/p\x003\x00p",  # fewer arguments than counted
        b"spawn\x001\x00/p\x001\x00p\x00NOEQUALS",
        b"spawn\x001\x00/p\x001\x00p\x00=value",
    ],
)
def test_a_malformed_request_is_refused(data):
    with pytest.raises(ValueError):
        zygote.decode_request(data)


def test_replies():
    for reply in (Reply("ready", pid=42), Reply("forked", seq=3, pid=4242)):
        assert zygote.decode_reply(zygote.encode_reply(reply)) == reply
    for data in (b"", b"ready", b"ready\x00x", b"forked\x001", b"gone\x001\x002"):
        with pytest.raises(ValueError):
            zygote.decode_reply(data)


def test_a_spawn_server_is_its_program_run_isolated_by_its_interpreter():
    argv = proto.spawner_argv(["/usr/bin/python3"], "/venv/bin/tlsmgr")
    assert argv == ["/usr/bin/python3", "-I", "/venv/bin/tlsmgr", "--spawner"]
    # What the program sees: sys.argv from the program on.
    assert proto.is_spawner_argv(argv[2:])
    assert not proto.is_spawner_argv(["tlsmgr", "-l", "-t", "unix"])
    assert not proto.is_spawner_argv(["tlsmgr", "--spawner", "extra"])
    assert not proto.is_spawner_argv(["tlsmgr"])


def test_the_project_registers_its_python_services():
    assert {"tlsmgr", "testsmtpd"} <= zygote.registered_commands()


@pytest.mark.parametrize(
    ("first_line", "interpreter"),
    [
        (b"#!/usr/bin/python3\n", ["/usr/bin/python3"]),
        (b"#!/venv/bin/python3.11 -E \n", ["/venv/bin/python3.11", "-E"]),
        (b"#! /usr/bin/python3\n", ["/usr/bin/python3"]),
        (b"#!/usr/bin/env python3\n", None),  # no path to run with -I
        (b"#!python3\n", None),
        (b"#!/bin/sh\n", None),  # not Python: fork+exec'd
        (b"\x7fELF\x02\x01\x01", None),  # Postfix's own daemons
    ],
)
def test_only_a_python_hash_bang_script_gets_a_spawn_server(tmp_path, first_line, interpreter):
    program = tmp_path / "program"
    program.write_bytes(first_line + b"import sys\n")
    assert zygote.interpreter(str(program)) == interpreter
    assert zygote.interpreter(str(tmp_path / "missing")) is None


START_SCRIPT = """\
import sys
import tlsmgr.daemon
from master.config import Config
from tlsmgr.params import PARAMS
config = Config.load(sys.argv[1], PARAMS)
config.check([row.name for row in PARAMS])
print(sorted(name for name in sys.modules if name.startswith("importlib.metadata")))
"""


def test_a_daemon_start_scans_no_entry_points(tmp_path):
    """The exec path: importing a daemon and reading its configuration touches no
    installed distribution's metadata (the master reads the spawners' group, not a child)."""
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n")
    proc = subprocess.run(
        [sys.executable, "-c", START_SCRIPT, str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
