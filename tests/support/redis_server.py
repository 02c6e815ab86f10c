"""Debian's redis-server for the tests: on a unix socket or a free loopback port, always stopped.

SYNOPSIS
    from support.redis_server import RedisServer, installed

    with RedisServer(folder) as redis:            # unix socket folder/redis.sock
    with RedisServer(folder, port=free_port()) as redis:   # 127.0.0.1:PORT
        redis.address                             # "unix:/.../redis.sock" or "inet:127.0.0.1:PORT"
        redis.call("GET", b"key")                 # one command, blocking: its reply
        redis.call("GET", b"key", db=3)           # the same in database 3
        redis.keys()                              # every key, as bytes
        redis.stop(); redis.start()               # down, and up again at the same address
        redis.freeze(); redis.thaw()              # SIGSTOP / SIGCONT: accepts, never answers
        redis.pid

DESCRIPTION
    The server runs in the foreground as a child of the test, with no
    persistence (`--save "" --appendonly no`), its working folder and
    log file in `folder`; start() waits until it answers PING.  On exit
    (of the `with` block, or a failed test) it is thawed, killed and
    reaped: no test leaves one running.  call() speaks RESP with the
    same parser tlsmgr uses (hiredis) over a fresh blocking socket and
    returns the reply (bytes, int, None, list, or a hiredis.ReplyError
    instance).  installed() says whether the package is there (the
    `redis` marker skips the tests otherwise).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import hiredis

from support.waiting import WAIT, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def installed() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


class RedisServer:
    """One private redis-server; see the module docstring."""

    def __init__(self, folder: str, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port
        self.socket_path = str(self.folder / "redis.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        if self.port is not None:
            return f"inet:127.0.0.1:{self.port}"
        return f"unix:{self.socket_path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        listen = ["--port", str(self.port)] if self.port is not None else ["--port", "0"]
        if self.port is None:
            listen += ["--unixsocket", self.socket_path, "--unixsocketperm", "777"]
        argv = [REDIS_SERVER, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            wait_until(self._answers, f"redis-server on {self.address}", WAIT, self._log_tail)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill and reap the server (thawed first if frozen)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(WAIT)
        self.proc = None
        if self.port is None and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def connect(self, timeout: float = WAIT) -> socket.socket:
        if self.port is not None:
            return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.socket_path)
        return sock

    def call(self, *args: Any, db: int | None = None) -> Any:
        """Send one command on a new connection (after SELECT db) and return its reply."""
        with self.connect() as sock:
            if db is not None:
                sock.sendall(hiredis.pack_command(("SELECT", db)))
            sock.sendall(hiredis.pack_command(args))
            reader = hiredis.Reader(encoding=None)
            replies = []
            while len(replies) < (2 if db is not None else 1):
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(65536)
                    assert data, f"redis-server on {self.address} closed the connection"
                    reader.feed(data)
                else:
                    replies.append(reply)
            return replies[-1]

    def keys(self) -> list[bytes]:
        return sorted(self.call("KEYS", "*"))

    def _log_tail(self) -> str:
        path = self.folder / "redis.log"
        return "\n" + path.read_text()[-2000:] if path.exists() else ""

    def _answers(self) -> bool:
        try:
            return self.call("PING") == b"PONG"
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
