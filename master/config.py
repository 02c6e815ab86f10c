"""main.cf: read, expand, typed lookup. The sole main.cf parser.

SYNOPSIS
    from master.config import Config, Param, config_directory

    cfg = Config.load(config_directory(cli_dir), params=ROWS,
                      overrides=[("max_idle", "3600")], warn=log.msg_warn)
    cfg.get("queue_directory")      # expanded string
    cfg.get_int("default_process_limit")
    cfg.get_time("ipc_timeout")     # seconds
    cfg.get_bool("smtputf8_enable")
    cfg.get_list("import_environment")
    cfg.raw("name")                 # main.cf (or -o) text, unexpanded, or None
    cfg.expand("$queue_directory/pid")
    cfg.check()                     # read every typed row once: fail early
    cfg.located(ParamError(what, name))  # at main.cf:LINE or -o name=value
    svc = cfg.with_overrides([("max_idle", "10")], origin="master.cf:12")

    logical_lines(text, filename, warn) -> [(first line number, text)]
    parse_main_cf(text, filename, warn) -> {name: Entry(value, lineno)}
    read_main_cf(path, warn) -> {name: Entry}
    read_config_text(path) -> str           # main.cf or master.cf, only \n ends a line
    Defaults(rows, main_eval, service=, process_name=).get(name) -> str | None

DESCRIPTION
    Parameters are Param rows (name, default, type, min, max, doc).  The
    master's own rows are MASTER_PARAMS; daemons pass theirs.  Values are
    stored raw and expanded on access (master/macro.py), as Postfix
    daemons do.  A name that main.cf and -o leave unset takes its default
    from Defaults, the resolver minipostconf uses too, in postconf's
    order (its docstring gives it); otherwise it is undefined and expands
    to nothing.

    Lexical rules (readllines + dict_load_fp): blank lines and lines whose
    first non-blank character is '#' are skipped, even inside a logical
    line; a line that starts with white space continues the previous
    logical line (the newline removed, the leading white space kept); a
    continuation with nothing before it is warned about and skipped; each
    logical line is `name = value` (blanks around '=' and at the end are
    removed); the last definition wins.

    Typed access converts the expanded value (master/macro.py: time with
    a unit, the default value's unit when none is given; integers;
    yes/no; blank- and comma-separated lists) and checks Param min/max.

    The parsing half (everything but read_main_cf, Config.load and the
    host-computed defaults) has no sockets, no clock, no third-party
    imports.

DIAGNOSTICS
    ConfigError (master/errors.py), whose text is complete and names
    the place at fault, which it also carries as data (filename and
    lineno, or origin):
        main.cf:7: missing '=' after attribute name: "x"
        main.cf:7: line contains a NUL byte
        main.cf:7: parameter a: recursive reference: a -> b -> a
        main.cf:12: invalid max_idle: 0 (min 1)
        master.cf:12: -o max_idle=x: parameter max_idle: bad time value or unit: x
        parameter max_idle: ...      (a default value, which has no line)
    LINE is the first physical line of the logical line that defines the
    parameter at fault.  Warnings (continuation without text, redefinition
    with another value) go to the `warn` callback when one is given.

BUGS
    See master/macro.py for where expansion differs from Postfix.

SEE ALSO
    src/util/readlline.c, dict.c, src/global/mail_conf*.c (Postfix);
    master/macro.py, master/builtin.py, master/errors.py
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, TypeVar

from master.builtin import builtin_defaults, computed_default
from master.errors import ConfigError, MacroError, ParamError
from master.macro import (
    expand_macros,
    parse_bool,
    parse_int,
    parse_time,
    split_list,
)

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "MAIN_CF",
    "MASTER_PARAMS",
    "Config",
    "Entry",
    "Param",
    "Warn",
    "config_directory",
    "logical_lines",
    "parse_main_cf",
    "read_config_text",
    "read_main_cf",
    "split_nameval",
]

DEFAULT_CONFIG_DIR = "/etc/postfix"
MAIN_CF = "main.cf"

# What a parser passed to Config._convert returns.
_T = TypeVar("_T")

Warn = Callable[[str], None]
# An -o override: (name, value), or (name, value, origin) with an origin of its own.
Override = tuple[str, str] | tuple[str, str, str | None]


class Param(NamedTuple):
    """One parameter row: name, raw default text, type and bounds."""

    name: str
    default: str
    type: str = "str"  # str | int | long | time | bool | list
    min: int | None = None
    max: int | None = None
    doc: str = ""


# What the master and the child skeletons read, with Postfix 3.7's defaults and
# bounds (tests/unit/test_config_params.py checks them against postfix_defaults.txt).
MASTER_PARAMS: tuple[Param, ...] = (
    Param("config_directory", DEFAULT_CONFIG_DIR, doc="Where main.cf and master.cf live."),
    Param("queue_directory", "/var/spool/postfix", doc="The jail; private/, public/ and pid/."),
    Param("data_directory", "/var/lib/postfix", doc="mail_owner's data: caches, master.lock."),
    Param("daemon_directory", "/usr/lib/postfix/sbin", doc="Where master.cf commands are found."),
    Param("process_id_directory", "pid", doc="pid files, relative to queue_directory."),
    Param("mail_owner", "postfix", doc="The unprivileged account daemons run as."),
    Param("setgid_group", "postdrop", doc="Group of public/ (and of set-gid tools)."),
    Param("default_process_limit", "100", "int", 1, doc="maxproc for `-` in master.cf."),
    Param("max_idle", "100s", "time", 1, doc="Idle time after which a child exits."),
    Param("max_use", "100", "int", 1, doc="Clients a child serves before it exits."),
    Param("service_throttle_time", "60s", "time", 1, doc="Pause after a bad command startup."),
    Param("daemon_timeout", "18000s", "time", 1, doc="Watchdog limit on one request."),
    Param("ipc_timeout", "3600s", "time", 1, doc="Limit on one exchange with a peer."),
    Param("ipc_idle", "5s", "time", 1, doc="Client side: close a connection idle this long."),
    Param("ipc_ttl", "1000s", "time", 1, doc="Client side: close a connection this old."),
    Param("in_flow_delay", "1s", "time", 0, 10, doc="Flow-control wait (the fd 3/4 pipe)."),
    Param("application_event_drain_time", "100s", "time", 1, doc="Wait for events at exit."),
    Param("fork_attempts", "5", "int", 1, doc="Attempts when fork() fails."),
    Param("fork_delay", "1s", "time", 1, doc="Pause between fork() attempts."),
    Param("debug_peer_level", "2", "int", 1, doc="Verbosity added for debug_peer_list."),
    Param("debug_peer_list", "", "list", doc="Clients that get more verbose logging."),
    Param(
        "syslog_name",
        "${multi_instance_name?{$multi_instance_name}:{postfix}}",
        doc="Log tag prefix: `syslog_name/process_name[pid]`.",
    ),
    Param("syslog_facility", "mail", doc="syslog facility when maillog_file is empty."),
    Param("maillog_file", "", doc="Log file; empty means syslog."),
    Param(
        "maillog_file_prefixes",
        "/var, /dev/stdout",
        "list",
        doc="Allowed prefixes of maillog_file; a value outside them is fatal.",
    ),
    Param("maillog_file_compressor", "gzip", doc="`minipostfix logrotate`'s compressor."),
    Param(
        "maillog_file_rotate_suffix",
        "%Y%m%d-%H%M%S",
        doc="strftime() suffix of a rotated maillog_file.",
    ),
    Param("postlog_service_name", "postlog", doc="The postlogd service in master.cf."),
    Param(
        "smtputf8_enable",
        "${{$compatibility_level} <level {1} ? {no} : {yes}}",
        "bool",
        doc="Also: UTF-8 text is printable in log records (else each byte is '?').",
    ),
    Param(
        "import_environment",
        "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C "
        "POSTLOG_SERVICE POSTLOG_HOSTNAME",
        "list",
        doc="Environment kept (or set, `NAME=VALUE`) for the master and children.",
    ),
    Param("export_environment", "TZ MAIL_CONFIG LANG", "list", doc="Environment for commands."),
    Param(
        "inet_interfaces",
        "all",
        "list",
        doc="Where an inet service without a host listens: `all` (the wildcard address of "
        "each inet_protocols family), `loopback-only` (127.0.0.1, and ::1 where the host has "
        "it), or addresses and host names. Read at start; a reload keeps the listeners.",
    ),
    Param("inet_protocols", "all", "list", doc="`ipv4`, `ipv6` or `all`."),
    Param(
        "compatibility_level",
        "0",
        doc="Postfix release whose defaults apply (e.g. `3.6`); set it in main.cf.",
    ),
    Param("multi_instance_name", "", doc="Instance name; prefixes syslog_name when set."),
    Param(
        "master_service_disable",
        "",
        "list",
        doc="Services the master leaves out: types or `name/type`, `!pattern` excludes.",
    ),
    Param(
        "myhostname",
        "",
        doc="This host's name: the system's host name, plus `.$mydomain` (main.cf's, else "
        "`.localdomain`) when it has no dot.",
    ),
    Param("mail_name", "Postfix", doc="The mail system's name in messages."),
    Param("stress", "", doc="Set by the master under overload (read-only)."),
)


def config_directory(cli_dir: str | None = None) -> str:
    """-c DIR, else $MAIL_CONFIG, else /etc/postfix (as Postfix programs choose)."""
    return cli_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR


# Lexical layer ------------------------------------------------------------------


class Entry(NamedTuple):
    """One main.cf setting: raw value and the first line of its logical line."""

    value: str
    lineno: int


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.lstrip()
    return not stripped or stripped.startswith("#")


def logical_lines(text: str, filename: str, warn: Warn | None = None) -> list[tuple[int, str]]:
    """Return (first physical line number, logical line) pairs (readllines()).

    A continuation line with no text before it is dropped with a warning,
    as Postfix does, together with its own continuations.  A NUL byte
    anywhere is a ConfigError naming its line (Postfix's C strings end
    there: it silently drops the rest of that line).
    """
    out: list[tuple[int, str]] = []
    current: list[str] = []
    first = 0

    def flush() -> None:
        if not current:
            return
        joined = "".join(current)
        if joined[0].isspace():
            if warn:
                shown = joined[:30] + ("..." if len(joined) > 30 else "")
                warn(f'{filename}:{first}: logical line must not start with whitespace: "{shown}"')
        else:
            out.append((first, joined))
        current.clear()

    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if "\0" in line:
            raise ConfigError("line contains a NUL byte", filename=filename, lineno=lineno)
        if _is_blank_or_comment(line):
            continue
        if not line[0].isspace() or not current:
            flush()
            first = lineno
        current.append(line)
    flush()
    return out


def split_nameval(line: str) -> tuple[str, str]:
    """Postfix's split_nameval(): `name = value` -> (name, value), blanks around both removed.

    The name ends at the first blank or '='.  Raises ValueError whose text
    is Postfix's: `missing attribute name`, `missing '=' after attribute
    name`; callers put the place in front.
    """
    m = re.match(r"\s*([^\s=]*)\s*(=?)(.*)$", line, re.S)
    assert m is not None
    name, eq, value = m.groups()
    if not name:
        raise ValueError("missing attribute name")
    if not eq:
        raise ValueError("missing '=' after attribute name")
    return name, value.strip(" \t\r\n\v\f")


def parse_main_cf(text: str, filename: str = MAIN_CF, warn: Warn | None = None) -> dict[str, Entry]:
    """Parse main.cf text into name -> Entry (last definition wins)."""
    entries: dict[str, Entry] = {}
    for lineno, line in logical_lines(text, filename, warn):
        try:
            name, value = split_nameval(line)
        except ValueError as err:
            raise ConfigError(
                f'{err}: "{line.strip()}"', filename=filename, lineno=lineno
            ) from None
        old = entries.pop(name, None)
        if old is not None and old.value != value and warn:
            warn(f"{filename}:{lineno}: overriding earlier entry: {name}={old.value}")
        entries[name] = Entry(value, lineno)
    return entries


def read_config_text(path: str) -> str:
    """A configuration file's text as Postfix reads it; OSError.

    Only a newline ends a line (a carriage return is part of its line,
    as for Postfix's readlline(): no universal newlines); bytes that are
    not UTF-8 are kept (surrogateescape) and written back as they were.
    """
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fp:
        return fp.read()


def read_main_cf(path: str, warn: Warn | None = None) -> dict[str, Entry]:
    """Read and parse a main.cf file; ConfigError if missing or malformed."""
    try:
        text = read_config_text(path)
    except OSError as err:
        raise ConfigError(
            f"open {path}: {err.strerror} (use -c DIR or MAIL_CONFIG to name the "
            "configuration directory)",
            filename=path,
        ) from None
    return parse_main_cf(text, os.path.basename(path), warn)


# Defaults ---------------------------------------------------------------------------


class Defaults:
    """A parameter's raw default, in postconf's order; the one resolver of Config and minipostconf.

    1. computed on the host (myhostname, mydomain, mynetworks, process_id,
       process_name), from main_eval(name): main.cf names only;
    2. Postfix 3.7.11's built-in table;
    3. a Param row (our own names; rows of Postfix's names have Postfix's
       default, which tests/unit/test_config_params.py checks);
    4. a service-defined name of master.cf (`service`, filled by minipostconf).
    None when no source has the name.  `process_name` fixes that value
    (minipostconf is "minipostconf" whatever argv[0]).  Computed values are
    kept after the first use.  Raises ParamError for a bad setting behind a
    computed value (mynetworks_style, inet_interfaces, ...).
    """

    def __init__(
        self,
        rows: Mapping[str, Param],
        main_eval: Callable[[str], str | None],
        *,
        service: Mapping[str, str] | None = None,
        process_name: str | None = None,
    ) -> None:
        self.builtin = builtin_defaults()
        self.rows = rows
        self.service: Mapping[str, str] = {} if service is None else service
        self._main_eval = main_eval
        self._computed: dict[str, str | None] = {}
        if process_name is not None:
            self._computed["process_name"] = process_name

    def defines(self, name: str) -> bool:
        """Whether some source gives `name` a default (postconf's known names, user ones aside)."""
        return name in self.builtin.values or name in self.rows or name in self.service

    def get(self, name: str) -> str | None:
        if name in self.builtin.computed:
            if name not in self._computed:
                self._computed[name] = computed_default(name, self._main_eval)
            return self._computed[name]
        if name in self.builtin.values:
            return self.builtin.values[name]
        row = self.rows.get(name)
        if row is not None:
            return row.default
        return self.service.get(name)


# The configuration object ------------------------------------------------------------


class Config:
    """main.cf values plus -o overrides, with defaults, expansion and typed access."""

    def __init__(
        self,
        entries: Mapping[str, Entry] | Mapping[str, str],
        params: Iterable[Param] = (),
        overrides: Iterable[Override] = (),
        config_dir: str = DEFAULT_CONFIG_DIR,
        *,
        override_origin: str | None = None,
        filename: str = MAIN_CF,
    ) -> None:
        """main.cf entries, then -o overrides in order: (name, value), or (name, value,
        origin) where the override has an origin of its own (else override_origin)."""
        self.config_dir = config_dir
        self.filename = filename
        self.entries = {k: v if isinstance(v, Entry) else Entry(v, 0) for k, v in entries.items()}
        self.main = {k: e.value for k, e in self.entries.items()}
        self.overrides: dict[str, str] = {}
        self._origins: dict[str, str | None] = {}
        for item in overrides:
            self.overrides[item[0]] = item[1]
            self._origins[item[0]] = item[2] if len(item) > 2 else override_origin
        self.values = {**self.main, **self.overrides}
        self.values.setdefault("config_directory", config_dir)
        self.params: dict[str, Param] = {}
        for row in (*MASTER_PARAMS, *params):
            self.params[row.name] = row
        self.defaults = Defaults(self.params, self._main_eval)

    @classmethod
    def load(
        cls,
        config_dir: str | None = None,
        params: Iterable[Param] = (),
        overrides: Iterable[tuple[str, str]] = (),
        warn: Warn | None = None,
    ) -> Config:
        """Read $config_dir/main.cf (config_directory() picks the directory)."""
        config_dir = config_directory(config_dir)
        entries = read_main_cf(os.path.join(config_dir, MAIN_CF), warn)
        return cls(entries, params, overrides, config_dir)

    def with_overrides(
        self, overrides: Iterable[tuple[str, str]], origin: str | None = None
    ) -> Config:
        """A copy with more -o overrides; `origin` (e.g. "master.cf:12") is named in errors."""
        layered: list[Override] = [(n, v, self._origins[n]) for n, v in self.overrides.items()]
        layered += [(name, value, origin) for name, value in overrides]
        return Config(
            self.entries, self.params.values(), layered, self.config_dir, filename=self.filename
        )

    # Raw values.
    def raw(self, name: str) -> str | None:
        """The text set in main.cf or by -o, unexpanded; None when not set."""
        return self.values.get(name)

    def default(self, name: str) -> str | None:
        """The raw default (Defaults: computed, Postfix's table, Param row); None if none."""
        try:
            return self.defaults.get(name)
        except ParamError as err:
            raise self.located(err) from None

    def lookup_raw(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value is not None else self.default(name)

    def _main_eval(self, name: str) -> str | None:
        """mail_conf_lookup_eval(): main.cf (and -o) names only, others undefined."""
        raw = self.values.get(name)
        if raw is None:
            return None
        try:
            return expand_macros(raw, self.values.get, owner=name)
        except MacroError as err:
            raise self.located(err) from None

    # Expansion and typed access.
    def expand(self, text: str, owner: str | None = None) -> str:
        """Expand $name, ${name}, $(name) and the conditional forms in text."""
        try:
            return expand_macros(text, self.lookup_raw, owner)
        except ParamError as err:
            raise self.located(err) from None

    def get(self, name: str) -> str:
        """The expanded value; the default when not set; '' when unknown."""
        raw = self.lookup_raw(name)
        if raw is None:
            return ""
        if name not in self.params and name in builtin_defaults().raw:
            return raw
        return self.expand(raw, owner=name)

    def get_int(self, name: str) -> int:
        row = self.params.get(name)
        value = self._convert(name, parse_int, row is not None and row.type == "long")
        self._check_range(name, value)
        return value

    def get_time(self, name: str) -> int:
        default = self.default(name) or "s"
        unit = default.lstrip("0123456789")[:1] or "s"
        value = self._convert(name, parse_time, unit)
        self._check_range(name, value)
        return value

    def get_bool(self, name: str) -> bool:
        return self._convert(name, parse_bool)

    def get_list(self, name: str) -> list[str]:
        return split_list(self.get(name))

    def check(self, names: Iterable[str] | None = None) -> None:
        """Read each typed row (or the named ones) once, so errors show before anything starts."""
        getters: dict[str, Callable[[str], object]] = {
            "int": self.get_int,
            "long": self.get_int,
            "time": self.get_time,
            "bool": self.get_bool,
            "list": self.get_list,
        }
        for name in self.params if names is None else names:
            row = self.params.get(name)
            getters.get(row.type if row else "str", self.get)(name)

    def _convert(self, name: str, parse: Callable[..., _T], *args: object) -> _T:
        text = self.get(name)
        try:
            return parse(name, text, *args)
        except ConfigError as err:
            raise self._error(name, str(err)) from None

    def _check_range(self, name: str, value: int) -> None:
        row = self.params.get(name)
        if row is None:
            return
        if row.min is not None and value < row.min:
            raise self._error(name, f"invalid {name}: {value} (min {row.min})")
        if row.max is not None and value > row.max:
            raise self._error(name, f"invalid {name}: {value} (max {row.max})")

    # Diagnostics.
    def located(self, err: ConfigError) -> ConfigError:
        """err at the place that sets its parameter: a ParamError naming one (a daemon's
        check that spans parameters raises one too); any other error as it is."""
        if isinstance(err, ParamError) and err.owner:
            return self._error(err.owner, err.message)
        return err

    def _error(self, name: str | None, message: str) -> ConfigError:
        """A ConfigError at main.cf:LINE, or at [ORIGIN: ]-o name=value, or at no place
        (a default value)."""
        if name is not None and name in self.overrides:
            option = f"-o {name}={self.overrides[name]}"
            origin = self._origins.get(name)
            return ConfigError(message, origin=f"{origin}: {option}" if origin else option)
        entry = self.entries.get(name) if name is not None else None
        if entry is not None and entry.lineno:
            return ConfigError(message, filename=self.filename, lineno=entry.lineno)
        return ConfigError(message)
