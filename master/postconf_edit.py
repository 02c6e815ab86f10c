"""minipostconf -e, -X and -#: edit main.cf in place (Postfix's postconf_edit.c).

SYNOPSIS
    from master.postconf_edit import edit_main_cf

    edit_main_cf(path, [(name, value), ...])         # the -e engine
    edit_main(config_dir, args, mode)                # mode "e", "X" or "#"
    rewrite_main_cf(path, {name: value or None}, mode)

DESCRIPTION
    -e (also assumed by minipostconf when the first argument contains
    "="): set each name=value in main.cf.  An existing logical line is
    replaced in place by "name = value" and its continuation lines
    dropped; comments, blank lines and order are kept; new names are
    appended in sorted order.  -X removes the named logical lines, -#
    comments them out (their continuation lines too).  A name given twice
    keeps its last request, with a warning.

    The new file is written beside the old one (main.cf.tmp, the old
    file's mode), under an exclusive lock, fsynced, and renamed over it,
    so readers see the old file or the new one, never a mixture.

DIAGNOSTICS
    ConfigError for a bad argument (multi-line, a comment, a name=value
    that does not parse, -X or -# with a value) and when the file cannot
    be read or replaced (`open main.cf.tmp: Permission denied`); warnings
    ("main.cf:7: multiple entries for "a"", "ignoring earlier request")
    through master.postconf_names.warn().

SEE ALSO
    postconf(1), src/postconf/postconf_edit.c, src/util/edit_file.c
    (Postfix); master/postconf.py; docs/configuration.md, "Editing"
"""

from __future__ import annotations

import os

from master.config import MAIN_CF, split_nameval
from master.errors import ConfigError
from master.macro import CHARS_SPACE
from master.postconf_names import warn


def edit_main_cf(path: str, edits: list[tuple[str, str]]) -> None:
    """Set each (name, value) in main.cf at path, atomically (the -e engine).

    As the module docstring says for -e; an empty value is written
    "name = ".  Raises ConfigError for a bad name or value, or when the
    file cannot be read or replaced.
    """
    table: dict[str, str | None] = {}
    for name, value in edits:
        if not name or any(ch in CHARS_SPACE + "=#" for ch in name) or "\n" in value:
            raise ConfigError(
                f'bad setting "{name} = {value}" (one line, no blanks or = in the name)'
            )
        table[name] = value
    rewrite_main_cf(path, table, "e")


def rewrite_main_cf(path: str, table: dict[str, str | None], mode: str) -> None:
    """Copy main.cf with the named logical lines replaced (e), removed (X) or commented out (#)."""
    lines, mode_bits = read_lines(path), file_mode(path)
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
    replace_file(path, "".join(out), mode_bits)


def _key_length(line: str) -> int:
    for i, ch in enumerate(line):
        if ch in CHARS_SPACE + "=":
            return i
    return len(line)


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fp:
            text = fp.read()
    except OSError as err:
        raise ConfigError(f"open {path} for reading: {err.strerror}") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line + "\n" for line in lines]


def file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o644


def replace_file(path: str, text: str, mode: int) -> None:
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


def edit_main(config_dir: str, args: list[str], mode: str) -> None:
    """-e (mode "e"), -X ("X") or -# ("#") with the command line's arguments."""
    table: dict[str, str | None] = {}
    for arg in args:
        if "\n" in arg:
            raise ConfigError("-e, -X, or -# accepts no multi-line input")
        text = arg.lstrip(" \t\r\n\v\f")
        if text.startswith("#"):
            raise ConfigError("-e, -X, or -# accepts no comment input")
        if mode == "e":
            try:
                name, value = split_nameval(text)
            except ValueError as err:
                raise ConfigError(f'{err}: "{text}"') from None
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
    rewrite_main_cf(os.path.join(config_dir, MAIN_CF), table, mode)
