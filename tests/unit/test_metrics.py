"""The metrics service's parts: metric definitions, families from the report, HTTP parsing.

The service under a real master, scraped over HTTP, is tests/process/test_metrics_scrape.py.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from master import embedded
from master.config import Config
from master.mastercf import parse_master_cf
from master.statusreport import StatusUnavailable
from tlsmgr.clients.httpserve import HttpError, parse_request
from tlsmgr.clients.metrics import COUNTER, METRICS, StatusCollector, route
from tlsmgr.clients.stats import parse_stats

STATE = {
    "pid": 10, "version": "0.1.0", "config_directory": "/etc/minipostfix", "started": 1000.0,
    "forks": 4,
    "services": [
        {
            "name": "smtp", "type": "inet", "endpoint": "[127.0.0.1]:10025", "command": "/x/t",
            "maxproc": 4, "spawns": 3, "throttles": 0, "avail": 0, "throttled": False,
            "throttle_until": 0.0, "throttle_reason": "", "last_exit": "",
            "children": [
                {"pid": 13, "generation": 3, "state": "busy", "use_count": 0, "started": 1090.0},
                {"pid": 14, "generation": 4, "state": "idle", "use_count": 2, "started": 1095.0},
            ],
        },
        {
            "name": "smtp", "type": "unix", "endpoint": "private/smtp", "command": "/x/t",
            "maxproc": 0, "spawns": 3, "throttles": 2, "avail": 0, "throttled": True,
            "throttle_until": 1130.5, "throttle_reason": "why", "last_exit": "pid 7 exit status 1",
            "children": [],
        },
    ],
}  # fmt: skip
STATS = [
    ("uptime", "62"),
    ("requests.seed", "5"),
    ("requests.stats", "1"),
    ("requests.malformed", "2"),
    ("warnings.suppressed", "0"),
    ("smtp.enabled", "1"),
    ("smtp.timeout", "3600"),
    ("smtp.entries", "3"),
    ("smtp.hits", "7"),
    ("smtp.sparkles", "9"),  # a figure from a later tlsmgr: waits for a definition
    ("lmtp.enabled", "0"),
    ("lmtp.timeout", "3600"),
    ("prng.reseeds", "4"),
    ("redis.state", "connecting"),
    ("redis.late", "1"),
    ("redis.oversized", "2"),
]


def scrape(state: dict, stats: list | None) -> dict[tuple[str, frozenset], float]:
    """What a scrape of a collector over `state` and `stats` shows, parsed back."""

    def read_stats() -> dict:
        if stats is None:
            raise StatusUnavailable("not reachable: no socket private/tlsmgr")
        return parse_stats(stats)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: state, read_stats))
    text = generate_latest(registry).decode()
    by_name = {defn.name: defn for defn in METRICS}
    samples = {}
    for family in text_string_to_metric_families(text):
        exposed = family.name + ("_total" if family.type == COUNTER else "")
        assert by_name[exposed].kind == family.type, exposed
        for sample in family.samples:
            assert set(sample.labels) == set(by_name[exposed].labels), sample
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return (f"minipostfix_{name}", frozenset(labels.items()))


def test_the_masters_figures_by_service_and_state():
    got = scrape(STATE, STATS)
    assert got[key("master_info", version="0.1.0")] == 1
    assert got[key("master_start_time_seconds")] == 1000.0
    assert got[key("master_forks_total")] == 4
    inet = {"service": "smtp", "type": "inet"}
    unix = {"service": "smtp", "type": "unix"}  # same name, another service
    assert got[key("service_children", state="busy", **inet)] == 1
    assert got[key("service_children", state="idle", **inet)] == 1
    assert got[key("service_children", state="idle", **unix)] == 0
    assert got[key("service_maxproc", **inet)] == 4
    assert got[key("service_spawns_total", **unix)] == 3
    assert got[key("service_throttles_total", **unix)] == 2
    assert got[key("service_throttled", **unix)] == 1
    assert got[key("service_throttled", **inet)] == 0


def test_tlsmgrs_figures():
    got = scrape(STATE, STATS)
    assert got[key("tlsmgr_up")] == 1
    assert got[key("tlsmgr_uptime_seconds")] == 62
    assert got[key("tlsmgr_requests_total", request="seed")] == 5
    assert key("tlsmgr_requests_total", request="malformed") not in got
    assert got[key("tlsmgr_malformed_requests_total")] == 2
    assert got[key("tlsmgr_cache_entries", cache="smtp")] == 3
    assert got[key("tlsmgr_cache_hits_total", cache="smtp")] == 7
    assert got[key("tlsmgr_cache_enabled", cache="lmtp")] == 0
    assert key("tlsmgr_cache_entries", cache="lmtp") not in got
    assert got[key("tlsmgr_prng_reseeds_total")] == 4
    assert got[key("tlsmgr_redis_up")] == 0  # connecting is not up
    assert got[key("tlsmgr_redis_late_total")] == 1
    assert got[key("tlsmgr_redis_oversized_total")] == 2
    assert not any("sparkles" in name for name, _ in got)


def test_no_tlsmgr_and_no_state_file():
    got = scrape({}, None)
    assert got == {key("tlsmgr_up"): 0}
    got = scrape(STATE, None)
    assert got[key("tlsmgr_up")] == 0 and got[key("master_forks_total")] == 4
    assert not any(name.startswith("minipostfix_tlsmgr_uptime") for name, _ in got)


def test_a_state_file_the_model_cannot_read_leaves_out_the_master():
    got = scrape({"pid": 1}, STATS)
    assert not any(name.startswith("minipostfix_master") for name, _ in got)
    assert got[key("tlsmgr_up")] == 1


def test_metric_names_follow_prometheus_conventions():
    names = [defn.name for defn in METRICS]
    assert len(names) == len(set(names))
    for defn in METRICS:
        assert re.fullmatch(r"minipostfix_[a-z][a-z_]*[a-z]", defn.name), defn.name
        assert defn.name.endswith("_total") == (defn.kind == COUNTER), defn.name
        assert defn.help.endswith(".") and not defn.help[0].islower(), defn.name
        # A unit is a plural base unit, last in the name (before _total).
        base = defn.name.removesuffix("_total")
        for unit in ("seconds", "bytes"):
            if unit in defn.help.lower() or unit in defn.name:
                assert base.endswith(f"_{unit}"), defn.name


@pytest.mark.parametrize(
    "method, target, status",
    [
        ("GET", "/metrics", 200),
        ("HEAD", "/metrics?x=1", 200),
        ("GET", "http://h:9/metrics", 200),
        ("GET", "/metrics/", 404),
        ("GET", "/", 404),
        ("POST", "/metrics", 405),
        ("DELETE", "/x", 404),
    ],
)
def test_only_get_and_head_of_metrics(method, target, status):
    request = parse_request(f"{method} {target} HTTP/1.1".encode())
    if status == 200:
        assert route(request) is request
    else:
        with pytest.raises(HttpError) as caught:
            route(request)
        assert caught.value.status == status
        assert str(caught.value).endswith(f": {method} {target}")


def test_the_embedded_master_cf_has_the_service_commented_out():
    text = open(embedded.embedded_file("master.cf")).read()
    assert "metrics" not in [e.command for e in parse_master_cf(text, Config({}))]
    [line] = [line for line in text.splitlines() if line.endswith(" metrics")]
    [entry] = parse_master_cf(line.removeprefix("#") + "\n", Config({}))
    assert (entry.type, entry.command, entry.maxproc) == ("inet", "metrics", 2)
    assert entry.chroot and entry.unpriv and entry.name.startswith("127.0.0.1:")
