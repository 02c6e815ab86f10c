"""tlsmgr/entropy.py sources: dev:, egd: (a real EGD server on an AF_UNIX socket), files.

Every failure path is driven through reseed_event(), the function the
daemon's timer calls: it must log Postfix's lines, save the exchange file
and raise SystemExit(0).
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from tlsmgr import entropy, exchange, prng


@pytest.fixture
def exch(tmp_path):
    pool = prng.Pool()
    f = exchange.ExchangeFile.open(str(tmp_path / "prng_exch"), pool)
    yield f
    f.close()


def _content(exch: exchange.ExchangeFile) -> bytes:
    return os.pread(exch.fileno(), 2048, 0)


def _exits_after_saving(source, exch, maillog, *lines: str) -> None:
    """reseed_event must log `lines` in order, rewrite the exchange file, exit 0."""
    before = _content(exch)
    pool = prng.Pool()
    with pytest.raises(SystemExit) as exit_info:
        entropy.reseed_event(source, pool, exch, delay=0)
    assert exit_info.value.code == 0
    after = _content(exch)
    assert len(after) == exchange.EXCH_SIZE and after != before, "exchange file not saved"
    text = maillog()
    positions = [text.find(line) for line in lines]
    assert all(p >= 0 for p in positions), text
    assert positions == sorted(positions), text


# -- empty and unopened sources ------------------------------------------


def test_empty_source_warns_and_returns_none(maillog):
    assert entropy.open_source("", 32) is None
    text = maillog()
    assert "warning: no entropy source specified with parameter tls_random_source" in text
    assert "warning: encryption keys etc. may be predictable" in text
    assert entropy.reseed_pool(None, prng.Pool()) == 0


@pytest.mark.parametrize(
    "spec, warning",
    [
        ("dev:{d}/missing", "warning: cannot open entropy device {d}/missing: No such file"),
        ("egd:{d}/missing", "warning: cannot connect to EGD server {d}/missing: No such file"),
        ("{d}/missing", "warning: cannot open entropy file {d}/missing: No such file"),
    ],
)
def test_unopened_source_exits_to_reopen(tmp_path, maillog, exch, spec, warning):
    spec = spec.format(d=tmp_path)
    source = entropy.open_source(spec, 32)
    assert maillog().count(warning.format(d=tmp_path)) == 1
    _exits_after_saving(source, exch, maillog, f"exiting to reopen external entropy source {spec}")


# -- dev: --------------------------------------------------------------------


def test_dev_urandom_reads_nbytes_capped_at_255():
    pool = prng.Pool()
    small = entropy.open_source("dev:/dev/urandom", 32)
    big = entropy.open_source("dev:/dev/urandom", 1000)
    try:
        assert small.kind == "dev" and len(small.read()) == 32
        assert len(big.read()) == 255
        assert entropy.reseed_pool(small, pool) == 32 and not small.exhausted
        assert entropy.reseed_pool(small, pool) == 32  # kept open, read at every reseed
        assert pool.stats()["reseeds"] == 2
    finally:
        small.close()
        big.close()


@pytest.fixture
def fifo(tmp_path):
    """A FIFO with a writer held open by the test (O_RDWR, so opening never blocks)."""
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR)
    yield path, writer
    try:
        os.close(writer)
    except OSError:
        pass


def test_dev_fifo_one_read_accepts_fewer_bytes(fifo):
    path, writer = fifo
    source = entropy.open_source(f"dev:{path}", 32)
    try:
        os.write(writer, b"0123456789")
        assert source.read() == b"0123456789"
        os.write(writer, bytes(100))
        assert source.read() == bytes(32)
    finally:
        source.close()


def test_dev_eof_exits_after_saving(fifo, maillog, exch):
    path, writer = fifo
    source = entropy.open_source(f"dev:{path}", 32, timeout=5)
    os.close(writer)  # no writer left: the next read sees end of file
    _exits_after_saving(
        source,
        exch,
        maillog,
        f"cannot read from entropy device {path}: unexpected end of file -- exiting to reopen",
    )
    source.close()


def test_dev_timeout_exits_after_saving(fifo, maillog, exch):
    path, _ = fifo
    source = entropy.open_source(f"dev:{path}", 32, timeout=0.2)
    _exits_after_saving(
        source,
        exch,
        maillog,
        f"cannot read from entropy device {path}: Connection timed out -- exiting to reopen",
    )
    source.close()


def test_dev_fifo_without_writer_does_not_hang_at_open(tmp_path, maillog, exch):
    path = str(tmp_path / "lonely")
    os.mkfifo(path)
    source = entropy.open_source(f"dev:{path}", 32, timeout=0.3)
    assert source.kind == "dev"
    _exits_after_saving(source, exch, maillog, "-- exiting to reopen")
    source.close()


# -- egd: --------------------------------------------------------------------


class EgdServer:
    """A minimal EGD server: serves one connection at a time in a thread.

    mode: "ok" (count = n, then n bytes), "short" (count = n // 2), "zero"
    (count 0), "close" (close after the request), "truncated" (count n, then
    n // 2 bytes, then close), "stall" (read the request, answer nothing).
    """

    def __init__(self, path: str) -> None:
        self.path, self.mode, self.requests = path, "ok", []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            if not self.stop.is_set():
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        while True:
            try:
                req = conn.recv(2)
            except OSError:
                return
            if len(req) < 2:
                return
            self.requests.append(req)
            n = req[1]
            if self.mode == "ok":
                conn.sendall(bytes([n]) + os.urandom(n))
            elif self.mode == "short":
                conn.sendall(bytes([n // 2]) + os.urandom(n // 2))
            elif self.mode == "zero":
                conn.sendall(b"\0")
            elif self.mode == "truncated":
                conn.sendall(bytes([n]) + os.urandom(n // 2))
                conn.close()
                return
            elif self.mode == "close":
                conn.close()
                return
            else:  # stall
                self.stop.wait(30)
                return

    def close(self) -> None:
        self.stop.set()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread's recv(), sends EOF
            except OSError:
                pass
            conn.close()
        try:
            socket.socket(socket.AF_UNIX).connect(self.path)  # wake accept()
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def egd(tmp_path):
    server = EgdServer(str(tmp_path / "egd.sock"))
    yield server
    server.close()


def test_egd_protocol(egd):
    pool = prng.Pool()
    source = entropy.open_source(f"egd:{egd.path}", 32)
    big = entropy.open_source(f"egd:{egd.path}", 1000)
    try:
        assert source.kind == "egd"
        assert len(source.read()) == 32
        assert entropy.reseed_pool(source, pool) == 32
        egd.mode = "short"
        assert len(source.read()) == 16  # fewer bytes than asked: accepted
        assert egd.requests == [b"\x01\x20"] * 3
    finally:
        source.close()
    egd.mode = "ok"
    try:
        assert len(big.read()) == 255
        assert egd.requests[-1] == b"\x01\xff"
    finally:
        big.close()


@pytest.mark.parametrize(
    "mode, detail",
    [
        ("zero", "EGD server {p} reports zero bytes available"),
        ("close", "cannot read from EGD server {p}: unexpected end of file"),
        ("truncated", "cannot read 32 bytes from EGD server {p}: unexpected end of file"),
        ("stall", "cannot read from EGD server {p}: Connection timed out"),
    ],
)
def test_egd_loss_exits_after_saving(egd, maillog, exch, mode, detail):
    source = entropy.open_source(f"egd:{egd.path}", 32, timeout=0.3)
    egd.mode = mode
    _exits_after_saving(
        source,
        exch,
        maillog,
        detail.format(p=egd.path),
        f"lost connection to EGD server {egd.path} -- exiting to reconnect",
    )
    source.close()


def test_egd_server_gone_exits_after_saving(egd, maillog, exch):
    source = entropy.open_source(f"egd:{egd.path}", 32, timeout=1)
    assert len(source.read()) == 32  # the server has accepted this connection
    egd.close()
    _exits_after_saving(
        source, exch, maillog, f"lost connection to EGD server {egd.path} -- exiting to reconnect"
    )
    source.close()


# -- plain files ---------------------------------------------------------------


def test_file_source_is_read_once(tmp_path):
    path = tmp_path / "seedfile"
    content = os.urandom(20000)
    path.write_bytes(content)
    source = entropy.open_source(str(path), 10000)
    pool = prng.Pool()
    assert source.kind == "file"
    assert entropy.reseed_pool(source, pool) == 10000  # chunks of 8192, no 255 cap
    assert source.exhausted and source.fileno() == -1
    assert entropy.reseed_pool(source, pool) == 0  # later events do nothing
    assert entropy.reseed_event(source, pool, None, delay=0) == 0
    assert pool.stats()["bytes_reseeded"] == 10000


def test_file_source_returns_the_file_bytes(tmp_path):
    path = tmp_path / "seedfile"
    path.write_bytes(b"0123456789")
    assert entropy.open_source(str(path), 32).read() == b"0123456789"
    path.write_bytes(os.urandom(9000))
    assert entropy.open_source(str(path), 9000).read() == path.read_bytes()


def test_empty_file_source_warns_and_goes_on(tmp_path, maillog, exch):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    source = entropy.open_source(str(path), 32)
    before = _content(exch)
    assert entropy.reseed_event(source, prng.Pool(), exch, delay=0) == 0
    assert f"warning: cannot read from entropy file {path}: no data" in maillog()
    assert source.exhausted and _content(exch) == before
