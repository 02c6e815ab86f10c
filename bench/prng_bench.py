#!/usr/bin/env python3
"""Seed bytes per second from tlsmgr's PRNG pool, against os.urandom in the same run.

SYNOPSIS
    .venv/bin/python bench/prng_bench.py [--seconds S] [--sizes 32,255] [--json]

DESCRIPTION
    For each size (seed requests are 1..255 bytes; smtpd and smtp ask for
    tls_daemon_random_bytes = 32), times in the same process:

    pool.draw          Pool.draw(n) back to back (buffer served, refill every
                       REFILL_SIZE - 32 bytes)
    pool per turn      pool.mix_time() + pool.draw(n): what tlsmgr does per
                       seed request, since it mixes the time of day on every
                       loop turn
    pool reseed+draw   pool.reseed(32 bytes) + pool.draw(n): the worst case,
                       a fold and a new cipher for every draw
    os.urandom         the kernel's getrandom(2)
    ssl.RAND_bytes     OpenSSL's RAND (what Postfix's tlsmgr uses)

    and, once, the cost of an exchange-file update (flock, pread, mix,
    draw 1024, pwrite) on a file under /tmp.  Figures are printed, never
    asserted; each case takes the best of 3 runs of about S/3 seconds.

SEE ALSO
    tlsmgr/prng.py, docs/prng.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable

from tlsmgr import exchange, prng


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second: best of 3 timed runs, each about seconds/3 long."""
    n = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - start
        if took > 0.05:
            break
        n *= 4
    per_run = max(1, int(n * (seconds / 3) / took))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(per_run):
            fn()
        best = max(best, per_run / (time.perf_counter() - start))
    return best


def cases(size: int) -> dict[str, Callable[[], object]]:
    pool = prng.Pool()
    turn_pool = prng.Pool()
    reseed_pool = prng.Pool()
    fresh = os.urandom(32)

    def per_turn() -> bytes:
        turn_pool.mix_time()
        return turn_pool.draw(size)

    def reseed_draw() -> bytes:
        reseed_pool.reseed(fresh)
        return reseed_pool.draw(size)

    return {
        "pool.draw": lambda: pool.draw(size),
        "pool per turn": per_turn,
        "pool reseed+draw": reseed_draw,
        "os.urandom": lambda: os.urandom(size),
        "ssl.RAND_bytes": lambda: ssl.RAND_bytes(size),
    }


def exchange_update_rate(seconds: float) -> float:
    top = tempfile.mkdtemp(dir="/tmp")
    try:
        pool = prng.Pool()
        exch = exchange.ExchangeFile.open(os.path.join(top, "prng_exch"), pool)
        try:
            return rate(lambda: exch.update(pool), seconds)
        finally:
            exch.close()
    finally:
        shutil.rmtree(top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="time per case (default 1.5)")
    ap.add_argument("--sizes", default="32,255", help="draw sizes, comma-separated")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for size in sizes:
        for name, fn in cases(size).items():
            r = rate(fn, args.seconds)
            results.append({"case": name, "size": size, "draws_per_s": r, "bytes_per_s": r * size})
    exch = exchange_update_rate(args.seconds)
    info = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "refill_size": prng.REFILL_SIZE,
    }
    if args.json:
        print(json.dumps({"info": info, "seed": results, "exchange_updates_per_s": exch}, indent=1))
        return 0
    print(f"# Python {info['python']}, {info['cpus']} CPUs, REFILL_SIZE {info['refill_size']}")
    print(f"{'case':<18} {'size':>5} {'draws/s':>12} {'MB/s':>9} {'us/draw':>9}")
    for row in results:
        print(
            f"{row['case']:<18} {row['size']:>5} {row['draws_per_s']:>12,.0f} "
            f"{row['bytes_per_s'] / 1e6:>9.1f} {1e6 / row['draws_per_s']:>9.2f}"
        )
    print(f"exchange file update: {exch:,.0f}/s ({1e6 / exch:.0f} us each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
