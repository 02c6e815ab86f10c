"""Stand-ins for what the skeleton hands a tlsmgr module: the log, a connection, randomness.

SYNOPSIS
    from support.stand_ins import Conn, Log, Rand

    log = Log()                       # master.log's msg_info/msg_warn, kept in log.lines
    conn = Conn()                     # the skeleton's per-connection handle, as a handler sees it
    rand = Rand()                     # os.urandom draws; Rand(0xA5) draws that byte

DESCRIPTION
    Log stands in for master.log where a module takes a `log` object
    (scache, service): info lines as they are, warnings as "warning: ...".
    Conn counts close_after_write() calls in `closed`, hold() calls in
    `held` and pause() calls in `paused`, keeps what write() was given in `written`, offers a fixed
    `room` (the skeleton's high-water mark unless told) and names its
    peer as the multi_server skeleton would (`private/tlsmgr(pid 7)`).
    Rand stands in for tlsmgr's PRNG pool where service.Service takes
    one: draw(n) returns os.urandom(n), or n copies of `byte` when given
    one; it counts the bytes drawn (`drawn`), keeps what was mixed in
    (`mixed`), and reports {"draws": 1} as its stats.
"""

from __future__ import annotations

import os


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
        self.paused = 0
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def hold(self) -> None:
        self.held += 1

    def pause(self) -> None:
        self.paused += 1

    def close_after_write(self) -> None:
        self.closed += 1


class Rand:
    def __init__(self, byte: int | None = None) -> None:
        self.byte = byte
        self.mixed: list[bytes] = []
        self.drawn = 0

    def draw(self, n: int) -> bytes:
        self.drawn += n
        return os.urandom(n) if self.byte is None else bytes([self.byte]) * n

    def mix(self, data: bytes) -> None:
        self.mixed.append(bytes(data))

    def stats(self) -> dict[str, int]:
        return {"draws": 1}
