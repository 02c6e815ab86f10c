"""A test-only tlsmgr server: the per-connection handler and real caches on a unix socket.

SYNOPSIS
    from support import tlsmgr_server

    proc = tlsmgr_server.start(folder)           # serves folder/tlsmgr; READY read
    proc = tlsmgr_server.start(folder, "--lmtp-db", fd=listener.fileno())
    tlsmgr_server.stop(proc)                     # SIGKILL and reap

    python tests/support/tlsmgr_server.py SOCKET DATA_DIR [--max-entries N] [--timeout T]
        [--lmtp-db] [--smtpd-db] [--log FILE] [--fd N]

DESCRIPTION
    The client and wire tests' server without master or skeleton: one
    process, non-blocking sockets, a selectors loop, the per-connection
    service.TlsmgrHandler driven as multi_server.main() drives it
    (connection_made / data_received / connection_lost,
    conn.close_after_write()), and tlsmgr's own PRNG pool. It runs as a
    program of its own, by path, so it imports only the product. The smtp
    cache is enabled (hash file in DATA_DIR); lmtp and smtpd are disabled
    unless asked for; the smtpd timeout is T (tickets on). Prints "READY" on
    stdout once listening. With --fd N it serves the inherited listening
    socket N instead of binding SOCKET, as a daemon started by the master
    does (the listener outlives the server: kill -9 and restart tests). TERM
    closes the caches and exits 0.

    start() runs it with this Python, waits for READY and returns the
    Popen; with fd=N the listener is passed on.  stop() kills it and
    reaps it.

    Test code only: it uses selectors and signal directly, which the
    product keeps in master/events.py.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from master.multi_server import HIGH_WATER
from tlsmgr import prng, scache, service


def start(folder: str, *extra: str, fd: int | None = None) -> subprocess.Popen:
    """Run this server on folder/tlsmgr (or on listener fd) with data in folder."""
    args = [sys.executable, __file__, os.path.join(folder, "tlsmgr"), folder, *extra]
    if fd is not None:
        args += ["--fd", str(fd)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, text=True, pass_fds=() if fd is None else (fd,)
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Kill the server (unless it has exited) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


class FileLog:
    def __init__(self, path: str | None) -> None:
        self.fp = open(path, "a", buffering=1) if path else None

    def _write(self, text: str) -> None:
        if self.fp:
            self.fp.write(text + "\n")

    def msg_info(self, text: str) -> None:
        self._write(text)

    def msg_warn(self, text: str) -> None:
        self._write("warning: " + text)


class Conn:
    """The skeleton's per-connection handle, as the handler sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.peer = "test-client"
        self.out = bytearray()
        self.closing = False
        self.held = False

    @property
    def room(self) -> int:
        return HIGH_WATER - len(self.out)

    def write(self, data: bytes) -> None:
        self.out += data

    def hold(self) -> None:
        self.held = True

    def close_after_write(self) -> None:
        self.closing = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("data_dir")
    ap.add_argument("--max-entries", type=int, default=100000)
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--lmtp-db", action="store_true")
    ap.add_argument("--smtpd-db", action="store_true")
    ap.add_argument("--log")
    ap.add_argument("--fd", type=int)
    args = ap.parse_args()

    log = FileLog(args.log)
    stores = {}

    def store(cache_type: str) -> scache.SessionCache:
        stores[cache_type] = scache.SessionCache.open(
            cache_type,
            f"hash:{args.data_dir}/{cache_type}_scache",
            timeout=args.timeout,
            max_entries=args.max_entries,
            data_directory=args.data_dir,
            mail_owner_uid=os.geteuid(),
            verbose=True,
            log=log,
        )
        return stores[cache_type]

    slots = [
        service.CacheSlot("smtpd", args.timeout, store("smtpd") if args.smtpd_db else None),
        service.CacheSlot("smtp", args.timeout, store("smtp")),
        service.CacheSlot("lmtp", args.timeout, store("lmtp") if args.lmtp_db else None),
    ]
    svc = service.Service(slots, rand=prng.Pool(), log=log, started=time.time())
    factory = svc.handler_factory(time.time)

    if args.fd is not None:
        listener = socket.socket(fileno=args.fd)
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.socket)
        listener.listen(128)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def drop(conn: Conn, handler: service.TlsmgrHandler) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()
        handler.connection_lost()

    def flush(conn: Conn, handler: service.TlsmgrHandler) -> None:
        try:
            sent = conn.sock.send(conn.out) if conn.out else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            drop(conn, handler)
            return
        del conn.out[:sent]
        if not conn.out and conn.closing:
            drop(conn, handler)
            return
        events = (0 if conn.closing else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn.out else 0
        )
        sel.modify(conn.sock, events, (conn, handler))

    held: list[tuple[Conn, service.TlsmgrHandler]] = []
    print("READY", flush=True)
    while not stop:
        # Held connections: resume() once per turn while their output has room
        # (the handler takes what is read meanwhile after what it held back).
        for conn, handler in held[:]:
            if len(conn.out) <= HIGH_WATER // 2 and not conn.closing:
                held.remove((conn, handler))
                conn.held = False
                conn.out += handler.resume()
                flush(conn, handler)
        for key, mask in sel.select(0 if held else 0.5):
            if key.data is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                conn = Conn(sock)
                handler = factory(conn)
                conn.out += handler.connection_made()
                sel.register(sock, selectors.EVENT_READ, (conn, handler))
                flush(conn, handler)
                continue
            conn, handler = key.data
            if mask & selectors.EVENT_READ and not conn.closing:
                try:
                    data = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                conn.out += handler.data_received(data)
                if not data:
                    conn.closing = True
            flush(conn, handler)
            if conn.held and (conn, handler) not in held:
                held.append((conn, handler))
    for cache in stores.values():
        cache.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
