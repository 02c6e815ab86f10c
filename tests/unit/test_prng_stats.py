"""A statistical smoke test of 1 MiB of pool output.

This proves nothing about the generator's quality: it catches gross bugs
(a buffer served twice, zeros leaking out, a stuck key, bytes skewed by
erasure).  Each bound is at least 6 standard deviations (or the
equivalent chi-square tail, p < 1e-9) away from what a correct generator
gives, so a correct pool fails with negligible probability.
"""

from __future__ import annotations

import math
import zlib

import pytest

from tlsmgr import prng

SIZE = 1 << 20
Z = 6.5  # standard deviations allowed


@pytest.fixture(scope="module")
def output() -> bytes:
    """1 MiB drawn the way tlsmgr draws: time mixed each turn, sizes 1..255, 1024 now and then."""
    pool = prng.Pool()
    sizes = [32, 255, 1, 17, 1024, 64, 200, 4096]
    chunks, total, i = [], 0, 0
    while total < SIZE:
        pool.mix_time()
        n = min(sizes[i % len(sizes)], SIZE - total)
        chunks.append(pool.draw(n))
        total += n
        i += 1
        if i % 500 == 0:
            pool.reseed(b"external entropy %d" % i)
    data = b"".join(chunks)
    assert len(data) == SIZE
    return data


def test_byte_frequencies_chi_square(output):
    counts = [0] * 256
    for b in output:
        counts[b] += 1
    expected = SIZE / 256
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    # 255 degrees of freedom: mean 255, sd 22.6; Wilson-Hilferty gives p < 1e-9 outside ~[140, 415].
    assert 130 < chi2 < 420, chi2


def test_monobit_and_runs(output):
    n = SIZE * 8
    bits = int.from_bytes(output, "big")
    ones = bits.bit_count()
    assert abs(ones - n / 2) < Z * math.sqrt(n) / 2, ones
    # A run ends wherever bit i differs from bit i+1: count transitions among n bits.
    transitions = ((bits ^ (bits >> 1)) & ((1 << (n - 1)) - 1)).bit_count()
    runs = transitions + 1
    assert abs(runs - (n + 1) / 2) < Z * math.sqrt(n - 1) / 2, runs


def test_incompressible(output):
    ratio = len(zlib.compress(output, 9)) / SIZE
    assert ratio > 0.99, ratio


def test_no_repeated_16_byte_blocks(output):
    blocks = {output[i : i + 16] for i in range(0, SIZE, 16)}
    assert len(blocks) == SIZE // 16


def test_no_lag_one_byte_correlation(output):
    mean = sum(output) / SIZE
    var = sum((b - mean) ** 2 for b in output) / SIZE
    cov = sum((a - mean) * (b - mean) for a, b in zip(output[:-1], output[1:], strict=True)) / (
        SIZE - 1
    )
    r = cov / var
    assert abs(r) < Z / math.sqrt(SIZE), r
