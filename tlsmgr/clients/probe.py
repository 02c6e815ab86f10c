"""probe: send one tlsmgr request by hand and print the reply.

SYNOPSIS
    python -m tlsmgr.clients.probe [-c DIR] seed SIZE
    python -m tlsmgr.clients.probe [-c DIR] lookup CACHE_TYPE CACHE_ID
    python -m tlsmgr.clients.probe [-c DIR] update CACHE_TYPE CACHE_ID FILE
    python -m tlsmgr.clients.probe [-c DIR] delete CACHE_TYPE CACHE_ID
    python -m tlsmgr.clients.probe [-c DIR] tktkey [NAME_HEX]
    python -m tlsmgr.clients.probe [-c DIR] policy CACHE_TYPE
    python -m tlsmgr.clients.probe [-c DIR] stats

    from tlsmgr.clients.probe import tlsmgr_socket, open_tlsmgr
    tlsmgr_socket(config_dir) -> str           # $queue_directory/private/$tlsmgr_service_name
    open_tlsmgr(config_dir) -> TlsmgrClient
    describe(result) -> str; unreachable(result) -> bool; ProbeError

DESCRIPTION
    Like Postfix's tls_mgr test program: one request to the tlsmgr of
    the instance whose main.cf is in DIR (-c DIR, else $MAIL_CONFIG,
    else /etc/postfix), at $queue_directory/private/$tlsmgr_service_name.

    The probe validates nothing: it sends what it is given through the
    protocol layer (TlsmgrClient.raw), so `lookup bogus x` and `seed 0`
    reach tlsmgr and print tlsmgr's FAIL.  SIZE and CACHE_ID go out as
    the text given; FILE ("-" for standard input) is the session, sent
    base64-encoded; NAME_HEX is a ticket key name in hex (empty or
    absent: the current key).

    Output, one item per line: `status: OK (0)` (or ERR (-1), FAIL (-2)
    with tlsmgr's reason), then the reply's data readably: the seed in
    hex, a session's length and base64, a keybuf decoded into key name,
    key lengths and expiry (key material is not shown), a policy's
    cachable and timeout, the stats reply's NAME = VALUE pairs.

    What `minipostfix status -v` and `--json` show of tlsmgr (the
    `minipostfix.status` entry point) is stats.py, built on
    tlsmgr_socket(), unreachable() and describe().

DIAGNOSTICS
    Exit status 0 for OK, 1 for ERR, 2 for FAIL, 3 when tlsmgr cannot be
    reached (no socket, connection refused, no reply; the message names
    the socket and says how to start the instance) or main.cf cannot be
    read, 64 for a usage error.

SEE ALSO
    src/tls/tls_mgr.c (its TEST main), tlsmgr(8), tlsmgr/client.py,
    stats.py, docs/clients.md
"""

from __future__ import annotations

import argparse
import base64
import os
import struct
import sys
import time
from typing import Any, NoReturn

from master.config import Config, Param
from master.errors import ConfigError
from tlsmgr.client import Result, TlsmgrClient
from tlsmgr.protocol import (
    KEYBUF_SIZE,
    TICKET_AES_LEN,
    TICKET_HMAC_LEN,
    TICKET_MATERIAL_LEN,
    TICKET_NAME_LEN,
    TICKET_TOUT_FORMAT,
    Status,
)

EXIT_OK, EXIT_ERR, EXIT_FAIL, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2, 3, 64
SUN_PATH_MAX = 107
UNREACHABLE = "problem talking to server"

PARAMS = (Param("tlsmgr_service_name", "tlsmgr"),)


class ProbeError(Exception):
    """tlsmgr cannot be located (bad main.cf); str() says what to do."""


# Finding tlsmgr.


def tlsmgr_socket(config_dir: str | None = None) -> str:
    """$queue_directory/private/$tlsmgr_service_name, from DIR/main.cf.

    Raises ProbeError when main.cf cannot be read.  A path too long for
    AF_UNIX is made relative by changing into queue_directory, as
    Postfix's clients, which all run there, name it."""
    try:
        cfg = Config.load(config_dir, params=PARAMS)
        queue = cfg.get("queue_directory")
        name = cfg.get("tlsmgr_service_name")
    except ConfigError as err:
        raise ProbeError(str(err)) from None
    path = os.path.join(queue, "private", name)
    if len(path.encode()) <= SUN_PATH_MAX:
        return path
    try:
        os.chdir(queue)
    except OSError as err:
        raise ProbeError(f"chdir {queue}: {err.strerror}") from None
    return os.path.join("private", name)


def open_tlsmgr(config_dir: str | None = None, **kwargs: Any) -> TlsmgrClient:
    """A TlsmgrClient for the instance in config_dir; ProbeError as tlsmgr_socket()."""
    return TlsmgrClient(tlsmgr_socket(config_dir), **kwargs)


def describe(result: Result) -> str:
    """`OK`, or `ERR: reason` / `FAIL: reason`."""
    if result.ok:
        return "OK"
    return f"{result.status.name}: {result.reason}" if result.reason else result.status.name


def unreachable(result: Result) -> bool:
    """FAIL because tlsmgr could not be reached (not a FAIL reply of tlsmgr's)."""
    return result.status == Status.FAIL and result.reason.startswith(UNREACHABLE)


# Printing replies.


def format_result(request: str, result: Result, now: float | None = None) -> list[str]:
    """The reply as readable lines; see the module docstring."""
    lines = [f"status: {result.status.name} ({int(result.status)})"]
    if not result.ok and result.reason:
        lines.append(f"reason: {result.reason}")
    if request == "seed":
        lines.append(
            f"seed: {len(result.data)} bytes{': ' if result.data else ''}{result.data.hex()}"
        )
    elif request == "lookup":
        lines += _session_lines(result.data)
    elif request == "tktkey":
        lines += _keybuf_lines(result.data, time.time() if now is None else now)
    elif request == "policy":
        lines += [f"cachable: {result.cachable}", f"timeout: {result.timeout}"]
    lines += [f"{name} = {value}" for name, value in result.items]
    return lines


def _session_lines(data: bytes) -> list[str]:
    lines = [f"session: {len(data)} bytes"]
    text = base64.b64encode(data).decode()
    lines += [f"  {text[i : i + 76]}" for i in range(0, len(text), 76)]
    return lines


def _keybuf_lines(data: bytes, now: float) -> list[str]:
    lines = [f"keybuf: {len(data)} bytes"]
    if len(data) == TICKET_NAME_LEN:
        lines.append(f"  name:     {data.hex()} (echoed)")
    if len(data) != KEYBUF_SIZE:
        return lines
    (expiry,) = struct.unpack(TICKET_TOUT_FORMAT, data[TICKET_MATERIAL_LEN:])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expiry))
    lines += [
        f"  name:     {data[:TICKET_NAME_LEN].hex()}",
        f"  aes key:  {TICKET_AES_LEN} bytes (not shown)",
        f"  hmac key: {TICKET_HMAC_LEN} bytes (not shown)",
        f"  expires:  {stamp} (in {expiry - int(now)}s)",
    ]
    return lines


# The command.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="probe", description="Send one request to tlsmgr; print the reply.")
    parser.add_argument("-c", dest="config_dir", metavar="DIR", help="configuration directory")
    sub = parser.add_subparsers(dest="request", required=True, parser_class=_Parser)
    sub.add_parser("seed", help="random bytes").add_argument("size")
    for name in ("lookup", "delete"):
        p = sub.add_parser(name, help=f"{name} a cache entry")
        p.add_argument("cache_type")
        p.add_argument("cache_id")
    p = sub.add_parser("update", help="store a session (FILE, or - for stdin)")
    p.add_argument("cache_type")
    p.add_argument("cache_id")
    p.add_argument("file")
    sub.add_parser("tktkey", help="a session ticket key").add_argument(
        "name", nargs="?", default=""
    )
    sub.add_parser("policy", help="a cache's policy").add_argument("cache_type")
    sub.add_parser("stats", help="tlsmgr's counters (minipostfix only)")
    return parser


def _attributes(args: argparse.Namespace) -> list[tuple[str, str | bytes]]:
    """The request's attributes, exactly as given (strings stay strings)."""
    if args.request == "seed":
        return [("size", args.size)]
    if args.request in ("lookup", "delete"):
        return [("cache_type", args.cache_type), ("cache_id", args.cache_id)]
    if args.request == "update":
        return [
            ("cache_type", args.cache_type),
            ("cache_id", args.cache_id),
            ("session", args.session),
        ]
    if args.request == "tktkey":
        return [("keyname", args.keyname)]
    if args.request == "policy":
        return [("cache_type", args.cache_type)]
    return []


def _read_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.request == "tktkey":
        try:
            args.keyname = bytes.fromhex(args.name)
        except ValueError:
            parser.error(f"ticket key name {args.name!r} is not hex")
    if args.request == "update":
        try:
            if args.file == "-":
                args.session = sys.stdin.buffer.read()
            else:
                with open(args.file, "rb") as fp:
                    args.session = fp.read()
        except OSError as err:
            parser.error(f"cannot read session file {args.file}: {err.strerror}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _read_inputs(parser, args)
    try:
        path = tlsmgr_socket(args.config_dir)
    except ProbeError as err:
        print(f"probe: fatal: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    hint = f"is the instance running? (minipostfix -c {args.config_dir or 'DIR'} start)"
    if not os.path.exists(path):
        print(f"probe: fatal: no tlsmgr socket {path}: {hint}", file=sys.stderr)
        return EXIT_UNREACHABLE
    with TlsmgrClient(path) as client:
        result = client.raw(args.request, _attributes(args))
    if unreachable(result):
        print(f"probe: fatal: {result.reason}: {hint}", file=sys.stderr)
        return EXIT_UNREACHABLE
    for line in format_result(args.request, result):
        print(line)
    return {Status.OK: EXIT_OK, Status.ERR: EXIT_ERR}.get(result.status, EXIT_FAIL)


if __name__ == "__main__":
    sys.exit(main())
