"""metrics: the master's and tlsmgr's figures in Prometheus' text format at /metrics.

SYNOPSIS
    master.cf (commented out in the embedded one):
        127.0.0.1:9025 inet n - y - 2 metrics

    from tlsmgr.clients.metrics import METRICS, StatusCollector, families, route

    METRICS                           # every MetricDef: name, kind, labels, help
    families(master, stats) -> list   # prometheus_client metric families
    StatusCollector(read_state, read_stats).collect()  # one scrape's families
    route(request) -> request         # httpserve.HttpError 404 or 405

DESCRIPTION
    A single-server service (master.single_server): each child serves
    one HTTP client at a time, jailed and as mail_owner like any service
    whose master.cf line says so.  For every request it reads the
    master's state file (pid/master.state, through instance.read_state,
    the one reader; mode 0644, so mail_owner may) and asks tlsmgr for its
    `stats` over private/$tlsmgr_service_name with the client library.
    Both names are relative to queue_directory, the jail's root, and the
    skeleton's working directory when there is no jail.  Everything it
    imports is imported before the jail.

    The figures go through the report model (master/statusreport.py)
    and stats.parse_stats() (the same data as `minipostfix status
    --json`) into metric families: METRICS defines each one (name,
    counter or gauge, labels, help) and families() fills them; the text
    is prometheus_client's own exposition (generate_latest() over a
    private CollectorRegistry holding one StatusCollector), never
    written by hand.  No state file (a master that just started) leaves
    out the master's families; a tlsmgr that cannot be asked gives
    minipostfix_tlsmgr_up 0 and none of tlsmgr's figures.  The Redis
    figures appear only when tlsmgr's stats have them.

    HTTP (httpserve.py): one request per connection.  The request head
    must arrive within metrics_timeout (default 10s) and hold at most
    8 KiB; `GET /metrics` (a query string is ignored) gets 200 and the
    text, `HEAD /metrics` the same headers; route() gives 404 for
    another path and 405 for another method on /metrics; httpserve's
    400, 408, 431 and 505 cover the rest.  Each error is logged as a
    warning naming the peer.

SECURITY
    The figures are not secret but tell about the system: keep the
    service on loopback (the embedded line) or behind a firewall; there
    is no authentication.  Nothing from the request reaches the file
    system or tlsmgr: the path is only compared with /metrics.

DIAGNOSTICS
    `warning: metrics: PEER: 404 Not Found: GET /x`, `... 408 Request
    Timeout: no complete request within 10s`, and the like;
    `warning: metrics: pid/master.state: ...` for a state file that is
    not what the master writes.  Configuration errors are the skeleton's.

SEE ALSO
    master/statusreport.py, stats.py, httpserve.py, master/single_server.py,
    docs/operating.md (Monitoring: the metric table)
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from master import instance, single_server
from master.config import Param
from master.log import msg_warn
from master.skeleton import ServerContext, peer_name
from master.statusreport import CHILD_STATES, MasterStatus, StateError, StatusUnavailable
from tlsmgr.client import TlsmgrClient
from tlsmgr.clients.httpserve import (
    REASONS,
    HttpError,
    HttpRequest,
    linger,
    parse_request,
    read_head,
    response,
)
from tlsmgr.clients.stats import fetch_stats

__all__ = [
    "METRICS",
    "PARAMS",
    "MetricDef",
    "MetricsServer",
    "StatusCollector",
    "families",
    "main",
    "route",
]

PARAMS: tuple[Param, ...] = (
    Param("metrics_timeout", "10s", "time", 1, doc="Limit on reading a request and on tlsmgr."),
    Param("tlsmgr_service_name", "tlsmgr", doc="The tlsmgr service name in master.cf."),
)
PATH = "/metrics"
COUNTER, GAUGE = "counter", "gauge"


# The metric definitions ----------------------------------------------------


@dataclass(frozen=True)
class MetricDef:
    """One metric family: its exposed name, kind, label names and help text."""

    name: str  # as exposed; a counter's ends in _total
    kind: str  # COUNTER or GAUGE
    labels: tuple[str, ...]
    help: str

    def family(self) -> CounterMetricFamily | GaugeMetricFamily:
        kind = CounterMetricFamily if self.kind == COUNTER else GaugeMetricFamily
        return kind(self.name, self.help, labels=self.labels)


def _def(name: str, kind: str, labels: str, text: str) -> MetricDef:
    return MetricDef(f"minipostfix_{name}", kind, tuple(labels.split()), text)


SERVICE = "service type"
MASTER_INFO = _def("master_info", GAUGE, "version", "Always 1; the release the master runs.")
MASTER_START = _def("master_start_time_seconds", GAUGE, "", "When the master started (Unix time).")
MASTER_FORKS = _def("master_forks_total", COUNTER, "", "Children started, all services together.")
SERVICE_CHILDREN = _def(
    "service_children", GAUGE, SERVICE + " state", "Live children by state (idle, busy, draining)."
)
SERVICE_MAXPROC = _def("service_maxproc", GAUGE, SERVICE, "Process limit; 0 for none.")
SERVICE_SPAWNS = _def("service_spawns_total", COUNTER, SERVICE, "Children started for it.")
SERVICE_THROTTLES = _def(
    "service_throttles_total", COUNTER, SERVICE, "Times it was throttled (bad command startup)."
)
SERVICE_THROTTLED = _def("service_throttled", GAUGE, SERVICE, "1 while no child may start.")
MASTER_METRICS = (
    MASTER_INFO,
    MASTER_START,
    MASTER_FORKS,
    SERVICE_CHILDREN,
    SERVICE_MAXPROC,
    SERVICE_SPAWNS,
    SERVICE_THROTTLES,
    SERVICE_THROTTLED,
)

TLSMGR_UP = _def("tlsmgr_up", GAUGE, "", "1 when tlsmgr answered this scrape's stats request.")
TLSMGR_UPTIME = _def("tlsmgr_uptime_seconds", GAUGE, "", "Seconds since tlsmgr started.")
TLSMGR_REQUESTS = _def("tlsmgr_requests_total", COUNTER, "request", "Requests answered, by type.")
TLSMGR_MALFORMED = _def(
    "tlsmgr_malformed_requests_total", COUNTER, "", "Requests that could not be parsed."
)
TLSMGR_SUPPRESSED = _def(
    "tlsmgr_suppressed_warnings_total", COUNTER, "", "Client warnings not logged (rate limit)."
)
TLSMGR_LOG_DROPPED = _def(
    "tlsmgr_log_dropped_records_total",
    COUNTER,
    "",
    "Log records postlogd's socket could not take (full or absent).",
)
# The figures of each enabled cache (stats.parse_stats(): caches.TYPE.KEY), by KEY.
CACHE_FIGURES = {
    "enabled": _def("tlsmgr_cache_enabled", GAUGE, "cache", "1 when the cache is configured."),
    "timeout": _def("tlsmgr_cache_timeout_seconds", GAUGE, "cache", "Its session timeout."),
    "entries": _def("tlsmgr_cache_entries", GAUGE, "cache", "Entries it holds."),
    "bytes": _def("tlsmgr_cache_bytes", GAUGE, "cache", "Bytes its entries hold."),
    "hits": _def("tlsmgr_cache_hits_total", COUNTER, "cache", "Lookups that found a session."),
    "misses": _def("tlsmgr_cache_misses_total", COUNTER, "cache", "Lookups that did not."),
    "evictions": _def(
        "tlsmgr_cache_evictions_total", COUNTER, "cache", "Oldest entries removed to fit."
    ),
    "expired": _def("tlsmgr_cache_expired_total", COUNTER, "cache", "Expired entries removed."),
    "oversized": _def(
        "tlsmgr_cache_oversized_total", COUNTER, "cache", "Updates over a size cap, refused."
    ),
    "refused": _def(
        "tlsmgr_cache_refused_total", COUNTER, "cache", "Updates refused for want of room."
    ),
    "errors": _def("tlsmgr_cache_errors_total", COUNTER, "cache", "Berkeley DB failures."),
    "no_room": _def("tlsmgr_cache_no_room", GAUGE, "cache", "1 while updates are refused."),
    "disabled": _def(
        "tlsmgr_cache_disabled", GAUGE, "cache", "1 when a failure disabled it until restart."
    ),
}
PRNG_FIGURES = {
    "draws": _def("tlsmgr_prng_draws_total", COUNTER, "", "Times output was taken."),
    "bytes_drawn": _def("tlsmgr_prng_drawn_bytes_total", COUNTER, "", "Bytes of output taken."),
    "mixes": _def("tlsmgr_prng_mixes_total", COUNTER, "", "Inputs mixed in."),
    "bytes_mixed": _def("tlsmgr_prng_mixed_bytes_total", COUNTER, "", "Bytes of inputs mixed."),
    "reseeds": _def("tlsmgr_prng_reseeds_total", COUNTER, "", "Reseeds from tls_random_source."),
    "bytes_reseeded": _def(
        "tlsmgr_prng_reseeded_bytes_total", COUNTER, "", "Bytes read from tls_random_source."
    ),
    "refills": _def("tlsmgr_prng_refills_total", COUNTER, "", "Keystream buffers made."),
    "folds": _def("tlsmgr_prng_folds_total", COUNTER, "", "Pending inputs folded into the key."),
    "forks": _def("tlsmgr_prng_forks_total", COUNTER, "", "Forks noticed and recovered from."),
}
REDIS_UP = _def("tlsmgr_redis_up", GAUGE, "", "1 while the connection to Redis is up.")
REDIS_FIGURES = {
    "hits": _def("tlsmgr_redis_hits_total", COUNTER, "", "Local misses found in Redis."),
    "misses": _def("tlsmgr_redis_misses_total", COUNTER, "", "Local misses not found there."),
    "skipped": _def("tlsmgr_redis_skipped_total", COUNTER, "", "Lookups not asked: Redis down."),
    "tampered": _def(
        "tlsmgr_redis_tampered_total", COUNTER, "", "Values that failed authentication."
    ),
    "stale": _def("tlsmgr_redis_stale_total", COUNTER, "", "Values too old or expired."),
    "oversized": _def("tlsmgr_redis_oversized_total", COUNTER, "", "Values over the size cap."),
    "errors": _def("tlsmgr_redis_errors_total", COUNTER, "", "Connection and protocol errors."),
    "timeouts": _def("tlsmgr_redis_timeouts_total", COUNTER, "", "Lookups past the budget."),
    "reconnects": _def(
        "tlsmgr_redis_reconnects_total", COUNTER, "", "Connections made again after an outage."
    ),
    "late": _def("tlsmgr_redis_late_total", COUNTER, "", "Replies dropped after their budget."),
}
TLSMGR_METRICS = (
    TLSMGR_UP,
    TLSMGR_UPTIME,
    TLSMGR_REQUESTS,
    TLSMGR_MALFORMED,
    TLSMGR_SUPPRESSED,
    *CACHE_FIGURES.values(),
    *PRNG_FIGURES.values(),
    REDIS_UP,
    *REDIS_FIGURES.values(),
)
METRICS = MASTER_METRICS + TLSMGR_METRICS


# Figures into families -----------------------------------------------------


def families(master: MasterStatus | None, stats: dict[str, Any] | None) -> list[Metric]:
    """One scrape's metric families: the master's (when it wrote its state) and tlsmgr's."""
    made: dict[MetricDef, CounterMetricFamily | GaugeMetricFamily] = {}

    def add(defn: MetricDef, labels: tuple[str, ...], value: float) -> None:
        if defn not in made:
            made[defn] = defn.family()
        made[defn].add_metric(list(labels), value)

    if master is not None:
        _master_figures(master, add)
    _tlsmgr_figures(stats, add)
    return [made[defn] for defn in METRICS if defn in made]


Add = Callable[[MetricDef, tuple[str, ...], float], None]


def _master_figures(master: MasterStatus, add: Add) -> None:
    add(MASTER_INFO, (master.version,), 1)
    add(MASTER_START, (), master.started)
    add(MASTER_FORKS, (), master.forks)
    for svc in master.services:
        who = (svc.name, svc.type)
        for state in CHILD_STATES:
            add(SERVICE_CHILDREN, (*who, state), svc.count(state))
        add(SERVICE_MAXPROC, who, svc.maxproc)
        add(SERVICE_SPAWNS, who, svc.spawns)
        add(SERVICE_THROTTLES, who, svc.throttles)
        add(SERVICE_THROTTLED, who, 1 if svc.throttle else 0)


def _tlsmgr_figures(stats: dict[str, Any] | None, add: Add) -> None:
    add(TLSMGR_UP, (), 0 if stats is None else 1)
    if stats is None:
        return
    if "uptime" in stats:
        add(TLSMGR_UPTIME, (), stats["uptime"])
    for name, count in stats.get("requests", {}).items():
        if name == "malformed":
            add(TLSMGR_MALFORMED, (), count)
        else:
            add(TLSMGR_REQUESTS, (name,), count)
    if "suppressed" in stats.get("warnings", {}):
        add(TLSMGR_SUPPRESSED, (), stats["warnings"]["suppressed"])
    if "dropped" in stats.get("log", {}):
        add(TLSMGR_LOG_DROPPED, (), stats["log"]["dropped"])
    for cache_type, fields in stats.get("caches", {}).items():
        _figures(CACHE_FIGURES, fields, add, (cache_type,))
    _figures(PRNG_FIGURES, stats.get("prng", {}), add, ())
    redis = stats.get("redis")
    if redis is not None:
        add(REDIS_UP, (), 1 if redis.get("state") == "up" else 0)
        _figures(REDIS_FIGURES, redis, add, ())


def _figures(
    table: dict[str, MetricDef], fields: dict[str, Any], add: Add, labels: tuple[str, ...]
) -> None:
    """Each numeric figure that has a definition; figures tlsmgr adds later wait for one."""
    for key, value in fields.items():
        if key in table and isinstance(value, int):
            add(table[key], labels, value)


class StatusCollector:
    """prometheus_client's Collector: each collect() reads the state file and asks tlsmgr."""

    def __init__(
        self,
        read_state: Callable[[], dict[str, Any]],
        read_stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.read_state = read_state
        self.read_stats = read_stats

    def collect(self) -> list[Metric]:
        try:
            master = MasterStatus.from_state(self.read_state())
        except StateError as err:
            msg_warn(f"metrics: {instance.STATE_FILE}: {err}")
            master = None
        try:
            stats = self.read_stats()
        except StatusUnavailable:
            stats = None
        return families(master, stats)


# The service ---------------------------------------------------------------


class MetricsServer:
    """The daemon: its settings and registry, made in post_init; serve() per client."""

    def __init__(self) -> None:
        self.timeout = 10.0
        self.tlsmgr_path = "private/tlsmgr"
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(self.read_state, self.read_stats))

    def post_init(self, ctx: ServerContext) -> None:
        self.timeout = float(ctx.config.get_time("metrics_timeout"))
        # Inside the jail (or the queue directory without one) both names are relative.
        self.tlsmgr_path = f"private/{ctx.config.get('tlsmgr_service_name')}"

    def read_state(self) -> dict[str, Any]:
        return instance.read_state(instance.STATE_FILE)

    def read_stats(self) -> dict[str, Any]:
        with TlsmgrClient(self.tlsmgr_path, attempts=1, timeout=self.timeout) as client:
            return fetch_stats(client)

    def serve(self, conn: socket.socket, _ctx: ServerContext) -> None:
        """One client: one request, one response, a lingering close."""
        try:
            request = route(parse_request(read_head(conn, self.timeout)))
        except HttpError as err:
            msg_warn(f"metrics: {_peer(conn)}: {err}")
            body = f"{err.status} {REASONS[err.status]}\n".encode("ascii")
            answer = response(err.status, body, "text/plain; charset=utf-8")
        else:
            body = generate_latest(self.registry)
            answer = response(200, body, CONTENT_TYPE_LATEST, head_only=request.method == "HEAD")
        conn.settimeout(self.timeout)
        conn.sendall(answer)
        linger(conn)


def route(request: HttpRequest) -> HttpRequest:
    """GET and HEAD of PATH only: HttpError 404 for another path, 405 another method."""
    if request.path != PATH:
        raise HttpError(404, f"{request.method} {request.target}")
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, f"{request.method} {request.target}")
    return request


def _peer(conn: socket.socket) -> str:
    try:
        return peer_name(conn, conn.getpeername())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> NoReturn:
    """The metrics console script (run by the master, not by hand)."""
    server = MetricsServer()
    single_server.main(
        server.serve,
        params=PARAMS,
        post_init=server.post_init,
        argv=argv,
    )


if __name__ == "__main__":
    main()
