"""Locate the embedded default configuration (etc/main.cf, etc/master.cf, the unit).

SYNOPSIS
    from master.embedded import NAMES, UNIT, embedded_file, embedded_directory

    embedded_file("main.cf")        # absolute path of the embedded main.cf
    embedded_file(UNIT)             # the systemd unit template (minipostfix.service)
    embedded_directory()            # the folder that holds all three files

DESCRIPTION
    The files in the checkout's etc/ are the source of truth: one copy,
    installed as data rather than duplicated into a package.  They are
    found in one of two places, in this order:

    checkout       ../etc/ next to the master package, when the package is
                   imported from a source tree (the flat layout, or an
                   editable install pointing at it): the folder holds
                   setup.cfg and etc/main.cf.
    installed      sysconfig.get_path("data")/share/minipostfix/, where
                   setup.cfg's data_files puts them when a wheel is
                   installed (the venv's prefix for a venv install).

    The checkout wins, so that editing etc/*.cf in a clone takes effect at
    once with `make run`.

DIAGNOSTICS
    embedded_file() and embedded_directory() raise FileNotFoundError whose
    text lists every place searched; callers report it as a fatal error.

SEE ALSO
    setup.cfg ([options.data_files]), control.py (create-instance)
"""

from __future__ import annotations

import os
import sysconfig

from master.config import MAIN_CF
from master.mastercf import MASTER_CF

NAMES = (MAIN_CF, MASTER_CF)  # the configuration files create-instance copies
UNIT = "minipostfix.service"  # the systemd unit template create-instance renders
FILES = (*NAMES, UNIT)


def candidate_directories() -> list[str]:
    """The folders searched, in order of preference."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    source_root = os.path.dirname(package_dir)
    checkout = os.path.join(source_root, "etc")
    installed = os.path.join(sysconfig.get_path("data"), "share", "minipostfix")
    out = []
    if os.path.exists(os.path.join(source_root, "setup.cfg")):
        out.append(checkout)
    out.append(installed)
    return out


def embedded_directory() -> str:
    """The first candidate folder that holds main.cf, master.cf and the unit template."""
    searched = candidate_directories()
    for folder in searched:
        if all(os.path.isfile(os.path.join(folder, name)) for name in FILES):
            return folder
    raise FileNotFoundError(
        f"cannot find the embedded {', '.join(FILES)}; searched: "
        + ", ".join(searched)
        + " (reinstall the minipostfix package)"
    )


def embedded_file(name: str) -> str:
    """Absolute path of the embedded `name` (main.cf, master.cf or minipostfix.service)."""
    if name not in FILES:
        raise ValueError(f"not an embedded configuration file: {name!r}")
    return os.path.join(embedded_directory(), name)
