"""systemd's readiness protocol: READY=1, RELOADING=1, STOPPING=1 to $NOTIFY_SOCKET.

SYNOPSIS
    from master.sdnotify import Notifier

    notifier = Notifier.from_environment()  # takes NOTIFY_SOCKET out of os.environ
    notifier.ready()                        # READY=1, MAINPID=<this pid>
    notifier.reloading()                    # RELOADING=1, MONOTONIC_USEC=<now>
    notifier.stopping()                     # STOPPING=1
    notifier.send("STATUS=text", ...)       # any other field
    notifier.enabled                        # False without NOTIFY_SOCKET

DESCRIPTION
    A service started by systemd with Type=notify finds the address of
    the service manager's socket in $NOTIFY_SOCKET: an absolute path, or
    "@name" for the abstract namespace (the "@" stands for the leading
    NUL).  Each message is one datagram of newline-separated KEY=VALUE
    fields, sent on an AF_UNIX SOCK_DGRAM socket (sd_notify(3)).  A
    notifier opens a socket per message and closes it again, as
    libsystemd does, so no descriptor is held between messages and none
    reaches a child.

    from_environment() removes NOTIFY_SOCKET from os.environ (libsystemd's
    unset_environment): only the process systemd started may talk to it,
    and the unit says NotifyAccess=main.

    `minipostfix start-fg` sends READY=1 once every listener exists (the
    point where `minipostfix start` gets its readiness byte), RELOADING=1
    when a reload begins and READY=1 when it is done, whether or not the
    new configuration was good, and STOPPING=1 when it begins to stop.
    MONOTONIC_USEC goes with RELOADING=1, as systemd 253 and later want.

DIAGNOSTICS
    Never an exception.  An address that is neither a path nor "@name"
    (e.g. a vsock address) is logged once with a warning and the notifier
    stays silent.  A failed send (no listener, queue full: the datagram
    is sent without blocking) is logged as a warning; the mail system
    carries on.

SEE ALSO
    sd_notify(3), systemd.service(5) (Type=notify, NotifyAccess);
    master/master.py (when), master/control.py (start-fg), etc/minipostfix.service
"""

from __future__ import annotations

import os
import socket
import time

from master.log import msg_warn

__all__ = ["ENV_NOTIFY_SOCKET", "Notifier", "notify_address"]

ENV_NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify_address(text: str) -> str | None:
    """The socket address for a $NOTIFY_SOCKET value: a path, "\\0name" for "@name", else None."""
    if text.startswith("@") and len(text) > 1:
        return "\0" + text[1:]
    if text.startswith("/"):
        return text
    return None


class Notifier:
    """Messages to systemd's notification socket; silent when there is none."""

    def __init__(self, value: str | None = None) -> None:
        self.value = value or ""
        self.address = notify_address(self.value) if value else None
        if value and self.address is None:
            msg_warn(f"{ENV_NOTIFY_SOCKET}={value}: unsupported address; not notifying systemd")

    @classmethod
    def from_environment(cls) -> Notifier:
        """A notifier for $NOTIFY_SOCKET, which is taken out of os.environ."""
        return cls(os.environ.pop(ENV_NOTIFY_SOCKET, None))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram with the fields, one per line; False (and a warning) if it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as err:
            msg_warn(f"cannot notify systemd ({self.value}): {err.strerror or err}")
            return False
        return True

    def ready(self) -> bool:
        return self.send("READY=1", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
