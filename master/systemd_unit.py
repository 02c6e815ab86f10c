"""The systemd unit: etc/minipostfix.service rendered with an instance's real paths.

SYNOPSIS
    from master.systemd_unit import render_unit, write_unit, minipostfix_program

    text = render_unit(template_text, config_dir, program)
    path = write_unit(config_dir)            # config_dir/minipostfix.service

DESCRIPTION
    The template is the embedded etc/minipostfix.service (installed with
    the wheel's data beside main.cf and master.cf).  Rendering replaces
        @config_directory@   the instance's configuration directory
        @minipostfix@        the minipostfix console script to run
    and nothing else, so the unit's own `$`, `%` and `\\` syntax passes
    through untouched.  The program is the console script next to this
    Python (sysconfig's "scripts" path: the venv's bin/ for a venv
    install), the one `create-instance` itself was run as.

    write_unit() writes config_dir/minipostfix.service (mode 0644, a
    temporary file renamed into place).  The unit is Type=notify and runs
    `minipostfix -c DIR start-fg` (which sends READY=1), with
    ExecReload=`minipostfix -c DIR reload`: see the template's comments.

DIAGNOSTICS
    ValueError when a path has a character that a unit file would read
    differently (a newline, or a blank, which would split the command
    line); OSError from reading the template or writing the file;
    FileNotFoundError (from master.embedded) when the template is missing.

SEE ALSO
    systemd.service(5), systemd.unit(5); etc/minipostfix.service,
    master/sdnotify.py, master/control.py (create-instance), docs/operating.md
"""

from __future__ import annotations

import os
import sysconfig

from master.embedded import UNIT, embedded_file

__all__ = ["PLACEHOLDERS", "minipostfix_program", "render_unit", "write_unit"]

PLACEHOLDERS = ("@config_directory@", "@minipostfix@")
PROGRAM = "minipostfix"


def minipostfix_program() -> str:
    """The minipostfix console script of this installation."""
    return os.path.join(sysconfig.get_path("scripts"), PROGRAM)


def render_unit(template: str, config_dir: str, program: str) -> str:
    """The template with the placeholders replaced; ValueError for an unusable path."""
    for what, path in (("configuration directory", config_dir), ("program", program)):
        if not os.path.isabs(path) or any(ch.isspace() for ch in path):
            raise ValueError(f"{what} {path!r}: a unit needs an absolute path without blanks")
    return template.replace("@config_directory@", config_dir).replace("@minipostfix@", program)


def write_unit(config_dir: str, program: str | None = None) -> str:
    """Render the embedded template into config_dir/minipostfix.service; returns the path."""
    with open(embedded_file(UNIT), encoding="utf-8") as fp:
        text = render_unit(fp.read(), config_dir, program or minipostfix_program())
    path = os.path.join(config_dir, UNIT)
    with open(path + ".tmp", "w", encoding="utf-8") as fp:
        fp.write(text)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    return path
