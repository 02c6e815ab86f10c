"""The clients end to end: our master, our tlsmgr, the smtpd test server, the smtp test
client and the probe, all real processes.

One instance for the module: rendered with `minipostfix create-instance` into a
mkdtemp folder under /tmp (0755), the testsmtpd service moved to a free port,
daemon_directory = this venv's bin/, started with `minipostfix start`, stopped
with `minipostfix stop`; any process of the instance still alive afterwards is
killed and the test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import procs
from support.instance import VENV_BIN, MiniInstance
from support.sockets import free_port
from support.waiting import wait_until
from tlsmgr.clients import tlsutil

pytestmark = pytest.mark.root

WAIT = 60


class ClientsInstance(MiniInstance):
    """Our master's tree as `minipostfix create-instance` renders it, with the testsmtpd
    service on a free port, daemon_directory = this venv's bin/ and a certificate."""

    prefix = "clients."

    def __init__(self, **edits: str) -> None:
        super().__init__()
        self.port = free_port()
        settings = {
            "queue_directory": self.queue,
            "data_directory": self.data,
            "daemon_directory": VENV_BIN,
            "maillog_file": self.maillog,
            **edits,
        }
        self.cli("create-instance", *(f"{k}={v}" for k, v in settings.items())).check()
        master_cf = self.etc / "master.cf"
        text = master_cf.read_text()
        assert "127.0.0.1:10025 " in text
        master_cf.write_text(text.replace("127.0.0.1:10025 ", f"127.0.0.1:{self.port} "))
        self.run(sys.executable, "-m", "tlsmgr.clients.mkcert", self.etc, check=True)

    def run(self, *argv: object, check: bool = False) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, timeout=WAIT * 3
        )
        if check:
            assert res.returncode == 0, f"{argv}: {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def probe(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "tlsmgr.clients.probe", "-c", self.etc, *args)

    def smtp(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(
            sys.executable, "-m", "tlsmgr.clients.smtp", "-c", self.etc, "--port", self.port, *args
        )


@pytest.fixture(scope="module")
def inst():
    with ClientsInstance(smtpd_tls_loglevel="2") as inst, inst.running():
        yield inst


def _stats(inst: ClientsInstance) -> dict[str, str]:
    res = inst.probe("stats")
    assert res.returncode == 0, res.stderr
    return dict(line.split(" = ", 1) for line in res.stdout.splitlines()[1:])


# The smtp test client and the smtpd test server.


def test_second_run_resumes_through_the_smtp_cache(inst):
    first = inst.smtp()
    assert first.returncode == 0, first.stderr
    assert "smtp: no session in the smtp cache" in first.stdout
    assert "smtp: new session" in first.stdout
    assert re.search(r"smtp: stored the session in the smtp cache \(\d+ bytes\)", first.stdout)

    second = inst.smtp()
    assert second.returncode == 0, second.stderr
    assert "smtp: offering the session found in the smtp cache" in second.stdout
    assert "smtp: Reusing old session" in second.stdout
    assert "smtp: new session" not in second.stdout

    stats = _stats(inst)
    assert int(stats["smtp.hits"]) >= 1 and int(stats["smtp.entries"]) >= 1


def test_smtpd_cache_holds_the_server_session(inst):
    res = inst.smtp("--no-cache")
    assert res.returncode == 0, res.stderr
    saved = wait_until(
        lambda: re.findall(r"save session (\S+) to smtpd cache", inst.log()),
        "smtpd save line",
        WAIT,
    )
    cache_id = saved[-1]
    hex_id, service, version = cache_id.split("&")
    assert service == f"s=127.0.0.1:{inst.port}"
    assert version == f"l={tlsutil.openssl_version_num()}"
    assert re.fullmatch(r"[0-9A-F]{64}", hex_id)
    lookup = inst.probe("lookup", "smtpd", cache_id)
    assert lookup.returncode == 0, lookup.stdout + lookup.stderr
    import base64

    der = base64.b64decode("".join(x.strip() for x in lookup.stdout.splitlines()[2:]))
    assert tlsutil.session_id(der) == bytes.fromhex(hex_id)
    assert int(_stats(inst)["smtpd.entries"]) >= 1


def test_smtpd_logs_like_postfix(inst):
    inst.smtp()
    inst.smtp()
    log = wait_until(
        lambda: (t := inst.log()).count("Reusing old session") >= 1 and t,
        "a resumption logged",
        WAIT,
    )
    assert re.search(
        r"postfix/testsmtpd\[\d+\]: Anonymous TLS connection established from "
        r"unknown\[127\.0\.0\.1\]: TLSv1\.3 with cipher \S+ \(\d+/\d+ bits\)",
        log,
    )
    assert re.search(r"postfix/testsmtpd\[\d+\]: unknown\[127\.0\.0\.1\]: Reusing old session", log)
    assert "disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 quit=1 commands=4" in log
    assert "error" not in log.replace("SSL_accept error", "")


def test_smtpd_children_are_jailed_and_unprivileged(inst):
    import pwd

    owner = pwd.getpwnam("postfix")
    # The master's own children that serve (its spawn server, root, shares the command
    # line of the children it forks: told apart through master.state).
    inst.smtp()
    children = [pid for pid in inst.workers() if procs.is_program(pid, "testsmtpd")]
    assert children
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
        assert set(uids) == {str(owner.pw_uid)}
        assert os.readlink(f"/proc/{pid}/root") == str(inst.queue)


def test_status_view_shows_tlsmgr_figures(inst):
    inst.smtp()
    res = inst.cli("status", "-v").check()
    assert "tlsmgr: uptime " in res.stdout
    assert re.search(r"tlsmgr: requests served \d+ \(seed \d+, lookup \d+", res.stdout)
    assert re.search(r"tlsmgr: smtp cache: entries [1-9]\d*, bytes [1-9]\d*, hits \d+", res.stdout)
    assert "evictions" in res.stdout
    assert "tlsmgr: lmtp cache: disabled" in res.stdout


# The probe, every subcommand, against the live tlsmgr.


def test_probe_seed(inst):
    res = inst.probe("seed", "32")
    assert res.returncode == 0
    assert re.fullmatch(r"status: OK \(0\)\nseed: 32 bytes: [0-9a-f]{64}\n", res.stdout)


@pytest.mark.parametrize("size", ["0", "256", "abc", "-1"])
def test_probe_seed_out_of_range_shows_the_server_fail(inst, size):
    res = inst.probe("seed", size)
    assert res.returncode == 2
    assert res.stdout.startswith("status: FAIL (-2)\n")
    assert "seed: 0 bytes" in res.stdout


def test_probe_update_lookup_delete(inst, tmp_path):
    session = tmp_path / "session"
    session.write_bytes(b"\x01\x02sessionbytes")
    res = inst.probe("update", "smtp", "probe-id", str(session))
    assert (res.returncode, res.stdout) == (0, "status: OK (0)\n")
    res = inst.probe("lookup", "smtp", "probe-id")
    assert res.returncode == 0
    assert res.stdout == "status: OK (0)\nsession: 14 bytes\n  AQJzZXNzaW9uYnl0ZXM=\n"
    res = inst.probe("delete", "smtp", "probe-id")
    assert (res.returncode, res.stdout) == (0, "status: OK (0)\n")
    res = inst.probe("lookup", "smtp", "probe-id")
    assert res.returncode == 1
    assert res.stdout.startswith("status: ERR (-1)\n") and "session: 0 bytes" in res.stdout
    res = inst.probe("delete", "smtp", "probe-id")
    assert res.returncode == 1 and res.stdout.startswith("status: ERR (-1)\n")


def test_probe_update_from_stdin(inst):
    res = subprocess.run(
        [sys.executable, "-m", "tlsmgr.clients.probe", "-c", str(inst.etc)]
        + ["update", "smtp", "stdin-id", "-"],
        input=b"abc",
        capture_output=True,
        timeout=WAIT,
    )
    assert res.returncode == 0, res.stderr
    assert "session: 3 bytes\n  YWJj\n" in inst.probe("lookup", "smtp", "stdin-id").stdout


@pytest.mark.parametrize("request_args", [["lookup", "bogus", "x"], ["policy", "bogus"]])
def test_probe_bad_cache_type_shows_the_server_fail(inst, request_args):
    res = inst.probe(*request_args)
    assert res.returncode == 2
    assert res.stdout.startswith("status: FAIL (-2)\n")


def test_probe_disabled_cache_fails(inst):
    res = inst.probe("lookup", "lmtp", "x")
    assert res.returncode == 2 and res.stdout.startswith("status: FAIL (-2)\n")


def test_probe_policy(inst):
    res = inst.probe("policy", "smtp")
    assert (res.returncode, res.stdout) == (0, "status: OK (0)\ncachable: 1\ntimeout: 3600\n")
    res = inst.probe("policy", "lmtp")
    assert (res.returncode, res.stdout) == (0, "status: OK (0)\ncachable: 0\ntimeout: 3600\n")


def test_probe_tktkey(inst):
    res = inst.probe("tktkey")
    assert res.returncode == 0, res.stdout
    name = re.search(r"^  name:     ([0-9a-f]{32})$", res.stdout, re.M).group(1)
    assert "keybuf: 88 bytes" in res.stdout and "(not shown)" in res.stdout
    again = inst.probe("tktkey", name)
    assert again.returncode == 0 and f"name:     {name}" in again.stdout
    unknown = inst.probe("tktkey", "00" * 16)
    assert unknown.returncode == 1 and unknown.stdout.startswith("status: ERR (-1)\n")
    short = inst.probe("tktkey", "0011")
    assert short.returncode == 2 and short.stdout.startswith("status: FAIL (-2)\n")


def test_probe_stats(inst):
    stats = _stats(inst)
    assert {"uptime", "requests.seed", "smtp.entries", "smtpd.entries"} <= set(stats)
