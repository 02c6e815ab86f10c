"""The exchange file (tlsmgr/exchange.py, used through tlsmgr.entropy as the daemon does):
creation, read/mix/write, bad content, removal, exits."""

from __future__ import annotations

import fcntl
import os
import stat

import pytest

from support.prng_reference import KEY, RefPool
from tlsmgr import entropy, exchange, prng

SIZE = exchange.EXCH_SIZE


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "data" / "prng_exch")


@pytest.fixture(autouse=True)
def _data_dir(tmp_path):
    (tmp_path / "data").mkdir()


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if "warning:" in line]


def test_missing_file_is_created_full_size_0600_from_the_pool(path, maillog):
    old_umask = os.umask(0)  # the temporary file's 0600 must not depend on the umask
    try:
        pool = prng.Pool.from_key(KEY)
        exch = exchange.ExchangeFile.open(path, pool)
    finally:
        os.umask(old_umask)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == SIZE
    with open(path, "rb") as f:
        assert f.read() == RefPool(KEY).draw(SIZE)
    assert os.listdir(os.path.dirname(path)) == ["prng_exch"], "temporary file left behind"
    assert os.fstat(exch.fileno()).st_ino == st.st_ino
    assert _warnings(maillog()) == []
    exch.close()


def test_existing_file_is_opened_not_replaced(path):
    content = os.urandom(SIZE)
    with open(path, "wb") as f:
        f.write(content)
    ino = os.stat(path).st_ino
    exch = exchange.ExchangeFile.open(path, prng.Pool())
    assert os.stat(path).st_ino == ino
    assert os.pread(exch.fileno(), SIZE, 0) == content
    exch.close()


def test_open_removes_what_a_killed_creator_left(path, maillog):
    stale = path + ".abcdefgh.tmp"  # a tlsmgr killed before it linked the file into place
    with open(stale, "wb") as f:
        f.write(b"half")
    exchange.ExchangeFile.open(path, prng.Pool()).close()
    assert os.listdir(os.path.dirname(path)) == ["prng_exch"]
    assert f"removed stale temporary file {stale}" in maillog()


def test_update_reads_mixes_draws_and_writes_in_place(path, maillog):
    content = os.urandom(SIZE)
    with open(path, "wb") as f:
        f.write(content)
    pool, ref = prng.Pool.from_key(KEY), RefPool(KEY)
    exch = exchange.ExchangeFile.open(path, pool)
    ino = os.stat(path).st_ino
    exch.update(pool)
    ref.mix(content, now=True)
    with open(path, "rb") as f:
        assert f.read() == ref.draw(SIZE)
    assert os.stat(path).st_ino == ino, "must be rewritten in place, not replaced"
    assert pool.draw(32) == ref.draw(32)
    assert _warnings(maillog()) == []
    exch.close()


def test_different_files_give_different_pools(tmp_path):
    outputs = []
    for name in ("a", "b"):
        p = tmp_path / name
        p.write_bytes(os.urandom(SIZE))
        pool = prng.Pool.from_key(KEY)
        exch = exchange.ExchangeFile.open(str(p), pool)
        assert exch.read_into(pool) == SIZE
        outputs.append(pool.draw(32))
        exch.close()
    assert outputs[0] != outputs[1]


@pytest.mark.parametrize(
    "content, warning",
    [
        (b"", "is empty"),
        (os.urandom(100), "is short (100 of 1024 bytes); mixing it as-is"),
        (os.urandom(3000), "is longer than 1024 bytes (3000); truncating it"),
        (bytes(SIZE), "does not look random (1 distinct byte values)"),
        ((b"Postfix " * 128), "does not look random (8 distinct byte values)"),
    ],
)
def test_bad_content_is_mixed_with_a_warning_then_rewritten(path, maillog, content, warning):
    with open(path, "wb") as f:
        f.write(content)
    pool, ref = prng.Pool.from_key(KEY), RefPool(KEY)
    exch = exchange.ExchangeFile.open(path, pool)
    assert exch.read_into(pool) == min(len(content), SIZE)
    exch.update(pool)  # the same warning is not repeated
    warnings = _warnings(maillog())
    assert len(warnings) == 1 and f"PRNG exchange file {path} {warning}" in warnings[0], warnings
    if content:
        ref.mix(content[:SIZE], now=True)
        ref.mix(content[:SIZE], now=True)
    with open(path, "rb") as f:
        assert f.read() == ref.draw(SIZE)  # exactly 1024 bytes, mixed as-is
    exch.update(pool)
    assert len(_warnings(maillog())) == 1, "a rewritten file must not warn again"
    exch.close()


def test_update_waits_for_the_exclusive_lock(path):
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    other = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_SH)
        with pytest.raises(BlockingIOError):
            fcntl.flock(exch.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)
        exch.update(pool)
        # and update() released its lock
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)
        exch.close()


def test_removed_file_exits_without_saving(path, maillog):
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    assert not exch.removed()
    os.unlink(path)
    assert exch.removed()
    before = os.pread(exch.fileno(), SIZE, 0)
    with pytest.raises(SystemExit) as exit_info:
        entropy.exchange_event(exch, pool, delay=0)
    assert exit_info.value.code == 0
    assert os.pread(exch.fileno(), SIZE, 0) == before, "a removed file must not be saved"
    assert not os.path.exists(path)
    assert f"warning: PRNG exchange file {path} was removed -- exiting to reopen it" in maillog()
    assert entropy.save_at_exit(exch, pool) is False
    exch.close()


def test_exchange_event_updates(path):
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    before = os.pread(exch.fileno(), SIZE, 0)
    entropy.exchange_event(exch, pool, delay=0)
    after = os.pread(exch.fileno(), SIZE, 0)
    assert after != before and len(after) == SIZE
    exch.close()


def test_save_at_exit(path):
    pool = prng.Pool()
    assert entropy.save_at_exit(None, pool) is False
    exch = exchange.ExchangeFile.open(path, pool)
    before = os.pread(exch.fileno(), SIZE, 0)
    assert entropy.save_at_exit(exch, pool) is True
    assert os.pread(exch.fileno(), SIZE, 0) != before
    exch.close()


def test_exit_after_save_with_a_plain_reason(path, maillog):
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    before = os.pread(exch.fileno(), SIZE, 0)
    with pytest.raises(SystemExit) as exit_info:
        entropy.exit_after_save(exch, pool, "master went away", delay=0)
    assert exit_info.value.code == 0
    assert os.pread(exch.fileno(), SIZE, 0) != before
    assert "master went away" in maillog()
    exch.close()


def test_failed_save_still_exits_zero(path, maillog):
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    os.close(exch.fileno())  # simulate an I/O failure: the descriptor is gone
    with pytest.raises(SystemExit) as exit_info:
        entropy.exit_after_save(exch, pool, entropy.EntropyError("lost it"), delay=0)
    assert exit_info.value.code == 0
    assert "warning: cannot fstat PRNG exchange file" in maillog()
    assert "PRNG state not saved" in maillog()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "cannot create PRNG exchange file {p}/nodir/x: No such file or directory"),
        (
            lambda p: os.mkdir(f"{p}/nodir"),
            "cannot open PRNG exchange file {p}/nodir: Is a directory",
        ),
        (
            lambda p: os.mkfifo(f"{p}/nodir"),
            "cannot open PRNG exchange file {p}/nodir: not a regular",
        ),
    ],
)
def test_open_errors_name_the_file(tmp_path, make, message):
    d = str(tmp_path / "data")
    make(d)
    target = f"{d}/nodir/x" if "x:" in message else f"{d}/nodir"
    with pytest.raises(exchange.ExchangeError) as err:
        exchange.ExchangeFile.open(target, prng.Pool())
    assert message.format(p=d) in str(err.value)


def test_update_errors_are_exchange_errors(path):
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    ro = os.open(path, os.O_RDONLY)
    os.dup2(ro, exch.fileno())  # now the exchange descriptor is read-only
    os.close(ro)
    with pytest.raises(exchange.ExchangeError, match=f"cannot write PRNG exchange file {path}: "):
        exch.update(pool)
    assert os.path.getsize(path) == SIZE
    exch.close()
