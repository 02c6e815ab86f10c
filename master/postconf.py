"""minipostconf: show main.cf parameters, edit main.cf, show master.cf (Postfix's postconf(1)).

SYNOPSIS
    minipostconf [-c config_dir] [-d | -n] [-f] [-h | -H] [-x] [-o name=value] [name ...]
    minipostconf [-c config_dir] -e name=value ...      (or just name=value ...)
    minipostconf [-c config_dir] -X name ...            (remove)
    minipostconf [-c config_dir] -# name ...            (comment out)
    minipostconf [-c config_dir] -M [-fx] [service[/type] ...]

    from master.postconf import main
    main(["-c", "/etc/minipostfix", "-n"]) -> exit status

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

    The name space lives in master/postconf_names.py, the -e/-X/-#
    engine in master/postconf_edit.py; this module is the command line
    and the output.

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
    postconf(1), src/postconf/*.c (Postfix), master/postconf_names.py,
    master/postconf_edit.py, master/config.py, master/mastercf.py
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Callable, Iterable

from master.config import config_directory, split_nameval
from master.errors import ConfigError
from master.macro import CHARS_SPACE
from master.mastercf import MASTER_CF
from master.postconf_edit import edit_main
from master.postconf_names import PROGRAM, Namespace, warn

__all__ = [
    "COLUMNS",
    "Options",
    "format_master_entry",
    "main",
    "normalize_args",
    "print_line",
    "run",
    "show_master",
    "show_parameters",
]

LINE_LIMIT = 80
INDENT = "    "
COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)  # -M: where each of the eight fields starts
OPTIONS = "aAbc:C:deEfFhHlmMno:pPqtT:vxX#"
UNSUPPORTED = "aAbCEFlmPqtT"
ORDER = "defhHMnxX#"  # how postconf orders the two letters of "specify one of -A -B"
EXCLUSIVE = ("dn", "hH", "eX#dfhHnx")
USAGE = (
    "usage: minipostconf [-c config_dir] [-d | -n] [-fhHvx] [-o name=value] [name ...]"
    " | [-e] name=value ... | -X name ... | -# name ... | -M [-fx] [service[/type] ...]"
)


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
                try:
                    self.overrides.append(split_nameval(value))
                except ValueError as err:
                    raise ConfigError(f"invalid parameter override: {value}: {err}") from None
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
                parens = any(ch in CHARS_SPACE for ch in value)
                width += len(value) + 3 + (2 if parens else 0)
        if not in_options:
            parens = any(ch in CHARS_SPACE for ch in arg)
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
    return lambda text: ns.expand_scoped(text, None, scope)


# Program ---------------------------------------------------------------------------------


def run(argv: list[str]) -> int:
    opts = Options(argv)
    if set(opts.flags) & set("eX#"):
        mode = "e" if "e" in opts else "X" if "X" in opts else "#"
        edit_main(opts.config_dir, opts.names, mode)
        return 0
    ns = Namespace(
        opts.config_dir,
        explicit_dir=opts.explicit_dir,
        defaults_only="d" in opts,
        overrides=opts.overrides,
    )
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
