"""tlsmgr's figures as data: the stats reply parsed, status -v's lines, the provider's errors.

The provider against a running tlsmgr is in tests/process/test_status_json.py.
"""

from __future__ import annotations

import socket

from master.statusreport import provider_status
from tlsmgr.clients.stats import PROVIDER, parse_stats, stats_lines

ITEMS = [
    ("uptime", "3723"),
    ("requests.seed", "2"),
    ("requests.lookup", "3"),
    ("requests.malformed", "0"),
    ("warnings.suppressed", "4"),
    ("smtpd.enabled", "1"),
    ("smtpd.timeout", "3600"),
    ("smtpd.entries", "1"),
    ("smtpd.hits", "0"),
    ("smtp.enabled", "1"),
    ("smtp.timeout", "3600"),
    ("smtp.entries", "1"),
    ("smtp.hits", "1"),
    ("smtp.misses", "1"),
    ("smtp.evictions", "0"),
    ("lmtp.enabled", "0"),
    ("lmtp.timeout", "3600"),
    ("prng.draws", "5"),
    ("redis.state", "up"),
    ("redis.hits", "7"),
]


def test_the_reply_becomes_nested_data_in_its_order():
    data = parse_stats(ITEMS)
    assert data == {
        "uptime": 3723,
        "requests": {"seed": 2, "lookup": 3, "malformed": 0},
        "warnings": {"suppressed": 4},
        "caches": {
            "smtpd": {"enabled": 1, "timeout": 3600, "entries": 1, "hits": 0},
            "smtp": {"enabled": 1, "timeout": 3600, "entries": 1, "hits": 1, "misses": 1,
                     "evictions": 0},
            "lmtp": {"enabled": 0, "timeout": 3600},
        },
        "prng": {"draws": 5},
        "redis": {"state": "up", "hits": 7},
    }  # fmt: skip
    assert list(data) == ["uptime", "requests", "warnings", "caches", "prng", "redis"]


def test_odd_names_and_values_are_kept_as_they_come():
    data = parse_stats([("x", "1"), ("x.y", "2"), ("ratio", "0.5"), ("a.b.c", "3")])
    assert data == {"x": 1, "x.y": 2, "ratio": "0.5", "a": {"b.c": 3}}
    assert parse_stats([]) == {}


def test_stats_lines():
    assert stats_lines(parse_stats(ITEMS)) == [
        "uptime 1h02m",
        "requests served 5 (seed 2, lookup 3, malformed 0)",
        "warnings: suppressed 4",
        "smtpd cache: entries 1, hits 0 (timeout 3600s)",
        "smtp cache: entries 1, hits 1, misses 1, evictions 0 (timeout 3600s)",
        "lmtp cache: disabled",
        "prng: draws 5",
        "redis: state up, hits 7",
    ]
    durations = {"59": "59s", "187": "3m07s", "18120": "5h02m", "183600": "2d03h", "x": "x"}
    for secs, shown in durations.items():
        assert stats_lines(parse_stats([("uptime", secs)])) == [f"uptime {shown}"]
    assert stats_lines({}) == ["the stats reply carried no figures"]


def _instance(root):
    conf, queue = root / "etc", root / "queue"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {queue}\n")
    return conf, queue


def _status(conf):
    return provider_status("tlsmgr", lambda: PROVIDER, str(conf))


def test_the_provider_says_why_it_has_no_figures(tmp_path):
    missing = _status(tmp_path / "nowhere")
    assert missing.data is None
    assert missing.error.startswith(
        f"cannot read the configuration: open {tmp_path}/nowhere/main.cf: No such file or directory"
    )
    assert missing.lines == (missing.error,)
    conf, queue = _instance(tmp_path)
    assert _status(conf).error == f"not reachable: no socket {queue}/private/tlsmgr"
    (queue / "private").mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(queue / "private" / "tlsmgr"))  # bound, not listening
        refused = _status(conf)
    assert refused.error == (
        f"not reachable: problem talking to server {queue}/private/tlsmgr: Connection refused"
    )
    assert refused.data is None
