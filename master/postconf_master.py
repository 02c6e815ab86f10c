"""master.cf entries as minipostconf reads, prints and changes them (Postfix's postconf_master.c).

SYNOPSIS
    from master.postconf_master import (ATTRIBUTES, MasterEntry, ServicePattern,
        format_master_entry, normalize_args, parse_field_name)

    entry = MasterEntry.parse(text, origin)      # one entry given on the command line
    entry = MasterEntry.from_line(master_line)   # one entry read from master.cf
    entry.fields, entry.args                     # eight fields, normalised arguments
    entry.text(fold=True)                        # postconf's columns (-M, and edits)
    entry.field_text(index, column, fold)        # one -F value
    entry.params()                               # the -o name=value pairs, in order
    entry.set_field(index, value)                # -Fe
    entry.set_param(name, value) / entry.remove_param(name)    # -Pe / -PX

    pattern = ServicePattern.parse("smtp/inet/chroot", 1, 3)   # None if malformed
    pattern.matches(name, type); pattern.parts

DESCRIPTION
    An entry is what postconf keeps of a master.cf line: the eight fields
    as written (service type private unprivileged chroot wakeup
    process_limit command) and the command's arguments in normal form:
    "-oname=value" and "-o { name = value }" become "-o" "name=value",
    other "{ text }" arguments lose their braces and edge blanks.  Printed,
    the fields stand in postconf's columns and an argument with blanks is
    shown in braces again; with fold, each "-o" value starts a line of its
    own and long lines wrap at 80 columns with four blanks of indent.

    The text of an entry is split and checked by master.mastercf, the sole
    master.cf parser.  MasterEntry.parse() words a bad field as postconf
    does for text from its command line ('invalid process_limit field "x"
    in "TEXT"', "bad field count"); other problems keep mastercf's words.

    ATTRIBUTES are the field names of -F (postconf(1)): service, type,
    private, unprivileged, chroot, wakeup, process_limit, command.

    A service pattern is "name", "name/type" or (-F, -P)
    "name/type/field" or "name/type/parameter", split at "/" (empty parts
    are dropped, as argv_split() does); "*" alone matches anything, a
    missing trailing part is "*", and "*" inside a longer part or a
    leading "/" makes the pattern malformed.  Names and types match
    exactly, case included.

DIAGNOSTICS
    ConfigError, with postconf's text where the problem is in a
    command-line value.

SEE ALSO
    postconf(1), src/postconf/postconf_master.c, postconf_match.c
    (Postfix); master/mastercf.py, master/mastercf_edit.py, master/postconf.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from master.config import split_nameval
from master.errors import ConfigError
from master.macro import CHARS_SPACE
from master.mastercf import (
    MASTER_CF,
    FieldError,
    MasterLine,
    check_fields,
    master_line,
    split_words,
)
from master.postconf_names import warn

__all__ = [
    "ATTRIBUTES",
    "COLUMNS",
    "COMMAND",
    "MasterEntry",
    "ServicePattern",
    "format_master_entry",
    "normalize_args",
    "parse_field_name",
]

LINE_LIMIT = 80
INDENT = "    "
COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)  # -M: where each of the eight fields starts
ATTRIBUTES = (
    "service", "type", "private", "unprivileged", "chroot", "wakeup", "process_limit", "command",
)  # fmt: skip
COMMAND = ATTRIBUTES.index("command")
WILDCARD = "*"


# Patterns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePattern:
    """A parsed service[/type[/field or parameter]] pattern; parts padded with "*"."""

    text: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, least: int, most: int) -> ServicePattern | None:
        """pcf_parse_service_pattern(): None when text has fewer or more parts, or a bad "*"."""
        if text.startswith("/"):
            return None
        parts = [part for part in text.split("/") if part]
        if not least <= len(parts) <= most:
            return None
        if any(part != WILDCARD and WILDCARD in part for part in parts):
            return None
        return cls(text, tuple(parts + [WILDCARD] * (most - len(parts))))

    def matches(self, name: str, stype: str) -> bool:
        return self.parts[0] in (WILDCARD, name) and self.parts[1] in (WILDCARD, stype)


def parse_field_name(name: str) -> int | None:
    """The index of an attribute name, None for "*"; ConfigError for anything else."""
    if name == WILDCARD:
        return None
    if name not in ATTRIBUTES:
        raise ConfigError(f'invalid service attribute name: "{name}"')
    return ATTRIBUTES.index(name)


# Arguments ------------------------------------------------------------------------


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
    return inner.strip(CHARS_SPACE)


def _display_nameval(text: str) -> str:
    try:
        name, value = split_nameval(text)
    except ValueError as err:
        warn(f'{MASTER_CF}: {err}: "{text}"')
        return text
    return f"{name}={value}"


def _has_blank(text: str) -> bool:
    return any(ch in CHARS_SPACE for ch in text)


def format_master_entry(
    fields: Iterable[str], args: list[str], fold: bool, expand: Callable[[str], str] | None = None
) -> str:
    """pcf_print_master_entry(): the eight fields in postconf's columns, then the arguments."""
    line = ""
    for column, text in zip(COLUMNS, fields, strict=True):
        if line:
            line += " " * max(1, column - len(line))
        line += text
    return line + _format_args(args, len(line), fold, expand, value_gap=3)


def _format_args(
    args: list[str],
    length: int,
    fold: bool,
    expand: Callable[[str], str] | None,
    value_gap: int,
) -> str:
    """The arguments after the fields (-M) or after the command (-F), with a newline."""
    out = []
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
                parens = _has_blank(value)
                width += len(value) + value_gap + (2 if parens else 0)
        if not in_options:
            parens = _has_blank(arg)
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


# Entries --------------------------------------------------------------------------


@dataclass
class MasterEntry:
    """One master.cf entry as postconf keeps it: eight fields and normalised arguments."""

    fields: list[str]
    args: list[str] = field(default_factory=list)

    @classmethod
    def from_line(cls, line: MasterLine) -> MasterEntry:
        return cls(list(line.fields), normalize_args(line.raw_args))

    @classmethod
    def parse(cls, text: str, origin: str) -> MasterEntry:
        """An entry from the command line; errors worded as postconf's, naming `origin`."""
        try:
            return cls.from_line(master_line(text))
        except FieldError as err:
            if err.value is None:
                raise ConfigError(f'bad field count: "{origin}"') from None
            raise _invalid(err.field, err.value, text) from None
        except ConfigError as err:
            raise ConfigError(f'{err}: "{origin}"') from None

    @property
    def name(self) -> str:
        return self.fields[0]

    @property
    def type(self) -> str:
        return self.fields[1]

    def text(self, fold: bool, expand: Callable[[str], str] | None = None) -> str:
        return format_master_entry(self.fields, self.args, fold, expand)

    def field_text(
        self, index: int, column: int, fold: bool, expand: Callable[[str], str] | None = None
    ) -> str:
        """pcf_print_master_field(): a field's value, for the command with the arguments,
        and a newline; `column` is where the value starts on its line."""
        value = self.fields[index]
        if index != COMMAND:
            return value + "\n"
        return value + _format_args(self.args, column + len(value), fold, expand, value_gap=1)

    def params(self) -> list[tuple[str, str]]:
        """The -o name=value pairs among the daemon options, in order (a later one wins)."""
        values, _ = _options(self.args)
        out = []
        for i in values:
            name, eq, value = self.args[i].partition("=")
            if self.args[i - 1] == "-o" and eq:
                out.append((name, value))
        return out

    def set_field(self, index: int, value: str) -> None:
        """pcf_edit_master_field(): the command field takes the arguments too."""
        if index == COMMAND:
            words = split_words(value)
            self.fields[COMMAND:] = words[:1]
            self.args = normalize_args(words[1:])
        else:
            self.fields[index] = value
        try:
            check_fields(self.fields)
        except FieldError as err:
            raise _invalid(err.field, err.value or "", value) from None

    def set_param(self, name: str, value: str) -> None:
        """-Pe: every "-o name=..." takes the value; else a new one after the last option."""
        values, end = _options(self.args)
        mine = [i for i in values if self._is_param(i, name)]
        for i in mine:
            self.args[i] = f"{name}={value}"
        if not mine:
            self.args[end:end] = ["-o", f"{name}={value}"]

    def remove_param(self, name: str) -> None:
        """-PX: every "-o name=..." goes."""
        values, _ = _options(self.args)
        for i in reversed([i for i in values if self._is_param(i, name)]):
            del self.args[i - 1 : i + 1]

    def _is_param(self, i: int, name: str) -> bool:
        return self.args[i - 1] == "-o" and self.args[i].startswith(name + "=")


def _options(args: list[str]) -> tuple[list[int], int]:
    """Where the values of "-o VALUE"-style options are, and where the options end."""
    values = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            break
        if arg[1:2] == "o" and i + 1 < len(args):
            values.append(i + 1)
            i += 1
        i += 1
    return values, i


def _invalid(index: int, value: str, text: str) -> ConfigError:
    """pcf_check_master_entry()'s words, newlines in the text shown as blanks."""
    message = f'invalid {ATTRIBUTES[index]} field "{value}" in "{text}"'
    return ConfigError(message.replace("\n", " "))
