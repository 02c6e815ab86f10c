"""The status report: what `minipostfix status -v` and `status --json` show, as data.

SYNOPSIS
    from master.statusreport import StatusReport, MasterStatus, collect_providers

    master = MasterStatus.from_state(
        instance.read_state(path),  # pid/master.state; None: no state yet
        stderr=instance.read_state(stderr_path),  # pid/master.stderr, {} unless root
    )
    providers = collect_providers(config_dir)   # the `minipostfix.status` entry points
    report = StatusReport(time=now, pid=pid, master=master, providers=providers)
    report.to_json() -> dict                    # `status --json` (SCHEMA_VERSION)
    statusview.report_lines(report) -> list[str]   # `status -v`

    MasterStatus(pid, version, config_directory, started, forks, services)
    ServiceStatus(name, type, endpoint, command, maxproc, spawns, throttles,
                  throttle, last_exit, children, last_stderr, spawn_server)
    service.count(state) -> int
    StderrTail(pid, lines)      # a service's last abnormal exit's stderr lines
    ChildStatus(pid, generation, state, uses, started)
    SpawnServerStatus(pid, state, started, forks, last_exit)
    Throttle(reason, until);  throttle.remaining(now) -> int
    ProviderStatus(name, data, error, lines)
    StatusUnavailable(text)     # a provider's "I cannot say now"
    StateError                  # a state file that is not what the master writes

DESCRIPTION
    One model, three renderings: status -v's lines (statusview.py), the
    JSON document of status --json (to_json() here) and the metrics
    service's families (tlsmgr/clients/metrics.py) are all made from a
    StatusReport, so each figure is read from the master's state file
    in one place, MasterStatus.from_state(), and each derived figure
    (uptime, a child's age, a throttle's seconds left, children by
    state) is computed in one place, here.  Times are Unix time in
    seconds; `now` is passed in, nothing here reads the clock.

    from_state() reads the dict of pid/master.state (instance.read_state;
    {} before the master wrote it, which gives None).  A dict without
    the master's keys or with values of the wrong type raises
    StateError naming the key, e.g. after an upgrade while an older
    master runs.  `stderr` is the dict of pid/master.stderr (0600: only
    root reads it, and {} for anyone else): the last stderr lines of each
    service's last abnormal exit, kept out of the state file because a
    child wrote them; a service has last_stderr None when it has none or
    the reader may not see them.

    to_json() is the documented interface: docs/status.schema.json is
    its JSON Schema and docs/operating.md its table (a test holds the
    real output to both).  SCHEMA_VERSION changes when a field is
    removed or changes its type or meaning; new fields may appear
    without a change, so consumers ignore names they do not know.

    Status providers.  Every entry point of the group
    `minipostfix.status` (STATUS_GROUP) names an object with
        collect(config_dir) -> dict   the provider's figures as JSON
                                      values; raises StatusUnavailable(text)
                                      when it cannot have them now
        lines(data) -> list[str]      status -v's lines, from that dict
    so that master/ shows a service's figures without importing the
    service (tlsmgr registers one, tlsmgr/clients/stats.py).
    collect_providers() calls them in name order and never raises: a
    StatusUnavailable gives error = its text; any other exception, or
    data that is not JSON, gives error = `status unavailable: TYPE:
    TEXT`; either way data is None and the error is the one line.

SEE ALSO
    statusview.py (the text), control.py (cmd_status), master.py
    (publish_state) and avail.py (Service.snapshot), which write the
    state file; docs/status.schema.json, docs/operating.md
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "CHILD_STATES",
    "SCHEMA_VERSION",
    "STATUS_GROUP",
    "ChildStatus",
    "MasterStatus",
    "ProviderStatus",
    "ServiceStatus",
    "SpawnServerStatus",
    "StateError",
    "StatusProvider",
    "StatusReport",
    "StatusUnavailable",
    "StderrTail",
    "Throttle",
    "collect_providers",
]

SCHEMA_VERSION = 1
STATUS_GROUP = "minipostfix.status"
CHILD_STATES = ("idle", "busy", "draining")


class StatusUnavailable(Exception):
    """A provider cannot give its figures now; str() is the line status -v shows."""


class StateError(ValueError):
    """The state file's dict lacks a key or has a value of the wrong type."""


class StatusProvider(Protocol):
    """What an entry point of STATUS_GROUP names; see the module docstring."""

    def collect(self, config_dir: str) -> dict[str, Any]: ...

    def lines(self, data: dict[str, Any]) -> list[str]: ...


# The model ----------------------------------------------------------------


@dataclass(frozen=True)
class ChildStatus:
    """One child process: idle, busy or draining, the requests (uses) it completed."""

    pid: int
    generation: int
    state: str
    uses: int
    started: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.started)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "generation": self.generation,
            "state": self.state,
            "uses": self.uses,
            "started": self.started,
            "age": round(self.age(now), 3),
        }


@dataclass(frozen=True)
class Throttle:
    """Why a service does not fork, and until when."""

    reason: str
    until: float

    def remaining(self, now: float) -> int:
        """Whole seconds left, never negative."""
        return max(0, int(self.until - now))

    def to_json(self, now: float) -> dict[str, Any]:
        return {"reason": self.reason, "until": self.until, "remaining": self.remaining(now)}


@dataclass(frozen=True)
class StderrTail:
    """The last lines a service's child wrote to stderr before an abnormal exit."""

    pid: int
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "lines": list(self.lines)}


@dataclass(frozen=True)
class SpawnServerStatus:
    """A service's spawn server (master/zygote.py): starting, ready or down."""

    pid: int
    state: str
    started: float
    forks: int
    last_exit: str | None

    def age(self, now: float) -> float:
        return max(0.0, now - self.started)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "state": self.state,
            "started": self.started,
            "age": round(self.age(now), 3),
            "forks": self.forks,
            "last_exit": self.last_exit,
        }


@dataclass(frozen=True)
class ServiceStatus:
    """One master.cf service as the master counts it."""

    name: str
    type: str
    endpoint: str
    command: str
    maxproc: int  # 0: no limit
    spawns: int
    throttles: int
    throttle: Throttle | None
    last_exit: str | None
    children: tuple[ChildStatus, ...]
    last_stderr: StderrTail | None = None
    spawn_server: SpawnServerStatus | None = None

    def count(self, state: str) -> int:
        """How many children are in `state` (one of CHILD_STATES)."""
        return sum(1 for child in self.children if child.state == state)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "endpoint": self.endpoint,
            "command": self.command,
            "maxproc": self.maxproc,
            "spawns": self.spawns,
            "throttles": self.throttles,
            "throttle": self.throttle.to_json(now) if self.throttle else None,
            "last_exit": self.last_exit,
            "children": [child.to_json(now) for child in self.children],
            "last_stderr": self.last_stderr.to_json() if self.last_stderr else None,
            "spawn_server": self.spawn_server.to_json(now) if self.spawn_server else None,
        }


@dataclass(frozen=True)
class MasterStatus:
    """The resident master and its services, from its state file."""

    pid: int
    version: str
    config_directory: str
    started: float
    forks: int
    services: tuple[ServiceStatus, ...]

    def uptime(self, now: float) -> float:
        return max(0.0, now - self.started)

    def to_json(self, now: float) -> dict[str, Any]:
        """The "master" object of status --json (services are beside it)."""
        return {
            "pid": self.pid,
            "version": self.version,
            "config_directory": self.config_directory,
            "started": self.started,
            "uptime": round(self.uptime(now), 3),
            "forks": self.forks,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], stderr: dict[str, Any] | None = None
    ) -> MasterStatus | None:
        """The model of a state file's dict (and of the stderr file's, when read);
        None for {} (no file yet); StateError."""
        if not state:
            return None
        tails = stderr or {}
        return cls(
            pid=_get(state, "pid", int),
            version=_get(state, "version", str),
            config_directory=_get(state, "config_directory", str),
            started=_get(state, "started", float),
            forks=_get(state, "forks", int),
            services=tuple(_service(s, tails) for s in _get(state, "services", list)),
        )


def _service(svc: dict[str, Any], tails: dict[str, Any]) -> ServiceStatus:
    throttle = None
    if _get(svc, "throttled", bool):
        throttle = Throttle(_get(svc, "throttle_reason", str), _get(svc, "throttle_until", float))
    name, kind = _get(svc, "name", str), _get(svc, "type", str)
    return ServiceStatus(
        name=name,
        type=kind,
        endpoint=_get(svc, "endpoint", str),
        command=_get(svc, "command", str),
        maxproc=_get(svc, "maxproc", int),
        spawns=_get(svc, "spawns", int),
        throttles=_get(svc, "throttles", int),
        throttle=throttle,
        last_exit=_get(svc, "last_exit", str) or None,
        children=tuple(_child(c) for c in _get(svc, "children", list)),
        last_stderr=_tail(tails.get(f"{name}/{kind}")),
        spawn_server=_spawn_server(svc.get("spawn_server")),
    )


def _spawn_server(server: dict[str, Any] | None) -> SpawnServerStatus | None:
    """None for a service without one (and in a state file written before they were)."""
    if server is None:
        return None
    return SpawnServerStatus(
        pid=_get(server, "pid", int),
        state=_get(server, "state", str),
        started=_get(server, "started", float),
        forks=_get(server, "forks", int),
        last_exit=_get(server, "last_exit", str) or None,
    )


def _tail(tail: Any) -> StderrTail | None:
    """A service's entry of the stderr file ({"pid": N, "lines": [...]}), if it has lines."""
    if not tail:
        return None
    lines = _get(tail, "lines", list)
    if not lines:
        return None
    return StderrTail(_get(tail, "pid", int), tuple(str(line) for line in lines))


def _child(child: dict[str, Any]) -> ChildStatus:
    return ChildStatus(
        pid=_get(child, "pid", int),
        generation=_get(child, "generation", int),
        state=_get(child, "state", str),
        uses=_get(child, "use_count", int),
        started=_get(child, "started", float),
    )


def _get(record: Any, key: str, kind: type) -> Any:
    """record[key] as `kind` (an int is a float too; a bool is not an int); StateError."""
    if not isinstance(record, dict):
        raise StateError(f"state file: {type(record).__name__} where an object belongs")
    if key not in record:
        raise StateError(f"state file: no {key!r}")
    value = record[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise StateError(f"state file: {key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


# Providers ----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderStatus:
    """One provider's figures (data), or why there are none (error); its lines."""

    name: str
    data: dict[str, Any] | None
    error: str | None
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "error": self.error}


def collect_providers(config_dir: str) -> tuple[ProviderStatus, ...]:
    """Every provider of STATUS_GROUP, in name order; never raises."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=STATUS_GROUP), key=lambda ep: ep.name)
    return tuple(provider_status(ep.name, ep.load, config_dir) for ep in found)


def provider_status(
    name: str, load: Callable[[], StatusProvider], config_dir: str
) -> ProviderStatus:
    """Ask one provider (load() gives it); a failure is the one line of error."""
    try:
        provider = load()
        data = provider.collect(config_dir)
        json.dumps(data)  # Sanity check: it must go into status --json as it is.
        lines = tuple(provider.lines(data))
    except StatusUnavailable as err:
        return ProviderStatus(name, None, str(err), (str(err),))
    except Exception as err:  # a provider must never break status
        text = f"status unavailable: {type(err).__name__}: {err}"
        return ProviderStatus(name, None, text, (text,))
    return ProviderStatus(name, data, None, lines)


# The report ---------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """Everything status shows, as of `time`; pid None = the master is not running."""

    time: float
    pid: int | None
    master: MasterStatus | None
    providers: tuple[ProviderStatus, ...] = ()

    @property
    def running(self) -> bool:
        return self.pid is not None

    def to_json(self) -> dict[str, Any]:
        """The document of `minipostfix status --json` (docs/status.schema.json)."""
        services = self.master.services if self.master else ()
        return {
            "schema_version": SCHEMA_VERSION,
            "time": self.time,
            "running": self.running,
            "pid": self.pid if self.pid is not None and self.pid > 0 else None,
            "master": self.master.to_json(self.time) if self.master else None,
            "services": [service.to_json(self.time) for service in services],
            "providers": {p.name: p.to_json() for p in self.providers},
        }
