"""minipostconf: show and edit main.cf and master.cf (Postfix's postconf(1)).

SYNOPSIS
    minipostconf [-c config_dir] [-d | -n] [-f] [-h | -H] [-x] [-o name=value] [name ...]
    minipostconf [-c config_dir] -e name=value ...      (or just name=value ...)
    minipostconf [-c config_dir] -X name ...            (remove)
    minipostconf [-c config_dir] -# name ...            (comment out)
    minipostconf [-c config_dir] -M [-fox] [service[/type] ...]
    minipostconf [-c config_dir] -F [-fhHox] [service[/type[/field]] ...]
    minipostconf [-c config_dir] -P [-fhHox] [service[/type[/parameter]] ...]
    minipostconf [-c config_dir] -Me service/type=entry ... | -MX|-M# service/type ...
    minipostconf [-c config_dir] -Fe service/type/field=value ...
    minipostconf [-c config_dir] -Pe service/type/parameter=value ...
    minipostconf [-c config_dir] -PX service/type/parameter ...

    from master.postconf import main
    main(["-c", "/etc/minipostfix", "-n"]) -> exit status

DESCRIPTION
    The command line and the output of postconf(1): which options exist,
    how they combine and what each prints is docs/configuration.md,
    "minipostconf"; the deliberate differences from postconf are in its
    "Differences from Postfix".  The directory is -c DIR, else
    $MAIL_CONFIG, else /etc/postfix.  Output is sorted by name and
    formatted as postconf's: "name = value" with white space runs shown
    as one blank ("name =" when empty).

    This module is the command line and the output.  Which names exist
    and what their values and defaults are is master/postconf_names.py
    (the name space); -e, -X and -# on main.cf are master/postconf_edit.py;
    master.cf entries for -M, -F and -P (patterns, columns, normalised
    arguments) are master/postconf_master.py, and their editor (-Me -MX
    -M# -Fe -Pe -PX) is master/mastercf_edit.py.

DIAGNOSTICS
    Warnings and errors on stderr as "minipostconf: warning: ..." and
    "minipostconf: fatal: ...", the latter with exit status 1.  Problems
    in a file name it and the line: "minipostconf: fatal: main.cf:7:
    parameter a: recursive reference: a -> b -> a".  Never a traceback.

BUGS
    Not supported: -a -A -b -C -l -m -t -T.  Legacy DBMS parameters
    ("ldap:name" makes name_server_host known) are not recognised: such
    settings are reported as unused.

SEE ALSO
    postconf(1), src/postconf/*.c (Postfix), master/postconf_names.py,
    master/postconf_edit.py, master/postconf_master.py,
    master/mastercf_edit.py, master/config.py, master/mastercf.py
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Callable

from master.config import config_directory, split_nameval
from master.errors import ConfigError
from master.macro import CHARS_SPACE
from master.mastercf_edit import edit_master
from master.postconf_edit import edit_main
from master.postconf_master import (
    ATTRIBUTES,
    MasterEntry,
    ServicePattern,
    parse_field_name,
)
from master.postconf_names import PROGRAM, Namespace, warn

__all__ = [
    "Options",
    "main",
    "print_line",
    "run",
    "show_fields",
    "show_master",
    "show_params",
    "show_parameters",
]

LINE_LIMIT = 80
INDENT = "    "
OPTIONS = "aAbc:C:deEfFhHlmMno:pPqtT:vxX#"
UNSUPPORTED = "aAbCElmqtT"
# pcf_compat_names: the order in which postconf names options in its messages.
NAMES_ORDER = "aAbCdefFhHlmMnopPtTxX#"
MAJOR = "aAblmtpMFPT"  # the major modes: one at most, -p when none is given
# Options of which one at most may be given (pcf_incompat_options).
EXCLUSIVE = (MAJOR, "den#X", "fe#X", "xe#X", "ode#X", "he#XH")
# A major mode and the modifiers it allows (pcf_compat_options).
COMPATIBLE = {
    "p": "eX#fhxdnoH",
    "M": "eX#fox",
    "F": "efhoxH",
    "P": "eXfhoxH",
}
EDITS = "eX#"
USAGE = (
    "usage: minipostconf [-c config_dir] [-d | -n] [-fhHvx] [-o name=value] [name ...]"
    " | [-e] name=value ... | -X name ... | -# name ... | -M [-fox] [service[/type] ...]"
    " | -F [-fhHox] [service[/type[/field]] ...] | -P [-fhHox] [service[/type[/parameter]] ...]"
    " | -Me service/type=entry ... | -MX|-M# service/type ... | -Fe service/type/field=value ..."
    " | -Pe service/type/parameter=value ... | -PX service/type/parameter ..."
)


# Command line ---------------------------------------------------------------------


def _named(letters: set[str] | str) -> str:
    """Options as postconf names them in a message: "-d -n", in its table's order."""
    return " ".join(f"-{letter}" for letter in sorted(set(letters), key=NAMES_ORDER.index))


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
                self.flags += "o"
                try:
                    self.overrides.append(split_nameval(value))
                except ValueError as err:
                    raise ConfigError(f"invalid parameter override: {value}: {err}") from None
            elif letter != "v":
                self.flags += letter
        if not set(self.flags) & set(MAJOR):
            self.flags += "p"
        if set(self.flags) & set("pMFP") and self.names and "=" in self.names[0]:
            self.flags += "e"
        self._check_combinations()
        self.explicit_dir = self.cli_dir is not None or "MAIL_CONFIG" in os.environ
        self.config_dir = config_directory(self.cli_dir)

    def __contains__(self, letter: str) -> bool:
        return letter in self.flags

    @property
    def major(self) -> str:
        return next(letter for letter in MAJOR if letter in self.flags)

    @property
    def edit(self) -> str:
        """ "e", "X" or "#" when editing, else ""."""
        return next((letter for letter in EDITS if letter in self.flags), "")

    def _check_combinations(self) -> None:
        """pcf_check_exclusive_options(), then pcf_check_compat_options()."""
        for group in EXCLUSIVE:
            used = set(self.flags) & set(group)
            if len(used) > 1:
                raise ConfigError(f"specify one of {_named(used)}")
        major = self.major
        excess = set(self.flags) - set(major + COMPATIBLE.get(major, ""))
        if excess:
            raise ConfigError(f"with option -{major}, do not specify {_named(excess)}")
        if "e" in self and not self.names:
            raise ConfigError("-e requires name=value argument")


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
    words: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch in CHARS_SPACE:
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
    names = opts.names or ns.listed(set_only="n" in opts)
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


class _Filters:
    """The command line's service patterns, with their hit counts for "unmatched request"."""

    def __init__(self, texts: list[str], most: int, shape: str) -> None:
        self.patterns = []
        for text in texts:
            pattern = ServicePattern.parse(text, 1, most)
            if pattern is None:
                raise ConfigError(shape)
            self.patterns.append(pattern)
        self.hits = [0] * len(self.patterns)

    def matching(self, name: str, stype: str) -> list[ServicePattern | None]:
        """The patterns that match (each counted), or [None] when there are none at all."""
        if not self.patterns:
            return [None]
        out: list[ServicePattern | None] = []
        for i, pattern in enumerate(self.patterns):
            if pattern.matches(name, stype):
                self.hits[i] += 1
                out.append(pattern)
        return out

    def hit(self, pattern: ServicePattern) -> None:
        self.hits[self.patterns.index(pattern)] += 1

    def warn_unmatched(self) -> None:
        for pattern, hits in zip(self.patterns, self.hits, strict=True):
            if not hits:
                warn(f'unmatched request: "{pattern.text}"')


def _entries(ns: Namespace) -> list[tuple[int, MasterEntry]]:
    return [(scope, MasterEntry.from_line(line)) for scope, line in enumerate(ns.masters)]


def _expander(ns: Namespace, opts: Options, scope: int) -> Callable[[str], str] | None:
    if "x" not in opts:
        return None
    return lambda text: ns.expand_scoped(text, None, scope)


def show_master(ns: Namespace, opts: Options) -> list[str]:
    """-M: the entries in postconf's columns (pcf_show_master_entries)."""
    filters = _Filters(opts.names, 2, "-M option requires service_name[/type]")
    out = []
    for scope, entry in _entries(ns):
        for _ in filters.matching(entry.name, entry.type):
            out.append(entry.text("f" in opts, _expander(ns, opts, scope)))
    filters.warn_unmatched()
    return out


def show_fields(ns: Namespace, opts: Options) -> list[str]:
    """-F: service/type/field = value, the eight fields of each entry in order."""
    filters = _Filters(opts.names, 3, "-F option requires service_name[/type[/field]]")
    wanted = [parse_field_name(p.parts[2]) for p in filters.patterns]
    out = []
    for scope, entry in _entries(ns):
        for pattern in filters.matching(entry.name, entry.type):
            field = wanted[filters.patterns.index(pattern)] if pattern else None
            for index in range(len(ATTRIBUTES)) if field is None else [field]:
                out.append(_field_line(entry, index, opts, _expander(ns, opts, scope)))
    filters.warn_unmatched()
    return out


def _field_line(
    entry: MasterEntry, index: int, opts: Options, expand: Callable[[str], str] | None
) -> str:
    """pcf_print_master_field()."""
    name = f"{entry.name}/{entry.type}/{ATTRIBUTES[index]}"
    if "H" in opts:
        return name + "\n"
    label = "" if "h" in opts else name + " = "
    if label and len(label) + len(entry.fields[index]) > LINE_LIMIT:
        label += "\n" + INDENT
    column = len(label) - label.rfind("\n") - 1
    return label + entry.field_text(index, column, "f" in opts, expand)


def show_params(ns: Namespace, opts: Options) -> list[str]:
    """-P: service/type/parameter = value, each entry's -o settings sorted by name."""
    filters = _Filters(opts.names, 3, "-P option requires service_name[/type[/parameter]]")
    out = []
    for scope, entry in _entries(ns):
        params = dict(entry.params())
        if not params:
            continue  # postconf keeps no parameter table for it: no match either
        for pattern in _param_matches(filters, entry):
            if pattern is not None and pattern.parts[2] != "*":
                name = pattern.parts[2]
                if name not in params:
                    continue
                filters.hit(pattern)
                wanted = [name]
            else:
                wanted = sorted(params)
                if pattern is not None:
                    filters.hit(pattern)
            for name in wanted:
                value = params[name]
                if "x" in opts:
                    value = ns.expand_scoped(value, None, scope)
                text = f"{entry.name}/{entry.type}/{name} = {value}"
                if "H" in opts:
                    text = f"{entry.name}/{entry.type}/{name}"
                elif "h" in opts:
                    text = value
                out.append(print_line(text, "f" in opts))
    filters.warn_unmatched()
    return out


def _param_matches(filters: _Filters, entry: MasterEntry) -> list[ServicePattern | None]:
    """The patterns whose service part matches, not yet counted (-P counts found names)."""
    if not filters.patterns:
        return [None]
    return [p for p in filters.patterns if p.matches(entry.name, entry.type)]


# Program ---------------------------------------------------------------------------------

SHOW_MASTER = {"M": show_master, "F": show_fields, "P": show_params}


def run(argv: list[str]) -> int:
    opts = Options(argv)
    if opts.edit:
        if not opts.names:
            raise ConfigError("missing service argument")
        if opts.major in "MFP":
            edit_master(opts.config_dir, opts.names, opts.major, opts.edit)
        else:
            edit_main(opts.config_dir, opts.names, opts.edit)
        return 0
    ns = Namespace(
        opts.config_dir,
        explicit_dir=opts.explicit_dir,
        defaults_only="d" in opts,
        overrides=opts.overrides,
    )
    if opts.major in "MFP":
        ns.read_master(required=True)
        ns.read_main()
        ns.register_user_parameters()
        out = SHOW_MASTER[opts.major](ns, opts)
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
