"""The tlsmgr wire cases: request bytes -> expected reply bytes, ours and Postfix 3.7.11's.

SYNOPSIS
    from support.wire_cases import CASES, GREETING, SETUP, Case, exchange, matches

    for case in CASES:                      # in order: later cases need earlier state
        got = exchange(socket_path, case.sent)
        assert matches(case.reply, got)     # minipostfix
        assert matches(case.expected_postfix, got)   # the real tlsmgr

DESCRIPTION
    Each case runs on a new connection, as the probe transcript did:
    read the greeting, send `sent` in one write, shut down the write
    side, read everything until end of input.  That makes "no reply"
    observable for both servers (the reply is b"").

    The server under test is set up as SETUP says (the probe's
    configuration): the smtp cache enabled, lmtp disabled, no smtpd
    database, every timeout 3600 s (so ticket keys work).  The cases
    depend on earlier ones (update before lookup-hit) and must run in
    order against one fresh server.

    `reply` is what minipostfix sends, `postfix` what Postfix 3.7.11
    sends when that differs (None: the same), and `differs` says why we
    deliberately differ.  A reply is bytes, or a compiled bytes regular
    expression for random data.  Sources: Debian's Postfix 3.7.11
    tlsmgr, probed byte by byte (tests/interop/test_tlsmgr_diff.py sends
    every case to it), and its source: attr_scan0.c, base64_code.c and
    tlsmgr_service() in tlsmgr.c.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from support.attrs import request

GREETING = b"protocol\0tlsmgr_protocol\0\0"
SETUP = {
    "smtpd_tls_session_cache_database": "",
    "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
    "lmtp_tls_session_cache_database": "",
    "smtpd_tls_session_cache_timeout": "3600s",
    "smtp_tls_session_cache_timeout": "3600s",
    "lmtp_tls_session_cache_timeout": "3600s",
}

OK = b"status\x000\x00"
ERR = b"status\x004294967295\x00"
FAIL = b"status\x004294967294\x00"
B64 = rb"[A-Za-z0-9+/]"
STALE = "3.7.11 sends stale bytes of an earlier request in the data attribute (one static buffer)"
UNKNOWN = "3.7.11 sends no reply at all to an unknown request name (the client hangs)"
PIPELINE = "3.7.11 drops what follows the first request of a read (its read buffer is discarded)"
LIMIT = "minipostfix limits names to 64 bytes, values to 64 KiB, requests to 128 KiB and closes"


@dataclass(frozen=True)
class Case:
    name: str
    sent: bytes
    reply: bytes | re.Pattern[bytes]
    postfix: bytes | re.Pattern[bytes] | None = None
    differs: str = ""

    @property
    def expected_postfix(self) -> bytes | re.Pattern[bytes]:
        return self.reply if self.postfix is None else self.postfix


def _rx(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(pattern, re.S)


def matches(expected: bytes | re.Pattern[bytes], got: bytes) -> bool:
    if isinstance(expected, bytes):
        return got == expected
    return expected.fullmatch(got) is not None


LOOKUP_PROBE = request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"probe-id")
POLICY_SMTP = request(b"request", b"policy", b"cache_type", b"smtp")
POLICY_SMTP_REPLY = OK + b"cachable\x001\x00timeout\x003600\x00\x00"
SEED_SIZE = b"request\x00seed\x00size\x00"

CASES: tuple[Case, ...] = (
    # The probe transcript, in its order.
    Case(
        "seed32",
        request(b"request", b"seed", b"size", b"32"),
        _rx(OK + b"seed\x00" + B64 + rb"{43}=\x00\x00"),
    ),
    Case("seed0", request(b"request", b"seed", b"size", b"0"), FAIL + b"seed\x00\x00\x00"),
    Case("seed256", request(b"request", b"seed", b"size", b"256"), FAIL + b"seed\x00\x00\x00"),
    Case(
        "seed255",
        request(b"request", b"seed", b"size", b"255"),
        _rx(OK + b"seed\x00" + B64 + rb"{340}\x00\x00"),
    ),
    Case("lookup-miss", LOOKUP_PROBE, ERR + b"session\x00\x00\x00"),
    Case(
        "update",
        request(
            b"request",
            b"update",
            b"cache_type",
            b"smtp",
            b"cache_id",
            b"probe-id",
            b"session",
            b"AQJzZXNzaW9uYnl0ZXM=",
        ),
        OK + b"\x00",
    ),
    Case("lookup-hit", LOOKUP_PROBE, OK + b"session\x00AQJzZXNzaW9uYnl0ZXM=\x00\x00"),
    Case(
        "delete",
        request(b"request", b"delete", b"cache_type", b"smtp", b"cache_id", b"probe-id"),
        OK + b"\x00",
    ),
    Case("lookup-after-delete", LOOKUP_PROBE, ERR + b"session\x00\x00\x00"),
    Case(
        "lookup-lmtp-disabled",
        request(b"request", b"lookup", b"cache_type", b"lmtp", b"cache_id", b"x"),
        FAIL + b"session\x00\x00\x00",
    ),
    Case(
        "lookup-bogus-type",
        request(b"request", b"lookup", b"cache_type", b"bogus", b"cache_id", b"x"),
        FAIL + b"session\x00\x00\x00",
    ),
    Case(
        "tktkey-new",
        request(b"request", b"tktkey", b"keyname", b""),
        _rx(OK + b"keybuf\x00" + B64 + rb"{118}==\x00\x00"),
    ),
    Case(
        "tktkey-badname",
        request(b"request", b"tktkey", b"keyname", b"YWJj"),
        FAIL + b"keybuf\x00\x00\x00",
    ),
    Case(
        "tktkey-unknown",
        request(b"request", b"tktkey", b"keyname", b"AAAAAAAAAAAAAAAAAAAAAA=="),
        ERR + b"keybuf\x00AAAAAAAAAAAAAAAAAAAAAA==\x00\x00",
    ),
    Case("policy-smtp", POLICY_SMTP, POLICY_SMTP_REPLY),
    Case("unknown-request", request(b"request", b"frobnicate"), FAIL + b"\x00", b"", UNKNOWN),
    Case(
        "missing-attr",
        request(b"request", b"lookup", b"cache_type", b"smtp"),
        FAIL + b"session\x00\x00\x00",
        _rx(FAIL + b"session\x00" + B64 + rb"*=*\x00\x00"),
        STALE,
    ),
    Case(
        "wrong-attr-name",
        request(b"request", b"seed", b"sizex", b"32"),
        FAIL + b"seed\x00\x00\x00",
        _rx(FAIL + b"seed\x00" + B64 + rb"*=*\x00\x00"),
        STALE,
    ),
    Case(
        "bad-base64",
        request(
            b"request",
            b"update",
            b"cache_type",
            b"smtp",
            b"cache_id",
            b"x",
            b"session",
            b"!!!notb64",
        ),
        FAIL + b"\x00",
    ),
    Case("wakeup-trigger", b"W\x00", b""),
    Case("garbage", b"\xff\xfe\x00garbage-without-structure\x00\x00", FAIL + b"\x00"),
    # The request table (tlsmgr_service() in tlsmgr.c).
    Case(
        "policy-bogus",
        request(b"request", b"policy", b"cache_type", b"bogus"),
        FAIL + b"cachable\x000\x00timeout\x000\x00\x00",
    ),
    Case(
        "policy-lmtp-disabled",
        request(b"request", b"policy", b"cache_type", b"lmtp"),
        OK + b"cachable\x000\x00timeout\x003600\x00\x00",
    ),
    Case(
        "policy-smtpd-no-database",
        request(b"request", b"policy", b"cache_type", b"smtpd"),
        OK + b"cachable\x000\x00timeout\x003600\x00\x00",
    ),
    Case(
        "delete-missing",
        request(b"request", b"delete", b"cache_type", b"smtp", b"cache_id", b"no-such-id"),
        ERR + b"\x00",
    ),
    Case(
        "update-lmtp-disabled",
        request(
            b"request", b"update", b"cache_type", b"lmtp", b"cache_id", b"x", b"session", b"QQ=="
        ),
        FAIL + b"\x00",
    ),
    Case(
        "delete-lmtp-disabled",
        request(b"request", b"delete", b"cache_type", b"lmtp", b"cache_id", b"x"),
        FAIL + b"\x00",
    ),
    Case(
        "update-bogus-type",
        request(
            b"request", b"update", b"cache_type", b"bogus", b"cache_id", b"x", b"session", b"QQ=="
        ),
        FAIL + b"\x00",
    ),
    Case(
        "update-empty-session",
        request(
            b"request", b"update", b"cache_type", b"smtp", b"cache_id", b"empty", b"session", b""
        ),
        OK + b"\x00",
    ),
    Case(
        "lookup-empty-session",
        request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"empty"),
        OK + b"session\x00\x00\x00",
    ),
    # Number parsing: sscanf("%u%c") == 1 (attr_scan0.c).
    Case(
        "seed-leading-blank",
        SEED_SIZE + b" 7\x00\x00",
        _rx(OK + b"seed\x00" + B64 + rb"{10}==\x00\x00"),
    ),
    Case("seed-plus", SEED_SIZE + b"+3\x00\x00", _rx(OK + b"seed\x00" + B64 + rb"{4}\x00\x00")),
    Case("seed-minus-one", SEED_SIZE + b"-1\x00\x00", FAIL + b"seed\x00\x00\x00"),
    Case(
        "seed-hex",
        SEED_SIZE + b" 0x10\x00\x00",
        FAIL + b"seed\x00\x00\x00",
        _rx(FAIL + b"seed\x00" + B64 + rb"*=*\x00\x00"),
        STALE,
    ),
    Case(
        "seed-trailing-blank",
        SEED_SIZE + b"7 \x00\x00",
        FAIL + b"seed\x00\x00\x00",
        _rx(FAIL + b"seed\x00" + B64 + rb"*=*\x00\x00"),
        STALE,
    ),
    Case(
        "seed-empty",
        SEED_SIZE + b"\x00\x00",
        FAIL + b"seed\x00\x00\x00",
        _rx(FAIL + b"seed\x00" + B64 + rb"*=*\x00\x00"),
        STALE,
    ),
    Case(
        "seed-wraps",
        SEED_SIZE + b"4294967297\x00\x00",
        _rx(OK + b"seed\x00" + B64 + rb"{2}==\x00\x00"),
    ),
    # Base64: decoding stops at the first "=" (base64_decode_opt()).
    Case(
        "update-b64-stops-at-pad",
        request(
            b"request",
            b"update",
            b"cache_type",
            b"smtp",
            b"cache_id",
            b"pad",
            b"session",
            b"QQ==QUJD",
        ),
        OK + b"\x00",
    ),
    Case(
        "lookup-b64-stops-at-pad",
        request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"pad"),
        OK + b"session\x00QQ==\x00\x00",
    ),
    Case(
        "update-b64-bad-length",
        request(
            b"request", b"update", b"cache_type", b"smtp", b"cache_id", b"x", b"session", b"QQ="
        ),
        FAIL + b"\x00",
    ),
    # Strictness: extra attributes after the expected ones are ignored.
    Case(
        "lookup-extra-attribute",
        request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", b"pad", b"extra", b"x"),
        OK + b"session\x00QQ==\x00\x00",
    ),
    Case(
        "lookup-out-of-order",
        request(b"request", b"lookup", b"cache_id", b"pad", b"cache_type", b"smtp"),
        FAIL + b"session\x00\x00\x00",
        _rx(FAIL + b"session\x00" + B64 + rb"*=*\x00\x00"),
        STALE,
    ),
    # Pipelining.
    Case(
        "pipelined",
        POLICY_SMTP + request(b"request", b"delete", b"cache_type", b"smtp", b"cache_id", b"pad"),
        POLICY_SMTP_REPLY + OK + b"\x00",
        POLICY_SMTP_REPLY,
        PIPELINE,
    ),
    # Triggers and short input: a trigger is told by content, however the bytes are split.
    Case("short-not-trigger", b"X\x00", b""),
    Case(
        "lone-terminator",
        b"\x00",
        FAIL + b"\x00",
        b"",
        "3.7.11 reads 2 bytes or fewer as a trigger string; minipostfix reads an empty "
        "attribute list and answers FAIL",
    ),
    Case(
        "trigger-then-garbage",
        b"WX\x00",
        b"",
        FAIL + b"\x00",
        "minipostfix takes a first byte W as a trigger and closes on anything but NUL after it; "
        "3.7.11 reads 3 bytes as an attribute list named WX and answers FAIL",
    ),
    # Limits (attr.py).
    Case(
        "name-too-long",
        request(b"request", b"seed", b"s" * 65, b"32"),
        FAIL + b"\x00",
        _rx(FAIL + b"seed\x00" + B64 + rb"*=*\x00\x00"),
        LIMIT,
    ),
    Case(
        "value-too-long",
        request(
            b"request",
            b"update",
            b"cache_type",
            b"smtp",
            b"cache_id",
            b"big",
            b"session",
            b"QUJD" * 21847,
        ),
        FAIL + b"\x00",
        OK + b"\x00",
        LIMIT,
    ),
    # minipostfix's stats request (real clients never send it).
    Case(
        "stats",
        request(b"request", b"stats"),
        _rx(OK + rb"uptime\x00\d+\x00requests\.seed\x00\d+\x00.*\x00\x00"),
        b"",
        UNKNOWN + "; stats is minipostfix's own request",
    ),
)


def exchange(socket_path: str, sent: bytes, timeout: float = 10.0) -> bytes:
    """Connect, check the greeting, send, shut down writing, read to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        greeting = b""
        while len(greeting) < len(GREETING):
            chunk = sock.recv(len(GREETING) - len(greeting))
            if not chunk:
                break
            greeting += chunk
        assert greeting == GREETING, greeting
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
