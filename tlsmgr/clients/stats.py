"""tlsmgr's figures as data: the stats reply parsed, and the status provider built on it.

SYNOPSIS
    from tlsmgr.clients.stats import parse_stats, stats_lines, fetch_stats, PROVIDER

    data = parse_stats(result.items)   # the stats reply's NAME=VALUE pairs -> dict
    stats_lines(data) -> list[str]     # status -v's lines for tlsmgr
    fetch_stats(client) -> dict        # one stats request; StatusUnavailable
    PROVIDER.collect(config_dir) -> dict     # the `minipostfix.status` entry
    PROVIDER.lines(data) -> list[str]        # point `tlsmgr`

DESCRIPTION
    parse_stats() turns the flat pairs of tlsmgr's `stats` reply
    (tlsmgr/service.py) into the structure that `minipostfix status
    --json` shows under providers.tlsmgr.data and that the metrics
    service exports, by one rule:
      NAME          -> data[NAME]                      (uptime)
      GROUP.KEY     -> data[GROUP][KEY]                (requests, warnings,
                                                        prng, redis)
      TYPE.KEY      -> data["caches"][TYPE][KEY]       when the reply has
                                                        TYPE.enabled (a cache)
    in the reply's order; a value that is a decimal number becomes an
    int, any other stays text (redis.state).  So a figure tlsmgr adds
    appears here without a change; docs/status.schema.json names the
    ones this release has.

    stats_lines() is that data as status -v shows it, one line per
    group: `uptime 4m42s`, `requests served 23 (seed 9, ...)`, one line
    per cache (`smtp cache: entries 1, ... (timeout 3600s)` or `lmtp
    cache: disabled`), `prng: draws 13, ...`; the reply with no figure
    at all is one line that says so.

    PROVIDER.collect() asks the tlsmgr of the instance in config_dir
    (probe.tlsmgr_socket()) once, without the client library's second
    attempt, with a 10 s timeout.  It raises statusreport's
    StatusUnavailable, whose text is the line status -v shows, when
    main.cf cannot be read (`cannot read the configuration: ...`),
    tlsmgr cannot be reached (`not reachable: no socket PATH`, `not
    reachable: problem talking to server PATH: ...`) or the request
    fails (`stats request failed: FAIL: ...`).  fetch_stats() is the same
    request over a client the caller made (the metrics service's).

SEE ALSO
    tlsmgr/service.py (the stats reply), master/statusreport.py (the
    provider contract), probe.py, metrics.py, docs/clients.md
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from master.statusreport import StatusUnavailable
from master.statusview import format_duration
from tlsmgr.client import TlsmgrClient
from tlsmgr.clients.probe import ProbeError, describe, tlsmgr_socket, unreachable

__all__ = ["PROVIDER", "TlsmgrStatus", "fetch_stats", "parse_stats", "stats_lines"]

STATUS_TIMEOUT = 10.0
CACHES = "caches"


def parse_stats(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The stats reply's pairs as nested data; see the module docstring."""
    top: dict[str, Any] = {}
    for name, text in items:
        value: int | str = int(text) if text.isdecimal() else text
        head, dot, key = name.partition(".")
        group = top.setdefault(head, {}) if dot else None
        if isinstance(group, dict):
            group[key] = value
        else:  # a plain NAME, or GROUP.KEY where GROUP is a plain name too: kept whole
            top[name] = value
    data: dict[str, Any] = {}
    for name, found in top.items():
        if isinstance(found, dict) and "enabled" in found:
            data.setdefault(CACHES, {})[name] = found
        else:
            data[name] = found
    return data


def stats_lines(data: dict[str, Any]) -> list[str]:
    """status -v's lines for tlsmgr; see the module docstring."""
    lines = []
    if "uptime" in data:
        uptime = data["uptime"]
        lines.append(f"uptime {format_duration(uptime) if isinstance(uptime, int) else uptime}")
    requests = data.get("requests")
    if requests:
        total = sum(v for v in requests.values() if isinstance(v, int))
        shown = ", ".join(f"{k} {v}" for k, v in requests.items())
        lines.append(f"requests served {total} ({shown})")
    for name, value in data.items():
        if name in ("uptime", "requests"):
            continue
        if name == CACHES:
            lines += [_cache_line(cache_type, fields) for cache_type, fields in value.items()]
        elif isinstance(value, dict):
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            lines.append(f"{name} {value}")
    return lines or ["the stats reply carried no figures"]


def _cache_line(cache_type: str, fields: dict[str, int | str]) -> str:
    if fields.get("enabled") == 0:
        return f"{cache_type} cache: disabled"
    shown = ", ".join(f"{k} {v}" for k, v in fields.items() if k not in ("enabled", "timeout"))
    timeout = fields.get("timeout")
    suffix = f" (timeout {timeout}s)" if timeout is not None else ""
    return f"{cache_type} cache: {shown}{suffix}"


def fetch_stats(client: TlsmgrClient) -> dict[str, Any]:
    """One stats request, parsed; StatusUnavailable when it gets no figures."""
    result = client.stats()
    if unreachable(result):
        raise StatusUnavailable(f"not reachable: {result.reason}")
    if not result.ok:
        raise StatusUnavailable(f"stats request failed: {describe(result)}")
    return parse_stats(result.items)


class TlsmgrStatus:
    """tlsmgr's status provider (statusreport.StatusProvider)."""

    def collect(self, config_dir: str) -> dict[str, Any]:
        try:
            path = tlsmgr_socket(config_dir)
        except ProbeError as err:
            raise StatusUnavailable(f"cannot read the configuration: {err}") from None
        if not os.path.exists(path):
            raise StatusUnavailable(f"not reachable: no socket {path}")
        with TlsmgrClient(path, attempts=1, timeout=STATUS_TIMEOUT) as client:
            return fetch_stats(client)

    def lines(self, data: dict[str, Any]) -> list[str]:
        return stats_lines(data)


PROVIDER = TlsmgrStatus()
