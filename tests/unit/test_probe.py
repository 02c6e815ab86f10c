"""probe: socket location from main.cf, reply formatting, CLI errors.

Requests against a running tlsmgr are in tests/process/test_clients.py.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys

import pytest

from tlsmgr.client import Result
from tlsmgr.clients import probe
from tlsmgr.protocol import Status


def _instance(root, queue=None, extra=""):
    conf = root / "etc"
    conf.mkdir()
    queue = queue or root / "queue"
    (conf / "main.cf").write_text(f"queue_directory = {queue}\n{extra}")
    return conf, queue


def _run(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "tlsmgr.clients.probe", *args],
        capture_output=True,
        text=True,
        input=stdin,
        check=False,
        timeout=60,
    )


def test_socket_from_main_cf(tmp_path):
    conf, queue = _instance(tmp_path, extra="tlsmgr_service_name = tls2\n")
    assert probe.tlsmgr_socket(str(conf)) == f"{queue}/private/tls2"
    (tmp_path / "b").mkdir()
    conf2, queue2 = _instance(tmp_path / "b")
    assert probe.tlsmgr_socket(str(conf2)) == f"{queue2}/private/tlsmgr"


def test_socket_from_mail_config(tmp_path, monkeypatch):
    conf, queue = _instance(tmp_path)
    monkeypatch.setenv("MAIL_CONFIG", str(conf))
    assert probe.tlsmgr_socket(None) == f"{queue}/private/tlsmgr"


def test_long_queue_directory_is_entered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    queue = tmp_path / ("q" * 120)
    queue.mkdir()
    conf, _ = _instance(tmp_path, queue=queue)
    assert probe.tlsmgr_socket(str(conf)) == "private/tlsmgr"
    assert os.getcwd() == str(queue)


def test_missing_main_cf(tmp_path):
    with pytest.raises(probe.ProbeError, match="main.cf: No such file or directory"):
        probe.tlsmgr_socket(str(tmp_path))


def test_describe_and_unreachable():
    assert probe.describe(Result(Status.OK)) == "OK"
    assert probe.describe(Result(Status.ERR, reason="not found")) == "ERR: not found"
    assert probe.describe(Result(Status.FAIL)) == "FAIL"
    down = Result(Status.FAIL, reason="problem talking to server x: Connection refused")
    assert probe.unreachable(down) and not probe.unreachable(Result(Status.FAIL, reason="bad"))


def test_format_seed_lookup_policy():
    assert probe.format_result("seed", Result(Status.OK, bytes(range(4)))) == [
        "status: OK (0)",
        "seed: 4 bytes: 00010203",
    ]
    assert probe.format_result("seed", Result(Status.FAIL, reason="request failed")) == [
        "status: FAIL (-2)",
        "reason: request failed",
        "seed: 0 bytes",
    ]
    lines = probe.format_result("lookup", Result(Status.OK, b"x" * 100))
    assert lines[:2] == ["status: OK (0)", "session: 100 bytes"]
    assert base64.b64decode("".join(x.strip() for x in lines[2:])) == b"x" * 100
    assert all(len(x) <= 78 for x in lines)
    assert probe.format_result("policy", Result(Status.OK, cachable=1, timeout=3600)) == [
        "status: OK (0)",
        "cachable: 1",
        "timeout: 3600",
    ]
    assert probe.format_result("delete", Result(Status.ERR, reason="not found")) == [
        "status: ERR (-1)",
        "reason: not found",
    ]


def test_format_keybuf_hides_key_material():
    name, aes, hmac = bytes(range(16)), b"A" * 32, b"H" * 32
    keybuf = name + aes + hmac + (1000 + 120).to_bytes(8, "little", signed=True)
    lines = probe.format_result("tktkey", Result(Status.OK, keybuf), now=1000)
    text = "\n".join(lines)
    assert "name:     000102030405060708090a0b0c0d0e0f" in text
    assert "expires:  1970-01-01 00:18:40 UTC (in 120s)" in text
    assert aes.hex() not in text and hmac.hex() not in text
    echo = probe.format_result("tktkey", Result(Status.ERR, name), now=0)
    assert "  name:     000102030405060708090a0b0c0d0e0f (echoed)" in echo


def test_cli_no_socket(tmp_path):
    conf, queue = _instance(tmp_path)
    res = _run("-c", str(conf), "seed", "32")
    assert res.returncode == probe.EXIT_UNREACHABLE
    assert res.stderr == (
        f"probe: fatal: no tlsmgr socket {queue}/private/tlsmgr: is the instance running? "
        f"(minipostfix -c {conf} start)\n"
    )


def test_cli_dead_socket(tmp_path):
    conf, queue = _instance(tmp_path)
    (queue / "private").mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(queue / "private" / "tlsmgr"))
        res = _run("-c", str(conf), "stats")
    assert res.returncode == probe.EXIT_UNREACHABLE
    assert res.stderr == (
        f"probe: fatal: problem talking to server {queue}/private/tlsmgr: Connection refused: "
        f"is the instance running? (minipostfix -c {conf} start)\n"
    )


def test_cli_no_main_cf(tmp_path):
    res = _run("-c", str(tmp_path), "stats")
    assert res.returncode == probe.EXIT_UNREACHABLE
    assert "main.cf: No such file or directory" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["tktkey", "xyz"], "ticket key name 'xyz' is not hex"),
        (["update", "smtp", "id", "/nonexistent/file"], "cannot read session file"),
        (["lookup", "smtp"], "the following arguments are required: cache_id"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required"),
    ],
)
def test_cli_usage_errors(tmp_path, args, message):
    res = _run("-c", str(tmp_path), *args)
    assert res.returncode == probe.EXIT_USAGE
    assert message in res.stderr and "Traceback" not in res.stderr
