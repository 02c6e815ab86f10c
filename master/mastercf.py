"""master.cf: service table text -> ServiceEntry records. The sole master.cf parser.

SYNOPSIS
    from master.mastercf import ServiceEntry, parse_master_cf, read_master_cf

    entries = read_master_cf(path, config)     # list[ServiceEntry], file order
    entry.identity          # (internal name, type): what reload compares
    entry.socket_path       # "private/tlsmgr" (unix, fifo, pass, unix-dgram)
    entry.inet_address      # (host or "", port) for inet
    entry.overrides         # [(name, value), ...] from -o in the arguments
    entry.params(config)    # Config with this service's -o overrides applied

DESCRIPTION
    Eight fields: service type private unpriv chroot wakeup maxproc
    command [args...].  "-" selects the default: private y, unpriv y,
    chroot n when compatibility_level >= 1 (y below it), wakeup 0,
    maxproc $default_process_limit.  wakeup "N?" is conditional.
    maxproc 0 means no limit.  An inet service must say n in the private
    field.  Logical lines, comments and continuations follow main.cf's
    rules.  In the arguments, "{ text }" is one argument with the braces
    and the blanks inside them removed; "-o name=value" and
    "-o { name = value }" override main.cf for this service.  A later
    entry with the same identity replaces an earlier one, with a warning.

    No sockets, no clock, no third-party imports (inet port names are
    resolved by the caller through `port_lookup`).

DIAGNOSTICS
    ConfigError `master.cf:LINE: field "NAME": bad value: "VALUE"` or
    `master.cf:LINE: missing "NAME" field`.

SEE ALSO
    master(5), src/master/master_ent.c (Postfix)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from master.config import Config, ConfigError, logical_lines
from master.proto import TRANSPORTS, split_nameval

FIELDS = ("service", "type", "private", "unpriv", "chroot", "wakeup", "maxproc", "command")


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
    filename: str = "master.cf"
    fields: tuple[str, ...] = ()  # the eight fields as written, for minipostconf -M
    inet_host: str = ""
    inet_port: str = ""

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
        out = []
        args = self.args
        for i, arg in enumerate(args):
            if arg == "-o" and i + 1 < len(args):
                try:
                    out.append(split_nameval(args[i + 1]))
                except ValueError:
                    pass
            elif arg.startswith("-o") and len(arg) > 2:
                try:
                    out.append(split_nameval(arg[2:]))
                except ValueError:
                    pass
        return out

    def params(self, config: Config) -> Config:
        """A view of config with this service's -o overrides applied."""
        return Config(config.main, tuple(config.params.values()), self.overrides, config.config_dir)


def split_args(text: str, where: str) -> list[str]:
    """Split on blanks; "{ ... }" groups one argument (braces and edge blanks removed)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "{":
            level, j = 0, i
            while j < len(text):
                level += {"{": 1, "}": -1}.get(text[j], 0)
                if level == 0:
                    break
                j += 1
            if level:
                raise ConfigError(f"{where}: missing '}}' in \"{text[i:]}\"")
            out.append(text[i + 1 : j].strip())
            i = j + 1
            continue
        m = re.compile(r"\S+").match(text, i)
        assert m is not None
        out.append(m.group(0))
        i = m.end()
    return out


def _bool(value: str, default: bool, fname: str, where: str) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise ConfigError(f'{where}: field "{fname}": bad value: "{value}"')


def _number(value: str, default: int, fname: str, where: str) -> tuple[int, bool]:
    if value == "-":
        return default, False
    m = re.fullmatch(r"(\d+)(\??)", value)
    if not m or (m.group(2) and fname != "wakeup"):
        raise ConfigError(f'{where}: field "{fname}": bad value: "{value}"')
    return int(m.group(1)), bool(m.group(2))


def _inet_name(name: str, where: str, port_lookup: Callable[[str], str] | None) -> tuple[str, str]:
    m = re.fullmatch(r"(?:\[([^\]]*)\]|([^:\[\]]*)):(.+)", name)
    host, port = ((m.group(1) or m.group(2) or ""), m.group(3)) if m else ("", name)
    if not port:
        raise ConfigError(f'{where}: field "service": bad value: "{name}"')
    if not port.isdigit():
        resolved = port_lookup(port) if port_lookup else ""
        if not resolved:
            raise ConfigError(f'{where}: field "service": unknown port "{port}" in "{name}"')
        port = resolved
    return host, port


def parse_master_cf(
    text: str,
    config: Config,
    filename: str = "master.cf",
    port_lookup: Callable[[str], str] | None = None,
) -> list[ServiceEntry]:
    """Parse master.cf text; ConfigError names the line and the field at fault."""
    compat = config.get("compatibility_level") or "0"
    chroot_default = compat.split(".")[0].isdigit() and int(compat.split(".")[0]) < 1
    maxproc_default = config.get_int("default_process_limit")
    entries: dict[tuple[str, str], ServiceEntry] = {}
    for lineno, line in logical_lines(text, filename):
        where = f"{filename}:{lineno}"
        words = split_args(line, where)
        if len(words) < len(FIELDS):
            raise ConfigError(f'{where}: missing "{FIELDS[len(words)]}" field')
        name, stype = words[0], words[1]
        if stype not in TRANSPORTS:
            raise ConfigError(f'{where}: field "type": bad value: "{stype}"')
        private = _bool(words[2], True, "private", where)
        if stype == "inet" and private:
            raise ConfigError(f'{where}: field "private": inet service cannot be private')
        wakeup, conditional = _number(words[5], 0, "wakeup", where)
        maxproc, _ = _number(words[6], maxproc_default, "maxproc", where)
        entry = ServiceEntry(
            name=name,
            type=stype,
            private=private,
            unpriv=_bool(words[3], True, "unpriv", where),
            chroot=_bool(words[4], chroot_default, "chroot", where),
            wakeup=wakeup,
            wakeup_conditional=conditional,
            maxproc=maxproc,
            command=words[7],
            args=words[8:],
            lineno=lineno,
            filename=filename,
            fields=tuple(words[:8]),
        )
        if stype == "inet":
            entry.inet_host, entry.inet_port = _inet_name(name, where, port_lookup)
        entries.pop(entry.identity, None)
        entries[entry.identity] = entry
    return list(entries.values())


def read_master_cf(
    path: str, config: Config, port_lookup: Callable[[str], str] | None = None
) -> list[ServiceEntry]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
    except OSError as err:
        raise ConfigError(f"open {path}: {err.strerror}") from None
    return parse_master_cf(text, config, os.path.basename(path), port_lookup)
