"""Inbound: two real Postfix smtpd behind haproxy resume each other's sessions through our tlsmgr.

Two private Postfix 3.7 instances (support.instance.PostfixInstance(tlsmgr=OUR_TLSMGR): Debian's
master and smtpd, our tlsmgr) are the backends, A on 127.0.0.2 and B on 127.0.0.3.
Both have the same myhostname, the same certificate and the same service names
(`PORT` and `PORT12`, with inet_interfaces naming the backend's address), because
Postfix's cache ids and ticket context include them.  Postfix refuses an
inet_interfaces address that no interface has, so for the length of the module the
two addresses are added to `lo` as /32 aliases (`ip addr add`; an alias that was
already there is left alone, the others are removed afterwards).  Traffic stays on
the loopback interface.  Each has two smtpd services: the default one (TLS 1.3) and one
limited to TLS 1.2 (`-o smtpd_tls_protocols=<=TLSv1.2`).  The smtpd session cache is
off, so a resumption can only come from a session ticket, made with a key from the
backend's own tlsmgr.  Each backend's smtpd_banner names it.

Debian's haproxy runs in TCP mode on 127.0.0.1 with three frontends: round robin over
the TLS 1.3 services, round robin over the TLS 1.2 services, and a weighted round
robin (A 2, B 1) over the TLS 1.3 services, in which the same backend is sometimes hit
twice in a row.  The client is our smtp test client (tlsmgr.clients.smtp), keeping its
session in backend A's tlsmgr smtp cache as Postfix's smtp does; a "mail" is one
EHLO/STARTTLS/EHLO/QUIT session.

With the same tls_session_ticket_secret_file on both backends, every mail after the
first resumes, whichever backend it reaches.  With different secrets (the control),
a mail resumes exactly when it reaches the backend that issued the session.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.instance import OUR_TLSMGR, PostfixInstance
from support.secret_files import write_secret
from support.sockets import free_port
from support.waiting import wait_until
from tlsmgr.client import TlsmgrClient
from tlsmgr.clients import smtp
from tlsmgr.clients.mkcert import CERT_NAME, KEY_NAME, ensure_certificate

pytestmark = [pytest.mark.postfix, pytest.mark.haproxy, pytest.mark.root]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WAIT = 60
MAILS = 10
H = 1800  # the ticket key epoch: half the default smtpd_tls_session_cache_timeout
BACKENDS = {"A": "127.0.0.2", "B": "127.0.0.3"}

MAIN_CF = {
    "myhostname": "mx.example.test",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_protocols": "ipv4",
    "smtpd_tls_security_level": "may",
    "smtpd_tls_loglevel": "2",
    "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
}

MASTER_CF = """\
{port} inet n - n - - smtpd
{port12} inet n - n - - smtpd -o smtpd_tls_protocols=<=TLSv1.2
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
"""

HAPROXY_CFG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend tls13
    bind 127.0.0.1:{rr13}
    default_backend tls13
frontend tls12
    bind 127.0.0.1:{rr12}
    default_backend tls12
frontend weighted
    bind 127.0.0.1:{weighted}
    default_backend weighted
backend tls13
    balance roundrobin
    server A {A}:{port}
    server B {B}:{port}
backend tls12
    balance roundrobin
    server A {A}:{port12}
    server B {B}:{port12}
backend weighted
    balance roundrobin
    server A {A}:{port} weight 2
    server B {B}:{port} weight 1
"""


@dataclass
class Balancer:
    """The two backends and haproxy's three frontend ports."""

    backends: dict[str, PostfixInstance]
    rr13: int
    rr12: int
    weighted: int

    def client(self) -> TlsmgrClient:
        """The smtp client's tlsmgr: backend A's (its smtp cache)."""
        return self.backends["A"].client()


@dataclass
class Mail:
    backend: str
    reused: bool
    protocol: str


def send_mails(lb: Balancer, port: int, count: int = MAILS) -> list[Mail]:
    """`count` sessions through haproxy on `port`, one after the other."""
    mails = []
    with lb.client() as tlsmgr:
        for _ in range(count):
            said: list[str] = []
            outcome = smtp.smtp_session(
                "127.0.0.1", port, tlsmgr=tlsmgr, helo="client.example.test", say=said.append
            )
            greeting = next(line for line in said if line.startswith("connected to"))
            backend = re.search(r"ESMTP backend-(\w)$", greeting)
            assert backend, greeting
            assert outcome.stored, said
            mails.append(Mail(backend.group(1), outcome.reused, outcome.summary.split()[0]))
    return mails


def pairs(mails: list[Mail]) -> list[tuple[Mail, Mail]]:
    """Each mail with the one before it."""
    return list(zip(mails, mails[1:], strict=False))


# The set-up.


def start_backend(pfx: PostfixInstance, name: str, secret: str, cert_dir: Path) -> None:
    for file in (CERT_NAME, KEY_NAME):
        shutil.copy2(cert_dir / file, pfx.etc / file)
    pfx.write_main_cf(
        inet_interfaces=BACKENDS[name],
        smtpd_banner=f"$myhostname ESMTP backend-{name}",
        smtpd_tls_cert_file=str(pfx.etc / CERT_NAME),
        smtpd_tls_key_file=str(pfx.etc / KEY_NAME),
        tls_session_ticket_secret_file=secret,
    )
    pfx.start()


@contextlib.contextmanager
def haproxy(ports: dict[str, int], folder: str) -> Iterator[None]:
    cfg = Path(folder, "haproxy.cfg")
    cfg.write_text(HAPROXY_CFG.format(**ports, **BACKENDS))
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for key in ("rr13", "rr12", "weighted"):
            wait_until(lambda key=key: accepts(ports[key]), f"haproxy on port {ports[key]}", WAIT)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
        proc.stdout.close()


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def loopback_aliases(addresses: list[str]) -> Iterator[None]:
    """Each address on `lo` for the length of the block (Postfix's inet_interfaces check)."""
    added = []
    try:
        for address in addresses:
            shown = subprocess.run(
                ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
            )
            if f"inet {address}/" in shown.stdout:
                continue
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
            added.append(address)
        yield
    finally:
        for address in added:
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=True)


@contextlib.contextmanager
def balancer(same_secret: bool) -> Iterator[Balancer]:
    folder = tempfile.mkdtemp(prefix="mpfx-lb-", dir="/tmp")
    os.chmod(folder, 0o755)
    try:
        secrets = [write_secret(folder, os.urandom(64), name=n) for n in ("fleet.key", "other.key")]
        ensure_certificate(folder)
        ports = {k: free_port() for k in ("port", "port12", "rr13", "rr12", "weighted")}
        with contextlib.ExitStack() as stack:
            stack.enter_context(loopback_aliases(list(BACKENDS.values())))
            backends = {}
            for name, secret in zip(
                BACKENDS, secrets if not same_secret else secrets[:1] * 2, strict=True
            ):
                pfx = stack.enter_context(
                    PostfixInstance(
                        main_cf=MAIN_CF, master_cf=MASTER_CF.format(**ports), tlsmgr=OUR_TLSMGR
                    )
                )
                start_backend(pfx, name, secret, Path(folder))
                stack.callback(pfx.stop)  # fails when a process of the instance outlives it
                backends[name] = pfx
            stack.enter_context(haproxy(ports, folder))
            yield Balancer(backends, ports["rr13"], ports["rr12"], ports["weighted"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def same_secret():
    with balancer(same_secret=True) as lb:
        yield lb
        for pfx in lb.backends.values():
            log = pfx.log()
            assert "fatal" not in log and "panic" not in log and "warning: tlsmgr" not in log


@pytest.fixture(scope="module")
def different_secrets():
    with balancer(same_secret=False) as lb:
        yield lb


# The tests.


def test_tls13_every_mail_after_the_first_resumes_on_either_backend(same_secret):
    started = time.time()
    mails = send_mails(same_secret, same_secret.rr13)
    assert {m.protocol for m in mails} == {"TLSv1.3"}
    assert all(a.backend != b.backend for a, b in pairs(mails))  # each mail changes host
    assert not mails[0].reused
    assert sum(m.reused for m in mails[1:]) == MAILS - 1  # 9 of 9
    # The first backend issued the ticket with its tlsmgr's key; the other one decrypted
    # it with the same key, which it got from its own tlsmgr.  Postfix's smtpd sends no
    # new ticket on a resumed session, so every resumption used that one ticket.
    issuer = same_secret.backends[mails[0].backend]
    other = same_secret.backends["B" if mails[0].backend == "A" else "A"]
    issued = issuer.wait_log(r"postfix/smtpd\[\d+\]: \S+: Issuing session ticket", timeout=WAIT)
    touts = {f"key expiration: {(t // H + 1) * H - 1:.0f}" for t in (started, time.time())}
    assert any(tout in issued[0] for tout in touts), issued  # the end of the key's epoch
    for pfx in (issuer, other):
        pfx.wait_log(r"postfix/smtpd\[\d+\]: \S+: Decrypting session ticket", timeout=WAIT)
        pfx.wait_log(r"postfix/smtpd\[\d+\]: \S+: Reusing old session", timeout=WAIT)


def test_tls12_every_mail_after_the_first_resumes_on_either_backend(same_secret):
    mails = send_mails(same_secret, same_secret.rr12)
    assert {m.protocol for m in mails} == {"TLSv1.2"}
    assert {m.backend for m in mails} == {"A", "B"}
    assert not mails[0].reused
    assert sum(m.reused for m in mails[1:]) == MAILS - 1


def test_control_with_different_secrets_resumes_only_on_the_issuing_backend(
    different_secrets,
):
    mails = send_mails(different_secrets, different_secrets.weighted, count=12)
    assert {m.protocol for m in mails} == {"TLSv1.3"}
    same_host = [b.reused for a, b in pairs(mails) if a.backend == b.backend]
    other_host = [b.reused for a, b in pairs(mails) if a.backend != b.backend]
    assert same_host and other_host, [m.backend for m in mails]
    assert all(same_host)  # the backend that issued the session resumes it
    assert not any(other_host)  # the other backend cannot decrypt its ticket
    # And through plain round robin, where every mail changes host: no resumption at all.
    mails = send_mails(different_secrets, different_secrets.rr13, count=6)
    assert not any(m.reused for m in mails)
