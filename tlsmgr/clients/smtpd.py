"""testsmtpd: the smtpd test server, a STARTTLS-only SMTP service that feeds the smtpd cache.

SYNOPSIS
    master.cf:
        127.0.0.1:10025 inet n - y - 4 testsmtpd -o max_idle=3600

    from tlsmgr.clients.smtpd import main, smtpd_session, SmtpdState, smtpd_cache_id
    smtpd_session(sock, client, state)        # one SMTP session, blocking
    smtpd_cache_id(session_id, service) -> str

DESCRIPTION
    A prefork service on the single-server skeleton (master.single_server),
    like Postfix's smtpd(8) in the TLS parts only.  The master runs up to
    maxproc of these processes; each serves one client at a time.

    pre_init (root, before the jail) reads smtpd_tls_cert_file and
    smtpd_tls_key_file (by default testsmtpd-{cert,key}.pem in the
    configuration directory, made by `python -m tlsmgr.clients.mkcert`).
    post_init (after the privilege drop) asks tlsmgr for a `seed` of
    tls_daemon_random_bytes and mixes it into OpenSSL's RAND, asks
    `policy smtpd` whether the smtpd cache is enabled, and builds ONE
    SSL.Context that the process keeps for its whole life: OpenSSL's
    ticket keys live in that Context, so a client that comes back to the
    same process resumes its session (the service runs with
    `-o max_idle=3600` so that process stays around).

    The SMTP dialogue: a 220 greeting; EHLO (offering STARTTLS before
    TLS), HELO, STARTTLS, NOOP, RSET, QUIT; `502 5.5.2` for any other
    command; after 20 errors `421` and the session ends.  After STARTTLS
    the handshake; then, as Postfix logs it at smtpd_tls_loglevel >= 1,
        Anonymous TLS connection established from CLIENT: TLSv1.3 with ...
    and at level >= 2 `CLIENT: Reusing old session` for a resumption.
    A new (not resumed) session is written to the smtpd cache (DER, an
    `update` request) under the id Postfix's GEN_CACHE_ID() builds,
        <uppercase hex session id>&s=<service name>&l=<OpenSSL_version_num>
    Each handshake is preceded by another `seed`, whose failure is
    ignored, as in Postfix.

    CLIENT is `unknown[ADDR]`: no reverse lookups here.  `connect from`
    and `disconnect from ... ehlo=N starttls=N quit=N commands=N` lines
    frame each session, as smtpd(8) writes them.

SECURITY
    The key file is read as root in pre_init and parsed after the
    privilege drop.  Pipelined plaintext after STARTTLS is discarded
    (CVE-2011-0411).  Lines are limited to 4096 bytes; each read and
    write times out after smtpd_timeout (300s).

DIAGNOSTICS
    Fatal at start (logged, exit 1, the master throttles): unreadable
    certificate or key files (named), a key that does not match.  If
    tlsmgr gives no entropy at start, the process warns and goes on with
    OpenSSL's own seeding (Postfix would disable TLS).  Per session:
    `SSL_accept error from CLIENT: reason`, `lost connection after CMD
    from CLIENT`, `timeout after CMD from CLIENT`.

BUGS
    No mail is accepted: MAIL, RCPT, DATA get 502.  pyOpenSSL cannot
    install OpenSSL's session-ticket key callback
    (SSL_CTX_set_tlsext_ticket_key_evp_cb), its get-session callback or
    its new-session callback, and the OpenSSL inside `cryptography`
    exports none of them to ctypes: tickets use the per-process keys
    OpenSSL makes, not tlsmgr's `tktkey` keys, and the smtpd cache is
    written but never read (resumption comes from tickets).  See
    docs/clients.md.

SEE ALSO
    smtpd(8), src/smtpd/smtpd.c, src/tls/tls_server.c (Postfix);
    master/single_server.py, tlsmgr.clients.smtp, docs/clients.md
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import NoReturn

from OpenSSL import SSL

from master import single_server
from master.config import Param
from master.errors import ConfigError
from master.log import msg_fatal, msg_info, msg_warn
from master.skeleton import ServerContext
from tlsmgr.client import TlsmgrClient
from tlsmgr.clients import probe, tlsutil

CACHE_TYPE = "smtpd"
ERROR_LIMIT = 20

PARAMS: tuple[Param, ...] = (
    Param("smtpd_tls_cert_file", "", doc="PEM certificate of the smtpd test server."),
    Param("smtpd_tls_key_file", "$smtpd_tls_cert_file", doc="PEM private key (root only)."),
    Param("smtpd_tls_loglevel", "0", "int", 0, doc="1: log TLS sessions; 2: resumptions too."),
    Param("smtpd_timeout", "300s", "time", 1, doc="Limit on each read or write."),
    Param("tls_daemon_random_bytes", "32", "int", 1, 255, doc="Bytes asked of tlsmgr's seed."),
    Param("tlsmgr_service_name", "tlsmgr", doc="The tlsmgr service name in master.cf."),
)


@dataclass
class SmtpdState:
    """What one process keeps: its Context, its tlsmgr client, its settings."""

    context: SSL.Context
    service: str
    myhostname: str = "localhost"
    loglevel: int = 0
    timeout: float = 300.0
    seed_bytes: int = 32
    tlsmgr: TlsmgrClient | None = None
    cache_enabled: bool = False


@dataclass
class _Session:
    stream: tlsutil.LineStream
    client: str
    state: SmtpdState
    tls: SSL.Connection | None = None
    errors: int = 0
    last: str = "CONNECT"
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False

    def reply(self, text: str) -> None:
        self.stream.write(text.encode() + tlsutil.CRLF)


def smtpd_cache_id(session_id: bytes, service: str) -> str:
    """GEN_CACHE_ID(): hex session id, service and OpenSSL version number."""
    return f"{session_id.hex().upper()}&s={service}&l={tlsutil.openssl_version_num()}"


# The SMTP dialogue.


def smtpd_session(sock: socket.socket, client: str, state: SmtpdState) -> None:
    """Serve one client on a connected blocking socket; closes nothing."""
    # Workaround: pyOpenSSL needs a blocking socket; the kernel enforces the timeout.
    sock.settimeout(None)
    tlsutil.set_timeout(sock, state.timeout)
    session = _Session(tlsutil.LineStream(sock), client, state)
    msg_info(f"connect from {client}")
    try:
        session.reply(f"220 {state.myhostname} ESMTP minipostfix testsmtpd")
        while not session.done:
            _one_command(session)
    except tlsutil.StreamError as err:
        what = "timeout" if str(err) == "timeout" else "lost connection"
        msg_info(f"{what} after {session.last} from {client}")
    finally:
        _shutdown(session)
        msg_info(f"disconnect from {client}{_counts(session)}")


def _one_command(session: _Session) -> None:
    line = session.stream.readline().decode("utf-8", "replace")
    verb, _, arg = line.strip().partition(" ")
    verb = verb.upper()
    handler = _COMMANDS.get(verb)
    session.last = verb if handler else "UNKNOWN"
    key = verb.lower() if handler else "unknown"
    session.counts[key] = session.counts.get(key, 0) + 1
    ok = handler(session, arg.strip()) if handler else _unknown(session, line)
    if not ok:
        session.errors += 1
        if session.errors >= ERROR_LIMIT:
            session.reply("421 4.7.0 Error: too many errors")
            session.done = True


def _ehlo(session: _Session, arg: str) -> bool:
    if not arg:
        session.reply("501 5.5.4 Syntax: EHLO hostname")
        return False
    lines = [session.state.myhostname, "PIPELINING", "8BITMIME"]
    if session.tls is None:
        lines.append("STARTTLS")
    lines.append("ENHANCEDSTATUSCODES")
    text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}"
    session.reply(text)
    return True


def _helo(session: _Session, arg: str) -> bool:
    if not arg:
        session.reply("501 5.5.4 Syntax: HELO hostname")
        return False
    session.reply(f"250 {session.state.myhostname}")
    return True


def _ok(session: _Session, arg: str) -> bool:
    session.reply("250 2.0.0 Ok")
    return True


def _quit(session: _Session, arg: str) -> bool:
    session.reply("221 2.0.0 Bye")
    session.done = True
    return True


def _unknown(session: _Session, line: str) -> bool:
    if not line.strip():
        session.reply("500 5.5.2 Error: bad syntax")
    else:
        session.reply("502 5.5.2 Error: command not recognized")
    return False


def _starttls(session: _Session, arg: str) -> bool:
    if arg:
        session.reply("501 5.5.4 Syntax: STARTTLS")
        return False
    if session.tls is not None:
        session.reply("554 5.5.1 Error: TLS already active")
        return False
    session.reply("220 2.0.0 Ready to start TLS")
    if session.stream.discard_buffer():
        # Security: never take plaintext sent before the handshake as TLS data.
        msg_warn(f"{session.client}: discarding input pipelined after STARTTLS")
    _start_tls(session)
    return True


def _start_tls(session: _Session) -> None:
    state = session.state
    if state.tlsmgr is not None:
        result = state.tlsmgr.seed(state.seed_bytes)
        if result.ok:
            tlsutil.rand_add(result.data)
    conn = SSL.Connection(state.context, session.stream.sock)
    conn.set_accept_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        raise tlsutil.StreamError("timeout") from None
    except (SSL.Error, OSError) as err:
        reason = tlsutil.ssl_reason(err) if isinstance(err, SSL.Error) else str(err)
        msg_info(f"SSL_accept error from {session.client}: {reason}")
        session.done = True
        return
    session.tls = conn
    session.stream.start_tls(conn)
    reused = tlsutil.session_reused(conn)
    if state.loglevel >= 2 and reused:
        msg_info(f"{session.client}: Reusing old session")
    if state.loglevel >= 1:
        summary = tlsutil.connection_summary(conn)
        msg_info(f"Anonymous TLS connection established from {session.client}: {summary}")
    if not reused:
        _store(session, conn)


def _store(session: _Session, conn: SSL.Connection) -> None:
    """Write the new server session to the smtpd cache (Postfix's new_server_session_cb)."""
    state = session.state
    if state.tlsmgr is None or not state.cache_enabled:
        return
    ssl_session = conn.get_session()
    if ssl_session is None:
        return
    der = tlsutil.session_to_der(ssl_session)
    session_id = tlsutil.session_id(der)
    if not session_id:
        return
    cache_id = smtpd_cache_id(session_id, state.service)
    result = state.tlsmgr.update(CACHE_TYPE, cache_id, der)
    if not result.ok:
        msg_warn(f"{session.client}: smtpd cache update failed: {probe.describe(result)}")
    elif state.loglevel >= 2:
        msg_info(f"{session.client}: save session {cache_id} to smtpd cache")


def _shutdown(session: _Session) -> None:
    if session.tls is not None:
        try:
            session.tls.shutdown()
        except (SSL.Error, OSError):
            pass


def _counts(session: _Session) -> str:
    if not session.counts:
        return ""
    order = ["helo", "ehlo", "starttls", "noop", "rset", "quit", "unknown"]
    parts = [f"{k}={session.counts[k]}" for k in order if k in session.counts]
    return " " + " ".join(parts) + f" commands={sum(session.counts.values())}"


_COMMANDS = {
    "EHLO": _ehlo,
    "HELO": _helo,
    "STARTTLS": _starttls,
    "NOOP": _ok,
    "RSET": _ok,
    "QUIT": _quit,
}


# The daemon: hooks for master.single_server.


class _Daemon:
    """The process-wide state that Postfix's smtpd keeps in statics."""

    cert_pem = b""
    key_pem = b""
    state: SmtpdState | None = None


def pre_init(ctx: ServerContext) -> None:
    """As root: read the certificate and key (outside the jail); parse nothing."""
    for name in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
        path = ctx.config.get(name)
        if not path:
            msg_fatal(f"{name} is empty: run `python -m tlsmgr.clients.mkcert CONFIG_DIR`")
        try:
            with open(path, "rb") as fp:
                data = fp.read()
        except OSError as err:
            msg_fatal(f"open {name} {path}: {err.strerror}")
        if name == "smtpd_tls_cert_file":
            _Daemon.cert_pem = data
        else:
            _Daemon.key_pem = data


def post_init(ctx: ServerContext) -> None:
    """After the drop: seed, ask the cache policy, build the one Context."""
    cfg = ctx.config
    try:
        context = tlsutil.server_context(
            _Daemon.cert_pem, _Daemon.key_pem, ctx.service_name.encode()
        )
    except (SSL.Error, ValueError, TypeError) as err:
        reason = tlsutil.ssl_reason(err) if isinstance(err, SSL.Error) else str(err)
        msg_fatal(
            f"cannot use {cfg.get('smtpd_tls_cert_file')} and "
            f"{cfg.get('smtpd_tls_key_file')}: {reason}"
        )
    _Daemon.key_pem = b""
    try:
        state = SmtpdState(
            context=context,
            service=ctx.service_name,
            myhostname=cfg.get("myhostname") or "localhost",
            loglevel=cfg.get_int("smtpd_tls_loglevel"),
            timeout=cfg.get_time("smtpd_timeout"),
            seed_bytes=cfg.get_int("tls_daemon_random_bytes"),
        )
    except ConfigError as err:
        msg_fatal(str(err))
    # Inside the jail (or chdir'd to queue_directory): private/tlsmgr is relative.
    state.tlsmgr = TlsmgrClient(f"private/{cfg.get('tlsmgr_service_name')}")
    seed = state.tlsmgr.seed(state.seed_bytes)
    if seed.ok:
        tlsutil.rand_add(seed.data)
    else:
        msg_warn(f"no entropy from tlsmgr ({probe.describe(seed)}); OpenSSL seeds itself")
    policy = state.tlsmgr.policy(CACHE_TYPE)
    state.cache_enabled = policy.ok and bool(policy.cachable)
    _Daemon.state = state


def pre_exit(ctx: ServerContext) -> None:
    if _Daemon.state is not None and _Daemon.state.tlsmgr is not None:
        _Daemon.state.tlsmgr.close()


def service(conn: socket.socket, ctx: ServerContext) -> None:
    """One client, for single_server."""
    assert _Daemon.state is not None
    try:
        addr = conn.getpeername()[0]
    except OSError:
        addr = "unknown"
    smtpd_session(conn, f"unknown[{addr}]", _Daemon.state)


def main(argv: list[str] | None = None) -> NoReturn:
    """The testsmtpd console script (run by the master, not by hand)."""
    single_server.main(
        service,
        params=PARAMS,
        pre_init=pre_init,
        post_init=post_init,
        pre_exit=pre_exit,
        argv=argv,
    )


if __name__ == "__main__":
    main()
