"""minipostconf's parameter name space: which names exist, their values and defaults.

SYNOPSIS
    from master.postconf_names import Namespace, daemon_params, warn, PROGRAM

    ns = Namespace(config_dir, explicit_dir=False, defaults_only=False,
                   overrides=[(name, value), ...])
    ns.read_main(); ns.read_master(required=False)
    ns.register_user_parameters()
    ns.known(name) / ns.listed(set_only=False) / ns.value(name) / ns.default(name)
    ns.expand_known(text, owner); ns.expand_scoped(text, owner, scope)
    ns.flag_unused()
    daemon_params() -> (Param, ...)          # the `minipostfix.params` group
    warn(text)                               # "minipostconf: warning: text" on stderr

DESCRIPTION
    Postfix's postconf keeps one table of parameter names; this is it.
    Known names: Postfix 3.7.11's built-in parameters (master/builtin.py),
    the service-defined names of master.cf's delivery services
    (smtp_delivery_slot_cost for a service "smtp" that runs smtp, ...),
    every Param row of master/config.py and of the daemons found through
    the entry point group `minipostfix.params`, and user-defined names
    that main.cf or master.cf refers to as $name (or lists in
    smtpd_restriction_classes).  Other main.cf and master.cf -o names
    are "unused" and flag_unused() warns about each.

    `explicit_dir` says that config_dir was chosen (-c or MAIL_CONFIG):
    config_directory then counts as set.  `defaults_only` is -d: main.cf
    is not read and every value is the default.  `overrides` are the
    command line's -o settings, applied over main.cf.

    A value is main.cf's (after -o overrides), else the default, from
    master.config.Defaults as a daemon's Config has it (process_name is
    "minipostconf"; service-defined names have their defaults too).
    Expansion follows postconf: main.cf names first, then known names'
    defaults; for a master.cf entry (`scope`, its index), the entry's -o
    names and service_name come first.

    Read-only parameters assigned in main.cf or master.cf are warned
    about and dropped, as postconf does.

DIAGNOSTICS
    ConfigError naming the file, line and parameter at fault
    (`main.cf:7: parameter a: recursive reference: a -> b -> a`,
    `master.cf:3: -o a=$b: ...`); warnings through warn().

SEE ALSO
    src/postconf/postconf_builtin.c, postconf_service.c, postconf_user.c,
    postconf_lookup.c, postconf_unused.c (Postfix); master/postconf.py
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from master.builtin import BuiltinDefaults, builtin_defaults
from master.config import (
    MAIN_CF,
    MASTER_PARAMS,
    Defaults,
    Entry,
    Param,
    parse_main_cf,
    read_config_text,
)
from master.errors import ConfigError, MacroError, ParamError, place_text
from master.macro import expand_macros, scan_macros
from master.mastercf import MASTER_CF, MasterLine, daemon_overrides, master_lines

PROGRAM = "minipostconf"
PARAMS_GROUP = "minipostfix.params"


def warn(text: str) -> None:
    sys.stderr.write(f"{PROGRAM}: warning: {text}\n")


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

    def __init__(
        self,
        config_dir: str,
        *,
        explicit_dir: bool = False,
        defaults_only: bool = False,
        overrides: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.config_dir = config_dir
        self.defaults_only = defaults_only
        self.overrides = list(overrides)
        self.builtin: BuiltinDefaults = builtin_defaults()
        rows = {row.name: row for row in (*MASTER_PARAMS, *daemon_params())}
        self.entries: dict[str, Entry] = {}
        if explicit_dir:
            self.entries["config_directory"] = Entry(config_dir, 0)
        self.values = {name: entry.value for name, entry in self.entries.items()}
        self.masters: list[MasterLine] = []
        self.local: list[dict[str, str]] = []
        self.local_valid: list[set[str]] = []
        self.service: dict[str, str] = {}
        self.defaults = Defaults(rows, self.main_eval, service=self.service, process_name=PROGRAM)
        self.user: set[str] = set()
        self.relabelled: set[str] = set()

    def read_main(self) -> None:
        """main.cf, then the -o overrides of the command line."""
        path = os.path.join(self.config_dir, MAIN_CF)
        try:
            text = read_config_text(path)
        except OSError as err:
            raise ConfigError(f"open {path}: {err.strerror}") from None
        for name, entry in parse_main_cf(text, MAIN_CF, warn).items():
            old = self.entries.pop(name, None)
            if old is not None and old.value != entry.value:
                warn(f"{MAIN_CF}:{entry.lineno}: overriding earlier entry: {name}={old.value}")
            self.entries[name] = entry
        for name, value in self.overrides:
            self.entries.pop(name, None)
            self.entries[name] = Entry(value, 0)
        self.values = {name: entry.value for name, entry in self.entries.items()}

    def read_master(self, required: bool) -> None:
        path = os.path.join(self.config_dir, MASTER_CF)
        try:
            text = read_config_text(path)
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
        self.service.update(self.builtin.service_parameters(pairs))

    # What is known and what values are.
    def known(self, name: str) -> bool:
        return self.defaults.defines(name) or name in self.user

    def listed(self, set_only: bool = False) -> list[str]:
        """The names a full listing shows: every known one, or (-n) those main.cf sets."""
        names = {n for n in self.builtin.values if n not in self.builtin.legacy}
        names |= set(self.defaults.rows) | set(self.service)
        if not self.defaults_only:
            names |= self.user | self.relabelled
        if set_only:
            names = {n for n in self.values if self.known(n)}
        return sorted(names)

    def default(self, name: str) -> str | None:
        """The raw default, as Config has it (master.config.Defaults)."""
        try:
            return self.defaults.get(name)
        except ParamError as err:
            raise self.failure(err) from None

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
        """err at the place that defines its parameter (in master.cf entry `scope`)."""
        return ConfigError(err.message, **self.place(err.owner, scope))

    def place(self, name: str | None, scope: int | None = None) -> dict[str, Any]:
        """Where name is set, as ConfigError's filename, lineno and origin."""
        if scope is not None:
            value = self.local[scope].get(name or "")
            origin = f"-o {name}={value}" if value is not None else None
            return {"filename": MASTER_CF, "lineno": self.masters[scope].lineno, "origin": origin}
        entry = self.entries.get(name or "")
        if entry is not None and entry.lineno:
            return {"filename": MAIN_CF, "lineno": entry.lineno}
        if entry is not None and name in dict(self.overrides):
            return {"origin": f"-o {name}={entry.value}"}
        return {}

    def where(self, name: str | None, scope: int | None = None) -> str:
        """place() as text: `main.cf:7`, `master.cf:3: -o a=b`, `-o a=b` or ""."""
        return place_text(**self.place(name, scope))

    # User-defined names (postconf_user.c).
    def register_user_parameters(self) -> None:
        self.rest_classes: set[str] = set()
        for scope in range(len(self.local)):
            self._scan_namespace(scope)
        for name in sorted({*self.builtin.values, *self.defaults.rows, *self.service}):
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
                self.expand_scoped(value, name, scope)

    def _builtin(self, name: str) -> bool:
        legacy = name in self.builtin.legacy
        return (
            (name in self.builtin.values and not legacy)
            or name in self.defaults.rows
            or name in self.service
        )

    def expand_scoped(self, text: str, owner: str | None, scope: int | None) -> str:
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
