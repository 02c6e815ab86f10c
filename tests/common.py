"""Helpers shared by tests/unit and tests/wire (tests/ is on sys.path through tests/conftest.py).

SYNOPSIS
    from common import Log, Conn, open_cache

    log = Log()                       # master.log's msg_info/msg_warn, kept in log.lines
    conn = Conn()                     # the skeleton's per-connection handle, as a handler sees it
    cache = open_cache(folder, name="smtp", kind="hash", max_entries=0, log=log)

DESCRIPTION
    Log stands in for master.log where a module takes a `log` object
    (scache, service): info lines as they are, warnings as "warning: ...".
    Conn counts close_after_write() calls in `closed` and names its peer
    as the multi_server skeleton would (`private/tlsmgr(pid 7)`).
    open_cache() opens a real Berkeley DB session cache in `folder` with
    the caller's ids (mail_owner_uid = euid, so nothing is redirected);
    the caller closes it.  Fixtures (`folder`, `maillog`) are in
    tests/conftest.py.
"""

from __future__ import annotations

import os

from tlsmgr.scache import SessionCache

TIMEOUT = 3600


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def msg_info(self, text: str) -> None:
        self.lines.append(text)

    def msg_warn(self, text: str) -> None:
        self.lines.append("warning: " + text)


class Conn:
    def __init__(self, peer: str = "private/tlsmgr(pid 7)") -> None:
        self.peer = peer
        self.closed = 0

    def close_after_write(self) -> None:
        self.closed += 1


def open_cache(
    folder: str,
    *,
    name: str = "smtp",
    kind: str = "hash",
    timeout: int = TIMEOUT,
    max_entries: int = 0,
    verbose: bool = False,
    log: Log | None = None,
) -> SessionCache:
    """A real cache `kind:folder/name_scache`, opened as the caller."""
    return SessionCache.open(
        name,
        f"{kind}:{folder}/{name}_scache",
        timeout=timeout,
        max_entries=max_entries,
        data_directory=folder,
        mail_owner_uid=os.geteuid(),
        verbose=verbose,
        log=log or Log(),
    )
