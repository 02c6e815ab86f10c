#!/usr/bin/env python3
"""master_bench: how fast a service is there, for our master beside Postfix 3.7's, in one run.

SYNOPSIS
    .venv/bin/python bench/master_bench.py [--cold N] [--kills N] [--hups N] [--hup-gap S]
        [--reload-cli] [--warm N] [--exec N] [--wheel-venv DIR] [--imports N]
        [--baseline REV] [--only ours,postfix,exec,imports] [--json]

DESCRIPTION
    Two instances of the test suite (tests/support/instance.py), each on a private root under
    /tmp: `ours`, our master (`minipostfix start`) running our tlsmgr, which its spawn server
    forks; `postfix`, Postfix's master (`master -w`) running Postfix's own tlsmgr.  On each:

    cold      no tlsmgr running (the last one got TERM and was reaped): connect -> greeting,
              and connect -> the reply to a first `seed` request; --cold samples.  Ours waits
              for its spawn server to be ready first.
    kill      under load, kill -9 of the tlsmgr, --kills times 0.5 s apart: kill -> the next
              reply the load client gets.
    reload    under load, --hups SIGHUPs --hup-gap apart: requests that failed (of how many),
              and the longest gap between two replies.  Both masters get the same trigger, a
              SIGHUP sent by this process: the figure is what the master's reload costs its
              clients.  The control commands differ too much to compare: `postfix reload` runs
              postfix-script and postsuper (about 1 s, and a full mail queue these instances
              do not have), `minipostfix reload` a Python process that checks both files and
              then sends the SIGHUP; on a machine of two cores that process competes with the
              load for the CPU at the moment of the reload.  --reload-cli reloads ours with
              `minipostfix reload` instead, to see that cost.
    warm      tlsmgr running: connect -> greeting, --warm samples.

    The load client is a closed loop that opens a new connection for each `seed` request
    and does not retry: a request fails when the connection ends (or is refused) before its
    reply.  It runs in a thread of this process and notes when each request began and when
    its reply came; after a kill, the next reply is the reply to the first request begun
    after the kill (a reply to an earlier one may still come from the killed process).

    exec      the exec path without a spawn server: our tlsmgr under our master as a command
              whose name is not registered for one (bin/tlsmgr-exec, a link to the program),
              cold connect -> first `seed` reply, --exec samples; the editable install's
              program and, when --wheel-venv has one (`make wheel-test` builds it), an
              installed wheel's.
    imports   `python -X importtime -c "import tlsmgr.daemon"`, --imports runs interleaved,
              medians: the whole import and the modules that cost most, now and at git
              revision --baseline (exported to a temporary folder and put first on the path).
              PYTHONDONTWRITEBYTECODE is removed and each tree is imported once first, so
              that both are measured from compiled files.

    Medians and 90th percentiles (p90) of wall-clock milliseconds.  --json prints one JSON
    document instead of the table.  Progress goes to stderr.  Every process started is
    stopped and reaped, also on Ctrl-C or SIGTERM (tlsmgr_bench.guarded()).

BUGS
    Wall-clock figures on a shared machine move with its load: the load average is recorded
    before and after.  Needs root (Postfix's master, private instances with mail_owner-owned
    folders) and the venv's Python (`support` is on its import path).

SEE ALSO
    docs/performance.md, bench/README.md, tests/process/test_spawn_server.py
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tlsmgr_bench import emit, guarded, machine_info

from support import procs
from support.attrs import parse_list, request
from support.instance import OUR_TLSMGR, MasterInstance, MiniInstance, PostfixInstance
from support.sockets import recv_until

ROOT = Path(__file__).resolve().parents[1]
SEED = request(b"request", b"seed", b"size", b"32")
GREETING_END = b"\0\0"
EXEC_COMMAND = "tlsmgr-exec"  # a name no spawn server is registered for
IMPORT_BASELINE = "99a2a81"  # main before the spawn servers and the exec-path work
IMPORT_TOP = 12


def log(text: str) -> None:
    print(f"master_bench: {text}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict:
    """median, p90, min, max and count of a list of milliseconds."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return {
        "median": statistics.median(ordered),
        "p90": p90,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


# ---------------------------------------------------------------- the client side


def connect(inst: MasterInstance, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(inst.socket_path)
    return sock


def read_list(sock: socket.socket, buf: bytes = b"") -> tuple[list, bytes]:
    """One attribute list (read in chunks) and what came after it."""
    while (parsed := parse_list(buf)) is None:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("EOF before a whole reply")
        buf += chunk
    pairs, length = parsed
    return pairs, buf[length:]


def seed_once(inst: MasterInstance, timeout: float = 10.0) -> tuple[float, float]:
    """New connection, greeting, `seed`: (ms to the greeting, ms to the reply)."""
    start = time.perf_counter()
    with connect(inst, timeout) as sock:
        _greeting, rest = read_list(sock)
        greeted = time.perf_counter()
        sock.sendall(SEED)
        reply, _ = read_list(sock, rest)
        done = time.perf_counter()
    if (b"status", b"0") not in reply:
        raise ConnectionError(f"seed failed: {reply}")
    return (greeted - start) * 1000, (done - start) * 1000


class LoadClient(threading.Thread):
    """A closed loop of `seed` requests, one new connection each, no retries."""

    def __init__(self, inst: MasterInstance) -> None:
        super().__init__(daemon=True)
        self.inst = inst
        self.stopping = threading.Event()
        self.replies: list[float] = []  # time.monotonic() of each reply
        self.sent: list[float] = []  # and when its connection was opened
        self.failures: list[float] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                seed_once(self.inst, timeout=5.0)
                self.sent.append(start)
                self.replies.append(time.monotonic())
            except (OSError, ConnectionError):
                self.failures.append(time.monotonic())
                time.sleep(0.001)  # a refused connection must not spin

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def next_reply_after(self, moment: float, timeout: float = 30.0) -> float | None:
        """Seconds from `moment` to the reply to the first request made after it (waits
        for it): a reply to an earlier one may still come from a process killed then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = len(self.replies)  # sent[i] is replies[i]'s; sent is appended first
            first = max(0, count - 200)
            pairs = zip(self.sent[first:count], self.replies[first:count], strict=True)
            later = [done for sent, done in pairs if sent > moment]
            if later:
                return later[0] - moment
            time.sleep(0.002)
        return None


@contextlib.contextmanager
def loaded(inst: MasterInstance) -> Iterator[LoadClient]:
    client = LoadClient(inst)
    client.start()
    try:
        if client.next_reply_after(time.monotonic()) is None:
            raise RuntimeError("no reply under load")
        yield client
    finally:
        client.stop()


# ---------------------------------------------------------------- the scenarios


def stop_tlsmgr(inst: MasterInstance) -> None:
    """TERM the running tlsmgr (after its use was counted: no throttling) and wait it out."""
    pid = inst.tlsmgr_pid()
    time.sleep(0.3)  # the master reads the status record of the request just served
    os.kill(pid, signal.SIGTERM)
    inst.wait_gone(pid)
    time.sleep(0.05)


def cold(inst: MasterInstance, samples: int) -> dict:
    greetings, replies = [], []
    seed_once(inst)  # a tlsmgr has run once (its files exist), as on any later start
    for _ in range(samples):
        stop_tlsmgr(inst)
        greeted, replied = seed_once(inst)
        greetings.append(greeted)
        replies.append(replied)
    return {"greeting": summary(greetings), "seed": summary(replies)}


def kills(inst: MasterInstance, count: int) -> dict:
    recoveries, lost = [], 0
    with loaded(inst) as client:
        for _ in range(count):
            time.sleep(0.5)  # serving long enough that its uses are counted
            pid = inst.tlsmgr_pid()
            moment = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            back = client.next_reply_after(moment)
            if back is None:
                lost += 1
            else:
                recoveries.append(back * 1000)
            inst.wait_gone(pid)
        failed = len(client.failures)
    return {"next_reply": summary(recoveries), "never_back": lost, "failed_requests": failed}


def reloads(inst: MasterInstance, count: int, gap: float, hup: Callable[[], None]) -> dict:
    with loaded(inst) as client:
        started = time.monotonic()
        for _ in range(count):
            time.sleep(gap)
            hup()
        time.sleep(max(gap, 1.5))  # the last reload settles (and drains)
        ended = time.monotonic()
    replies = [t for t in client.replies if started <= t <= ended]
    gaps = [b - a for a, b in zip(replies, replies[1:], strict=False)]
    failures = [t for t in client.failures if started <= t <= ended]
    return {
        "requests": len(replies) + len(failures),
        "failed": len(failures),
        "longest_gap": max(gaps) * 1000 if gaps else None,
    }


def warm(inst: MasterInstance, samples: int) -> dict:
    seed_once(inst)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        with connect(inst) as sock:
            recv_until(sock, GREETING_END)
            times.append((time.perf_counter() - start) * 1000)
    return summary(times)


def measure_master(inst: MasterInstance, args: argparse.Namespace, hup: Callable) -> dict:
    result = {"cold": cold(inst, args.cold)}
    result["kill"] = kills(inst, args.kills)
    result["reload"] = reloads(inst, args.hups, args.hup_gap, hup)
    result["warm"] = warm(inst, args.warm)
    return result


def run_ours(args: argparse.Namespace) -> dict:
    with MiniInstance({}, tlsmgr=OUR_TLSMGR) as inst, inst.running():
        inst.wait_spawn_server("tlsmgr")
        log("ours: our master, our tlsmgr through its spawn server")
        if args.reload_cli:
            return measure_master(inst, args, lambda: inst.cli("reload").check())
        return measure_master(inst, args, lambda: os.kill(inst.master_pid(), signal.SIGHUP))


def run_postfix(args: argparse.Namespace) -> dict:
    with PostfixInstance() as inst, inst.running():
        log("postfix: Postfix's master -w, Postfix's tlsmgr")
        return measure_master(inst, args, lambda: os.kill(inst.master_pid(), signal.SIGHUP))


def run_exec(program: Path, samples: int) -> dict:
    """Cold connect -> first seed reply, the program fork+exec'd (no spawn server)."""
    cf = f"tlsmgr unix - - y 1000? 1 {EXEC_COMMAND}\n"
    with MiniInstance({}, cf) as inst:
        (inst.bin / EXEC_COMMAND).symlink_to(program)
        with inst.running():
            replies = []
            seed_once(inst)
            for _ in range(samples):
                pid = exec_worker(inst)
                assert procs.cmdline(pid)[-1] != "--spawner", "not the exec path"
                time.sleep(0.3)
                os.kill(pid, signal.SIGTERM)
                inst.wait_gone(pid)
                time.sleep(0.05)
                replies.append(seed_once(inst)[1])
            return summary(replies)


def exec_worker(inst: MiniInstance) -> int:
    workers = inst.wait_for(lambda: inst.workers(), "the exec'd tlsmgr")
    return workers[0]


# ---------------------------------------------------------------- imports


def import_times(python: str, pythonpath: str | None, runs: int) -> dict:
    """Median self and cumulative microseconds per module of `import tlsmgr.daemon`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    argv = [python, "-X", "importtime", "-c", "import tlsmgr.daemon"]
    subprocess.run(argv, env=env, cwd="/", capture_output=True, check=True)  # compile
    cumulative: dict[str, list[int]] = collections.defaultdict(list)
    for _ in range(runs):
        out = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True).stderr
        for line in out.splitlines()[1:]:
            fields = line.removeprefix("import time:").split("|")
            if len(fields) == 3 and fields[1].strip().isdigit():
                cumulative[fields[2].strip()].append(int(fields[1]))
    return {name: statistics.median(values) / 1000 for name, values in cumulative.items()}


def run_imports(args: argparse.Namespace) -> dict:
    report = {"now": import_times(sys.executable, None, args.imports)}
    with tempfile.TemporaryDirectory(prefix="mpfx-baseline-") as tree:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "master", "tlsmgr"],
            capture_output=True,
        )
        if archive.returncode != 0:
            log(f"imports: no baseline {args.baseline}: {archive.stderr.decode().strip()}")
            return report
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        report["baseline"] = import_times(sys.executable, tree, args.imports)
    return report


# ---------------------------------------------------------------- output


def cell(s: dict | None) -> str:
    if not s or not s.get("n"):
        return "-"
    return f"{s['median']:.2f} / {s['p90']:.2f}"


def print_table(report: dict) -> None:
    masters = {k: report[k] for k in ("ours", "postfix") if k in report}
    print(f"# master_bench {report['machine']['date']}, load {report['machine']['loadavg_start']}")
    print(f"# {report['machine']['cpu_model']}, {report['machine']['nproc']} CPUs")
    if masters:
        labels = list(masters)
        print("\n| median / p90 (ms) | " + " | ".join(labels) + " |")
        print("|---|" + "---|" * len(labels))
        rows = [
            ("cold: connect -> greeting", lambda r: cell(r["cold"]["greeting"])),
            ("cold: connect -> first seed reply", lambda r: cell(r["cold"]["seed"])),
            ("kill -9 under load -> next reply", lambda r: cell(r["kill"]["next_reply"])),
            ("warm: connect -> greeting", lambda r: cell(r["warm"])),
        ]
        for name, get in rows:
            print(f"| {name} | " + " | ".join(get(masters[k]) for k in labels) + " |")
        hups = {k: masters[k]["reload"] for k in labels}
        print(
            f"| {report['settings']['hups']} HUPs under load: failed of requests, longest gap | "
            + " | ".join(
                f"{h['failed']} of {h['requests']}, {h['longest_gap'] or 0:.0f} ms"
                for h in hups.values()
            )
            + " |"
        )
    if "exec" in report:
        print("\n| exec path: cold connect -> first seed reply (ms) | median / p90 |")
        print("|---|---|")
        for name, s in report["exec"].items():
            print(f"| {name} | {cell(s)} |")
    if "imports" in report:
        print_imports(report["imports"])
    print(f"\n# load average after: {report['machine'].get('loadavg_end')}")


def print_imports(imports: dict) -> None:
    now, base = imports["now"], imports.get("baseline", {})
    print("\n| `import tlsmgr.daemon`, cumulative median (ms) | baseline | now |")
    print("|---|---|---|")
    names = sorted(set(now) | set(base), key=lambda n: -max(now.get(n, 0), base.get(n, 0)))
    for name in names[:IMPORT_TOP]:
        b, n = base.get(name), now.get(name)
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"| {name} | {fmt(b)} | {fmt(n)} |")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", type=int, default=15, help="cold-start samples")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 under load")
    parser.add_argument("--hups", type=int, default=20, help="SIGHUPs under load")
    parser.add_argument("--hup-gap", type=float, default=0.3, help="seconds between HUPs")
    parser.add_argument(
        "--reload-cli", action="store_true", help="reload ours with `minipostfix reload`"
    )
    parser.add_argument("--warm", type=int, default=300, help="warm connect samples")
    parser.add_argument("--exec", type=int, default=15, help="exec-path samples")
    parser.add_argument("--wheel-venv", type=Path, default=ROOT / "build/wheel-test/venv")
    parser.add_argument("--imports", type=int, default=15, help="import-time runs")
    parser.add_argument("--baseline", default=IMPORT_BASELINE, help="git revision")
    parser.add_argument("--only", default="ours,postfix,exec,imports")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.only = args.only.split(",")
    return args


def run_all(args: argparse.Namespace) -> dict:
    report: dict = {"machine": machine_info(), "settings": vars(args)}
    if "ours" in args.only:
        report["ours"] = run_ours(args)
    if "postfix" in args.only:
        report["postfix"] = run_postfix(args)
    if "exec" in args.only:
        report["exec"] = {"editable install": run_exec(OUR_TLSMGR, args.exec)}
        wheel = args.wheel_venv / "bin" / "tlsmgr"
        if wheel.exists():
            report["exec"]["wheel install"] = run_exec(wheel.resolve(), args.exec)
        else:
            log(f"exec: no {wheel} (make wheel-test builds it)")
    if "imports" in args.only:
        log("imports")
        report["imports"] = run_imports(args)
    report["machine"]["loadavg_end"] = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = guarded(lambda: run_all(args))
    emit(report, args.json, lambda: print_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
