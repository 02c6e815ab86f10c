#!/usr/bin/env python3
"""tlsmgr_bench: load figures for our tlsmgr against Postfix 3.7's, from a C load generator.

SYNOPSIS
    .venv/bin/python bench/tlsmgr_bench.py [--instances null,real,ours] [--duration S]
        [--warmup S] [--conns 1,8] [--workloads seed,lookup,update,mix] [--ids N]
        [--session-size B] [--db-type btree|hash] [--ours-master postfix|minipostfix]
        [--scale] [--scale-entries N] [--scan] [--scan-entries N] [--scan-window S]
        [--flood] [--flood-conns N] [--threads T] [--repeat N] [--json] [--keep]
        [--build-only] [--build-dir DIR]

DESCRIPTION
    Python drives, C loads. The script compiles bench/loadgen.c and bench/nullserver.c with
    gcc (into bench/build/, rebuilt when a source is newer), starts each server "instance" in a
    private temporary directory under /tmp, and runs bench/loadgen against its tlsmgr socket:
    closed loop (each connection sends one request, reads one full reply, repeats), 1 and 8
    connections, for a fixed duration after a warm-up, of
        seed     request=seed size=32
        lookup   hits on the pre-populated ids (uniform over --ids ids)
        update   --session-size byte sessions, ids spread uniformly over the same ids
        mix      80% lookup, 10% update, 10% seed
    and prints requests/s, p50 and p99 latency per instance and the ratio ours/real. The
    instances run interleaved (each workload on null, real and ours back to back); with
    --repeat N each cell runs N times and the fastest run is reported.

    Instances (each has start(), stop(), socket_path, server_pid() and master_pid()):
        null   bench/nullserver: a do-nothing C server with fixed replies, the ceiling that
               shows the load generator is not the bottleneck
        real   Postfix's master(8) (/usr/lib/postfix/sbin/master -c DIR -w) running the real
               /usr/lib/postfix/sbin/tlsmgr, plus postlogd for maillog_file
        ours   our tlsmgr (.venv/bin/tlsmgr) under the same real master; with --ours-master
               minipostfix, under our own master (`minipostfix -c DIR start`)
    real and ours are the test suite's instances (tests/support/instance.py: PostfixInstance
    and MiniInstance, with `tlsmgr unix - - n 1000? 1 tlsmgr`): a private root under /tmp
    whose daemon_directory holds links to the programs, bin/tlsmgr to the tlsmgr measured.
    An instance whose programs are missing is skipped with a message saying why.

    --scale   on fresh real/ours instances: lookup rate (8 connections) with 1,000 cached
              entries, then with --scale-entries (1,000,000) of --session-size bytes, and the
              tlsmgr's VmRSS/VmHWM from /proc/PID/status and the cache file's size (ours
              runs with tls_session_cache_max_entries = 0 and tls_session_cache_size_limit
              = 0, i.e. unlimited).
    --scan    on fresh real/ours instances with smtp_tls_session_cache_timeout = 120s (the
              minimum): --scan-entries victims are stored at start; the scan that runs at
              tlsmgr start + 240 s finds them expired and deletes them. Lookups (8 connections,
              on --ids fresh entries) run from 2 s before that moment for --scan-window seconds,
              reported overall and per 250 ms slice. tlsmgr's CPU use in the 2 idle seconds after
              the window says whether the scan was still running. Takes about 4.5 min per
              instance.
    --flood   on fresh real/ours instances: a 32 KiB session (the largest our caches store)
              is stored; --flood-conns (10) connections each send 64 KiB of pipelined lookups
              of it (1,524 requests whose replies come to 67 MB) and never read; meanwhile one
              well-behaved connection does lookups for --duration seconds: its rate, p50, p99
              and max, how many flooders had been answered at all, and the tlsmgr's
              VmRSS/VmHWM. Postfix's
              tlsmgr answers the first request of a read and drops the rest, and it writes
              with blocking I/O: a flooder that never reads may stall it (the run then
              reports the load generator's timeout as an error).

    Targets (reported, never asserted): at 8 connections seed and lookup >= 1.0x the real
    tlsmgr, update >= 3x, p99 <= 2 ms; lookup rate at 10^6 entries within 20% of 10^3; RSS at
    10^6 entries < 150 MB; p99 during a cleanup scan <= 5 ms; the good client's p99 while
    flooders are blocked <= 5 ms.

    Each run also records the CPU time the tlsmgr (and the master) used per request, from
    /proc/PID/stat: on a shared machine it moves far less than the rate. --json prints one
    JSON document (machine, settings, every figure) instead of the table. Progress goes to
    stderr. real and ours need root (private instances with mail_owner-owned directories);
    null does not.

SECURITY
    Runs the real Postfix master as root on private directories; never touches /etc/postfix.

DIAGNOSTICS
    A run that fails (load generator error, server gone) is reported in its table cell and in
    the JSON as "error"; the other runs go on. Exit status 0, 1 when nothing could run, 130
    when interrupted. Every process started is stopped and reaped, also on Ctrl-C or SIGTERM
    (a second signal is ignored until the clean-up is done): the script is a child subreaper,
    since the master daemonizes, and on the way out it stops whatever is still its child (a
    master interrupted before it wrote its pid file). Temporary directories are removed unless
    --keep.

BUGS
    Figures depend on what else runs on the machine: the load average is recorded before and
    after. Needs the venv's Python: `support` (tests/support) is on its import path through
    the .pth file `make setup` writes.

SEE ALSO
    bench/README.md, docs/performance.md, bench/loadgen.c, bench/nullserver.c
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import platform
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from support import postfix, procs
from support.attrs import read_reply, request
from support.instance import (
    MINIPOSTFIX,
    OUR_TLSMGR,
    MasterInstance,
    MiniInstance,
    PostfixInstance,
    StartError,
)
from support.postfix import SBIN
from support.sockets import connectable
from tlsmgr.scache import MAX_SESSION

BENCH = Path(__file__).resolve().parent
SOURCES = {"loadgen": BENCH / "loadgen.c", "nullserver": BENCH / "nullserver.c"}
CFLAGS = ["-O2", "-g", "-Wall", "-Wextra", "-pthread"]
MAIL_OWNER = "postfix"
TLSMGR_BENCH_LINE = "tlsmgr unix - - n 1000? 1 tlsmgr\n"
SCAN_TIMEOUT = 120  # Postfix raises any smaller positive cache timeout to 120 s
FLOOD_SESSION = MAX_SESSION  # the largest session our tlsmgr stores (Postfix's stores any)


class Skip(Exception):
    """This instance cannot run here; the message says why."""


class RunError(Exception):
    """A load generator run failed; the message names the run and quotes its error."""


def log(text: str) -> None:
    print(f"tlsmgr_bench: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- build


def build(outdir: Path) -> dict[str, Path]:
    """Compile loadgen and nullserver into outdir when missing or older than their source."""
    outdir.mkdir(parents=True, exist_ok=True)
    binaries = {}
    for name, src in SOURCES.items():
        binary = outdir / name
        if not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime:
            cmd = ["gcc", *CFLAGS, "-o", str(binary), str(src)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"tlsmgr_bench: {' '.join(cmd)} failed:\n{proc.stderr}")
        binaries[name] = binary
    return binaries


# ---------------------------------------------------------------- processes


def become_subreaper() -> None:
    """Adopt orphaned descendants (the master daemonizes), so that we can reap them."""
    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        log("warning: prctl(PR_SET_CHILD_SUBREAPER) failed; stopped daemons may stay zombies")


def reap_zombies() -> None:
    """Reap the adopted processes that have exited (a stopped master and its children)."""
    for pid in procs.children_of(os.getpid()):
        fields = procs.proc_stat(pid)
        if fields and fields[0] == "Z":
            procs.gone(pid)


# ---------------------------------------------------------------- instances


class Server:
    """A server under test: start(), stop(), socket_path, server_pid(), master_pid(); a
    context that starts it, and stops it also when the start failed half-way."""

    label = "?"
    description = "?"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def server_pid(self) -> int | None:
        """The tlsmgr (or null server) process, once there is one."""
        raise NotImplementedError

    def master_pid(self) -> int | None:
        return None

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NullServer(Server):
    """bench/nullserver in a private folder."""

    label = "null"
    description = "bench/nullserver (C, fixed replies, no work)"

    def __init__(self, binary: Path, session_size: int, keep: bool = False) -> None:
        self.binary, self.session_size, self.keep = binary, session_size, keep
        self.root = Path(tempfile.mkdtemp(prefix="tlsbench-", dir="/tmp"))
        self.socket_path = self.root / "null.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(self.binary), "-s", str(self.socket_path), "-z", str(self.session_size)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not connectable(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Skip(f"{self.binary} did not start (exit status {self.proc.poll()})")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            for pid in procs.stop_pids([self.proc.pid]):
                log(f"warning: pid {pid} ignored SIGTERM; killed it")
            self.proc.wait()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def server_pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class MasterServer(Server):
    """A tlsmgr under a master, as a tests/support instance: Postfix's master(8) with
    Postfix's tlsmgr ("real") or ours ("ours"), or ours under our own master."""

    def __init__(
        self, label: str, master: str, main_extra: dict[str, str], keep: bool = False
    ) -> None:
        self.label, self.master, self.keep = label, master, keep
        self.main_extra = main_extra
        self.tlsmgr = SBIN / "tlsmgr" if label == "real" else OUR_TLSMGR
        if master == "minipostfix":
            self.description = "our tlsmgr under our master (minipostfix start)"
        elif label == "ours":
            self.description = f"our tlsmgr ({OUR_TLSMGR}) under Postfix's master"
        else:
            self.description = f"Postfix {postfix.version()} tlsmgr under Postfix's master"
        self.inst: MasterInstance | None = None
        self._master_pid: int | None = None

    def check(self) -> None:
        """Skip, saying why, when this instance cannot run here."""
        if os.geteuid() != 0:
            raise Skip("a private instance needs root (directories owned by mail_owner)")
        try:
            pwd.getpwnam(MAIL_OWNER)
        except KeyError:
            raise Skip(f"mail_owner account {MAIL_OWNER} does not exist (make setup)") from None
        if self.master == "postfix" and not (SBIN / "master").exists():
            raise Skip(f"Debian's postfix is not installed ({SBIN}/master missing)")
        if not self.tlsmgr.exists():
            raise Skip(f"{self.tlsmgr} is missing (make setup)")
        if self.master == "minipostfix" and not Path(MINIPOSTFIX).exists():
            raise Skip(f"{MINIPOSTFIX} is missing (make setup)")

    def start(self) -> None:
        self.check()
        main = {
            "myhostname": "tlsbench.localdomain",
            "smtp_tls_session_cache_timeout": "3600s",
            **self.main_extra,
        }
        kind = PostfixInstance if self.master == "postfix" else MiniInstance
        self.inst = kind(
            main_cf=main, master_cf=TLSMGR_BENCH_LINE, tlsmgr=self.tlsmgr, keep=self.keep
        )
        try:
            self.inst.start()
        except StartError as e:
            raise Skip(f"{e}\nmaillog:\n{self.maillog_tail()}") from None
        if not os.path.exists(self.inst.socket_path):
            raise Skip(f"{self.inst.socket_path} did not appear; maillog:\n{self.maillog_tail()}")

    def stop(self) -> None:
        if self.inst is None:
            return
        try:
            self.inst.stop()
        except AssertionError as e:
            log(f"warning: {self.label}: {e}")
        finally:
            self.inst.close()  # kills whatever is left, removes the root unless --keep
            reap_zombies()

    @property
    def socket_path(self) -> str:
        assert self.inst is not None
        return self.inst.socket_path

    @property
    def data(self) -> Path | None:
        return self.inst.data if self.inst else None

    def master_pid(self) -> int | None:
        if self._master_pid is None and self.inst is not None:
            try:
                self._master_pid = self.inst.master_pid()
            except (OSError, ValueError):
                return None
        return self._master_pid

    def server_pid(self) -> int | None:
        """The tlsmgr child of the master (forked at the first connection)."""
        assert self.inst is not None
        try:
            return self.inst.tlsmgr_pid(timeout=5)
        except AssertionError:
            return None

    def maillog_tail(self, lines: int = 8) -> str:
        text = self.inst.log() if self.inst else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no maillog)"


# ---------------------------------------------------------------- load runs


class Loader:
    """Runs bench/loadgen against one instance and adds the server's CPU use."""

    def __init__(self, binary: Path, args: argparse.Namespace) -> None:
        self.binary, self.args = binary, args

    def run(self, inst: Server, workload: str, conns: int, **kw: object) -> dict:
        a = self.args
        duration = kw.get("duration", a.duration)
        warmup = kw.get("warmup", a.warmup)
        cmd = [str(self.binary), "-s", str(inst.socket_path), "-w", workload, "-c", str(conns)]
        cmd += ["-T", str(min(a.threads, conns)), "-d", str(duration), "-W", str(warmup)]
        cmd += ["-n", str(kw.get("ids", a.ids)), "-f", str(kw.get("first", 0))]
        cmd += ["-z", str(a.session_size)]
        if kw.get("slice_ms"):
            cmd += ["-S", str(kw["slice_ms"])]
        server = inst.server_pid() if workload != "populate" else None
        master = inst.master_pid()
        cpu0, mcpu0, t0 = procs.cpu_seconds(server), procs.cpu_seconds(master), time.monotonic()
        limit = None if workload == "populate" else float(duration) + float(warmup) + 60
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as e:
            raise RunError(f"{inst.label} {workload} x{conns}: loadgen timed out") from e
        elapsed = time.monotonic() - t0
        if proc.returncode != 0:
            raise RunError(f"{inst.label} {workload} x{conns}: {proc.stderr.strip()}")
        result = json.loads(proc.stdout)
        cpu1, mcpu1 = procs.cpu_seconds(server), procs.cpu_seconds(master)
        result["loadgen_cpu_pct"] = round(100 * result["cpu_s"] / elapsed, 1)
        if cpu0 is not None and cpu1 is not None:
            result["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / elapsed, 1)
        if mcpu0 is not None and mcpu1 is not None:
            result["master_cpu_pct"] = round(100 * (mcpu1 - mcpu0) / elapsed, 1)
        if "server_cpu_pct" in result and result["rps"] > 0:
            # CPU cost per request (tlsmgr + master), over warm-up and window alike: much
            # less sensitive to other work on the machine than the rate itself.
            cpu = (result["server_cpu_pct"] + result.get("master_cpu_pct", 0.0)) / 100
            result["cpu_us_per_request"] = round(1e6 * cpu / result["rps"], 1)
        fails = sum(v["fail"] for v in result["by_request"].values())
        if fails:
            log(f"warning: {inst.label} {workload} x{conns}: {fails} FAIL replies")
        return result

    def populate(self, inst: Server, ids: int, first: int = 0) -> dict:
        return self.run(inst, "populate", 8, ids=ids, first=first)


def run_matrix(insts: dict[str, Server], loader: Loader, args: argparse.Namespace) -> dict:
    """Every workload at every connection count, on each instance in turn (interleaved, so
    that a change in background load touches all instances alike), --repeat times; the run
    with the highest rate is kept (other work on the machine only ever slows a run down) and
    the rates of all runs are listed in "runs_rps"."""
    results: dict = {label: {} for label in insts}
    for workload in args.workloads:
        for conns in args.conns:
            key = f"{workload}/{conns}"
            runs: dict[str, list[dict]] = {label: [] for label in insts}
            for _ in range(args.repeat):
                for label, inst in insts.items():
                    try:
                        r = loader.run(inst, workload, conns)
                    except RunError as e:
                        log(f"error: {e}")
                        runs[label].append({"error": str(e), "rps": -1.0})
                        continue
                    runs[label].append(r)
                    lat = r["latency_us"]
                    log(
                        f"{label:5} {key:9} {r['rps']:>10,.0f} req/s  "
                        f"p50 {lat['p50']:>7.1f} us  p99 {lat['p99']:>7.1f} us"
                    )
            for label, done in runs.items():
                best = max(done, key=lambda r: r["rps"])
                best["runs_rps"] = [r["rps"] for r in done]
                results[label][key] = best
    return results


def run_scale(inst: Server, loader: Loader, args: argparse.Namespace) -> dict:
    """Lookup rate and memory with 1,000 and with --scale-entries cached entries."""
    small, big = 1000, args.scale_entries
    out: dict = {"small_entries": small, "big_entries": big, "session_size": args.session_size}
    out["populate_small"] = loader.populate(inst, small)
    out["lookup_small"] = loader.run(inst, "lookup", 8, ids=small)
    out["memory_small_kb"] = procs.memory_kb(inst.server_pid())
    log(f"{inst.label}: populating {big - small:,} more entries")
    out["populate_big"] = loader.populate(inst, big - small, first=small)
    log(f"{inst.label}: populated at {out['populate_big']['rps']:,.0f} updates/s")
    out["memory_big_kb"] = procs.memory_kb(inst.server_pid())
    data = getattr(inst, "data", None)
    if data is not None:  # the cache file(s), e.g. smtp_scache.db (and ours' age index)
        out["cache_files_mb"] = {
            f.name: round(f.stat().st_size / 2**20, 1) for f in data.glob("*scache*")
        }
    out["lookup_big"] = loader.run(inst, "lookup", 8, ids=big)
    out["memory_big_after_lookups_kb"] = procs.memory_kb(inst.server_pid())
    out["ratio_big_small"] = round(out["lookup_big"]["rps"] / out["lookup_small"]["rps"], 3)
    return out


def idle_cpu(pid: int, seconds: float = 2.0) -> float:
    a = procs.cpu_seconds(pid) or 0.0
    time.sleep(seconds)
    return round(100 * ((procs.cpu_seconds(pid) or 0.0) - a) / seconds, 1)


def run_scan(inst: Server, loader: Loader, args: argparse.Namespace) -> dict:
    """Lookup latency while the cleanup scan deletes --scan-entries expired entries."""
    victims, ids = args.scan_entries, args.ids
    out: dict = {"timeout_s": SCAN_TIMEOUT, "victims": victims, "lookup_ids": ids}
    out["populate_victims"] = loader.populate(inst, victims, first=ids)
    pid = inst.server_pid()
    fields = procs.proc_stat(pid)
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # since boot
    scan_at = started + 2 * SCAN_TIMEOUT

    def wait_until(t: float) -> None:
        while (left := t - time.clock_gettime(time.CLOCK_BOOTTIME)) > 0:
            time.sleep(min(left, 5))

    log(
        f"{inst.label}: waiting {scan_at - time.clock_gettime(time.CLOCK_BOOTTIME):.0f} s "
        "for the cleanup scan"
    )
    wait_until(scan_at - 15)
    out["populate_targets"] = loader.populate(inst, ids)  # fresh entries to look up
    out["idle_cpu_before_pct"] = idle_cpu(pid)
    wait_until(scan_at - 2)
    run = loader.run(inst, "lookup", 8, duration=2 + args.scan_window, warmup=0, slice_ms=250)
    out["idle_cpu_after_pct"] = idle_cpu(pid)
    out["scan_still_running_after_window"] = out["idle_cpu_after_pct"] > 50
    slices = run.pop("slices")
    for s in slices:
        s["t"] = round(s["t"] - 2, 3)  # seconds from the scan's start
    out["lookup"] = run
    out["slices"] = slices
    during = [s for s in slices if s["t"] >= 0 and s["n"]]
    out["worst_slice_p99_us"] = max((s["p99"] for s in during), default=None)
    out["min_slice_rps"] = min((s["rps"] for s in during), default=None)
    return out


def read_list(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """One attribute list (support.attrs.read_reply); EOF inside it is a RunError."""
    try:
        return read_reply(sock)
    except AssertionError as e:
        raise RunError(f"the server: {e}") from None


def flood_connect(inst: Server) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(inst.socket_path))
    read_list(sock)  # the greeting
    return sock


def run_flood(inst: Server, loader: Loader, args: argparse.Namespace) -> dict:
    """A well-behaved client's lookups while --flood-conns connections have each sent 64 KiB
    of pipelined lookups of a FLOOD_SESSION-byte session and read nothing."""
    out: dict = {"flooders": args.flood_conns, "session_size": FLOOD_SESSION}
    loader.populate(inst, args.ids)
    big = os.urandom(FLOOD_SESSION)
    update = request(
        *b"request update cache_type smtp cache_id x session".split(), base64.b64encode(big)
    )
    with flood_connect(inst) as sock:
        sock.sendall(update)
        if read_list(sock)[:1] != [(b"status", b"0")]:
            raise RunError(f"{inst.label}: the {FLOOD_SESSION}-byte session was not stored")
    one = request(*b"request lookup cache_type smtp cache_id x".split())
    flood = one * (65536 // len(one))
    out["requests_per_flooder"] = 65536 // len(one)
    pid = inst.server_pid()
    out["memory_before_kb"] = procs.memory_kb(pid) if pid else {}
    flooders: list[socket.socket] = []
    try:
        for n in range(args.flood_conns):
            try:
                sock = flood_connect(inst)
            except TimeoutError:
                # Blocked writing to an earlier flooder, the server no longer answers.
                raise RunError(f"{inst.label}: no greeting for flooder {n + 1}: stalled") from None
            sock.sendall(flood)
            flooders.append(sock)
        time.sleep(0.5)  # for the server to answer each flooder as far as it will
        out["flooders_answered"] = len(select.select(flooders, [], [], 2)[0])
        out["lookup"] = loader.run(inst, "lookup", 1)
        out["memory_after_kb"] = procs.memory_kb(pid) if pid else {}
    finally:
        for sock in flooders:
            sock.close()
    return out


# ---------------------------------------------------------------- reporting


def machine_info() -> dict:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": postfix.version(),
        "memory_mb": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_start": os.getloadavg(),
    }


def fmt_cell(r: dict | None) -> str:
    if r is None:
        return f"{'-':>9} {'-':>7} {'-':>7}"
    if "error" in r:
        return f"{'error':>9} {'-':>7} {'-':>7}"
    lat = r["latency_us"]
    return f"{r['rps']:>9,.0f} {lat['p50']:>7.0f} {lat['p99']:>7.0f}"


def ratio(report: dict, key: str) -> float | None:
    ours = report["results"].get("ours", {}).get(key)
    real = report["results"].get("real", {}).get(key)
    if not ours or not real or "error" in ours or "error" in real:
        return None
    return ours["rps"] / real["rps"]


def targets(report: dict) -> list[dict]:
    """The targets, evaluated on what ran (None = not measured)."""
    rows = []
    for workload, want in (("seed", 1.0), ("lookup", 1.0), ("update", 3.0)):
        got = ratio(report, f"{workload}/8")
        rows.append(
            {
                "target": f"{workload} x8 ours/real >= {want}x",
                "value": got,
                "met": None if got is None else got >= want,
            }
        )
    ours = report["results"].get("ours", {})
    p99s = [
        r["latency_us"]["p99"] for k, r in ours.items() if k.endswith("/8") and "latency_us" in r
    ]
    worst = max(p99s) / 1000 if p99s else None
    rows.append(
        {
            "target": "p99 x8 <= 2 ms (ours, worst workload)",
            "value": worst,
            "met": None if worst is None else worst <= 2.0,
        }
    )
    scale = report.get("scale", {}).get("ours")
    if scale and "error" not in scale:
        small = scale["small_entries"]
        rows.append(
            {
                "target": f"lookups {scale['big_entries']:,} vs {small:,} entries >= 0.8x",
                "value": scale["ratio_big_small"],
                "met": scale["ratio_big_small"] >= 0.8,
            }
        )
        rss = scale["memory_big_after_lookups_kb"]["VmRSS"] / 1024
        label = f"VmRSS at {scale['big_entries']:,} entries < 150 MB"
        rows.append({"target": label, "value": rss, "met": rss < 150})
    scan = report.get("scan", {}).get("ours")
    if scan and "error" not in scan:
        p99 = scan["lookup"]["latency_us"]["p99"] / 1000
        rows.append(
            {"target": "p99 during a cleanup scan <= 5 ms", "value": p99, "met": p99 <= 5.0}
        )
    flood = report.get("flood", {}).get("ours")
    if flood and "error" not in flood:
        p99 = flood["lookup"]["latency_us"]["p99"] / 1000
        rows.append(
            {
                "target": f"p99 with {flood['flooders']} flooders blocked <= 5 ms",
                "value": p99,
                "met": p99 <= 5.0,
            }
        )
    return rows


def print_cpu_table(report: dict, args: argparse.Namespace, labels: list[str]) -> None:
    """CPU microseconds per request, tlsmgr + master: the figure that other work on the
    machine disturbs least."""
    if not labels:
        return
    print(f"\nCPU us per request (tlsmgr + master){'':2}" + "".join(f"{lb:>8}" for lb in labels))
    for workload in args.workloads:
        for conns in args.conns:
            key = f"{workload}/{conns}"
            cells = [report["results"][lb].get(key, {}).get("cpu_us_per_request") for lb in labels]
            text = "".join(f"{'-' if c is None else f'{c:.0f}':>8}" for c in cells)
            print(f"  {workload:8} {conns:>5}{'':23}{text}")


def print_table(report: dict, args: argparse.Namespace) -> None:
    labels = [label for label in ("null", "real", "ours") if label in report["results"]]
    m = report["machine"]
    print(
        f"tlsmgr load benchmark  {m['date']}  {m['nproc']} x {m['cpu_model']}  "
        f"loadavg {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}"
    )
    print(
        f"{args.duration:g} s per run after {args.warmup:g} s warm-up, best of {args.repeat}; "
        "closed loop; "
        f"{args.ids:,} cached ids; {args.session_size}-byte sessions; {args.db_type}"
    )
    if max(m["loadavg_start"][0], m["loadavg_end"][0]) > 0.5:
        print("note: other work was running (load average > 0.5); figures are noisy")
    for label in labels:
        print(f"  {label:5} {report['instances'][label]}")
    for label, why in report["skipped"].items():
        print(f"  {label:5} skipped: {why}")
    head = "".join(f" | {label + ' req/s':>9} {'p50 us':>7} {'p99 us':>7}" for label in labels)
    print(f"\n{'workload':8} {'conns':>5}{head} | ours/real")
    for workload in args.workloads:
        for conns in args.conns:
            key = f"{workload}/{conns}"
            cells = "".join(f" | {fmt_cell(report['results'][lb].get(key))}" for lb in labels)
            r = ratio(report, key)
            print(f"{workload:8} {conns:>5}{cells} | {'-' if r is None else f'{r:.2f}x':>9}")
    print_cpu_table(report, args, [label for label in labels if label != "null"])
    null = report["results"].get("null", {})
    gen = [r.get("loadgen_cpu_pct", 0) for r in null.values() if "loadgen_cpu_pct" in r]
    if gen:
        print(f"\nload generator CPU against the null server: at most {max(gen):.0f}% of one core")
    for label, s in report.get("scale", {}).items():
        if "error" in s:
            print(f"\nscale ({label}): error: {s['error']}")
            continue
        print(
            f"\nscale ({label}): lookup x8 {s['lookup_small']['rps']:,.0f} req/s at "
            f"{s['small_entries']:,} entries, {s['lookup_big']['rps']:,.0f} at "
            f"{s['big_entries']:,} ({s['ratio_big_small']:.2f}x); p99 "
            f"{s['lookup_big']['latency_us']['p99']:.0f} us; VmRSS "
            f"{s['memory_big_after_lookups_kb']['VmRSS'] / 1024:.1f} MB (peak "
            f"{s['memory_big_after_lookups_kb']['VmHWM'] / 1024:.1f} MB); cache files "
            f"{s.get('cache_files_mb', '?')}; populate "
            f"{s['populate_big']['rps']:,.0f} updates/s"
        )
    for label, s in report.get("scan", {}).items():
        if "error" in s:
            print(f"\nscan ({label}): error: {s['error']}")
            continue
        lat = s["lookup"]["latency_us"]
        print(
            f"\nscan ({label}): {s['victims']:,} expired entries; lookups x8 from 2 s before "
            f"the scan for {args.scan_window:g} s: {s['lookup']['rps']:,.0f} req/s, p50 "
            f"{lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, max {lat['max']:.0f} us; worst "
            f"250 ms slice p99 {s['worst_slice_p99_us']:.0f} us; scan still running after "
            f"the window: {'yes' if s['scan_still_running_after_window'] else 'no'}"
        )
    for label, s in report.get("flood", {}).items():
        if "error" in s:
            print(f"\nflood ({label}): error: {s['error']}")
            continue
        lat = s["lookup"]["latency_us"]
        mem = s.get("memory_after_kb", {})
        print(
            f"\nflood ({label}): {s['flooders']} connections each sent "
            f"{s['requests_per_flooder']:,} pipelined lookups of a {s['session_size']:,}-byte "
            f"session and read nothing ({s['flooders_answered']} had replies waiting); one "
            f"good connection meanwhile: {s['lookup']['rps']:,.0f} lookups/s, p50 "
            f"{lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, max {lat['max']:.0f} us; VmRSS "
            f"{mem.get('VmRSS', 0) / 1024:.1f} MB (peak {mem.get('VmHWM', 0) / 1024:.1f} MB)"
        )
    print("\ntargets (reported, never asserted):")
    for t in report["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        met = {None: "not measured", True: "met", False: "NOT met"}[t["met"]]
        print(f"  {t['target']:46} {value:>8}  {met}")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])

    def csv(kind):
        return lambda s: [kind(x) for x in s.split(",") if x]

    p.add_argument("--instances", type=csv(str), default=["null", "real", "ours"])
    p.add_argument("--workloads", type=csv(str), default=["seed", "lookup", "update", "mix"])
    p.add_argument("--conns", type=csv(int), default=[1, 8])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds not counted (0.5)")
    p.add_argument("--ids", type=int, default=1000, help="cached ids for lookup/update (1000)")
    p.add_argument("--session-size", type=int, default=256, help="session bytes (256)")
    p.add_argument("--db-type", choices=["btree", "hash"], default="btree")
    p.add_argument("--ours-master", choices=["postfix", "minipostfix"], default="postfix")
    p.add_argument("--threads", type=int, default=1, help="load generator threads (1)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell, best kept (1)")
    p.add_argument("--scale", action="store_true", help="10^3 vs 10^6 entries, and memory")
    p.add_argument("--scale-entries", type=int, default=1_000_000)
    p.add_argument("--scan", action="store_true", help="p99 during a cleanup scan (~4.5 min)")
    p.add_argument("--scan-entries", type=int, default=100_000)
    p.add_argument("--scan-window", type=float, default=15.0)
    p.add_argument("--flood", action="store_true", help="good client vs. pipelining flooders")
    p.add_argument("--flood-conns", type=int, default=10, help="flooding connections (10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--build-dir", type=Path, default=BENCH / "build")
    args = p.parse_args(argv)
    unknown = set(args.instances) - {"null", "real", "ours"}
    bad_wl = set(args.workloads) - {"seed", "lookup", "update", "mix"}
    if unknown or bad_wl:
        p.error(f"unknown instance or workload: {', '.join(sorted(unknown | bad_wl))}")
    return args


def make_instance(
    label: str,
    binaries: dict[str, Path],
    args: argparse.Namespace,
    extra: dict[str, str] | None = None,
) -> Server:
    main_extra = {"smtp_tls_session_cache_database": f"{args.db_type}:$data_directory/smtp_scache"}
    main_extra.update(extra or {})
    if label == "null":
        return NullServer(binaries["nullserver"], args.session_size, args.keep)
    master = "minipostfix" if label == "ours" and args.ours_master == "minipostfix" else "postfix"
    return MasterServer(label, master, main_extra, args.keep)


def scenario(
    report: dict,
    name: str,
    labels: list[str],
    extra: dict[str, str],
    fn,
    binaries: dict[str, Path],
    loader: Loader,
    args: argparse.Namespace,
) -> None:
    """Run fn on a fresh instance per label, storing report[name][label]."""
    for label in labels:
        if label in report["skipped"] or label == "null":
            continue
        unlimited = {"tls_session_cache_max_entries": "0", "tls_session_cache_size_limit": "0"}
        ours_extra = unlimited if label == "ours" else {}
        try:
            with make_instance(label, binaries, args, {**extra, **ours_extra}) as inst:
                log(f"{name}: {label}")
                report.setdefault(name, {})[label] = fn(inst, loader, args)
        except (Skip, RunError) as e:
            log(f"{name} {label}: {e}")
            report.setdefault(name, {})[label] = {"error": str(e)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binaries = build(args.build_dir)
    if args.build_only:
        return 0

    report = guarded(lambda: run_all(binaries, args))
    emit(report, args.json, lambda: print_table(report, args))
    return 0 if report["results"] else 1


def guarded(run: Callable[[], dict]) -> dict:
    """run() under take_signals(); whatever it started is stopped on the way out, also on
    Ctrl-C or SIGTERM."""
    take_signals()
    try:
        return run()
    finally:
        stop_descendants()


def emit(report: dict, as_json: bool, table: Callable[[], None]) -> None:
    """The report as one JSON document on stdout, or table() prints it."""
    if as_json:
        json.dump(report, sys.stdout, indent=1, default=str)
        print()
    else:
        table()


def take_signals() -> None:
    """Ctrl-C and SIGTERM end the run through the clean-up; adopt orphans (become_subreaper)."""

    def on_term(signum, frame):
        # One-shot: a second Ctrl-C must not cut the clean-up short (its waits are bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python then keeps it so.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    become_subreaper()


def stop_descendants() -> None:
    """Safety net: whatever was started and lost track of (a master interrupted before it
    wrote its pid file) is our child by now, since we are a subreaper: stop and reap it."""
    for _ in range(5):
        kids = [pid for pid in procs.children_of(os.getpid()) if not procs.gone(pid)]  # reaps
        if not kids:
            return
        for pid in kids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                argv = "?"
            log(f"stopping leftover process {pid}: {argv.strip()}")
        procs.stop_pids(kids, timeout=5)


def run_all(binaries: dict[str, Path], args: argparse.Namespace) -> dict:
    """The load matrix, then --scale and --scan; every instance is stopped on the way out."""
    loader = Loader(binaries["loadgen"], args)
    report: dict = {
        "machine": machine_info(),
        "settings": vars(args),
        "instances": {},
        "skipped": {},
        "populate": {},
        "results": {},
    }
    with contextlib.ExitStack() as stack:
        insts: dict[str, Server] = {}
        for label in args.instances:
            try:
                inst = stack.enter_context(make_instance(label, binaries, args))
                log(f"{label}: {inst.description}")
                report["populate"][label] = loader.populate(inst, args.ids)
            except (Skip, RunError) as e:
                log(f"{label}: skipped: {e}")
                report["skipped"][label] = str(e)
                continue
            insts[label] = inst
            report["instances"][label] = inst.description
        report["results"] = run_matrix(insts, loader, args)
    labels = [label for label in args.instances if label != "null"]
    if args.scale:
        scenario(report, "scale", labels, {}, run_scale, binaries, loader, args)
    if args.scan:
        extra = {"smtp_tls_session_cache_timeout": f"{SCAN_TIMEOUT}s"}
        scenario(report, "scan", labels, extra, run_scan, binaries, loader, args)
    if args.flood:
        scenario(report, "flood", labels, {}, run_flood, binaries, loader, args)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["targets"] = targets(report)
    return report


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        sys.exit(130)
