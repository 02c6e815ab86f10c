#!/usr/bin/env python3
"""Reloads beside a real Postfix smtpd: what they cost STARTTLS sessions, ours beside Postfix's.

SYNOPSIS
    .venv/bin/python bench/reload_bench.py [--reloads N] [--interval S] [--clients C] [--json]

DESCRIPTION
    As root.  Two private instances, one after the other, each running
    Debian's real smtpd (STARTTLS, a server session cache in tlsmgr),
    anvil and postlogd:

    ours       our master with our tlsmgr (chroot, as the embedded
               master.cf runs it)
    postfix    Postfix's master with Postfix's tlsmgr

    C client threads open SMTP sessions back to back (connect, EHLO,
    STARTTLS, a full TLS handshake, EHLO, QUIT); after a warm-up the
    master gets N SIGHUPs, S seconds apart.  Printed per instance: the
    sessions during the reloads, the failed ones, those that took over
    0.9 s, median and p99 of all sessions, and the one-second sleeps
    of smtpd processes, counted with strace on the master and its
    children: Postfix's attr_clnt sleeps one second before it retries
    when it finds its tlsmgr connection closed, the cost a reload puts
    on an smtpd in the middle of a session when its tlsmgr goes away
    (Postfix's tlsmgr exits at once on reload; ours hands its
    connections to its successor).  strace slows every process a
    little, for both alike.  Figures, never assertions.

SEE ALSO
    master/handover.py, docs/skeleton.md ("Leaving: the drain"),
    docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import ssl
import statistics
import subprocess
import sys
import time

from support.instance import OUR_TLSMGR, MasterInstance, MiniInstance, PostfixInstance
from support.load import ClientThreads
from support.postfix import SBIN, SMTPD_MAIN_CF
from support.sockets import free_port
from tlsmgr.clients.mkcert import CERT_NAME, KEY_NAME

MAIN_CF = {
    **SMTPD_MAIN_CF,
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "maillog_file_prefixes": "/tmp",
    "smtpd_client_connection_rate_limit": "0",
    "smtpd_client_connection_count_limit": "0",
}
SERVICES = "127.0.0.1:{port} inet n - n - 20 smtpd\nanvil unix - - n - 1 anvil\n"
# Each instance adds its own postlog line and postlogd (ours: our postlogd).
OURS_EXTRA = "tlsmgr unix - - y 1000? 1 tlsmgr\n"
POSTFIX_EXTRA = "tlsmgr unix - - n 1000? 1 tlsmgr\n"
SLOW = 0.9  # seconds: a session this long met a one-second sleep, or a slow start


def make_instance(kind: str, port: int) -> MasterInstance:
    if kind == "ours":
        inst: MasterInstance = MiniInstance(
            MAIN_CF, SERVICES.format(port=port) + OURS_EXTRA, tlsmgr=OUR_TLSMGR
        )
        for name in ("smtpd", "anvil"):
            (inst.bin / name).symlink_to(SBIN / name)
    else:
        inst = PostfixInstance(MAIN_CF, SERVICES.format(port=port) + POSTFIX_EXTRA)
    subprocess.run(
        [sys.executable, "-m", "tlsmgr.clients.mkcert", str(inst.etc)],
        check=True,
        capture_output=True,
    )
    inst.write_main_cf(
        smtpd_tls_cert_file=str(inst.etc / CERT_NAME), smtpd_tls_key_file=str(inst.etc / KEY_NAME)
    )
    return inst


class Sessions(ClientThreads):
    """Client threads opening STARTTLS sessions back to back."""

    def __init__(self, port: int, clients: int) -> None:
        super().__init__(clients)
        self.port = port
        self.done: list[tuple[float, float]] = []  # (start, seconds)
        self.failures: list[str] = []
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE

    def one(self, n: int) -> None:
        start = time.monotonic()
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
                smtp.ehlo()
                smtp.starttls(context=self._context)
                smtp.ehlo()
        except (OSError, smtplib.SMTPException) as err:
            self.failures.append(f"{type(err).__name__}: {err}")
            return
        self.done.append((start, time.monotonic() - start))


def one_second_sleeps(trace: str) -> int:
    """clock_nanosleep/nanosleep calls of exactly one second in an strace -f output."""
    with open(trace) as fp:
        return sum("nanosleep" in line and "tv_sec=1, tv_nsec=0" in line for line in fp)


def run(kind: str, reloads: int, interval: float, clients: int) -> dict:
    port = free_port()
    inst = make_instance(kind, port)
    trace = os.path.join(inst.root, "strace.out")
    try:
        inst.start()
        with Sessions(port, clients) as sessions:
            time.sleep(3)  # warm-up: smtpd and tlsmgr processes started
            tracer = None
            if shutil.which("strace"):
                tracer = subprocess.Popen(
                    ["strace", "-f", "-qq", "-e", "trace=clock_nanosleep,nanosleep", "-o", trace,
                     "-p", str(inst.master_pid())],
                )  # fmt: skip
                time.sleep(1)
            start = time.monotonic()
            for _ in range(reloads):
                os.kill(inst.master_pid(), signal.SIGHUP)
                time.sleep(interval)
            time.sleep(2)
            end = time.monotonic()
            if tracer is not None:
                tracer.terminate()
                tracer.wait()
        inst.stop()
        during = [seconds for begun, seconds in sessions.done if start <= begun < end]
        every = sorted(seconds for _begun, seconds in sessions.done)
        return {
            "instance": kind,
            "reloads": reloads,
            "sessions": len(during),
            "failed": len(sessions.failures),
            "over_0.9s": sum(seconds > SLOW for seconds in during),
            "median_ms": round(statistics.median(every) * 1000, 1),
            "p99_ms": round(every[int(len(every) * 0.99)] * 1000, 1),
            "one_second_sleeps": one_second_sleeps(trace) if tracer is not None else None,
        }
    finally:
        inst.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reloads")
    parser.add_argument("--clients", type=int, default=6, help="client threads")
    parser.add_argument("--instances", default="ours,postfix")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("reload_bench: run as root (Postfix's master and the chroot need it)")
    results = [
        run(kind, args.reloads, args.interval, args.clients) for kind in args.instances.split(",")
    ]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{args.reloads} reloads {args.interval:g} s apart, {args.clients} STARTTLS clients")
    columns = list(results[0])
    print("  ".join(f"{c:>17}" for c in columns))
    for row in results:
        print("  ".join(f"{'-' if row[c] is None else row[c]!s:>17}" for c in columns))


if __name__ == "__main__":
    main()
