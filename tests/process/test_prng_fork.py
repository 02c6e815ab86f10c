"""Fork safety of tlsmgr/prng.py with real os.fork(): parent and children never share output."""

from __future__ import annotations

import os
from collections.abc import Callable

from tlsmgr import prng

CHUNK = 32


def in_child(fn: Callable[[], bytes]) -> bytes:
    """Run fn in a forked child and return what it produced; the child ends in os._exit."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(r)
            data = fn()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child failed"
    return b"".join(chunks)


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _erased(pool: prng.Pool) -> bool:
    """The at-fork hook has already dropped the inherited keystream (private fields, on purpose)."""
    return pool._pos == prng.REFILL_SIZE and bytes(pool._buf) == bytes(prng.REFILL_SIZE)


def _run(pool: prng.Pool, children: int = 12, draws: int = 100) -> list[list[bytes]]:
    """Fork `children` times; each side draws `draws` chunks after each fork."""
    outputs = []
    for _ in range(children):

        def child() -> bytes:
            flag = b"E" if _erased(pool) else b"-"
            return flag + b"".join(pool.draw(CHUNK) for _ in range(draws))

        got = in_child(child)
        assert got[:1] == b"E", "the child kept the parent's buffered keystream"
        outputs.append(_chunks(got[1:]))
        outputs.append([pool.draw(CHUNK) for _ in range(draws)])
    return outputs


def _all_distinct(outputs: list[list[bytes]]) -> bool:
    flat = [c for out in outputs for c in out]
    return len(set(flat)) == len(flat)


def test_children_and_parent_never_return_the_same_bytes():
    pool = prng.Pool()
    pool.draw(10)  # the buffer now holds keystream the children must not reuse
    assert _all_distinct(_run(pool))


def test_even_a_deterministic_pool_diverges_after_fork():
    pool = prng.Pool.from_key(bytes(32))
    pool.draw(10)
    outputs = _run(pool, children=4)
    assert _all_distinct(outputs)
    # The parent itself is untouched by forking: it continues its own stream.
    twin = prng.Pool.from_key(bytes(32))
    twin.draw(10)
    parent = [c for out in outputs[1::2] for c in out]
    assert parent == [twin.draw(CHUNK) for _ in range(len(parent))]


def test_grandchildren_diverge_too():
    pool = prng.Pool()
    pool.draw(1)

    def child() -> bytes:
        grandchild = in_child(lambda: pool.draw(CHUNK * 50))
        return pool.draw(CHUNK * 50) + grandchild

    got = in_child(child)
    mine = [pool.draw(CHUNK) for _ in range(50)]
    assert _all_distinct([_chunks(got), mine])


def test_pending_input_survives_into_the_child_state():
    """Inputs mixed before the fork still count in the child (folded with fresh randomness)."""
    pool = prng.Pool()
    pool.mix(b"session data")
    got = in_child(lambda: pool.stats()["forks"].to_bytes(1, "big") + pool.draw(CHUNK))
    assert got[0] == 1 and len(got) == 1 + CHUNK
    assert pool.stats()["forks"] == 0
