#!/usr/bin/env python3
"""The shared key chain's costs: chain steps, start-up, and tktkey with random or shared keys.

SYNOPSIS
    .venv/bin/python bench/keychain_bench.py [--seconds S] [--steps N] [--json]

DESCRIPTION
    In one process, with the project's own code:

    chain walk         keychain.walk() over N steps (default 10^6, about the
                       epoch of today at H = 1800 s): the walk a host makes
                       when it starts from the secret
    start, secret      keyfiles.start_chain() with no saved state, at the
                       current time and H = 1800 s (walk from C(0), write
                       the state file under /tmp)
    start, saved       the same with the state saved by the run before (a
                       restart: a walk of one or two steps)
    tktkey random      Service.handle(tktkey) with Postfix's random keys
                       (tickets.TicketKeys), empty name, then a 16-byte name
    tktkey shared      the same with keys from the chain (SharedTicketKeys)

    The tktkey figures are the request handler alone: the socket and the
    protocol cost the same with both kinds of keys (bench/tlsmgr_bench.py
    measures those against Postfix's tlsmgr).  Figures are printed, never
    asserted; rates are the best of 3 runs of about S/3 seconds.

SEE ALSO
    tlsmgr/keychain.py, tlsmgr/keyfiles.py, docs/cluster.md, docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from prng_bench import rate

from tlsmgr import keychain, keyfiles, prng, service
from tlsmgr.protocol import Request
from tlsmgr.tickets import SharedTicketKeys

H = 1800


def walk_seconds(steps: int) -> float:
    c0 = keychain.genesis(os.urandom(32))
    start = time.perf_counter()
    keychain.walk(c0, steps)
    return time.perf_counter() - start


def start_seconds() -> tuple[float, float]:
    """start_chain() from the secret alone, then again from the saved state."""
    folder = tempfile.mkdtemp(prefix="keychain-bench-")
    try:
        path = os.path.join(folder, keyfiles.STATE_FILE)
        secret = os.urandom(32)
        took = []
        for _ in range(2):
            start = time.perf_counter()
            _, _, state_file = keyfiles.start_chain(
                bytearray(secret), path, H, time.time(), log=service.NULL_LOG
            )
            took.append(time.perf_counter() - start)
            state_file.close()
        return took[0], took[1]
    finally:
        shutil.rmtree(folder)


def tktkey_rates(seconds: float) -> dict[str, float]:
    pool = prng.Pool()
    now = time.time()
    chain = keychain.Chain(H, now, 0, keychain.genesis(os.urandom(32)))
    services = {
        "random": service.Service([service.CacheSlot("smtpd", 2 * H)], rand=pool),
        "shared": service.Service(
            [service.CacheSlot("smtpd", 2 * H)], rand=pool, tickets=SharedTicketKeys(chain)
        ),
    }
    rates = {}
    for kind, svc in services.items():
        name = svc.handle(Request("tktkey"), now).data[:16]
        for label, request in (
            ("empty", Request("tktkey")),
            ("16-byte", Request("tktkey", keyname=name)),
        ):
            rates[f"tktkey {kind}, {label} name"] = rate(
                lambda s=svc, r=request: s.handle(r, now), seconds
            )
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per rate (3)")
    p.add_argument("--steps", type=int, default=1_000_000, help="chain steps to walk (10^6)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    walk = walk_seconds(args.steps)
    from_secret, from_saved = start_seconds()
    result = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "epoch_now": keychain.epoch_of(time.time(), H),
        "walk_steps": args.steps,
        "walk_seconds": walk,
        "start_from_secret_seconds": from_secret,
        "start_from_saved_seconds": from_saved,
        "rates": tktkey_rates(args.seconds),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"# Python {result['python']}, {result['cpus']} CPUs, epoch now {result['epoch_now']}")
    print(
        f"chain walk: {args.steps:,} steps in {walk:.3f} s"
        f" ({args.steps / walk / 1e6:.2f} M steps/s)"
    )
    print(
        f"start_chain: from the secret {from_secret:.3f} s, from the saved state {from_saved:.4f} s"
    )
    for case, value in result["rates"].items():
        print(f"{case:<28} {value:>12,.0f}/s {1e6 / value:>7.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
