"""minipostconf -Me, -MX, -M#, -Fe, -Pe, -PX: edit master.cf in place (Postfix's postconf_edit.c).

SYNOPSIS
    from master.mastercf_edit import edit_master

    edit_master(config_dir, args, kind, mode)   # kind "M", "F" or "P"; mode "e", "X" or "#"

DESCRIPTION
    The requests, one per argument:
      -Me  service/type=ENTRY    replace the entries that match (or whose
                                 name and type are ENTRY's) by ENTRY; add
                                 it at the end when none does
      -MX  service/type          remove the matching entries
      -M#  service/type          comment them out ("#" before each line)
      -Fe  service/type/field=VALUE     set one of the eight fields (-F's
                                 names; "command" takes the arguments too)
      -Pe  service/type/parameter=VALUE set "-o parameter=VALUE" (replace
                                 each one, or add one after the options)
      -PX  service/type/parameter       remove "-o parameter=..."
    Service name and type may be "*".  A changed entry is written as
    postconf -Mf shows it (columns, one "-o" per line); comments and
    blank lines inside a changed entry, or right after it, stay and move
    above it; other lines are kept byte for byte.  An -F or -P request
    that matches no service is a warning ("unmatched service_name/type");
    an -M request without a match is not.

    The file is rewritten as main.cf is (master.postconf_edit.replace_file):
    master.cf.tmp, same mode, under an exclusive lock, fsynced, renamed.

DIAGNOSTICS
    ConfigError with postconf's text for a bad request ("-Fe or -FX
    requires service_name/type/field_name", 'invalid service attribute
    name: "x"', 'invalid wakeup field "x" in "x"', "-Pe does not accept
    whitespace in parameter value", ...); an entry of master.cf that
    cannot be read fails as reading master.cf does ("master.cf:3: field
    ...", "master.cf:3: specify service name and type on the same line");
    nothing is written then.

SEE ALSO
    postconf(1), src/postconf/postconf_edit.c (Postfix);
    master/postconf_master.py, master/postconf_edit.py, master/postconf.py
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from master.config import split_nameval
from master.errors import ConfigError
from master.macro import CHARS_SPACE
from master.mastercf import MASTER_CF, master_line
from master.postconf_edit import file_mode, read_lines, replace_file
from master.postconf_master import (
    COMMAND,
    MasterEntry,
    ServicePattern,
    parse_field_name,
)
from master.postconf_names import warn

__all__ = ["EDIT_OPTIONS", "edit_master"]

EDIT_OPTIONS = "-Me, -Fe, -Pe, -X, or -#"
SHAPES = {
    "M": (2, "-Me, -MX or -M# requires service_name/type"),
    "F": (3, "-Fe or -FX requires service_name/type/field_name"),
    "P": (3, "-Pe or -PX requires service_name/type/parameter"),
}


@dataclass
class Request:
    """One command-line argument, parsed."""

    raw: str
    pattern: ServicePattern
    value: str | None
    field: int = 0
    param: str = ""
    matches: int = 0
    _entry: MasterEntry | None = None

    def entry(self) -> MasterEntry:
        """-Me's new entry (parsed when first needed, as postconf does)."""
        if self._entry is None:
            self._entry = MasterEntry.parse(self.value or "", self.raw)
        return MasterEntry(list(self._entry.fields), list(self._entry.args))


def parse_request(raw: str, kind: str, mode: str) -> Request:
    if "\n" in raw:
        raise ConfigError(f"{EDIT_OPTIONS} accept no multi-line input")
    text = raw.lstrip(CHARS_SPACE + "\v\f")
    if text.startswith("#"):
        raise ConfigError(f"{EDIT_OPTIONS} accept no comment input")
    value: str | None = None
    if mode == "e":
        try:
            text, value = split_nameval(text)
        except ValueError as err:
            raise ConfigError(f'{err}: "{raw}"') from None
    else:
        if "=" in text:
            raise ConfigError("-X or -# requires names without value")
        text = text.rstrip(CHARS_SPACE + "\v\f")
    parts, shape = SHAPES[kind]
    pattern = ServicePattern.parse(text, parts, parts)
    if pattern is None:
        raise ConfigError(shape)
    request = Request(raw, pattern, value)
    if kind == "F":
        field = parse_field_name(pattern.parts[2])
        if field is None:
            raise ConfigError("-Fe does not accept wild-card field name")
        if mode == "e" and field < COMMAND and _has_blank(value or ""):
            raise ConfigError("-Fe does not accept whitespace in non-command field")
        if mode == "e" and field == COMMAND and not (value or "").strip(CHARS_SPACE):
            raise ConfigError(f'bad field count: "{raw}"')  # postconf crashes here
        request.field = field
    elif kind == "P":
        if pattern.parts[2] == "*":
            raise ConfigError("-Pe does not accept wild-card parameter name")
        if mode == "e" and _has_blank(value or ""):
            raise ConfigError("-Pe does not accept whitespace in parameter value")
        request.param = pattern.parts[2]
    return request


def _has_blank(text: str) -> bool:
    return any(ch in CHARS_SPACE for ch in text)


def _content(line: str) -> bool:
    """pcf_find_cf_info(): not blank and not a comment."""
    stripped = line.lstrip(CHARS_SPACE + "\v\f")
    return bool(stripped) and not stripped.startswith("#")


class _Copy:
    """The pass over master.cf: input lines in, output lines out."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0
        self.out: list[str] = []

    def next_content(self) -> tuple[int, str] | None:
        """pcf_next_cf_line(): copy blank and comment lines; the next content line."""
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            self.pos += 1
            if _content(line):
                return self.pos, line
            self.out.append(line)
        return None

    def gobble(self, first: str) -> str:
        """pcf_gobble_cf_line(): the rest of the entry; comments and blank lines in it
        and right after it are copied out now, ahead of the entry."""
        text = first
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if not (line.startswith("#") or line[0] in CHARS_SPACE + "\v\f"):
                break
            self.pos += 1
            if _content(line):
                text += line
            else:
                self.out.append(line)
        return text


def edit_master(config_dir: str, args: list[str], kind: str, mode: str) -> None:
    """Apply the requests to config_dir/master.cf; see the module docstring."""
    requests = [parse_request(arg, kind, mode) for arg in args]
    path = os.path.join(config_dir, MASTER_CF)
    copy = _Copy(read_lines(path))
    matched = False
    while (found := copy.next_content()) is not None:
        lineno, line = found
        if line[0] in CHARS_SPACE + "\v\f":  # a continuation line
            if not matched:
                copy.out.append(line)
            elif mode == "#":
                copy.out.append("#" + line)
            continue
        name, stype = _name_and_type(line, lineno)
        matched, new = _apply(requests, kind, mode, name, stype, copy, line, lineno)
        if new is not None:
            copy.out.append(new.text(fold=True))
        elif not matched:
            copy.out.append(line)
        elif mode == "#":
            copy.out.append("#" + line)
    for request in requests:
        if request.matches:
            continue
        if kind == "M" and mode == "e":
            copy.out.append(request.entry().text(fold=True))
        elif kind != "M":
            warn(f'unmatched service_name/type: "{request.raw}"')
    replace_file(path, "".join(copy.out), file_mode(path))


def _name_and_type(line: str, lineno: int) -> tuple[str, str]:
    words = line.split()
    where = f"{MASTER_CF}:{lineno}"
    if len(words) < 2:
        raise ConfigError(f"{where}: specify service name and type on the same line")
    name, stype = words[:2]
    if "=" in name:
        raise ConfigError(
            f'{where}: service name syntax "{name}" is unsupported with {EDIT_OPTIONS}'
        )
    if "=" in stype or "/" in stype:
        raise ConfigError(
            f'{where}: service type syntax "{stype}" is unsupported with {EDIT_OPTIONS}'
        )
    return name, stype


def _apply(
    requests: list[Request],
    kind: str,
    mode: str,
    name: str,
    stype: str,
    copy: _Copy,
    line: str,
    lineno: int,
) -> tuple[bool, MasterEntry | None]:
    """Every request against one entry: (whether one matched, the entry to write instead)."""
    matched = False
    new: MasterEntry | None = None
    for request in requests:
        tentative = request.entry() if kind == "M" and mode == "e" else None
        if request.pattern.matches(name, stype):
            matched = True
            request.matches += 1
            if kind in "FP" and (mode == "e" or (kind == "P" and mode == "X")):
                if new is None:
                    new = _read_entry(copy.gobble(line), lineno)
                if kind == "F":
                    new.set_field(request.field, request.value or "")
                elif mode == "e":
                    new.set_param(request.param, request.value or "")
                else:
                    new.remove_param(request.param)
            elif tentative is not None and request.matches == 1:
                new = tentative
        elif (
            tentative is not None
            and tentative.fields[0] in ("*", name)
            and (tentative.fields[1] in ("*", stype))
        ):
            # -Me a/unix='b unix ...' also replaces the entry b/unix.
            matched = True
            request.matches += 1
            if request.matches == 1:
                new = tentative
    return matched, new


def _read_entry(text: str, lineno: int) -> MasterEntry:
    try:
        return MasterEntry.from_line(master_line(text, lineno))
    except ConfigError as err:
        raise err.at(MASTER_CF, lineno) from None
