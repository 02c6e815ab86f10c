"""The C load generator builds and speaks tlsmgr's protocol to the do-nothing server.

A bit-rot check for bench/, not a benchmark: no figure is asserted. bench/tlsmgr_bench.py's
build() compiles bench/loadgen.c and bench/nullserver.c into a temporary directory; loadgen then
talks to nullserver for about 0.2 s per case. The cases check that replies are parsed (every
request type counted as OK, misses with empty values counted as ERR) and that a malformed reply
is rejected rather than counted.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.sockets import connectable

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def load_bench():
    spec = importlib.util.spec_from_file_location("tlsmgr_bench", ROOT / "bench/tlsmgr_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return load_bench().build(tmp_path_factory.mktemp("bench-build"))


@pytest.fixture
def null_server(binaries, tmp_path):
    """start(*flags) -> socket path of a running nullserver; all are killed afterwards."""
    procs = []

    def start(*flags: str) -> Path:
        path = tmp_path / f"null{len(procs)}.sock"
        proc = subprocess.Popen([binaries["nullserver"], "-s", path, *flags])
        procs.append(proc)
        deadline = time.monotonic() + 5
        while not connectable(path):
            assert proc.poll() is None, "nullserver exited at start"
            assert time.monotonic() < deadline, "nullserver did not listen within 5 s"
            time.sleep(0.01)
        return path

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def loadgen(binaries, path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binaries["loadgen"], "-s", path, "-d", "0.2", "-W", "0.05", "-x", "5", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_mix_replies_are_parsed_and_counted(binaries, null_server):
    proc = loadgen(binaries, null_server(), "-w", "mix", "-c", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    counts = result["by_request"]
    assert all(counts[r]["ok"] > 0 for r in ("seed", "lookup", "update")), counts
    assert all(counts[r]["err"] == counts[r]["fail"] == 0 for r in counts), counts
    assert result["requests"] == sum(c["ok"] for c in counts.values())
    lat = result["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


def test_miss_with_empty_session_is_an_err_reply(binaries, null_server):
    # status\0 4294967295\0session\0\0\0: an empty value, then the list terminator.
    proc = loadgen(binaries, null_server("-M"), "-w", "lookup", "-S", "100")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    lookups = result["by_request"]["lookup"]
    assert lookups["err"] == result["requests"] > 0 and lookups["ok"] == 0
    assert sum(s["n"] for s in result["slices"]) == result["requests"]


def test_ok_seed_without_data_is_rejected(binaries, null_server):
    proc = loadgen(binaries, null_server("-B"), "-w", "seed")
    assert proc.returncode == 3
    assert "OK reply carries 0 data bytes, expected 32" in proc.stderr


def test_populate_stores_each_id_once(binaries, null_server):
    proc = loadgen(binaries, null_server(), "-w", "populate", "-n", "100", "-c", "3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["by_request"]["update"]["ok"] == 100


def test_missing_server_is_named(binaries, tmp_path):
    proc = loadgen(binaries, tmp_path / "absent.sock", "-w", "seed")
    assert proc.returncode == 2
    assert "absent.sock" in proc.stderr
