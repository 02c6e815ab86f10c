"""smtp: the smtp test client, a STARTTLS client that resumes sessions through tlsmgr.

SYNOPSIS
    python -m tlsmgr.clients.smtp [-c DIR] [--host H] [--port P] [--helo NAME]
        [--timeout SECONDS] [--no-cache]

    from tlsmgr.clients.smtp import smtp_session, smtp_cache_id, SmtpError
    smtp_session(host, port, *, tlsmgr, helo, timeout, say) -> Outcome

DESCRIPTION
    One SMTP session the way Postfix's smtp(8) does its TLS part, as a
    tool an operator can run in a second terminal:

    1. seed: a tlsmgr `seed` request of tls_daemon_random_bytes (32)
       bytes, mixed into OpenSSL's RAND (RAND_add), as tls_ext_seed().
    2. connect to H:P (default 127.0.0.1:10025, the embedded smtpd test
       service), read the 220 greeting, EHLO, STARTTLS.
    3. lookup: the smtp cache entry under a Postfix-style cache id,
           smtp&[H]:P&H&ADDR&&<SHA-256 of this client's TLS settings>
       (service, next hop, host name, address, then the digest part, as
       Postfix's smtp_key_prefix() and tls_serverid_digest() build it;
       the digest covers the OpenSSL version, so a session made by
       another OpenSSL is never offered).  A hit is d2i'd and offered.
    4. the TLS handshake; prints `Reusing old session` when OpenSSL
       resumed the offered session, `new session` otherwise.
    5. EHLO again over TLS.  Reading that reply is what lets TLS 1.3
       session tickets arrive (they follow the handshake).
    6. update: the session now held (DER, i2d) goes back to the smtp
       cache under the same id, so the next run can resume it.
    7. QUIT.

    -c DIR (else $MAIL_CONFIG, else /etc/postfix) is the configuration
    directory whose main.cf locates tlsmgr's socket
    ($queue_directory/private/$tlsmgr_service_name); when that socket
    does not exist the client warns and goes on without tlsmgr.
    --no-cache talks to no tlsmgr at all (no seed, no cache): plain
    STARTTLS against any server, OpenSSL seeding itself.

    Works against any STARTTLS server: the smtpd test server, a real
    Postfix smtpd, or another MTA.

SECURITY
    Opportunistic TLS: the server's certificate is not verified (as
    Postfix's `may` security level).  Do not use this client to judge a
    server's identity.  Plaintext the server sends after its STARTTLS
    reply is discarded, never read as TLS data.

DIAGNOSTICS
    Progress lines on stdout, prefixed `smtp: `.  Problems with tlsmgr
    (no entropy, cache lookup or update failed) are warnings on stderr:
    the session goes on without the cache, as in Postfix.  A failed
    connection, an unexpected SMTP reply, a server without STARTTLS or a
    failed handshake print `smtp: fatal: ...` on stderr and exit 1.

BUGS
    No DANE, no certificate policies, IPv4 and IPv6 literals and names
    only (no MX lookups): it is a test client, not a mailer.

SEE ALSO
    smtp(8), src/tls/tls_client.c, src/smtp/smtp_key.c (Postfix);
    tlsmgr.clients.smtpd, tlsmgr.clients.probe, docs/clients.md
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from OpenSSL import SSL

from tlsmgr.client import TlsmgrClient
from tlsmgr.clients import probe, tlsutil
from tlsmgr.protocol import Status

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 10025
CACHE_TYPE = "smtp"
SEED_BYTES = 32
# A progress or warning line printer (print, or a test's collector).
Say = Callable[[str], None]


class SmtpError(Exception):
    """A fatal problem in the SMTP session; str() says what and with whom."""


@dataclass
class Reply:
    code: int
    lines: list[str]

    def __str__(self) -> str:
        return f"{self.code} {self.lines[-1] if self.lines else ''}".rstrip()


@dataclass
class Outcome:
    """What happened: the cache id, whether a session was offered, reused, stored."""

    cache_id: str
    offered: bool = False
    reused: bool = False
    stored: bool = False
    summary: str = ""


def smtp_cache_id(host: str, port: int, addr: str) -> str:
    """The smtp cache id for this next hop, in Postfix's layout."""
    nexthop = f"[{host}]:{port}"
    serverid = f"{CACHE_TYPE}&{nexthop}&{host}&{addr}&"
    props = "\0".join(
        (
            f"openssl={tlsutil.openssl_version_num():08x}",
            "protocols=default",
            "ciphers=default",
            "level=may",
        )
    )
    return f"{serverid}&{hashlib.sha256(props.encode()).hexdigest().upper()}"


# The SMTP dialogue.


def read_reply(stream: tlsutil.LineStream, peer: str) -> Reply:
    """One (possibly multi-line) reply; SmtpError on garbage or a lost connection."""
    lines: list[str] = []
    while True:
        try:
            raw = stream.readline()
        except tlsutil.StreamError as err:
            raise SmtpError(f"{err} while reading from {peer}") from None
        text = raw.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
            raise SmtpError(f"malformed reply from {peer}: {text[:80]!r}")
        lines.append(text[4:])
        if text[3:4] != "-":
            return Reply(int(text[:3]), lines)


def command(stream: tlsutil.LineStream, text: str, peer: str, expect: int) -> Reply:
    """Send a command and read its reply; SmtpError unless the code is `expect`."""
    try:
        stream.write(text.encode() + tlsutil.CRLF)
    except tlsutil.StreamError as err:
        raise SmtpError(f"{err} with {peer} sending {text.split()[0]}") from None
    reply = read_reply(stream, peer)
    if reply.code != expect:
        raise SmtpError(f"{peer} answered {text.split()[0]} with: {reply}")
    return reply


def smtp_session(
    host: str,
    port: int,
    *,
    tlsmgr: TlsmgrClient | None,
    helo: str = "localhost",
    timeout: float = 30.0,
    say: Say = print,
    warn: Say | None = None,
) -> Outcome:
    """One SMTP session with STARTTLS; see the module docstring for the steps."""
    warn = warn or say
    if tlsmgr is not None:
        _seed(tlsmgr, warn)
    sock, addr = _connect(host, port, timeout)
    peer = f"{host}[{addr}]:{port}"
    try:
        return _dialogue(sock, host, port, addr, peer, tlsmgr, helo, say, warn)
    finally:
        sock.close()


def _dialogue(
    sock: socket.socket,
    host: str,
    port: int,
    addr: str,
    peer: str,
    tlsmgr: TlsmgrClient | None,
    helo: str,
    say: Say,
    warn: Say,
) -> Outcome:
    stream = tlsutil.LineStream(sock)
    greeting = read_reply(stream, peer)
    if greeting.code != 220:
        raise SmtpError(f"{peer} greeted with: {greeting}")
    say(f"connected to {peer}: {greeting}")
    ehlo = command(stream, f"EHLO {helo}", peer, 250)
    if not any(line.split()[:1] == ["STARTTLS"] for line in ehlo.lines[1:]):
        raise SmtpError(f"{peer} does not offer STARTTLS")
    command(stream, "STARTTLS", peer, 220)
    if stream.discard_buffer():
        warn(f"discarded plaintext that {peer} sent after its STARTTLS reply")
    outcome = Outcome(smtp_cache_id(host, port, addr))
    ctx = tlsutil.client_context()
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    if tlsmgr is not None:
        outcome.offered = _offer(conn, ctx, tlsmgr, outcome.cache_id, say, warn)
    _handshake(conn, peer)
    stream.start_tls(conn)
    outcome.reused = tlsutil.session_reused(conn)
    outcome.summary = tlsutil.connection_summary(conn)
    say(f"Untrusted TLS connection established to {peer}: {outcome.summary}")
    say("Reusing old session" if outcome.reused else "new session")
    # TLS 1.3: the server's session tickets come after the handshake.
    command(stream, f"EHLO {helo}", peer, 250)
    if tlsmgr is not None:
        outcome.stored = _store(conn, tlsmgr, outcome.cache_id, say, warn)
    bye = command(stream, "QUIT", peer, 221)
    say(str(bye))
    _close_tls(conn)
    return outcome


def _connect(host: str, port: int, timeout: float) -> tuple[socket.socket, str]:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        reason = err.strerror or str(err)
        raise SmtpError(f"connect to {host}:{port}: {reason}") from None
    # Workaround: pyOpenSSL needs a blocking socket; kernel timeouts instead.
    sock.settimeout(None)
    tlsutil.set_timeout(sock, timeout)
    return sock, sock.getpeername()[0]


def _handshake(conn: SSL.Connection, peer: str) -> None:
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        raise SmtpError(f"TLS handshake with {peer}: timeout") from None
    except SSL.Error as err:
        raise SmtpError(f"TLS handshake with {peer}: {tlsutil.ssl_reason(err)}") from None
    except OSError as err:
        raise SmtpError(f"TLS handshake with {peer}: {err.strerror or err}") from None


def _close_tls(conn: SSL.Connection) -> None:
    try:
        conn.shutdown()
    except (SSL.Error, OSError):
        pass


# The tlsmgr side: seed, lookup, update.


def _seed(tlsmgr: TlsmgrClient, warn: Callable[[str], None]) -> None:
    result = tlsmgr.seed(SEED_BYTES)
    if result.ok and result.data:
        tlsutil.rand_add(result.data)
    else:
        warn(f"no entropy from tlsmgr ({probe.describe(result)}); OpenSSL seeds itself")


def _offer(
    conn: SSL.Connection,
    ctx: SSL.Context,
    tlsmgr: TlsmgrClient,
    cache_id: str,
    say: Say,
    warn: Say,
) -> bool:
    result = tlsmgr.lookup(CACHE_TYPE, cache_id)
    if result.status == Status.FAIL:
        warn(f"smtp cache lookup failed: {probe.describe(result)}")
        return False
    if not result.ok:
        say("no session in the smtp cache")
        return False
    session = tlsutil.session_from_der(result.data, ctx)
    if session is None:
        warn(f"unusable session in the smtp cache ({len(result.data)} bytes); deleting it")
        tlsmgr.delete(CACHE_TYPE, cache_id)
        return False
    conn.set_session(session)
    say(f"offering the session found in the smtp cache ({len(result.data)} bytes)")
    return True


def _store(conn: SSL.Connection, tlsmgr: TlsmgrClient, cache_id: str, say: Say, warn: Say) -> bool:
    session = conn.get_session()
    if session is None:
        warn("the server gave no session to store")
        return False
    der = tlsutil.session_to_der(session)
    result = tlsmgr.update(CACHE_TYPE, cache_id, der)
    if not result.ok:
        warn(f"smtp cache update failed: {probe.describe(result)}")
        return False
    say(f"stored the session in the smtp cache ({len(der)} bytes)")
    return True


# The command.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="smtp", description="STARTTLS test client with tlsmgr session caching."
    )
    parser.add_argument("-c", dest="config_dir", metavar="DIR", help="configuration directory")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--helo", default="localhost", help="EHLO name")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--no-cache", action="store_true", help="no tlsmgr: no seed, no cache")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"bad port {args.port}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    tlsmgr = None
    try:
        if not args.no_cache:
            tlsmgr = _open_tlsmgr(args.config_dir)
        smtp_session(
            args.host,
            args.port,
            tlsmgr=tlsmgr,
            helo=args.helo,
            timeout=args.timeout,
            say=_say,
            warn=_warn,
        )
    except (SmtpError, probe.ProbeError) as err:
        print(f"smtp: fatal: {err}", file=sys.stderr)
        return 1
    finally:
        if tlsmgr is not None:
            tlsmgr.close()
    return 0


def _open_tlsmgr(config_dir: str | None) -> TlsmgrClient | None:
    """The instance's tlsmgr; None (with a warning) when its socket does not exist."""
    path = probe.tlsmgr_socket(config_dir)
    if not os.path.exists(path):
        _warn(f"no tlsmgr socket {path}: going on without tlsmgr (no seed, no cache)")
        return None
    return TlsmgrClient(path)


def _say(text: str) -> None:
    print(f"smtp: {text}", flush=True)


def _warn(text: str) -> None:
    print(f"smtp: warning: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
