"""Helpers shared by tests/unit and tests/wire (tests/ is on sys.path through tests/conftest.py).

SYNOPSIS
    from common import Log, Conn, open_cache, reference_chain, reference_keybuf

    log = Log()                       # master.log's msg_info/msg_warn, kept in log.lines
    conn = Conn()                     # the skeleton's per-connection handle, as a handler sees it
    cache = open_cache(folder, name="smtp", kind="hash", max_entries=0, log=log)

DESCRIPTION
    Log stands in for master.log where a module takes a `log` object
    (scache, service): info lines as they are, warnings as "warning: ...".
    Conn counts close_after_write() calls in `closed` and hold() calls in
    `held`, keeps what write() was given in `written`, offers a fixed
    `room` (the skeleton's high-water mark unless told) and names its
    peer as the multi_server skeleton would (`private/tlsmgr(pid 7)`).
    open_cache() opens a real Berkeley DB session cache in `folder` with
    the caller's ids (mail_owner_uid = euid, so nothing is redirected);
    the caller closes it.  Fixtures (`folder`, `maillog`) are in
    tests/conftest.py.

    reference_chain(secret, epoch) and reference_keybuf(secret, epoch,
    period) compute the shared key chain's state C(epoch) and the 88-byte
    ticket keybuf of an epoch from the secret, independently of
    tlsmgr/keychain.py: hashlib for the chain, the `cryptography`
    package's HKDF for the keys (the derivation rule is written out
    here, not imported).
"""

from __future__ import annotations

import hashlib
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
    def __init__(self, peer: str = "private/tlsmgr(pid 7)", room: int = 256 * 1024) -> None:
        self.peer = peer
        self.closed = 0
        self.room = room
        self.held = 0
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def hold(self) -> None:
        self.held += 1

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


def reference_chain(secret: bytes, epoch: int) -> bytes:
    """C(epoch): C(0) = SHA-256("mpfx chain" || secret), C(e+1) = SHA-256("next" || C(e))."""
    state = hashlib.sha256(b"mpfx chain" + secret).digest()
    for _ in range(epoch):
        state = hashlib.sha256(b"next" + state).digest()
    return state


def reference_hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 with an empty salt, by the `cryptography` package."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def reference_keybuf(secret: bytes, epoch: int, period: int, state: bytes | None = None) -> bytes:
    """The keybuf of `epoch`: HKDF(C(epoch), "ticket") = name || AES || HMAC, then
    tout = (epoch + 1) * period - 1 as a little-endian int64."""
    state = state if state is not None else reference_chain(secret, epoch)
    material = reference_hkdf(state, b"ticket", 80)
    return material + struct.pack("<q", (epoch + 1) * period - 1)
