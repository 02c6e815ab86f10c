"""Real Postfix sessions fit under tlsmgr's size caps: mail through Debian's smtp to its smtpd.

A private Postfix 3.7 instance (support.instance.PostfixInstance with our tlsmgr, the real master)
runs a whole delivery path with OUR tlsmgr: a plain smtpd on a loopback port takes a message
for four relay domains, cleanup and qmgr queue it, and Debian's smtp client delivers it with
STARTTLS to one of two receiving smtpd services, which discard what they get.  Every
certificate is realistic in size: RSA 4096 keys, a root, an intermediate, a server leaf and a
client leaf with the usual extensions; both ends send leaf + intermediate, the receiving
smtpd asks for the client's certificate and verifies it.  The four domains cover the shapes a
session takes: TLS 1.3 and TLS 1.2 (`smtp` and `smtp12` transports), with session tickets
(receiving service `tkt`) and without (`notkt`, tls_session_ticket_cipher empty, so that the
smtpd cache holds whole server sessions).  Each domain gets two messages, the second resuming
the first one's session.

After a stop, `postmap -s` lists both caches; every entry is checked against scache's caps, and
the largest cache_id and session of each cache are printed (run with -s to see them;
docs/tlsmgr.md records them).
"""

from __future__ import annotations

import datetime
import re
import shutil
import smtplib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.instance import OUR_TLSMGR, POSTLOG_LINE, PostfixInstance
from support.postfix import postmap_list
from support.sockets import free_port
from support.waiting import WAIT
from tlsmgr import scache
from tlsmgr.scache import MAX_CACHE_ID, MAX_SESSION

pytestmark = [pytest.mark.postfix, pytest.mark.root, pytest.mark.slow]

DOMAINS = {  # relay domain -> transport:[nexthop]:port (ports filled in by the fixture)
    "t13.example": ("smtp", "tkt"),
    "t12.example": ("smtp12", "tkt"),
    "n13.example": ("smtp", "notkt"),
    "n12.example": ("smtp12", "notkt"),
}

MASTER_CF = """\
127.0.0.1:{inject} inet n - n - - smtpd
127.0.0.1:{tkt} inet n - n - - smtpd {receiver}
127.0.0.1:{notkt} inet n - n - - smtpd {receiver} -o tls_session_ticket_cipher=
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
smtp unix - - n - - smtp
smtp12 unix - - n - - smtp -o smtp_tls_mandatory_protocols=<=TLSv1.2
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
"""
# The queues cleanup and qmgr need (postfix-script makes them at `postfix start`).
QUEUES = ("incoming", "active", "deferred", "bounce", "defer", "trace", "corrupt", "hold")
RECEIVER = (
    "-o smtpd_tls_security_level=may -o smtpd_tls_ask_ccert=yes -o content_filter=discard:"
    " -o smtpd_tls_cert_file={etc}/server.pem -o smtpd_tls_key_file={etc}/server.key"
)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Mail Services GmbH"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(subject, key, issuer, issuer_key, *, ca: bool, names=(), client=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        return builder.add_extension(usage, critical=True).sign(issuer_key, hashes.SHA256())
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    uri = x509.UniformResourceIdentifier
    builder = (
        builder.add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku[1:] if client else eku), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.OCSP, uri("http://ocsp.example.net")
                    ),
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        uri("http://ca.example.net/intermediate-r3.der"),
                    ),
                ]
            ),
            False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([uri("http://crl.example.net/r3.crl")], None, None, None)]
            ),
            False,
        )
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)]
            ),
            False,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_chain(etc: Path) -> None:
    """root -> intermediate -> server leaf and client leaf, all RSA 4096."""
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=4096) for _ in range(4)]
    root_key, inter_key, server_key, client_key = keys
    root = _cert("Example Root CA X1", root_key, "Example Root CA X1", root_key, ca=True)
    inter = _cert("Example Issuing CA R3", inter_key, "Example Root CA X1", root_key, ca=True)
    names = ["mx1.mail.example.com", "mail.example.com", "smtp.example.com", "localhost"]
    server = _cert(
        "mx1.mail.example.com",
        server_key,
        "Example Issuing CA R3",
        inter_key,
        ca=False,
        names=names,
    )
    client = _cert(
        "out1.mail.example.org",
        client_key,
        "Example Issuing CA R3",
        inter_key,
        ca=False,
        names=["out1.mail.example.org"],
        client=True,
    )
    (etc / "root.pem").write_bytes(_pem(root))
    (etc / "server.pem").write_bytes(_pem(server) + _pem(inter))
    (etc / "client.pem").write_bytes(_pem(client) + _pem(inter))
    _write_key(etc / "server.key", server_key)
    _write_key(etc / "client.key", client_key)


@pytest.fixture
def postfix():
    ports = {"inject": free_port(), "tkt": free_port(), "notkt": free_port()}
    with PostfixInstance(master_cf="", tlsmgr=OUR_TLSMGR) as pfx:
        transports = ", ".join(
            f"{domain}={transport}:[127.0.0.1]:{ports[service]}"
            for domain, (transport, service) in DOMAINS.items()
        )
        receiver = RECEIVER.format(etc=pfx.etc)
        pfx.write_master_cf(MASTER_CF.format(receiver=receiver, **ports) + POSTLOG_LINE)
        pfx.write_main_cf(
            myhostname="out1.mail.example.org",
            mydestination="",
            local_recipient_maps="",
            alias_maps="",
            alias_database="",
            mynetworks="127.0.0.0/8",
            relay_domains=" ".join(DOMAINS),
            transport_maps=f"inline:{{{transports}}}",
            smtp_tls_security_level="encrypt",
            smtp_tls_cert_file=str(pfx.etc / "client.pem"),
            smtp_tls_key_file=str(pfx.etc / "client.key"),
            smtp_tls_CAfile=str(pfx.etc / "root.pem"),
            smtpd_tls_CAfile=str(pfx.etc / "root.pem"),
            smtp_tls_loglevel="2",
            smtpd_tls_loglevel="2",
            smtp_connection_cache_on_demand="no",
            smtpd_tls_session_cache_database="btree:${data_directory}/smtpd_scache",
            smtp_tls_session_cache_database="btree:${data_directory}/smtp_scache",
        )
        make_chain(pfx.etc)
        for sub in QUEUES:
            folder = pfx.queue / sub
            folder.mkdir(mode=0o700)
            shutil.chown(folder, "postfix")
        pfx.start()
        yield pfx, ports
        pfx.stop()  # when the test did not get that far


def _send(port: int, rcpt: str) -> None:
    message = f"Subject: size\r\nTo: {rcpt}\r\n\r\nx\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as smtp:
        smtp.sendmail("sender@out1.mail.example.org", [rcpt], message)


def test_real_sessions_with_4096_bit_chains_fit_under_the_caps(postfix):
    pfx, ports = postfix
    for round_ in (1, 2):
        for domain in DOMAINS:
            _send(ports["inject"], f"user{round_}@{domain}")
            pfx.wait_log(rf"postfix/smtp\S*\[\d+\]: \S+: to=<user{round_}@{domain}>.*status=sent")
    log = pfx.log()
    # Both TLS versions, verified chains both ways, and the second round resumed.
    assert "Trusted TLS connection established to" in log
    assert "Trusted TLS connection established from" in log
    assert re.search(r"established to .*: TLSv1\.2 ", log) and re.search(r"to .*: TLSv1\.3 ", log)
    assert len(re.findall(r"postfix/smtp\[\d+\]: \S+: Reusing old session", log)) == 4
    stats = dict(pfx.client().stats().items)
    assert (stats["smtp.oversized"], stats["smtpd.oversized"]) == ("0", "0")
    pfx.stop()
    for name in ("smtp", "smtpd"):
        entries = postmap_list(f"btree:{pfx.data / name}_scache")
        assert entries, f"nothing in the {name} cache"
        ids = [len(key) for key in entries]
        sessions = [len(value) // 2 - scache.TIME_SIZE for value in entries.values()]
        print(
            f"\n{name} cache: {len(entries)} entries, longest cache_id {max(ids)} bytes,"
            f" largest session {max(sessions)} bytes (all: {sorted(sessions)})"
        )
        assert max(ids) <= MAX_CACHE_ID and max(sessions) <= MAX_SESSION
