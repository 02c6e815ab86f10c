"""minipostconf: show main.cf parameters, edit main.cf, show master.cf (Postfix's postconf(1)).

SYNOPSIS
    minipostconf [-c config_dir] [-d | -n] [-f] [-h | -H] [-x] [-o name=value] [name ...]
    minipostconf [-c config_dir] -e name=value ...      (or just name=value ...)
    minipostconf [-c config_dir] -X name ...            (remove)
    minipostconf [-c config_dir] -# name ...            (comment out)
    minipostconf [-c config_dir] -M [-fx] [service[/type] ...]

    from master.postconf import main, edit_main_cf
    edit_main_cf("/etc/minipostfix/main.cf", [("queue_directory", "/var/spool/x")])

DESCRIPTION
    The directory is -c DIR, else $MAIL_CONFIG, else /etc/postfix.

    Without options, every known parameter with its effective raw value
    (main.cf's, else the default).  NAME...: those parameters; an unknown
    name gives a warning and the exit status stays 0.  -d: the defaults,
    without reading main.cf.  -n: the parameters main.cf sets, plus
    config_directory when the directory was given with -c or MAIL_CONFIG.
    -x expands $name references; -h prints values only, -H names only;
    -f folds long lines; -o name=value overrides main.cf for this run.
    Output is sorted by name and formatted as postconf's: "name = value"
    with white space runs shown as one blank ("name =" when empty).

    Known names: Postfix 3.7.11's built-in parameters (the packaged
    postfix_defaults.txt), the service-defined names of master.cf's
    delivery services (smtp_delivery_slot_cost for a service "smtp" that
    runs smtp, ...), every Param row of master/config.py and of the
    daemons found through the entry point group `minipostfix.params`, and
    user-defined names that main.cf or master.cf refers to as $name (or
    lists in smtpd_restriction_classes).  Other main.cf names are
    "unused": -n hides them and a warning names each.

    -e (also assumed when the first argument contains "="): set each
    name=value in main.cf.  An existing logical line is replaced in place
    by "name = value" and its continuation lines dropped; comments, blank
    lines and order are kept; new names are appended in sorted order.
    The new file is written beside the old one and renamed over it, under
    an exclusive lock.  -X removes the named lines, -# comments them out.

    -M prints master.cf entries in postconf's columns; arguments are
    normalised ("-o { a = b }" as "-o a=b", "{ x y }" as "{x y}").

DIAGNOSTICS
    Warnings and errors on stderr as "minipostconf: warning: ..." and
    "minipostconf: fatal: ...", the latter with exit status 1.  Problems
    in a file name it and the line: "minipostconf: fatal: main.cf:7:
    parameter a: recursive reference: a -> b -> a".  Never a traceback.

BUGS
    Not supported: -a -A -b -C -F -l -m -P -t -T, and editing master.cf
    (-Me, -MX, -M#).  Legacy DBMS parameters ("ldap:name" makes
    name_server_host known) are not recognised: such settings are
    reported as unused.  Deliberate differences from postconf are listed
    in docs/configuration.md.

SEE ALSO
    postconf(1), src/postconf/*.c (Postfix), master/config.py, master/mastercf.py
"""

from __future__ import annotations

import functools
import getopt
import os
import sys
from collections.abc import Callable, Iterable

from master.config import (
    MAIN_CF,
    MASTER_PARAMS,
    BuiltinDefaults,
    ConfigError,
    Entry,
    MacroError,
    Param,
    ParamError,
    builtin_defaults,
    computed_default,
    config_directory,
    expand_macros,
    parse_main_cf,
    scan_macros,
    split_nameval,
)
from master.mastercf import MasterLine, daemon_overrides, master_lines

PROGRAM = "minipostconf"
MASTER_CF = "master.cf"
PARAMS_GROUP = "minipostfix.params"
LINE_LIMIT = 80
INDENT = "    "
SEPARATORS = " \t\r\n"
COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)  # -M: where each of the eight fields starts
OPTIONS = "aAbc:C:deEfFhHlmMno:pPqtT:vxX#"
UNSUPPORTED = "aAbCEFlmPqtT"
ORDER = "defhHMnxX#"  # how postconf orders the two letters of "specify one of -A -B"
EXCLUSIVE = ("dn", "hH", "eX#dfhHnx")
USAGE = (
    "usage: minipostconf [-c config_dir] [-d | -n] [-fhHvx] [-o name=value] [name ...]"
    " | [-e] name=value ... | -X name ... | -# name ... | -M [-fx] [service[/type] ...]"
)


def warn(text: str) -> None:
    sys.stderr.write(f"{PROGRAM}: warning: {text}\n")


# Command line ---------------------------------------------------------------------


class Options:
    """The parsed command line."""

    def __init__(self, argv: list[str]) -> None:
        try:
            pairs, self.names = getopt.getopt(argv, OPTIONS)
        except getopt.GetoptError as err:
            raise ConfigError(f"{err.msg} ({USAGE})") from None
        self.flags = ""
        self.cli_dir: str | None = None
        self.overrides: list[tuple[str, str]] = []
        for flag, value in pairs:
            letter = flag[1]
            if letter in UNSUPPORTED:
                raise ConfigError(f"option -{letter} is not supported by {PROGRAM} ({USAGE})")
            if letter == "c":
                self.cli_dir = value
            elif letter == "o":
                parsed = split_nameval(value)
                if isinstance(parsed, str):
                    raise ConfigError(f"invalid parameter override: {value}: {parsed}")
                self.overrides.append(parsed)
            elif letter not in "pv":
                self.flags += letter
        if self.names and "=" in self.names[0]:
            self.flags += "e"
        self._check_combinations()
        self.explicit_dir = self.cli_dir is not None or "MAIL_CONFIG" in os.environ
        self.config_dir = config_directory(self.cli_dir)

    def __contains__(self, letter: str) -> bool:
        return letter in self.flags

    def _check_combinations(self) -> None:
        for group in EXCLUSIVE:
            used = sorted({f for f in self.flags if f in group}, key=ORDER.index)
            edit = group[0] == "e"
            if len(used) > 1 and (not edit or set(used) & set("eX#")):
                raise ConfigError(f"specify one of -{used[0]} -{used[1]}")
        if "M" in self.flags:
            for letter in "dnhHeX#":
                if letter in self.flags:
                    what = "editing master.cf" if letter in "eX#" else f"option -{letter}"
                    if letter in "eX#":
                        raise ConfigError(
                            f"{what} (-M with -{letter}) is not supported; edit master.cf "
                            "with a text editor"
                        )
                    raise ConfigError(f"with option -M, do not specify -{letter}")
        if set(self.flags) & set("eX#") and not self.names:
            raise ConfigError(
                "-e requires name=value argument" if "e" in self else "missing parameter name"
            )


# The parameter name space -------------------------------------------------------------


@functools.cache
def daemon_params() -> tuple[Param, ...]:
    """Param rows of every daemon registered in the `minipostfix.params` entry point group."""
    from importlib.metadata import entry_points

    rows: list[Param] = []
    for point in entry_points(group=PARAMS_GROUP):
        try:
            rows += [row for row in point.load() if isinstance(row, Param)]
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not stop postconf
            warn(f"entry point {point.name} in {PARAMS_GROUP}: {err}")
    return tuple(rows)


class Namespace:
    """postconf's parameter table: built-in, service-defined, our rows, valid user names."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.config_dir = opts.config_dir
        self.defaults_only = "d" in opts
        self.builtin: BuiltinDefaults = builtin_defaults()
        self.rows = {row.name: row for row in (*MASTER_PARAMS, *daemon_params())}
        self.entries: dict[str, Entry] = {}
        if opts.explicit_dir:
            self.entries["config_directory"] = Entry(opts.config_dir, 0)
        self.values = {name: entry.value for name, entry in self.entries.items()}
        self.masters: list[MasterLine] = []
        self.local: list[dict[str, str]] = []
        self.local_valid: list[set[str]] = []
        self.service: dict[str, str] = {}
        self.user: set[str] = set()
        self.relabelled: set[str] = set()
        self._computed: dict[str, str | None] = {}

    def read_main(self) -> None:
        """main.cf, then the -o overrides of the command line."""
        path = os.path.join(self.config_dir, MAIN_CF)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fp:
                text = fp.read()
        except OSError as err:
            raise ConfigError(f"open {path}: {err.strerror}") from None
        for name, entry in parse_main_cf(text, MAIN_CF, warn).items():
            old = self.entries.pop(name, None)
            if old is not None and old.value != entry.value:
                warn(f"{MAIN_CF}:{entry.lineno}: overriding earlier entry: {name}={old.value}")
            self.entries[name] = entry
        for name, value in self.opts.overrides:
            self.entries.pop(name, None)
            self.entries[name] = Entry(value, 0)
        self.values = {name: entry.value for name, entry in self.entries.items()}

    def read_master(self, required: bool) -> None:
        path = os.path.join(self.config_dir, MASTER_CF)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fp:
                text = fp.read()
        except OSError as err:
            if required:
                raise ConfigError(f"open {path}: {err.strerror}") from None
            warn(f"open {path}: {err.strerror}")
            text = ""
        self.masters = master_lines(text, MASTER_CF, warn)
        for line in self.masters:
            local = {}
            for pair, _ in daemon_overrides(list(line.args)):
                if isinstance(pair, tuple):
                    local[pair[0]] = pair[1]
            self.local.append(local)
            self.local_valid.append(set())
        pairs = [(line.fields[0], line.fields[7]) for line in self.masters]
        self.service = self.builtin.service_parameters(pairs)

    # What is known and what values are.
    def known(self, name: str) -> bool:
        return (
            name in self.builtin.values
            or name in self.rows
            or name in self.service
            or name in self.user
        )

    def listed(self) -> list[str]:
        """The names a full listing shows (-d, -n or neither)."""
        names = {n for n in self.builtin.values if n not in self.builtin.legacy}
        names |= set(self.rows) | set(self.service)
        if not self.defaults_only:
            names |= self.user | self.relabelled
        if "n" in self.opts:
            names = {n for n in self.values if self.known(n)}
        return sorted(names)

    def default(self, name: str) -> str | None:
        if name == "process_name":
            return PROGRAM
        if name in self.builtin.computed:
            if name not in self._computed:
                try:
                    self._computed[name] = computed_default(name, self.main_eval)
                except ParamError as err:
                    raise self.failure(err) from None
            return self._computed[name]
        if name in self.builtin.values:
            return self.builtin.values[name]
        if name in self.rows:
            return self.rows[name].default
        return self.service.get(name)

    def value(self, name: str) -> str | None:
        if not self.defaults_only and name in self.values:
            return self.values[name]
        return self.default(name)

    def main_eval(self, name: str) -> str | None:
        """mail_conf_lookup_eval(): main.cf names only (how Postfix computes myhostname)."""
        raw = None if self.defaults_only else self.values.get(name)
        if raw is None:
            return None
        return self.expand(raw, name, self.values.get)

    def expand(self, text: str, owner: str | None, lookup: Callable[[str], str | None]) -> str:
        try:
            return expand_macros(text, lookup, owner)
        except MacroError as err:
            raise self.failure(err) from None

    def lookup(self, name: str) -> str | None:
        """pcf_lookup_parameter_value(): main.cf (any name), else a known name's default."""
        if not self.defaults_only and name in self.values:
            return self.values[name]
        return self.default(name) if self.known(name) else None

    def expand_known(self, text: str, owner: str | None) -> str:
        return self.expand(text, owner, self.lookup)

    def failure(self, err: ParamError, scope: int | None = None) -> ConfigError:
        what = f"parameter {err.owner}: {err.what}" if err.owner else err.what
        where = self.where(err.owner, scope)
        return ConfigError(f"{where}: {what}" if where else what)

    def where(self, name: str | None, scope: int | None = None) -> str:
        if scope is not None:
            line = self.masters[scope]
            value = self.local[scope].get(name or "")
            option = f": -o {name}={value}" if value is not None else ""
            return f"{MASTER_CF}:{line.lineno}{option}"
        entry = self.entries.get(name or "")
        if entry is not None and entry.lineno:
            return f"{MAIN_CF}:{entry.lineno}"
        if entry is not None and name in dict(self.opts.overrides):
            return f"-o {name}={entry.value}"
        return ""

    # User-defined names (postconf_user.c).
    def register_user_parameters(self) -> None:
        self.rest_classes: set[str] = set()
        for scope in range(len(self.local)):
            self._scan_namespace(scope)
        for name in sorted({*self.builtin.values, *self.rows, *self.service}):
            if name in self.builtin.raw or name in self.values or name in self.builtin.legacy:
                continue
            self._scan(self.default(name) or "", None, name, default=True)
        self._scan_namespace(None)

    def _scan_namespace(self, scope: int | None) -> None:
        values = self.values if scope is None else self.local[scope]
        classes = values.get("smtpd_restriction_classes")
        if classes is not None:
            lookup = values.get
            if scope is None:
                classes = self.main_eval("smtpd_restriction_classes") or ""
            else:
                classes = self._expand_local(classes, "smtpd_restriction_classes", scope, lookup)
            for name in classes.replace(",", " ").split():
                if scope is None:
                    self.rest_classes.add(name)
                self._flag(name, scope, "smtpd_restriction_classes")
        for name, value in list(values.items()):
            if scope is not None and name in self.rest_classes:
                self.local_valid[scope].add(name)
            if self.known(name):
                if name in self.builtin.readonly:
                    where = self.where(name, scope) or (MAIN_CF if scope is None else MASTER_CF)
                    warn(f"{where}: read-only parameter assignment: {name}={value}")
                    del values[name]
                    continue
                if name in self.builtin.legacy:
                    self.relabelled.add(name)
                if name in self.builtin.raw:
                    continue
            self._scan(value, scope, name)
            if self._builtin(name):
                # Postfix expands these (to find legacy "ldap:name" tables): errors are fatal.
                self._expand_scoped(value, name, scope)

    def _builtin(self, name: str) -> bool:
        legacy = name in self.builtin.legacy
        return (
            (name in self.builtin.values and not legacy)
            or name in self.rows
            or name in self.service
        )

    def _expand_scoped(self, text: str, owner: str | None, scope: int | None) -> str:
        """pcf_expand_parameter_value(): master.cf -o names first, then main.cf, then defaults."""
        if scope is None:
            return self.expand(text, owner, self.lookup)
        local = {**self.local[scope], "service_name": self.masters[scope].fields[0]}
        return self._expand_local(
            text, owner, scope, lambda n: local[n] if n in local else self.lookup(n)
        )

    def _expand_local(
        self, text: str, owner: str | None, scope: int, lookup: Callable[[str], str | None]
    ) -> str:
        try:
            return expand_macros(text, lookup, owner)
        except MacroError as err:
            raise self.failure(err, scope) from None

    def _scan(self, text: str, scope: int | None, owner: str, default: bool = False) -> None:
        try:
            names = _scan_default(text) if default else scan_macros(text, owner)
        except MacroError as err:
            raise self.failure(err, scope) from None
        for name in names:
            self._flag(name, scope, owner, default)

    def _flag(self, name: str, scope: int | None, owner: str, default: bool = False) -> None:
        supplied = False
        if scope is not None and name in self.local[scope]:
            supplied = True
            self.local_valid[scope].add(name)
        elif name in self.values:
            supplied = True
            if not self.known(name):
                self.user.add(name)
        if scope is None:
            for other, local in enumerate(self.local):
                if name in local:
                    supplied = True
                    self.local_valid[other].add(name)
        if not supplied and not self.known(name):
            where = self.where(owner, scope) or (MAIN_CF if scope is None else MASTER_CF)
            what = f"default of {owner}: " if default else ""
            warn(f"{where}: {what}undefined parameter: {name}")

    def flag_unused(self, main: bool = True) -> None:
        sys.stdout.flush()
        if main:
            for name, entry in self.entries.items():
                if name in self.values and not self.known(name):
                    where = f"{MAIN_CF}:{entry.lineno}" if entry.lineno else MAIN_CF
                    warn(f"{where}: unused parameter: {name}={entry.value}")
        for scope, local in enumerate(self.local):
            for name, value in local.items():
                if not self.known(name) and name not in self.local_valid[scope]:
                    where = f"{MASTER_CF}:{self.masters[scope].lineno}"
                    warn(f"{where}: unused parameter: {name}={value}")


@functools.lru_cache(maxsize=2048)
def _scan_default(text: str) -> tuple[str, ...]:
    """scan_macros() of a default value (the same few hundred texts on every run)."""
    return tuple(scan_macros(text))


# Output -----------------------------------------------------------------------------------


def print_line(text: str, fold: bool) -> str:
    """pcf_print_line(): white space runs become one blank; -f folds at 80 columns."""
    out: list[str] = []
    length = 0
    for word in _words(text):
        if length > 0:
            if not fold or length + len(word) < LINE_LIMIT:
                out.append(" ")
                length += 1
            else:
                out.append("\n" + INDENT)
                length = len(INDENT)
        out.append(word)
        length += len(word)
    return "".join(out) + "\n"


def _words(text: str) -> list[str]:
    words, current = [], []
    for ch in text:
        if ch in SEPARATORS:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def show_parameters(ns: Namespace, opts: Options) -> list[str]:
    out = []
    names = opts.names or ns.listed()
    for name in names:
        if not ns.known(name):
            warn(f"{name}: unknown parameter")
            continue
        value = ns.values.get(name) if "n" in opts else ns.value(name)
        if value is None:
            continue
        if "x" in opts and name not in ns.builtin.raw:
            value = ns.expand_known(value, name)
        text = name if "H" in opts else value if "h" in opts else f"{name} = {value}"
        out.append(print_line(text, "f" in opts))
    return out


def normalize_args(raw_args: Iterable[str]) -> list[str]:
    """pcf_normalize_daemon_args(): split -oname=value, unbrace -o { a = b } as a=b."""
    args = list(raw_args)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            break
        at = arg.find("o", 1)
        if at > 1:
            args[i : i + 1] = [arg[:at], "-" + arg[at:]]
            i += 1
            continue
        if at == 1:
            if len(arg) > 2:
                args[i : i + 1] = ["-o", arg[2:]]
            if i + 1 < len(args) and args[i + 1].startswith("{"):
                args[i + 1] = _display_nameval(_strip_braces(args[i + 1]))
            i += 1
        i += 1
    for j in range(i, len(args)):
        if args[j].startswith("{"):
            args[j] = _strip_braces(args[j])
    return args


def _strip_braces(token: str) -> str:
    inner = token[1:-1] if token.endswith("}") else token[1:]
    return inner.strip(SEPARATORS)


def _display_nameval(text: str) -> str:
    parsed = split_nameval(text)
    if isinstance(parsed, str):
        warn(f'{MASTER_CF}: {parsed}: "{text}"')
        return text
    return f"{parsed[0]}={parsed[1]}"


def format_master_entry(
    fields: Iterable[str], args: list[str], fold: bool, expand: Callable[[str], str] | None = None
) -> str:
    """pcf_print_master_entry(): the eight fields in postconf's columns, then the arguments."""
    line = ""
    for column, text in zip(COLUMNS, fields, strict=True):
        if line:
            line += " " * max(1, column - len(line))
        line += text
    out, length = [line], len(line)
    in_options = True
    i = 0
    while i < len(args):
        arg, value, parens = args[i], None, False
        width = len(arg)
        if in_options:
            if not arg.startswith("-") or arg == "--":
                in_options = False
            elif arg[1:2] == "o" and i + 1 < len(args):
                value = args[i + 1]
                if expand is not None and arg == "-o":
                    value = expand(value)
                length = LINE_LIMIT
                parens = any(ch in SEPARATORS for ch in value)
                width += len(value) + 3 + (2 if parens else 0)
        if not in_options:
            parens = any(ch in SEPARATORS for ch in arg)
        if length > len(INDENT):
            if not fold or length + 1 + width < LINE_LIMIT:
                out.append(" ")
                length += 1
            else:
                out.append("\n" + INDENT)
                length = len(INDENT)
        shown = "{" + arg + "}" if not in_options and parens else arg
        out.append(shown)
        length += len(shown)
        if value is not None:
            out.append(" " + ("{" + value + "}" if parens else value))
            i += 1
            length = LINE_LIMIT
        i += 1
    return "".join(out) + "\n"


def show_master(ns: Namespace, opts: Options) -> list[str]:
    patterns = []
    for text in opts.names:
        parts = text.split("/")
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise ConfigError("-M option requires service_name[/type]")
        patterns.append([text, parts, 0])
    out = []
    for scope, line in enumerate(ns.masters):
        matches = [p for p in patterns if _match(p[1], line.fields[0], line.fields[1])]
        for pattern in matches:
            pattern[2] += 1
        for _ in matches or ([None] if not patterns else []):
            expand = None
            if "x" in opts:
                expand = _local_expander(ns, scope)
            out.append(
                format_master_entry(line.fields, normalize_args(line.raw_args), "f" in opts, expand)
            )
    for text, _, count in patterns:
        if not count:
            warn(f'unmatched request: "{text}"')
    return out


def _match(pattern: list[str], name: str, stype: str) -> bool:
    return pattern[0] in ("*", name) and (len(pattern) < 2 or pattern[1] in ("*", stype))


def _local_expander(ns: Namespace, scope: int) -> Callable[[str], str]:
    return lambda text: ns._expand_scoped(text, None, scope)


# Editing main.cf (postconf_edit.c) ----------------------------------------------------------


def edit_main_cf(path: str, edits: list[tuple[str, str]]) -> None:
    """Set each (name, value) in main.cf at path, atomically (the -e engine).

    An existing logical line is replaced in place by "name = value" and
    its continuation lines are dropped; other lines, comments and order
    are kept; names not found are appended in sorted order.  An empty
    value is written "name = ".  Raises ConfigError for a bad name or
    value, or when the file cannot be read or replaced.
    """
    table: dict[str, str | None] = {}
    for name, value in edits:
        if not name or any(ch in SEPARATORS + "=#" for ch in name) or "\n" in value:
            raise ConfigError(
                f'bad setting "{name} = {value}" (one line, no blanks or = in the name)'
            )
        table[name] = value
    _rewrite_main_cf(path, table, "e")


def _rewrite_main_cf(path: str, table: dict[str, str | None], mode: str) -> None:
    """Copy main.cf with the named logical lines replaced (e), removed (X) or commented out (#)."""
    lines, mode_bits = _read_lines(path), _file_mode(path)
    found: dict[str, int] = {}
    out: list[str] = []
    interesting = False
    for lineno, line in enumerate(lines, 1):
        stripped = line.lstrip(" \t\r\n\v\f")
        if not stripped or stripped.startswith("#"):
            out.append(line)
        elif line[0] in " \t\r\n\v\f":
            if not interesting:
                out.append(line)
            elif mode == "#":
                out.append("#" + line)
        else:
            key = line[: _key_length(line)]
            interesting = key in table
            if not interesting:
                out.append(line)
                continue
            found[key] = found.get(key, 0) + 1
            if found[key] == 2:
                warn(f'{os.path.basename(path)}:{lineno}: multiple entries for "{key}"')
            if mode == "e":
                out.append(f"{key} = {table[key]}\n")
            elif mode == "#":
                out.append("#" + line)
    if mode == "e":
        out += [f"{key} = {table[key]}\n" for key in sorted(table) if key not in found]
    _replace_file(path, "".join(out), mode_bits)


def _key_length(line: str) -> int:
    for i, ch in enumerate(line):
        if ch in SEPARATORS + "=":
            return i
    return len(line)


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fp:
            text = fp.read()
    except OSError as err:
        raise ConfigError(f"open {path} for reading: {err.strerror}") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line + "\n" for line in lines]


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o644


def _replace_file(path: str, text: str, mode: int) -> None:
    """edit_file(): write path.tmp under an exclusive lock, then rename it over path."""
    import fcntl

    tmp = path + ".tmp"
    while True:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, mode)
        except OSError as err:
            raise ConfigError(f"open {tmp}: {err.strerror}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(tmp))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)  # Workaround: another minipostconf renamed it meanwhile; start over
    try:
        os.ftruncate(fd, 0)
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8", "surrogateescape"))
        os.fsync(fd)
        os.rename(tmp, path)
    except OSError as err:
        os.unlink(tmp)
        raise ConfigError(f"write {path}: {err.strerror}") from None
    finally:
        os.close(fd)


def _edit(opts: Options) -> None:
    mode = "e" if "e" in opts else "X" if "X" in opts else "#"
    table: dict[str, str | None] = {}
    for arg in opts.names:
        if "\n" in arg:
            raise ConfigError("-e, -X, or -# accepts no multi-line input")
        text = arg.lstrip(" \t\r\n\v\f")
        if text.startswith("#"):
            raise ConfigError("-e, -X, or -# accepts no comment input")
        if mode == "e":
            parsed = split_nameval(text)
            if isinstance(parsed, str):
                raise ConfigError(f'{parsed}: "{text}"')
            name, value = parsed
        else:
            if not text.strip():
                raise ConfigError("-X or -# requires non-blank parameter names")
            if "=" in text:
                raise ConfigError("-X or -# requires parameter names without value")
            name, value = text.strip(), None
        if name in table:
            warn(f"ignoring earlier request: '{name} = {table[name]}'")
            del table[name]
        table[name] = value
    _rewrite_main_cf(os.path.join(opts.config_dir, MAIN_CF), table, mode)


# Program ---------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    opts = Options(argv)
    if set(opts.flags) & set("eX#"):
        _edit(opts)
        return 0
    ns = Namespace(opts)
    if "M" in opts:
        ns.read_master(required=True)
        ns.read_main()
        ns.register_user_parameters()
        out = show_master(ns, opts)
        _write(out)
        ns.flag_unused(main=False)
        return 0
    if "d" not in opts:
        ns.read_main()
    ns.read_master(required=False)
    if "d" not in opts:
        ns.register_user_parameters()
    _write(show_parameters(ns, opts))
    if "d" not in opts:
        ns.flag_unused()
    return 0


def _write(lines: list[str]) -> None:
    sys.stdout.write("".join(lines))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Console script entry point: never a traceback for bad input."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            # main.cf bytes that are not UTF-8 go out as they came in, as postconf's do.
            stream.reconfigure(errors="surrogateescape")
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except ConfigError as err:
        sys.stdout.flush()
        sys.stderr.write(f"{PROGRAM}: fatal: {err}\n")
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
