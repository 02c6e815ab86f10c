"""main.cf: read, expand, typed lookup. The sole main.cf parser.

SYNOPSIS
    from master.config import Config, Param, ConfigError, config_directory

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
    svc = cfg.with_overrides([("max_idle", "10")], origin="master.cf:12")

    logical_lines(text, filename, warn) -> [(first line number, text)]
    parse_main_cf(text, filename, warn) -> {name: Entry(value, lineno)}
    read_main_cf(path, warn) -> {name: Entry}
    parse_time(name, text, default_unit) / parse_int / parse_bool / split_list
    expand_macros(text, lookup, owner) -> str      # mac_expand, recursive
    scan_macros(text) -> [names]                   # mac_expand, scan mode
    compat_level(text) -> int                      # "3.6" -> comparable number
    builtin_defaults() -> BuiltinDefaults          # Postfix 3.7.11's table

DESCRIPTION
    Parameters are Param rows (name, default, type, min, max, doc).  The
    master's own rows are MASTER_PARAMS; daemons pass theirs.  Values are
    stored raw and expanded on access, as Postfix daemons do.  A name that
    no row describes falls back to Postfix 3.7.11's built-in default (the
    packaged postfix_defaults.txt, read on first use), then to the values
    Postfix computes on the host (myhostname, mydomain, mynetworks,
    process_id, process_name); otherwise it is undefined and expands to
    nothing.

    Lexical rules (readllines + dict_load_fp): blank lines and lines whose
    first non-blank character is '#' are skipped, even inside a logical
    line; a line that starts with white space continues the previous
    logical line (the newline removed, the leading white space kept); a
    continuation with nothing before it is warned about and skipped; each
    logical line is `name = value` (blanks around '=' and at the end are
    removed); the last definition wins.

    Expansion (mac_parse + mac_expand, recursive): $$, $name, ${name},
    $(name), ${name?text}, ${name:text} (legacy: the rest is the text, so
    ${b?x:y} is "x:y"), ${name?{then}:{else}}, and the relational form
    ${{a} OP {b}?{t}:{f}} with OP one of == != < <= >= > (numeric when both
    sides are digits), optionally with the suffix "level" to compare
    compatibility levels.  `?` and `:` test the raw value of a name, not
    its expansion.  A reference chain that comes back to itself is an
    error naming the chain; so is nesting deeper than 100 levels.

    Typed values: time is strtol() then one unit letter s m h d w, the
    rest ignored (conv_time); a missing unit is the default value's unit.
    Integers are strtol() with nothing after.  Booleans are yes or no.
    Lists are separated by blanks and commas.  Param min/max are checked.

    The parsing half (everything but read_main_cf, Config.load and the
    host-computed defaults) has no sockets, no clock, no third-party
    imports.

DIAGNOSTICS
    ConfigError, whose text is complete and names the place at fault:
        main.cf:7: missing '=' after attribute name: "x"
        main.cf:7: parameter a: recursive reference: a -> b -> a
        main.cf:12: invalid max_idle: 0 (min 1)
        master.cf:12: -o max_idle=x: parameter max_idle: bad time value or unit: x
        parameter max_idle: ...      (a default value, which has no line)
    LINE is the first physical line of the logical line that defines the
    parameter at fault.  Warnings (continuation without text, redefinition
    with another value) go to the `warn` callback when one is given.

BUGS
    Postfix reports nesting beyond 100 levels only; a reference cycle is
    reported here as soon as it closes (same outcome, clearer message).
    Postfix expands the operands of a relational expression in a fresh
    context and crashes on a cycle through them; here the cycle is caught.

SEE ALSO
    src/util/readlline.c, dict.c, mac_parse.c, mac_expand.c,
    src/global/mail_conf*.c, conv_time.c, compat_level.c,
    src/postconf/postconf_builtin.c (Postfix)
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

DEFAULT_CONFIG_DIR = "/etc/postfix"
MAIN_CF = "main.cf"
DEFAULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "postfix_defaults.txt")

Warn = Callable[[str], None]


class ConfigError(Exception):
    """A configuration problem; str() is the complete message."""


class ParamError(ConfigError):
    """A bad parameter value: `owner` names the parameter at fault (None if unknown).

    Callers that know where `owner` is defined turn it into a located
    ConfigError (`main.cf:7: parameter a: ...`).
    """

    def __init__(self, what: str, owner: str | None) -> None:
        super().__init__(f"parameter {owner}: {what}" if owner else what)
        self.what = what
        self.owner = owner


class MacroError(ParamError):
    """A $name expansion problem in the value of `owner`."""


@dataclass(frozen=True)
class Param:
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
    Param("default_process_limit", "100", "int", 1, doc="maxproc for '-' in master.cf."),
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
        doc="Log tag prefix: syslog_name/process_name[pid].",
    ),
    Param("syslog_facility", "mail", doc="syslog facility when maillog_file is empty."),
    Param("maillog_file", "", doc="Log file; empty means syslog."),
    Param(
        "maillog_file_prefixes",
        "/var, /dev/stdout",
        "list",
        doc="Allowed prefixes of maillog_file (checked by postlogd).",
    ),
    Param("postlog_service_name", "postlog", doc="The postlogd service in master.cf."),
    Param(
        "import_environment",
        "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C "
        "POSTLOG_SERVICE POSTLOG_HOSTNAME",
        "list",
        doc="Environment kept (or set, NAME=VALUE) for the master and children.",
    ),
    Param("export_environment", "TZ MAIL_CONFIG LANG", "list", doc="Environment for commands."),
    Param("inet_interfaces", "all", "list", doc="Addresses inet services without host use."),
    Param("inet_protocols", "all", "list", doc="ipv4, ipv6 or all."),
    Param("compatibility_level", "0", doc="Postfix release whose defaults apply (e.g. 3.6)."),
    Param("multi_instance_name", "", doc="Instance name; prefixes syslog_name when set."),
    Param("master_service_disable", "", "list", doc="name/type patterns of disabled services."),
    Param("myhostname", "", doc="This host's name (computed from the host when unset)."),
    Param("mail_name", "Postfix", doc="The mail system's name in messages."),
    Param("stress", "", doc="Set by the master under overload (read-only)."),
)

# Which Param rows keep Postfix's computed default rather than the row's text.
_COMPUTED_ROWS = {"myhostname"}


def config_directory(cli_dir: str | None = None) -> str:
    """-c DIR, else $MAIL_CONFIG, else /etc/postfix (as Postfix programs choose)."""
    return cli_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR


# Lexical layer ------------------------------------------------------------------


@dataclass
class Entry:
    """One main.cf setting: raw value and the first line of its logical line."""

    value: str
    lineno: int


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.lstrip()
    return not stripped or stripped.startswith("#")


def logical_lines(text: str, filename: str, warn: Warn | None = None) -> list[tuple[int, str]]:
    """Return (first physical line number, logical line) pairs (readllines()).

    Raises nothing: a continuation line with no text before it is dropped
    with a warning, as Postfix does, together with its own continuations.
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
        if _is_blank_or_comment(line):
            continue
        if not line[0].isspace() or not current:
            flush()
            first = lineno
        current.append(line)
    flush()
    return out


def split_nameval(line: str) -> tuple[str, str] | str:
    """Postfix's split_nameval(): (name, value), or the error text."""
    m = re.match(r"\s*([^\s=]*)\s*(=?)(.*)$", line, re.S)
    assert m is not None
    name, eq, value = m.groups()
    if not name:
        return "missing attribute name"
    if not eq:
        return "missing '=' after attribute name"
    return name, value.strip(" \t\r\n\v\f")


def parse_main_cf(text: str, filename: str = MAIN_CF, warn: Warn | None = None) -> dict[str, Entry]:
    """Parse main.cf text into name -> Entry (last definition wins)."""
    entries: dict[str, Entry] = {}
    for lineno, line in logical_lines(text, filename, warn):
        parsed = split_nameval(line)
        if isinstance(parsed, str):
            raise ConfigError(f'{filename}:{lineno}: {parsed}: "{line.strip()}"')
        name, value = parsed
        old = entries.pop(name, None)
        if old is not None and old.value != value and warn:
            warn(f"{filename}:{lineno}: overriding earlier entry: {name}={old.value}")
        entries[name] = Entry(value, lineno)
    return entries


def read_main_cf(path: str, warn: Warn | None = None) -> dict[str, Entry]:
    """Read and parse a main.cf file; ConfigError if missing or malformed."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
    except OSError as err:
        raise ConfigError(
            f"open {path}: {err.strerror} (use -c DIR or MAIL_CONFIG to name the "
            "configuration directory)"
        ) from None
    return parse_main_cf(text, os.path.basename(path), warn)


# Expansion: mac_parse() + mac_expand() --------------------------------------------

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_BLANKS = " \t\r\n"
_MAX_LEVEL = 100  # Postfix: "unreasonable macro call nesting" beyond this
_MAX_STACK = 1000  # Sanity check: relational operands restart the level count
_OPERATOR_CHARS = "<>!=?+-*/~&|%"
_OPERATORS = ("==", "!=", "<", "<=", ">=", ">")
_OPERATOR_SUFFIXES = ("level",)

Lookup = Callable[[str], "str | None"]


def _skip_blanks(text: str, i: int = 0) -> int:
    while i < len(text) and text[i] in _BLANKS:
        i += 1
    return i


class _Expander:
    """One mac_expand() call: recursive expansion, or scan mode (names only)."""

    def __init__(self, lookup: Lookup, scan: bool = False, owner: str | None = None):
        self.lookup = lookup
        self.scan = scan
        self.names: list[str] = []
        self.stack: list[str] = [owner] if owner else []
        self.level = 0
        self.out: list[str] = []

    def error(self, what: str) -> MacroError:
        return MacroError(what, self.stack[-1] if self.stack else None)

    # mac_parse(): split text into literals and macro bodies.
    def parse(self, text: str) -> None:
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch != "$":
                literal.append(ch)
                i += 1
                continue
            if text[i + 1 : i + 2] == "$":
                literal.append("$")
                i += 2
                continue
            if literal:
                self.literal("".join(literal))
                literal = []
            i += 1
            if i < n and text[i] in "({":
                close = ")" if text[i] == "(" else "}"
                end = _balance(text, i, text[i], close)
                if end < 0:
                    raise self.error(f'truncated macro reference: "{text}" (missing "{close}")')
                body, i = text[i + 1 : end], end + 1
            else:
                j = i
                while j < n and text[j] in _NAME_CHARS:
                    j += 1
                body, i = text[i:j], j
            if not body:
                raise self.error(f'empty macro name: "{text}" (write $$ for a literal $)')
            self.expression(body)
        if literal:
            self.literal("".join(literal))

    def enter(self, what: str) -> None:
        if self.level > _MAX_LEVEL or len(self.stack) > _MAX_STACK:
            chain = " -> ".join(self.stack[:3] + ["..."] + self.stack[-2:])
            raise MacroError(
                f'unreasonable macro call nesting (deeper than {_MAX_LEVEL}) at "{what}": {chain}',
                self.stack[0] if self.stack else None,
            )
        self.level += 1

    def literal(self, text: str) -> None:
        self.enter(text)
        if not self.scan:
            self.out.append(text)
        self.level -= 1

    # mac_expand_callback() for one ${...}, $(...) or $name body.
    def expression(self, body: str) -> None:
        self.enter(body)
        start = _skip_blanks(body)
        if body[start : start + 1] == "{":
            value, rest = self.relational(body[start:])
            op = rest[:1]
            if op and op not in "?:":
                raise self.error(f'"?" or ":" expected at: "...}}>>>{rest[:20]}"')
            rest = rest[1:]
            name = None
        else:
            name, op, rest = self.name_and_operator(body, start)
            value = self.lookup_name(name)
        if op == "?":
            rest = self.branch(rest, bool(value), ":")
            if rest:
                op, rest = ":", rest[1:]
        if op == ":":
            self.branch(rest, not value, "")
        elif not op and value and not self.scan:
            self.recurse(name, value)
        self.level -= 1

    def name_and_operator(self, body: str, start: int) -> tuple[str, str, str]:
        i = start
        while True:
            after = _skip_blanks(body, i)
            if after == len(body):
                return body[start:i], "", ""
            if body[after] in "?:":
                return body[start:i], body[after], body[after + 1 :]
            if body[i] not in _NAME_CHARS:
                raise self.error(
                    f'attribute name syntax error at: "...{body[:i]}>>>{body[i : i + 20]}"'
                )
            i += 1

    def branch(self, text: str, taken: bool, allowed_next: str) -> str:
        """Parse one ?/: operand; return what follows it (must be allowed_next)."""
        start = _skip_blanks(text)
        if text[start : start + 1] == "{":
            payload, rest = self.curly(text[start:])
        else:
            payload, rest = text, ""
        if taken or self.scan:
            self.parse(payload)
        if rest and not rest.startswith(allowed_next or "\0"):
            expected = f'"{allowed_next}" expected' if allowed_next else "unexpected input"
            raise self.error(f'{expected} at: "...{payload}}}>>>{rest[:20]}"')
        return rest

    def curly(self, text: str) -> tuple[str, str]:
        end = _balance(text, 0, "{", "}")
        if end < 0:
            raise self.error(f'unbalanced {{}} in attribute expression: "{text}"')
        return text[1:end], text[_skip_blanks(text, end + 1) :]

    def lookup_name(self, name: str) -> str | None:
        if self.scan:
            if name:
                self.names.append(name)
            return None
        return self.lookup(name) if name else None

    def recurse(self, name: str | None, value: str) -> None:
        if name is None:  # the "true" of a relational expression
            self.parse(value)
            return
        if name in self.stack:
            chain = self.stack[self.stack.index(name) :] + [name]
            raise MacroError(f"recursive reference: {' -> '.join(chain)}", name)
        self.stack.append(name)
        self.parse(value)
        self.stack.pop()

    def relational(self, text: str) -> tuple[str | None, str]:
        left, rest = self.curly(text)
        op_len = len(rest) - len(rest.lstrip(_OPERATOR_CHARS))
        op, rest = rest[:op_len], rest[op_len:]
        if op not in _OPERATORS:
            raise self.error(
                f'"==", "!=", "<", "<=", ">=" or ">" expected at: "...{{{left}}}>>>{op}{rest[:20]}"'
            )
        suffix = re.match(r"[A-Za-z0-9]*", rest).group(0)  # type: ignore[union-attr]
        if suffix and suffix not in _OPERATOR_SUFFIXES:
            raise self.error(f'bad operator suffix at: "...{op}>>>{suffix}" (only "level")')
        rest = rest[len(suffix) :]
        start = _skip_blanks(rest)
        if rest[start : start + 1] != "{":
            raise self.error(f'"{{expression}}" expected at: "...{{{left}}} {op}>>>{rest[:20]}"')
        right, rest = self.curly(rest[start:])
        left_value, right_value = self.operand(left), self.operand(right)
        if self.scan:
            return None, rest
        try:
            true = _compare(left_value, op, right_value, suffix)
        except ValueError as err:
            raise self.error(str(err)) from None
        return ("true" if true else ""), rest

    def operand(self, text: str) -> str:
        """Expand a relational operand in a fresh context, as Postfix does."""
        saved_out, saved_level = self.out, self.level
        self.out, self.level = [], 0
        try:
            self.parse(text)
            return "".join(self.out)
        finally:
            self.out, self.level = saved_out, saved_level


def _balance(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing text[start], counting only open_/close; -1 if none."""
    level = 0
    for j in range(start, len(text)):
        if text[j] == open_:
            level += 1
        elif text[j] == close:
            level -= 1
            if level == 0:
                return j
    return -1


def _compare(left: str, op: str, right: str, suffix: str) -> bool:
    if suffix == "level":
        delta = compat_level(left) - compat_level(right)
    elif left.isdigit() and right.isdigit() and left.isascii() and right.isascii():
        lval, rval = int(left), int(right)
        if max(lval, rval) > 2**63 - 1:
            raise ValueError(f"bad numerical comparison: {max(lval, rval)} is too large")
        delta = lval - rval
    else:
        lb, rb = left.encode("utf-8", "surrogateescape"), right.encode("utf-8", "surrogateescape")
        delta = (lb > rb) - (lb < rb)
    return {
        "==": delta == 0,
        "!=": delta != 0,
        "<": delta < 0,
        "<=": delta <= 0,
        ">=": delta >= 0,
        ">": delta > 0,
    }[op]


def expand_macros(text: str, lookup: Lookup, owner: str | None = None) -> str:
    """Expand text recursively; lookup(name) gives a raw value or None (undefined).

    `owner` names the parameter whose value `text` is: it starts the
    recursion chain and is blamed for syntax errors in `text`.  Raises
    MacroError (a ConfigError) whose `owner` is the parameter at fault.
    """
    expander = _Expander(lookup, owner=owner)
    expander.parse(text)
    return "".join(expander.out)


def scan_macros(text: str, owner: str | None = None) -> list[str]:
    """The names text refers to, in every branch (MAC_EXP_FLAG_SCAN); MacroError on syntax."""
    expander = _Expander(lambda _name: None, scan=True, owner=owner)
    expander.parse(text)
    return expander.names


def _strtol_prefix(text: str) -> tuple[int | None, str]:
    """strtol(text, &end, 10): (value or None when no digits, rest)."""
    m = re.match(r"[ \t\n\r\v\f]*([+-]?\d+)", text)
    if not m or not m.group(1).lstrip("+-").isascii():
        return None, text
    return int(m.group(1)), text[m.end() :]


def compat_level(text: str) -> int:
    """compat_level_from_string(): "major[.minor[.patch]]" as one comparable number."""
    parts = text.split(".")
    numbers: list[int] = []
    for part, limit in zip(parts, (2**43 - 1, 1023, 1023), strict=False):
        number, rest = _strtol_prefix(part)
        if number is None or rest or not 0 <= number <= limit:
            break
        numbers.append(number)
    if len(parts) > 3 or len(numbers) != len(parts):
        raise ValueError(f'malformed compatibility level syntax: "{text}"')
    numbers += [0] * (3 - len(numbers))
    return (numbers[0] << 20) | (numbers[1] << 10) | numbers[2]


# Typed values ----------------------------------------------------------------------

_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1


def parse_time(name: str, text: str, default_unit: str = "s") -> int:
    """conv_time(): strtol, then one unit letter s m h d w (anything after it ignored).

    No letter means default_unit.  Negative values, overflow, an empty
    value or an unknown unit raise ConfigError `parameter NAME: bad time
    value or unit: TEXT`.
    """
    number, rest = _strtol_prefix(text)
    unit = rest[:1] or default_unit
    if number is None or number < 0 or unit not in _TIME_UNITS:
        raise ConfigError(
            f"parameter {name}: bad time value or unit: {text} (use a number and one of "
            "s, m, h, d, w)"
        )
    seconds = number * _TIME_UNITS[unit]
    if number > _INT_MAX or seconds > _INT_MAX:
        raise ConfigError(f"parameter {name}: bad time value or unit: {text} (too large)")
    return seconds


def parse_int(name: str, text: str, long: bool = False) -> int:
    """get_mail_conf_int(): strtol with nothing after it, within int (or long) range."""
    number, rest = _strtol_prefix(text)
    limit = _LONG_MAX if long else _INT_MAX
    if number is None or rest or not -limit - 1 <= number <= limit:
        raise ConfigError(f"bad numerical configuration: {name} = {text} (expected an integer)")
    return number


def parse_bool(name: str, text: str) -> bool:
    """get_mail_conf_bool(): yes or no, in any case."""
    if text.lower() == "yes":
        return True
    if text.lower() == "no":
        return False
    raise ConfigError(f"bad boolean configuration: {name} = {text} (use yes or no)")


def split_list(text: str) -> list[str]:
    """Blank- and comma-separated words (CHARS_COMMA_SP)."""
    return [w for w in re.split(r"[\s,]+", text) if w]


# The configuration object ------------------------------------------------------------


class Config:
    """main.cf values plus -o overrides, with defaults, expansion and typed access."""

    def __init__(
        self,
        entries: Mapping[str, Entry] | Mapping[str, str],
        params: Iterable[Param] = (),
        overrides: Iterable[tuple[str, str]] = (),
        config_dir: str = DEFAULT_CONFIG_DIR,
        *,
        override_origin: str | None = None,
        filename: str = MAIN_CF,
    ) -> None:
        self.config_dir = config_dir
        self.filename = filename
        self.entries = {k: v if isinstance(v, Entry) else Entry(v, 0) for k, v in entries.items()}
        self.main = {k: e.value for k, e in self.entries.items()}
        self.overrides: dict[str, str] = {}
        self._origins: dict[str, str | None] = {}
        for name, value in overrides:
            self.overrides[name] = value
            self._origins[name] = override_origin
        self.values = {**self.main, **self.overrides}
        self.values.setdefault("config_directory", config_dir)
        self.params: dict[str, Param] = {}
        for row in (*MASTER_PARAMS, *params):
            self.params[row.name] = row
        self._computed: dict[str, str | None] = {}

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
        view = Config(
            self.entries, self.params.values(), (), self.config_dir, filename=self.filename
        )
        view.overrides, view._origins = dict(self.overrides), dict(self._origins)
        for name, value in overrides:
            view.overrides[name] = value
            view._origins[name] = origin
        view.values = {**view.main, **view.overrides}
        view.values.setdefault("config_directory", self.config_dir)
        return view

    # Raw values.
    def raw(self, name: str) -> str | None:
        """The text set in main.cf or by -o, unexpanded; None when not set."""
        return self.values.get(name)

    def default(self, name: str) -> str | None:
        """The raw default: Param row, else Postfix's (computed on the host where it is)."""
        row = self.params.get(name)
        if row is not None and name not in _COMPUTED_ROWS:
            return row.default
        builtin = builtin_defaults()
        if name in builtin.computed:
            if name not in self._computed:
                try:
                    self._computed[name] = computed_default(name, self._main_eval)
                except ParamError as err:
                    raise self._located(err) from None
            return self._computed[name]
        return builtin.values.get(name, row.default if row else None)

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
            raise self._located(err) from None

    # Expansion and typed access.
    def expand(self, text: str, owner: str | None = None) -> str:
        """Expand $name, ${name}, $(name) and the conditional forms in text."""
        try:
            return expand_macros(text, self.lookup_raw, owner)
        except ParamError as err:
            raise self._located(err) from None

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
        getters = {"int": self.get_int, "long": self.get_int, "time": self.get_time}
        getters |= {"bool": self.get_bool, "list": self.get_list}
        for name in self.params if names is None else names:
            row = self.params.get(name)
            getters.get(row.type if row else "str", self.get)(name)

    def _convert(self, name: str, parse: Callable[..., object], *args: object) -> object:
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
    def _where(self, name: str | None) -> str:
        """main.cf:LINE, or [master.cf:LINE: ]-o name=value, or '' for a default."""
        if name is None:
            return ""
        if name in self.overrides:
            option = f"-o {name}={self.overrides[name]}"
            origin = self._origins.get(name)
            return f"{origin}: {option}" if origin else option
        entry = self.entries.get(name)
        if entry is not None and entry.lineno:
            return f"{self.filename}:{entry.lineno}"
        return ""

    def _located(self, err: ParamError) -> ConfigError:
        """err with the place that defines its parameter in front, when there is one."""
        return self._error(err.owner, str(err)) if err.owner else err

    def _error(self, name: str | None, what: str) -> ConfigError:
        where = self._where(name)
        return ConfigError(f"{where}: {what}" if where else what)


# Postfix's built-in defaults ---------------------------------------------------------


@dataclass
class BuiltinDefaults:
    """Postfix 3.7.11's parameter table, read from postfix_defaults.txt.

    values: name -> raw default, for every built-in and legacy name.
    raw: names never $-expanded; readonly: main.cf assignments ignored;
    legacy: known but not listed by `postconf -d`; computed: the value
    depends on the host (computed_default() gives it).
    service: (programs, suffix, default) rows: a master.cf service whose
    command is one of the programs has the parameter SERVICE+suffix.
    """

    values: dict[str, str]
    raw: frozenset[str]
    readonly: frozenset[str]
    legacy: frozenset[str]
    computed: frozenset[str]
    service: tuple[tuple[frozenset[str], str, str], ...]

    def service_parameters(self, services: Iterable[tuple[str, str]]) -> dict[str, str]:
        """name -> default for (service name, command) pairs from master.cf."""
        out: dict[str, str] = {}
        for service, command in services:
            for programs, suffix, default in self.service:
                if command in programs and service + suffix not in self.values:
                    out.setdefault(service + suffix, default)
        return out


_BUILTIN: BuiltinDefaults | None = None


def builtin_defaults() -> BuiltinDefaults:
    """The packaged table, parsed on first use; ConfigError if it is missing."""
    global _BUILTIN
    if _BUILTIN is None:
        try:
            with open(DEFAULTS_FILE, encoding="utf-8") as fp:
                _BUILTIN = _parse_defaults(fp.read())
        except OSError as err:
            raise ConfigError(
                f"open {DEFAULTS_FILE}: {err.strerror} (reinstall minipostfix)"
            ) from None
    return _BUILTIN


def _parse_defaults(text: str) -> BuiltinDefaults:
    values: dict[str, str] = {}
    flags: dict[str, set[str]] = {
        "raw": set(),
        "readonly": set(),
        "legacy": set(),
        "computed": set(),
    }
    service: list[tuple[frozenset[str], str, str]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        words = []
        while line.startswith("%"):
            word, _, line = line.partition(" ")
            words.append(word[1:])
        left, _, value = line.partition(" =")
        value = value[1:] if value.startswith(" ") else value
        if words and words[0] == "service":
            programs, _, suffix = left.partition(":")
            service.append((frozenset(programs.split(",")), suffix.strip(), value))
            continue
        values[left] = value
        for word in words:
            flags[word].add(left)
    return BuiltinDefaults(
        values,
        frozenset(flags["raw"]),
        frozenset(flags["readonly"]),
        frozenset(flags["legacy"]),
        frozenset(flags["computed"]),
        tuple(service),
    )


# Defaults computed on the host (postconf_builtin.c, mynetworks.c) ------------------


def computed_default(name: str, main_eval: Callable[[str], str | None]) -> str | None:
    """myhostname, mydomain, mynetworks, process_id, process_name as Postfix computes them.

    main_eval(name) is the main.cf value of name expanded with main.cf
    names only (mail_conf_lookup_eval), or None when main.cf lacks it.
    """
    if name == "myhostname":
        host = os.uname().nodename
        if "." not in host:
            domain = main_eval("mydomain")
            host += "." + ("localdomain" if domain is None else domain)
        return host
    if name == "mydomain":
        host = main_eval("myhostname")
        if host is None:
            host = computed_default("myhostname", main_eval) or ""
        return host.split(".", 1)[1] if "." in host else "localdomain"
    if name == "mynetworks":
        return _mynetworks(main_eval)
    if name == "process_id":
        return str(os.getpid())
    if name == "process_name":
        return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return None


_IFF_UP, _IFF_LOOPBACK = 0x1, 0x8
_CLASS_PREFIX = ((128, 8), (192, 16), (224, 24), (240, 4))  # IN_CLASSA..D


def _mynetworks(main_eval: Callable[[str], str | None]) -> str:
    """mynetworks(): the networks of this host's interfaces, per mynetworks_style."""
    import socket

    style = main_eval("mynetworks_style")
    if style is None:
        try:
            level = compat_level(main_eval("compatibility_level") or "0")
        except ValueError as err:
            raise ParamError(str(err), "compatibility_level") from None
        style = "subnet" if level < compat_level("2") else "host"
    style = style.strip().lower()
    if style not in ("class", "subnet", "host"):
        raise ParamError(
            f'unknown mynetworks mask style value "{style}" (use host, subnet or class)',
            "mynetworks_style",
        )
    words = [w.lower() for w in split_list(main_eval("inet_protocols") or "all")]
    families = []
    if {"all", "ipv4"} & set(words):
        families.append(socket.AF_INET)
    if {"all", "ipv6"} & set(words) and socket.has_ipv6:
        families.append(socket.AF_INET6)
    local = [a for a in _interface_addresses() if a[0] in families]
    chosen = _chosen_interfaces(local, main_eval("inet_interfaces") or "all", families)
    networks = []
    for family, addr, mask in sorted(set(chosen)):
        bits = len(addr) * 8
        prefix = bin(int.from_bytes(mask, "big")).count("1")
        if style == "host":
            prefix = bits
        elif style == "class" and family == socket.AF_INET:
            prefix = next((p for top, p in _CLASS_PREFIX if addr[0] < top), 0)
            if not prefix:
                raise ParamError(
                    f"unknown address class: {socket.inet_ntop(family, addr)}", "mynetworks_style"
                )
        net = int.from_bytes(addr, "big") & ~((1 << (bits - prefix)) - 1)
        text = socket.inet_ntop(family, net.to_bytes(len(addr), "big"))
        networks.append(f"{text}/{prefix}" if family == socket.AF_INET else f"[{text}]/{prefix}")
    return " ".join(networks)


def _chosen_interfaces(
    local: list[tuple[int, bytes, bytes, bool]], setting: str, families: list[int]
) -> list[tuple[int, bytes, bytes]]:
    """own_inet_addr_list(): inet_interfaces resolved to (family, address, netmask)."""
    import socket

    chosen: list[tuple[int, bytes, bytes]] = []
    for word in split_list(setting):
        if word.lower() == "all":
            chosen += [(f, a, m) for f, a, m, _ in local]
            continue
        if word.lower() == "loopback-only":
            chosen += [(f, a, m) for f, a, m, loop in local if loop]
            continue
        host = word[1:-1] if word.startswith("[") and word.endswith("]") else word
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise ParamError(f"bad address {word}: {err}", "inet_interfaces") from None
        for family, *_, sockaddr in infos:
            if family not in families:
                continue
            packed = socket.inet_pton(family, str(sockaddr[0]).split("%")[0])
            match = [(f, a, m) for f, a, m, _ in local if (f, a) == (family, packed)]
            if not match:
                raise ParamError(f"no local interface found for {sockaddr[0]}", "inet_interfaces")
            chosen += match[:1]
    return chosen


def _interface_addresses() -> list[tuple[int, bytes, bytes, bool]]:
    """(family, address, netmask, is_loopback) of each up interface (getifaddrs(3))."""
    import ctypes
    import socket

    class Sockaddr(ctypes.Structure):
        _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 26)]

    class Ifaddrs(ctypes.Structure):
        pass

    Ifaddrs._fields_ = [
        ("next", ctypes.POINTER(Ifaddrs)),
        ("name", ctypes.c_char_p),
        ("flags", ctypes.c_uint),
        ("addr", ctypes.POINTER(Sockaddr)),
        ("netmask", ctypes.POINTER(Sockaddr)),
        ("ifu", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
    ]
    libc = ctypes.CDLL(None, use_errno=True)
    head = ctypes.POINTER(Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise ConfigError(f"getifaddrs: {os.strerror(ctypes.get_errno())}")
    where = {socket.AF_INET: slice(2, 6), socket.AF_INET6: slice(6, 22)}
    out = []
    try:
        node = head
        while node:
            ifa = node.contents
            node = ifa.next
            if not ifa.flags & _IFF_UP or not ifa.addr or not ifa.netmask:
                continue
            family = ifa.addr.contents.family
            if family not in where:
                continue
            addr = bytes(ifa.addr.contents.data[where[family]])
            mask = bytes(ifa.netmask.contents.data[where[family]])
            if any(addr):
                out.append((family, addr, mask, bool(ifa.flags & _IFF_LOOPBACK)))
    finally:
        libc.freeifaddrs(head)
    return out
