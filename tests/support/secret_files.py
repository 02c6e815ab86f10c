"""Ticket secret files for the shared-key tests: given bytes, given mode.

SYNOPSIS
    from support.secret_files import write_secret

    path = write_secret(folder, os.urandom(48))                  # folder/secret, 0600
    path = write_secret(folder, b"x" * 31, name="bad.key", mode=0o644)

DESCRIPTION
    write_secret() writes `data` to folder/name, sets `mode` (after the
    write, so the umask does not matter) and returns the path as a
    string, as tls_session_ticket_secret_file takes it.  Wrong modes and
    lengths are what some tests need, so nothing is checked here.
"""

from __future__ import annotations

import os


def write_secret(folder: str, data: bytes, *, name: str = "secret", mode: int = 0o600) -> str:
    """folder/name holding data, with that mode; returns its path."""
    path = os.path.join(folder, name)
    with open(path, "wb") as fp:
        fp.write(data)
    os.chmod(path, mode)
    return path
