#!/usr/bin/env python3
"""redis_bench: our tlsmgr's lookup and update figures with the Redis second level off, on, slow.

SYNOPSIS
    .venv/bin/python bench/redis_bench.py [--levels off,redis,5ms,50ms] [--conns 1,8]
        [--workloads lookup,update,miss] [--duration S] [--warmup S] [--ids N]
        [--session-size B] [--json] [--keep]

DESCRIPTION
    The same machinery as bench/tlsmgr_bench.py (imported from it): bench/loadgen drives
    our tlsmgr under Postfix's master through its socket, closed loop, 1 and 8
    connections, and the rate, p50 and p99 are printed.  One fresh instance per level:
        off     no tls_session_cache_redis (the hot path every tlsmgr has)
        redis   a private redis-server on a loopback port, reached directly
        5ms     the same Redis behind a TCP proxy in this script that holds every byte
                from Redis to tlsmgr for 5 ms (so each Redis reply comes 5 ms late)
        50ms    the same with 50 ms: more than the read budget (20 ms), so lookups
                that go to Redis give up and answer a miss after the budget
    With Redis, the instance has a shared secret (tls_session_ticket_secret_file, a file
    this script writes) and tls_session_cache_redis; the read budget is the default.
    Workloads, each after --ids sessions were stored:
        lookup  hits on the stored ids: answered by the local cache, Redis never asked
        update  --session-size byte sessions over the same ids: stored locally, then
                sealed and sent to Redis without waiting for its reply
        miss    lookups of ids stored nowhere: every one misses locally and asks Redis
                (the cost of a lookup that goes to the second level; a Redis hit adds
                one unsealing, about 30 us, and a local store)
    After each level the tlsmgr's redis.* figures (stats) are printed: hits, misses,
    timeouts, late replies, skipped lookups.

    The delaying proxy is asyncio in a thread of this script: it adds latency, not
    bandwidth limits, and it is not the bottleneck at these rates (its CPU shows in the
    load generator's figures, not tlsmgr's).  Figures, never assertions; run as root.

DIAGNOSTICS
    A run that fails is reported in its cell as "error".  Every process started is
    stopped, also on Ctrl-C (tlsmgr_bench's subreaper and clean-up).

SEE ALSO
    bench/tlsmgr_bench.py, docs/performance.md ("The Redis second level")
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import tlsmgr_bench as tb

from support.redis_server import RedisServer
from support.secret_files import write_secret
from support.sockets import free_port
from tlsmgr.client import TlsmgrClient

LEVELS = {"off": None, "redis": 0.0, "5ms": 0.005, "50ms": 0.050}
WORKLOADS = {"lookup": "lookup", "update": "update", "miss": "lookup"}
MISS_FIRST = 10_000_000  # ids from here on were never stored


class DelayProxy:
    """127.0.0.1:PORT -> 127.0.0.1:target; bytes from the target are held `delay` seconds."""

    def __init__(self, target: int, delay: float) -> None:
        self.target, self.delay = target, delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise tb.RunError("the delaying proxy did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(
            self._pump(reader, up_writer, 0.0),
            self._pump(up_reader, writer, self.delay),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            w.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float):
        queue: asyncio.Queue = asyncio.Queue()

        async def late_writer() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                with contextlib.suppress(ConnectionError):
                    await dst.drain()

        task = asyncio.create_task(late_writer())
        try:
            while data := await src.read(65536):
                queue.put_nowait((self._loop.time() + delay, data))
            queue.put_nowait(None)
            await task
        except ConnectionError:  # either side went away: the run is over
            task.cancel()
        finally:
            dst.close()


def redis_figures(inst: tb.Server) -> dict[str, str]:
    with TlsmgrClient(inst.socket_path, timeout=10) as client:
        items = dict(client.stats().items)
    return {k.split(".", 1)[1]: v for k, v in items.items() if k.startswith("redis.")}


def run_level(level: str, folder: str, redis: RedisServer | None, loader: tb.Loader, args) -> dict:
    delay = LEVELS[level]
    extra = {"tls_session_cache_max_entries": "0"}
    with contextlib.ExitStack() as stack:
        if delay is not None:
            assert redis is not None
            redis.call("FLUSHALL")
            port = redis.port
            if delay > 0:
                port = stack.enter_context(DelayProxy(redis.port, delay)).port
            extra["tls_session_ticket_secret_file"] = write_secret(folder, b"b" * 48)
            extra["tls_session_cache_redis"] = f"inet:127.0.0.1:{port}"
        inst = stack.enter_context(tb.make_instance("ours", {}, args, extra))
        out: dict = {"populate": loader.populate(inst, args.ids)}
        if delay is not None:
            deadline = time.monotonic() + 20
            while redis_figures(inst).get("state") != "up":
                if time.monotonic() > deadline:
                    raise tb.RunError(f"{level}: tlsmgr did not connect to Redis")
                time.sleep(0.1)
        for workload in args.workloads:
            for conns in args.conns:
                first = MISS_FIRST if workload == "miss" else 0
                key = f"{workload}/{conns}"
                try:
                    out[key] = loader.run(inst, WORKLOADS[workload], conns, first=first)
                except tb.RunError as e:
                    out[key] = {"error": str(e)}
        if delay is not None:
            out["redis"] = redis_figures(inst)
        return out


def print_table(report: dict, args) -> None:
    print(f"# redis_bench: {report['machine']['cpu_model']}, {report['machine']['nproc']} CPUs,")
    print(f"# {args.duration}s per run after {args.warmup}s warm-up, {args.ids} ids,")
    print(f"# {args.session_size}-byte sessions; rate in requests/s, p50/p99 in microseconds")
    cols = [f"{w}/{c}" for w in args.workloads for c in args.conns]
    print(f"{'level':<7}" + "".join(f" | {c:^25}" for c in cols))
    print(f"{'':<7}" + "".join(f" | {'rate':>9} {'p50':>7} {'p99':>7}" for _ in cols))
    for level, result in report["levels"].items():
        cells = [tb.fmt_cell(result.get(c)) if "error" not in result else "error" for c in cols]
        print(f"{level:<7}" + "".join(f" | {cell}" for cell in cells))
    for level, result in report["levels"].items():
        if "redis" in result:
            shown = ", ".join(f"{k} {v}" for k, v in result["redis"].items())
            print(f"# {level}: redis {shown}")
        if "error" in result:
            print(f"# {level}: {result['error']}")
    print(f"# load average {report['machine']['loadavg_start']} -> {os.getloadavg()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])

    def csv(kind):
        return lambda s: [kind(x) for x in s.split(",") if x]

    p.add_argument("--levels", type=csv(str), default=list(LEVELS))
    p.add_argument("--workloads", type=csv(str), default=list(WORKLOADS))
    p.add_argument("--conns", type=csv(int), default=[1, 8])
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run (3)")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds not counted (0.5)")
    p.add_argument("--ids", type=int, default=1000, help="stored ids (1000)")
    p.add_argument("--session-size", type=int, default=256, help="session bytes (256)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = p.parse_args(argv)
    bad = (set(args.levels) - set(LEVELS)) | (set(args.workloads) - set(WORKLOADS))
    if bad:
        p.error(f"unknown level or workload: {', '.join(sorted(bad))}")
    # What tlsmgr_bench's instances and loader read.
    args.threads, args.db_type, args.ours_master = 1, "btree", "postfix"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binaries = tb.build(tb.BENCH / "build")
    tb.take_signals()
    loader = tb.Loader(binaries["loadgen"], args)
    report: dict = {"machine": tb.machine_info(), "settings": vars(args), "levels": {}}
    folder = tempfile.mkdtemp(prefix="redisbench-", dir="/tmp")
    try:
        with contextlib.ExitStack() as stack:
            redis = None
            if any(LEVELS[level] is not None for level in args.levels):
                redis = stack.enter_context(RedisServer(folder, port=free_port()))
            for level in args.levels:
                tb.log(f"level {level}")
                try:
                    report["levels"][level] = run_level(level, folder, redis, loader, args)
                except (tb.Skip, tb.RunError) as e:
                    report["levels"][level] = {"error": str(e)}
    finally:
        tb.stop_descendants()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        json.dump(report, sys.stdout, indent=1, default=str)
        print()
    else:
        print_table(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
