"""The service manager's end of systemd's notify protocol: a datagram socket that a test binds.

SYNOPSIS
    from support.notify import NotifyListener

    with NotifyListener(tmp_path) as manager:          # a path (or abstract=True)
        env = {**os.environ, "NOTIFY_SOCKET": manager.address}
        ... start `minipostfix start-fg` with env ...
        fields = manager.next()                        # {"READY": "1", "MAINPID": "123"}
        manager.pending()                              # what has arrived, without waiting

DESCRIPTION
    A real AF_UNIX SOCK_DGRAM socket, as systemd's own: bound at
    DIR/notify, or with abstract=True at a random name in the abstract
    namespace, whose $NOTIFY_SOCKET spelling is "@name".  next() waits
    (up to `timeout`, AssertionError after it) for one datagram and
    returns its KEY=VALUE lines as a dict (a line without "=" is kept
    with the value None, so a malformed message shows in the assertion).
"""

from __future__ import annotations

import os
import select
import socket
from pathlib import Path

from support.waiting import WAIT


class NotifyListener:
    """A bound unix datagram socket standing for systemd's notification socket."""

    def __init__(self, folder: Path | str | None = None, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if abstract:
            name = f"mpfx-notify-{os.getpid()}-{os.urandom(6).hex()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            if folder is None:
                raise ValueError("a folder for the socket, or abstract=True")
            path = os.path.join(folder, "notify")
            self.sock.bind(path)
            os.chmod(path, 0o666)
            self.address = path

    def next(self, timeout: float = WAIT) -> dict[str, str | None]:
        """The next message's fields; AssertionError when none comes within timeout."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise AssertionError(f"no notification on {self.address} within {timeout} s")
        return self._fields(self.sock.recv(4096))

    def pending(self) -> list[dict[str, str | None]]:
        """Every message that has arrived, without waiting."""
        out = []
        while select.select([self.sock], [], [], 0)[0]:
            out.append(self._fields(self.sock.recv(4096)))
        return out

    @staticmethod
    def _fields(data: bytes) -> dict[str, str | None]:
        fields: dict[str, str | None] = {}
        for line in data.decode().split("\n"):
            key, eq, value = line.partition("=")
            fields[key] = value if eq else None
        return fields

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
