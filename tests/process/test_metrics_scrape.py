"""The metrics service under a real master: scraped over HTTP, parsed by prometheus_client.

One instance for the module: our master with our tlsmgr (smtp cache on), a service
whose command fails at once (throttled), and the metrics service on a free loopback
port, jailed as in the embedded master.cf line.  The tests scrape it with urllib and
http.client, or speak raw bytes for the malformed cases, and parse every 200 body
with prometheus_client's parser; values must move as the test's own requests say.
"""

from __future__ import annotations

import http.client
import os
import pwd
import socket
import time
import urllib.request

import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from support import procs
from support.instance import OUR_TLSMGR, TLSMGR_LINE, VENV_BIN, MiniInstance
from support.sockets import free_port, recv_all
from tlsmgr.clients.metrics import CACHE_FIGURES, PRNG_FIGURES
from tlsmgr.clients.stats import parse_stats

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module")
def served():
    port = free_port()
    master_cf = TLSMGR_LINE + "bad unix - n n - 1 testd fail\n"
    master_cf += f"127.0.0.1:{port} inet n - y - 2 metrics -o metrics_timeout=2s\n"
    main_cf = {"smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache"}
    with MiniInstance(main_cf, master_cf, tlsmgr=OUR_TLSMGR) as inst:
        (inst.bin / "metrics").symlink_to(VENV_BIN / "metrics")
        with inst.running():
            yield inst, port


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return (f"minipostfix_{name}", frozenset(labels.items()))


def test_counters_move_with_the_requests_made(served):
    inst, port = served
    before = scrape(port)
    with inst.client() as client:
        for _ in range(5):
            assert client.seed(16).ok
        for n in range(3):
            assert client.update("smtp", f"metrics-{n}", b"s" * 200).ok
        assert client.lookup("smtp", "metrics-0").ok
        assert not client.lookup("smtp", "never-stored").ok
    after = scrape(port)

    def grew(name: str, **labels: str) -> float:
        return after[key(name, **labels)] - before[key(name, **labels)]

    assert after[key("tlsmgr_up")] == 1
    assert grew("tlsmgr_requests_total", request="seed") == 5
    assert grew("tlsmgr_requests_total", request="update") == 3
    assert grew("tlsmgr_requests_total", request="lookup") == 2
    assert grew("tlsmgr_requests_total", request="stats") == 1  # the scrape's own
    assert grew("tlsmgr_cache_entries", cache="smtp") == 3
    assert grew("tlsmgr_cache_bytes", cache="smtp") > 3 * 400
    assert grew("tlsmgr_cache_hits_total", cache="smtp") == 1
    assert grew("tlsmgr_cache_misses_total", cache="smtp") == 1
    assert grew("tlsmgr_prng_drawn_bytes_total") >= 5 * 16
    assert after[key("tlsmgr_cache_enabled", cache="smtpd")] == 0
    assert after[key("tlsmgr_uptime_seconds")] >= before[key("tlsmgr_uptime_seconds")]


def test_every_figure_of_a_real_stats_reply_has_a_metric(served):
    inst, _port = served
    with inst.client() as client:
        data = parse_stats(client.stats().items)
    assert set(data) == {"uptime", "requests", "warnings", "caches", "prng", "log"}
    assert set(data["warnings"]) == {"suppressed"}
    assert set(data["log"]) == {"dropped"}
    assert set(data["caches"]["smtp"]) == set(CACHE_FIGURES)
    assert set(data["prng"]) == set(PRNG_FIGURES)


def test_children_spawns_and_throttles(served):
    inst, port = served
    tlsmgr = {"service": "tlsmgr", "type": "unix"}
    bad = {"service": "bad", "type": "unix"}
    throttled = key("service_throttled", **bad)
    # A scrape asks tlsmgr for its figures, which starts it when no test before did;
    # master.state shows its child within a second.
    idle = key("service_children", state="idle", **tlsmgr)
    with inst.connect("private/bad"):
        got = inst.wait_for(
            lambda: (s := scrape(port))[throttled] == 1 and s.get(idle) == 1 and s,
            "the throttle and tlsmgr's child to show",
        )
    assert got[key("service_throttles_total", **bad)] == 1
    assert got[key("service_spawns_total", **bad)] == 1
    assert got[key("service_children", state="busy", **tlsmgr)] == 0
    assert got[key("service_maxproc", **tlsmgr)] == 1
    assert got[key("master_forks_total")] >= 3  # tlsmgr, bad, metrics
    assert got[key("master_start_time_seconds")] <= time.time()
    metrics = {"service": f"127.0.0.1:{port}", "type": "inet"}
    assert got[key("service_maxproc", **metrics)] == 2
    assert got[key("service_spawns_total", **metrics)] >= 1


@pytest.mark.root
def test_the_service_runs_jailed_as_mail_owner(served):
    inst, port = served
    scrape(port)

    def metrics_pids() -> list[int]:
        return [p for p in inst.children() if any(a.endswith("/metrics") for a in procs.cmdline(p))]

    pid = inst.wait_for(metrics_pids, "a metrics process")[0]
    ids = procs.proc_ids(pid)
    owner = pwd.getpwnam("postfix")
    assert ids.root == str(inst.queue)
    assert ids.uids == (owner.pw_uid,) * 4
    assert os.stat(inst.queue / "pid" / "master.state").st_mode & 0o777 == 0o644


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        return recv_all(sock)


def test_http_answers(served):
    inst, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/other")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (404, b"404 Not Found\n")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/metrics", body=b"x=1")
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Allow")) == (405, "GET, HEAD")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("HEAD", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length")) > 1000
    assert resp.read() == b""
    plain = raw(port, b"GET /metrics?name[]=x HTTP/1.0\n\n")  # bare LF, a query string
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and b"minipostfix_tlsmgr_up 1" in plain
    assert raw(port, b"GET /metrics HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert raw(port, b"\x16\x03\x01\x02\x00\x01\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /metrics HTTP/1.1\r\n" + b"X-Padding: " + b"a" * 20000
    assert raw(port, huge).startswith(b"HTTP/1.1 431 ")
    inst.wait_log(r"metrics: 127\.0\.0\.1:\d+: 404 Not Found: GET /other")
    inst.wait_log(r"metrics: 127\.0\.0\.1:\d+: 431 Request Header Fields Too Large")


def test_a_slow_client_times_out_and_does_not_hold_up_a_scrape(served):
    inst, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        started = time.monotonic()
        assert scrape(port)[key("tlsmgr_up")] == 1  # a second child serves it
        answer = recv_all(slow)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert time.monotonic() - started < 30
    inst.wait_log(r"408 Request Timeout: no complete request within 2s")
