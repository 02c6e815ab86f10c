"""kill -9 during exchange-file writes: the file is always exactly 1024 readable bytes.

A child process loops ExchangeFile.update() (read, mix, draw, one pwrite
under flock) as fast as it can; the test kills it with SIGKILL at a random
moment, many times, and checks the file after each kill.  Some rounds
start without the file, so the kill can also land while open() creates
it: then the file must be absent or complete, never empty or short.
"""

from __future__ import annotations

import mmap
import os
import pwd
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from tlsmgr import exchange, prng

SIZE = exchange.EXCH_SIZE


def _check(path: str, must_exist: bool) -> None:
    if not os.path.exists(path):
        assert not must_exist, "the exchange file vanished"
        return
    st = os.stat(path)
    assert st.st_size == SIZE, f"exchange file is {st.st_size} bytes"
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(path, "rb") as f:
        assert len(f.read()) == SIZE


def _looping_child(path: str, ready: int, counter: mmap.mmap, creating: bool) -> None:
    """Child: open (maybe create), update forever, counting. Ends only by SIGKILL.

    When creating, say ready before open() so the kill can land inside the
    creation; otherwise after a first update, so it lands inside the loop
    (a freshly forked Python needs milliseconds before it runs anything).
    """
    try:
        if creating:
            os.write(ready, b"r")
        pool = prng.Pool()
        exch = exchange.ExchangeFile.open(path, pool)
        exch.update(pool)
        if not creating:
            os.write(ready, b"r")
        n = 0
        while True:
            exch.update(pool)
            n += 1
            counter[:8] = n.to_bytes(8, "little")
    finally:
        os._exit(1)


def _kill_round(path: str, creating: bool, counter: mmap.mmap, rng: random.Random) -> int:
    """One round; returns how many updates the child completed after saying ready."""
    counter[:8] = bytes(8)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _looping_child(path, w, counter, creating)
    os.close(w)
    try:
        assert os.read(r, 1) == b"r"
        time.sleep(rng.uniform(0, 0.003))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    return int.from_bytes(counter[:8], "little")


def test_kill_9_during_updates_in_forked_children(tmp_path):
    path = str(tmp_path / "prng_exch")
    rng = random.Random()
    counter = mmap.mmap(-1, 8)  # shared with the children
    update_rounds, mid_loop = 0, 0
    for i in range(300):
        creating = i % 10 == 0
        if creating and os.path.exists(path):
            os.unlink(path)
        elif not creating and not os.path.exists(path):
            # The last creation was killed before the file appeared (a slow
            # fsync under load): make it here, so this round still tests updates.
            exch = exchange.ExchangeFile.open(path, prng.Pool())
            exch.close()
        done = _kill_round(path, creating, counter, rng)
        _check(path, must_exist=not creating)
        if not creating:
            update_rounds += 1
            mid_loop += done > 0
    # Sanity check: most kills really landed inside the update loop.
    assert mid_loop > update_rounds // 2, (mid_loop, update_rounds)
    # What is left is a usable exchange file, and nothing else: opening it removed the
    # temporary files of the creators that were killed.
    pool = prng.Pool()
    exch = exchange.ExchangeFile.open(path, pool)
    exch.update(pool)
    exch.close()
    _check(path, must_exist=True)
    assert os.listdir(tmp_path) == ["prng_exch"]


def test_a_concurrent_reader_never_sees_a_short_file(tmp_path):
    """Every moment of an update is a possible crash point: watch them all without a lock."""
    path = str(tmp_path / "prng_exch")
    counter = mmap.mmap(-1, 8)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _looping_child(path, w, counter, creating=False)
    os.close(w)
    sizes = set()
    try:
        assert os.read(r, 1) == b"r"
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(20000):
                sizes.add(os.fstat(fd).st_size)
                sizes.add(len(os.pread(fd, 2 * SIZE, 0)))
        finally:
            os.close(fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert int.from_bytes(counter[:8], "little") > 10, "the child hardly ran"
    assert sizes == {SIZE}


CHILD = """
import sys
from tlsmgr import exchange, prng
pool = prng.Pool()
exch = exchange.ExchangeFile.open(sys.argv[1], pool)
sys.stdout.write("r"); sys.stdout.flush()
while True:
    exch.update(pool)
"""


def test_kill_9_of_a_real_process_looping_updates(tmp_path):
    path = str(tmp_path / "prng_exch")
    rng = random.Random()
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE)
        try:
            assert proc.stdout.read(1) == b"r"
            time.sleep(rng.uniform(0, 0.02))
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        _check(path, must_exist=True)


@pytest.mark.root
def test_created_with_mail_owner_ids_belongs_to_mail_owner():
    """The daemon opens the file under saved_eugid(mail_owner): the file is postfix's, 0600."""
    try:
        pw = pwd.getpwnam("postfix")
    except KeyError:
        pytest.skip("mail_owner postfix does not exist")
    top = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(top, 0o755)
        data = os.path.join(top, "data")
        os.mkdir(data, 0o755)
        os.chown(data, pw.pw_uid, pw.pw_gid)
        path = os.path.join(data, "prng_exch")
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.setegid(pw.pw_gid)
                os.seteuid(pw.pw_uid)
                pool = prng.Pool()
                exchange.ExchangeFile.open(path, pool).update(pool)
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == SIZE
    finally:
        shutil.rmtree(top)
