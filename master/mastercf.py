"""master.cf: service table text -> ServiceEntry records. The sole master.cf parser.

SYNOPSIS
    from master.mastercf import ServiceEntry, parse_master_cf, read_master_cf

    entries = read_master_cf(path, config, port_lookup, warn=log.msg_warn)
    entry.identity          # (internal name, type): what reload compares
    entry.internal_name     # "private/tlsmgr", "[127.0.0.1]:25", "25"
    entry.socket_path       # "private/tlsmgr" (unix, fifo, pass, unix-dgram)
    entry.inet_address      # (host or "", port) for inet
    entry.overrides         # [(name, value), ...] from -o among the daemon options
    entry.params(config)    # Config with this service's -o overrides applied
    entry.fields            # the eight fields as written
    entry.raw_args          # the arguments as written, braces kept
    master_lines(text, filename, warn) -> [MasterLine]   # syntax layer only
    master_line(text) -> MasterLine  # one entry's text; FieldError names a field
    service_disabled(patterns, name, type) -> bool        # master_service_disable
    split_args(text, where) # blanks separate, "{ ... }" groups (braces removed)
    split_words(text)       # the same with the braces kept
    check_fields(fields)    # the checks of fields 2 to 7 (FieldError)
    daemon_overrides(args)  # the -o name=value pairs before the first non-option

DESCRIPTION
    One logical line per service, with main.cf's rules for comments and
    continuation lines; eight fields: service type private unpriv chroot
    wakeup maxproc command, then the command's arguments.

    "-" selects the default: private y, unpriv y, chroot n when
    compatibility_level >= 1 (y below it, with a warning), wakeup 0,
    maxproc $default_process_limit.  Booleans are y or n.  wakeup is a
    number of seconds, "N?" meaning "only after the service was used";
    maxproc 0 means no limit.  Types: inet, unix, unix-dgram, fifo, pass.

    An inet service is named [host:]port; the host may be in brackets and
    must be for an IPv6 address written with its port; a port name goes
    through port_lookup (e.g. socket.getservbyname).  The internal name is
    "[host]:port" or "port" with a numeric port.  An inet service must say
    n in the private field.  Other types live in private/NAME or
    public/NAME below queue_directory.

    In the arguments, "{ text }" is one argument, braces and the blanks
    next to them removed.  Among the daemon options (up to the first
    argument that does not start with "-", or "--"), "-o name=value",
    "-oname=value" and "-o { name = value }" override main.cf for this
    service.  A later entry with the same identity replaces the earlier
    one, with a warning.

    master_service_disable (main.cf) switches services off as Postfix's
    master does: parse_master_cf() leaves out every entry it disables,
    so the master neither opens its listeners nor starts it, and a
    reload that disables a running service stops it like a removed one.
    The value is a list of patterns, separated by blanks or commas, each
    "type" (every service of that type: inet, unix, unix-dgram, fifo,
    pass) or "name/type" with the name as written in the first field
    (smtp/inet, 127.0.0.1:2525/inet); "!pattern" excludes, the first
    pattern that matches decides, case does not matter.  The form of
    Postfix 2.6 to 2.10, "name.type", still works: a pattern without "/"
    has its last "." read as "/" (so ".inet" means the empty name and
    matches nothing; write "inet").  No wildcards, files or tables.  A
    disabled entry is still checked like any other, so that a mistake in
    it shows now rather than when it is enabled again.

    No sockets, no clock, no third-party imports (port names are resolved
    by the caller through `port_lookup`).

DIAGNOSTICS
    ConfigError naming the line (as data too: filename, lineno) and the
    field at fault, e.g.
        master.cf:12: field "maxproc": bad value: "x" (expected a number or -)
        master.cf:12: missing "command" field
    Warnings (duplicate entries, backwards-compatible chroot) go to `warn`.

BUGS
    The master takes "10x" in a number field as 10 (atoi); this parser,
    like postconf, rejects it.

SEE ALSO
    master(5), postconf(5) master_service_disable, src/master/master_ent.c,
    src/global/match_service.c, src/postconf/postconf_master.c (Postfix)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from master.config import Config, Warn, logical_lines, read_config_text, split_nameval
from master.errors import ConfigError
from master.macro import CHARS_SPACE, compat_level
from master.proto import TRANSPORTS

MASTER_CF = "master.cf"

FIELDS = ("service", "type", "private", "unpriv", "chroot", "wakeup", "maxproc", "command")
ARGUMENTS = "arguments"


@dataclass
class ServiceEntry:
    """One master.cf service line, defaults resolved."""

    name: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int
    wakeup_conditional: bool
    maxproc: int
    command: str
    args: list[str] = field(default_factory=list)
    lineno: int = 0
    filename: str = MASTER_CF
    fields: tuple[str, ...] = ()  # the eight fields as written, for minipostconf -M
    inet_host: str = ""
    inet_port: str = ""
    raw_args: tuple[str, ...] = ()  # the arguments as written, braces kept

    @property
    def internal_name(self) -> str:
        if self.type == "inet":
            return f"[{self.inet_host}]:{self.inet_port}" if self.inet_host else self.inet_port
        return f"{'private' if self.private else 'public'}/{self.name}"

    @property
    def identity(self) -> tuple[str, str]:
        return (self.internal_name, self.type)

    @property
    def socket_path(self) -> str:
        """Path relative to queue_directory; '' for inet services."""
        return "" if self.type == "inet" else self.internal_name

    @property
    def inet_address(self) -> tuple[str, str]:
        return (self.inet_host, self.inet_port)

    @property
    def overrides(self) -> list[tuple[str, str]]:
        return [pair for pair, _ in daemon_overrides(self.args) if isinstance(pair, tuple)]

    def params(self, config: Config) -> Config:
        """A view of config with this service's -o overrides applied."""
        return config.with_overrides(self.overrides, origin=f"{self.filename}:{self.lineno}")


def split_words(text: str) -> list[str]:
    """mystrtokq(): blank-separated tokens; blanks inside {} do not separate."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in CHARS_SPACE:
            i += 1
        if i == n:
            break
        start, level = i, 0
        while i < n and (level > 0 or text[i] not in CHARS_SPACE):
            if text[i] == "{":
                level += 1
            elif text[i] == "}" and level > 0:
                level -= 1
            i += 1
        out.append(text[start:i])
    return out


def _unbrace(token: str) -> str:
    """extpar(..., EXTPAR_FLAG_STRIP): "{ text }" -> "text"; ConfigError if unbalanced."""
    level = 0
    for j, ch in enumerate(token):
        level += {"{": 1, "}": -1}.get(ch, 0)
        if level == 0:
            if j != len(token) - 1:
                raise ConfigError(f'field "{ARGUMENTS}": syntax error after "}}" in "{token}"')
            return token[1:-1].strip(CHARS_SPACE)
    raise ConfigError(f'field "{ARGUMENTS}": missing "}}" in "{token}"')


def split_args(text: str) -> list[str]:
    """Split on blanks; "{ ... }" groups one argument (braces and edge blanks removed).

    Among the daemon options, "-o{ name = value }" becomes "-o", "name = value".
    """
    out: list[str] = []
    options, value_next = True, False
    for token in split_words(text):
        if value_next:
            value_next = False
        elif options and token.startswith("-") and token not in ("-", "--"):
            at = token.find("o", 1)
            if at > 0 and token[at + 1 : at + 2] == "{":
                out += [token[: at + 1], _unbrace(token[at + 1 :])]
                continue
            value_next = at == len(token) - 1
        else:
            options = False
        out.append(_unbrace(token) if token.startswith("{") else token)
    return out


def _nameval_or_error(value: str) -> tuple[str, str] | str:
    if not value:
        return "missing name=value after -o"
    try:
        return split_nameval(value)
    except ValueError as err:
        return str(err)


def daemon_overrides(args: list[str]) -> list[tuple[tuple[str, str] | str, str]]:
    """The -o values among the daemon options: ((name, value) or error text, as written)."""
    out: list[tuple[tuple[str, str] | str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            break
        where = arg.find("o", 1)
        if where > 0:
            value = arg[where + 1 :]
            if not value and i + 1 < len(args):
                i += 1
                value = args[i]
            out.append((_nameval_or_error(value), value))
        i += 1
    return out


class FieldError(ConfigError):
    """One of the eight fields is bad (`value`) or missing (`value` None).

    `field` is its index in FIELDS, so that minipostconf can word the
    problem as postconf does for a value on its command line.
    """

    def __init__(self, message: str, field: int, value: str | None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def _bool(value: str, default: bool, fname: str) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise FieldError(
        f'field "{fname}": bad value: "{value}" (expected y, n or -)', FIELDS.index(fname), value
    )


def _number(value: str, default: int, fname: str) -> tuple[int, bool]:
    if value == "-":
        return default, False
    digits = value[:-1] if fname == "wakeup" and value.endswith("?") else value
    if not digits.isdigit() or not digits.isascii():
        expected = "seconds, N? or -" if fname == "wakeup" else "a number or -"
        raise FieldError(
            f'field "{fname}": bad value: "{value}" (expected {expected})',
            FIELDS.index(fname),
            value,
        )
    return int(digits), digits != value


def _inet_name(name: str, port_lookup: Callable[[str], str | None] | None) -> tuple[str, str]:
    """host_port(): "[host]:port", "host:port" or "port" -> (host, numeric port)."""
    bad = f'field "service": bad value: "{name}"'
    if name.startswith("["):
        host, sep, rest = name[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{bad} (expected [host]:port)")
        port = rest[1:]
    elif ":" in name:
        host, _, port = name.rpartition(":")
    else:
        host, port = "", name
    if not port:
        raise ConfigError(f"{bad} (missing port)")
    if port.isdigit() and port.isascii():
        if int(port) > 65535:
            raise ConfigError(f"{bad} (port number must be less than 65536)")
        return host, str(int(port))
    resolved = port_lookup(port) if port_lookup else None
    if not resolved:
        raise ConfigError(
            f'{bad} (unknown port name "{port}": use a number or a name in /etc/services)'
        )
    return host, resolved


def _chroot_default(config: Config) -> bool:
    level = config.get("compatibility_level") or "0"
    try:
        return compat_level(level) < compat_level("1")
    except ValueError as err:
        raise ConfigError(f"parameter compatibility_level: {err}") from None


@dataclass(frozen=True)
class MasterLine:
    """One master.cf entry after the syntax checks: eight fields and raw arguments."""

    lineno: int
    fields: tuple[str, ...]  # service type private unpriv chroot wakeup maxproc command
    raw_args: tuple[str, ...]  # as written, braces kept
    args: tuple[str, ...]  # braces removed: what the command receives


def master_lines(
    text: str, filename: str = MASTER_CF, warn: Warn | None = None
) -> list[MasterLine]:
    """Split master.cf text into entries and check each field's syntax (postconf's checks).

    ConfigError names the line and the field at fault; nothing here
    depends on main.cf.
    """
    out = []
    for lineno, line in logical_lines(text, filename, warn):
        try:
            out.append(master_line(line, lineno))
        except ConfigError as err:
            raise err.at(filename, lineno) from None
    return out


def check_fields(fields: Sequence[str]) -> None:
    """The syntax of the type, private, unpriv, chroot, wakeup and maxproc fields.

    FieldError for the first bad one, in that order (postconf's).
    """
    if fields[1] not in TRANSPORTS:
        raise FieldError(
            f'field "type": bad value: "{fields[1]}" (expected {", ".join(TRANSPORTS)})',
            1,
            fields[1],
        )
    for index in (2, 3, 4):
        _bool(fields[index], True, FIELDS[index])
    _number(fields[5], 0, "wakeup")
    _number(fields[6], 0, "maxproc")


def master_line(line: str, lineno: int = 0) -> MasterLine:
    """One entry's text (its lines joined) -> MasterLine; ConfigError (FieldError) if bad."""
    words = line.split(None, len(FIELDS) - 1)
    if len(words) < len(FIELDS):
        raise FieldError(f'missing "{FIELDS[len(words)]}" field', len(words), None)
    command, *more = words[7].split(None, 1)
    rest = more[0] if more else ""
    check_fields(words)
    args = split_args(rest)
    for pair, value in daemon_overrides(args):
        if isinstance(pair, str):
            raise ConfigError(f'field "{ARGUMENTS}": -o "{value}": {pair} (write -o name=value)')
    return MasterLine(lineno, (*words[:7], command), tuple(split_words(rest)), tuple(args))


def _entry(
    line: MasterLine,
    config: Config,
    filename: str,
    port_lookup: Callable[[str], str | None] | None,
    warn: Warn | None,
) -> ServiceEntry:
    name, stype, private_f, unpriv_f, chroot_f, wakeup_f, maxproc_f, command = line.fields
    private = _bool(private_f, True, "private")
    if stype == "inet" and private:
        raise ConfigError('field "private": inet service cannot be private (write n)')
    chroot_default = _chroot_default(config) if chroot_f == "-" else False
    if chroot_default and warn:
        warn(
            f"{filename}:{line.lineno}: service {name}/{stype}: using backwards-compatible "
            "default setting chroot=y (set compatibility_level in main.cf, or write y or n)"
        )
    wakeup, conditional = _number(wakeup_f, 0, "wakeup")
    maxproc_default = 0
    if maxproc_f == "-":
        try:
            maxproc_default = config.get_int("default_process_limit")
        except ConfigError as err:
            raise ConfigError(f'field "maxproc": {err}') from None
    maxproc, _ = _number(maxproc_f, maxproc_default, "maxproc")
    inet_host, inet_port = _inet_name(name, port_lookup) if stype == "inet" else ("", "")
    return ServiceEntry(
        name=name,
        type=stype,
        private=private,
        unpriv=_bool(unpriv_f, True, "unpriv"),
        chroot=_bool(chroot_f, chroot_default, "chroot"),
        wakeup=wakeup,
        wakeup_conditional=conditional and wakeup > 0,
        maxproc=maxproc,
        command=command,
        args=list(line.args),
        lineno=line.lineno,
        filename=filename,
        fields=line.fields,
        inet_host=inet_host,
        inet_port=inet_port,
        raw_args=line.raw_args,
    )


def _pattern(text: str) -> str:
    """match_service_compat(): "name.type" (Postfix 2.6 to 2.10) is "name/type"."""
    if "/" not in text and "." in text:
        head, _, tail = text.rpartition(".")
        return f"{head}/{tail}"
    return text


def service_disabled(patterns: list[str], name: str, stype: str) -> bool:
    """Whether master_service_disable's patterns switch off service name/type.

    match_service_match(): the first pattern that matches decides, "!"
    inverts, a pattern without "/" is a service type; case is ignored.
    """
    name_type = f"{name}/{stype}".lower()
    for raw in patterns:
        pattern = _pattern(raw).lower()
        disable = True
        while pattern.startswith("!"):
            pattern, disable = pattern[1:], not disable
        if pattern == (name_type if "/" in pattern else stype.lower()):
            return disable
    return False


def parse_master_cf(
    text: str,
    config: Config,
    filename: str = MASTER_CF,
    port_lookup: Callable[[str], str | None] | None = None,
    warn: Warn | None = None,
) -> list[ServiceEntry]:
    """Parse master.cf text; ConfigError names the line and the field at fault.

    Entries that master_service_disable switches off are checked, then
    left out.
    """
    entries: dict[tuple[str, str], ServiceEntry] = {}
    disabled = config.get_list("master_service_disable")
    for line in master_lines(text, filename, warn):
        try:
            entry = _entry(line, config, filename, port_lookup, warn)
        except ConfigError as err:
            raise err.at(filename, line.lineno) from None
        if service_disabled(disabled, entry.name, entry.type):
            continue
        old = entries.pop(entry.identity, None)
        if old is not None and warn:
            warn(
                f'{filename}:{line.lineno}: duplicate master.cf entry for service "{entry.name}/'
                f'{entry.type}" ({entry.internal_name}) -- using the last entry (the first '
                f"is at line {old.lineno})"
            )
        entries[entry.identity] = entry
    return list(entries.values())


def read_master_cf(
    path: str,
    config: Config,
    port_lookup: Callable[[str], str | None] | None = None,
    warn: Warn | None = None,
) -> list[ServiceEntry]:
    """Read and parse a master.cf file; ConfigError if missing or malformed."""
    try:
        text = read_config_text(path)
    except OSError as err:
        raise ConfigError(f"open {path}: {err.strerror}", filename=path) from None
    return parse_master_cf(text, config, os.path.basename(path), port_lookup, warn)
