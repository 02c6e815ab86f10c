"""main.cf: read, expand, typed lookup. The sole main.cf parser.

SYNOPSIS
    from master.config import Config, Param, ConfigError, config_directory

    cfg = Config.load(config_directory(cli_dir), params=ROWS,
                      overrides=[("max_idle", "3600")])
    cfg.get("queue_directory")      # expanded string
    cfg.get_int("default_process_limit")
    cfg.get_time("ipc_timeout")     # seconds
    cfg.get_bool("smtputf8_enable")
    cfg.get_list("import_environment")
    cfg.raw("name")                 # main.cf (or -o) text, unexpanded, or None

DESCRIPTION
    Parameters are Param rows (name, default, type, min, max, doc).  The
    master's own rows are MASTER_PARAMS; daemons pass theirs.  Values are
    stored raw and expanded on access, as Postfix daemons do.

    Syntax (Postfix 3.7 readllines + dict_load_fp): blank lines and
    lines whose first non-blank character is '#' are skipped, even inside
    a logical line; a line that starts with white space continues the
    previous logical line (the newline removed, the leading white space
    kept); each logical line is `name = value`; the last definition wins.

    No sockets, no clock, no third-party imports in the parsing half.

DIAGNOSTICS
    ConfigError, whose text is `FILE:LINE: what is wrong` for syntax
    errors and `parameter NAME: what is wrong` for bad values.  Callers
    report it as a fatal error and exit 1; nothing starts half-configured.

SEE ALSO
    src/util/readlline.c, dict.c, mac_expand.c, src/global/mail_conf*.c
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

DEFAULT_CONFIG_DIR = "/etc/postfix"


class ConfigError(Exception):
    """A configuration problem; str() is the complete message."""


@dataclass(frozen=True)
class Param:
    """One parameter row: name, raw default text, type and bounds."""

    name: str
    default: str
    type: str = "str"  # str | int | time | bool | list
    min: int | None = None
    max: int | None = None
    doc: str = ""


MASTER_PARAMS: tuple[Param, ...] = (
    Param("config_directory", DEFAULT_CONFIG_DIR, doc="Where main.cf and master.cf live."),
    Param(
        "queue_directory", "/var/spool/postfix", doc="The jail; sockets in private/ and public/."
    ),
    Param("data_directory", "/var/lib/postfix", doc="mail_owner's writable data: caches, locks."),
    Param("daemon_directory", "/usr/lib/postfix/sbin", doc="Where master.cf commands are found."),
    Param("mail_owner", "postfix", doc="The unprivileged account daemons run as."),
    Param("setgid_group", "postdrop", doc="Group of public/."),
    Param("default_process_limit", "100", "int", 1, doc="maxproc for '-' in master.cf."),
    Param("max_idle", "100s", "time", 1, doc="Idle seconds before an ordinary child exits."),
    Param("max_use", "100", "int", 1, doc="Clients served before an ordinary child exits."),
    Param("service_throttle_time", "60s", "time", 1, doc="Pause after a bad command startup."),
    Param("daemon_timeout", "18000s", "time", 1, doc="Watchdog limit per request."),
    Param("ipc_timeout", "3600s", "time", 1, doc="Limit on one exchange with a peer."),
    Param("ipc_idle", "5s", "time", 1, doc="Client side: close an idle connection."),
    Param("ipc_ttl", "1000s", "time", 1, doc="Client side: close a connection this old."),
    Param("syslog_name", "${multi_instance_name?{$multi_instance_name}:{postfix}}"),
    Param("syslog_facility", "mail"),
    Param("maillog_file", "", doc="Log file; empty means syslog."),
    Param(
        "import_environment",
        "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C "
        "POSTLOG_SERVICE POSTLOG_HOSTNAME",
        "list",
    ),
    Param("inet_interfaces", "all", "list"),
    Param("inet_protocols", "all", "list"),
    Param("compatibility_level", "0"),
    Param("multi_instance_name", ""),
    Param("master_service_disable", "", "list"),
)


def config_directory(cli_dir: str | None = None) -> str:
    """-c DIR, else $MAIL_CONFIG, else /etc/postfix (as Postfix programs choose)."""
    return cli_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR


@dataclass
class Entry:
    value: str
    lineno: int


def logical_lines(text: str, filename: str) -> list[tuple[int, str]]:
    """Return (first physical line number, logical line) pairs.

    Raises nothing: a continuation line with nothing before it is dropped,
    as Postfix does with a warning (see `warnings` of read_main_cf).
    """
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if out:
                out[-1] = (out[-1][0], out[-1][1] + line.rstrip("\r"))
            continue
        out.append((lineno, line.rstrip("\r")))
    return out


def parse_main_cf(text: str, filename: str = "main.cf") -> dict[str, Entry]:
    """Parse main.cf text into name -> Entry (last definition wins)."""
    entries: dict[str, Entry] = {}
    for lineno, line in logical_lines(text, filename):
        name, value = _split_line(line, filename, lineno)
        entries.pop(name, None)
        entries[name] = Entry(value, lineno)
    return entries


def _split_line(line: str, filename: str, lineno: int) -> tuple[str, str]:
    m = re.match(r"\s*([^\s=]*)\s*(=?)\s*(.*?)\s*$", line, re.S)
    assert m is not None
    name, eq, value = m.groups()
    if not name:
        raise ConfigError(f'{filename}:{lineno}: missing attribute name: "{line.strip()}"')
    if not eq:
        raise ConfigError(f"{filename}:{lineno}: missing '=' after attribute name: \"{name}\"")
    return name, value


def read_main_cf(path: str) -> dict[str, Entry]:
    """Read and parse a main.cf file; ConfigError if missing or malformed."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
    except OSError as err:
        raise ConfigError(f"open {path}: {err.strerror}") from None
    return parse_main_cf(text, os.path.basename(path))


_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(name: str, text: str, default_unit: str = "s") -> int:
    """conv_time(): integer then one unit letter (anything after it ignored)."""
    m = re.match(r"(\d+)([a-zA-Z]?)", text)
    if not m:
        raise ConfigError(f"parameter {name}: bad time value or unit: {text}")
    unit = (m.group(2) or default_unit).lower()
    if unit not in _TIME_UNITS or (not m.group(2) and len(text) != len(m.group(1))):
        raise ConfigError(f"parameter {name}: bad time value or unit: {text}")
    return int(m.group(1)) * _TIME_UNITS[unit]


class Config:
    """An expanded view of main.cf plus per-service -o overrides."""

    def __init__(
        self,
        entries: dict[str, Entry] | dict[str, str],
        params: tuple[Param, ...] | list[Param] = (),
        overrides: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        config_dir: str = DEFAULT_CONFIG_DIR,
    ) -> None:
        self.config_dir = config_dir
        self.main = {k: (v.value if isinstance(v, Entry) else v) for k, v in entries.items()}
        self.values = dict(self.main)
        for name, value in overrides:
            self.values[name] = value
        self.params: dict[str, Param] = {}
        for row in (*MASTER_PARAMS, *params):
            self.params[row.name] = row
        self.values.setdefault("config_directory", config_dir)

    @classmethod
    def load(
        cls,
        config_dir: str | None = None,
        params: tuple[Param, ...] | list[Param] = (),
        overrides: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    ) -> Config:
        config_dir = config_directory(config_dir)
        entries = read_main_cf(os.path.join(config_dir, "main.cf"))
        return cls(entries, params, overrides, config_dir)

    def raw(self, name: str) -> str | None:
        """The text set in main.cf or by -o, unexpanded; None when not set."""
        return self.values.get(name)

    def default(self, name: str) -> str | None:
        row = self.params.get(name)
        return row.default if row else None

    def lookup_raw(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value is not None else self.default(name)

    def expand(self, text: str, _depth: int = 0) -> str:
        """Expand $name, ${name}, $(name) and the conditional forms."""
        if _depth > 100:
            raise ConfigError(f"unreasonable macro call nesting: {text!r}")
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c != "$":
                out.append(c)
                i += 1
                continue
            if text[i + 1 : i + 2] == "$":
                out.append("$")
                i += 2
                continue
            m = re.match(r"[A-Za-z0-9_]+", text[i + 1 :])
            if m:
                out.append(self._value_of(m.group(0), _depth))
                i += 1 + m.end()
                continue
            if text[i + 1 : i + 2] in ("{", "("):
                close = "}" if text[i + 1] == "{" else ")"
                end = _matching(text, i + 1, text[i + 1], close)
                if end < 0:
                    raise ConfigError(f"truncated macro reference: {text[i:]!r}")
                out.append(self._braced(text[i + 2 : end], _depth))
                i = end + 1
                continue
            raise ConfigError(f"empty macro name: {text[i:]!r}")
        return "".join(out)

    def _value_of(self, name: str, depth: int) -> str:
        raw = self.lookup_raw(name)
        return "" if raw is None else self.expand(raw, depth + 1)

    def _braced(self, body: str, depth: int) -> str:
        m = re.match(r"\s*([A-Za-z0-9_]+)\s*(.*)$", body, re.S)
        if not m:
            raise ConfigError(f"attribute name syntax error: {body!r}")
        name, rest = m.groups()
        value = self._value_of(name, depth)
        if not rest:
            return value
        op, text = rest[0], rest[1:]
        if op not in "?:":
            raise ConfigError(f"attribute name syntax error: {body!r}")
        chosen = text if (op == "?") == bool(value) else ""
        return self.expand(chosen, depth + 1)

    def get(self, name: str) -> str:
        """The expanded value; the row's default when not set; '' when unknown."""
        raw = self.lookup_raw(name)
        return "" if raw is None else self.expand(raw)

    def get_int(self, name: str) -> int:
        text = self.get(name)
        try:
            value = int(text, 10)
        except ValueError:
            raise ConfigError(f"bad numerical configuration: {name} = {text}") from None
        self._check_range(name, value)
        return value

    def get_time(self, name: str) -> int:
        row = self.params.get(name)
        unit = "s"
        if row is not None and row.default[-1:].isalpha():
            unit = row.default[-1]
        value = parse_time(name, self.get(name), unit)
        self._check_range(name, value)
        return value

    def get_bool(self, name: str) -> bool:
        text = self.get(name).lower()
        if text in ("yes", "true"):
            return True
        if text in ("no", "false"):
            return False
        raise ConfigError(f"bad boolean configuration: {name} = {text}")

    def get_list(self, name: str) -> list[str]:
        return [w for w in re.split(r"[\s,]+", self.get(name)) if w]

    def _check_range(self, name: str, value: int) -> None:
        row = self.params.get(name)
        if row is None:
            return
        if row.min is not None and value < row.min:
            raise ConfigError(f"invalid {name}: {value} (min {row.min})")
        if row.max is not None and value > row.max:
            raise ConfigError(f"invalid {name}: {value} (max {row.max})")


def _matching(text: str, start: int, open_: str, close: str) -> int:
    level = 0
    for j in range(start, len(text)):
        if text[j] == open_:
            level += 1
        elif text[j] == close:
            level -= 1
            if level == 0:
                return j
    return -1
