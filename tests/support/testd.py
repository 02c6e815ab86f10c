"""testd: a test service that speaks the master's contract directly, without the skeleton.

SYNOPSIS
    from support.testd import install_testd

    install_testd(inst.bin)            # writes bin/testd
    inst.write_master_cf("echo unix - n n - 0 testd echo 30\\n")

DESCRIPTION
    testd is a standard-library script (#! this interpreter with -S: no
    site packages, fast start) that speaks the master's contract itself
    (fd 5 status records, GENERATION, fds 6.. listeners), so that the
    master's tests exercise the master alone.  Its mode is its first
    master.cf argument:

    echo [IDLE]      multi-client: each request line gets "PID GEN LINE";
                     TAKEN before, AVAIL after each; on fd 5 EOF stops
                     accepting and exits 0 once its clients are gone; exits
                     0 after IDLE seconds without clients.
    single [IDLE]    one client at a time (TAKEN at accept, AVAIL when the
                     client leaves), like single_server.
    record FILE      appends one JSON line per event (start, with argv,
                     environment and open descriptors; each trigger or
                     datagram received); MiniInstance.records() reads them.
    fail             writes a line to stderr and exits 1 at once.
    exit0            exits 0 at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTD = r'''#!PYTHON -S
"""testd: a test service speaking the master's fd-5 contract directly."""
import json, os, select, signal, socket, struct, sys, time

WITH_ARG = ("-n", "-t", "-o", "-s", "-i", "-m")


def parse(argv):
    opts, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in WITH_ARG:
            opts.setdefault(argv[i], []).append(argv[i + 1])
            i += 2
        else:
            opts.setdefault(argv[i], []).append("")
            i += 1
    return opts, argv[i:]


# Like the project's skeleton: INT (a terminal's Ctrl-C) is handled as TERM.
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
OPTS, ARGS = parse(sys.argv[1:])
MODE = ARGS[0] if ARGS else "echo"
PID = os.getpid()
GEN = int(os.environ.get("GENERATION", "0"), 8)
TRANSPORT = OPTS.get("-t", ["unix"])[0]
COUNT = int(OPTS.get("-s", ["1"])[0])


def status(avail):
    try:
        os.write(5, struct.pack("=iIi", PID, GEN, avail))
    except OSError:
        pass  # the master went away or reloaded: fd 5 reads EOF, handled there


def master_gone():
    # Readable fd 5 means the master went away or reloaded: EOF, or a reset
    # when it closed its end with our last status records still unread.
    try:
        return os.read(5, 1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def serve_echo(idle):
    listeners = [socket.socket(fileno=6 + n) for n in range(COUNT)]
    for s in listeners:
        s.setblocking(False)
    clients, last, gone = {}, time.monotonic(), False
    while True:
        fds = ([] if gone else [5] + listeners) + list(clients)
        if gone and not clients:
            sys.exit(0)
        ready, _, _ = select.select(fds, [], [], 0.2)
        if not clients and time.monotonic() - last > idle:
            sys.exit(0)
        if 5 in ready and master_gone():
            gone = True  # stop accepting; finish the clients we have
            continue
        for r in ready:
            if r in listeners:
                try:
                    conn, _ = r.accept()
                except BlockingIOError:
                    continue
                clients[conn] = b""
            else:
                data = r.recv(4096)
                if not data:
                    del clients[r]
                    r.close()
                    last = time.monotonic()
                    continue
                status(0)
                clients[r] += data
                while b"\n" in clients[r]:
                    line, clients[r] = clients[r].split(b"\n", 1)
                    r.sendall(b"%d %d %s\n" % (PID, GEN, line))
                if clients[r] == b"W\0" or clients[r] == b"W":
                    clients[r] = b""
                    del clients[r]
                    r.close()
                status(1)
                last = time.monotonic()


def serve_single(idle):
    listener = socket.socket(fileno=6)
    listener.setblocking(False)
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([5, listener], [], [], 0.2)
        if time.monotonic() - last > idle:
            sys.exit(0)
        if 5 in ready and master_gone():
            sys.exit(0)
        if listener not in ready:
            continue
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            continue
        conn.setblocking(True)
        status(0)
        with conn:
            buf = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    conn.sendall(b"%d %d %s\n" % (PID, GEN, line))
        status(1)
        last = time.monotonic()


def serve_record(path):
    def note(event, **kw):
        with open(path, "a") as fp:
            fp.write(json.dumps(dict(event=event, pid=PID, time=time.time(), **kw)) + "\n")

    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass  # the directory listing's own descriptor
    note("start", argv=sys.argv, env=dict(os.environ), transport=TRANSPORT, fds=fds)
    listen = 6
    if TRANSPORT in ("unix", "inet", "pass"):
        listen = socket.socket(fileno=6)
        listen.setblocking(False)
    elif TRANSPORT == "unix-dgram":
        listen = socket.socket(fileno=6)
    while True:
        ready, _, _ = select.select([5, listen], [], [])
        if 5 in ready and master_gone():
            sys.exit(0)
        if listen not in ready:
            continue
        if TRANSPORT == "fifo":
            data = os.read(6, 4096)
        elif TRANSPORT == "unix-dgram":
            data = listen.recv(4096)
        else:
            try:
                conn, _ = listen.accept()
            except BlockingIOError:
                continue
            conn.settimeout(5)
            data = b""
            while True:
                chunk = conn.recv(16)
                data += chunk
                if not chunk or data.endswith(b"\0"):
                    break
            conn.close()
        status(0)
        note("data", data=data.decode("latin-1"))
        status(1)


if MODE == "fail":
    sys.stderr.write("testd: deliberate startup failure\n")
    sys.exit(1)
elif MODE == "exit0":
    sys.exit(0)
elif MODE == "echo":
    serve_echo(float(ARGS[1]) if len(ARGS) > 1 else 100)
elif MODE == "single":
    serve_single(float(ARGS[1]) if len(ARGS) > 1 else 100)
elif MODE == "record":
    serve_record(ARGS[1])
else:
    sys.stderr.write("testd: unknown mode %r\n" % MODE)
    sys.exit(2)
'''


def install_testd(bin_dir: Path) -> Path:
    """Write bin_dir/testd (mode 0755) and return its path."""
    path = bin_dir / "testd"
    path.write_text(TESTD.replace("PYTHON", sys.executable))
    path.chmod(0o755)
    return path
