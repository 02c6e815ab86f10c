"""mkcert: a self-signed certificate and key for the smtpd test server.

SYNOPSIS
    python -m tlsmgr.clients.mkcert [--days N] CONFIG_DIR

    from tlsmgr.clients.mkcert import ensure_certificate, CERT_NAME, KEY_NAME
    ensure_certificate(config_dir, days=365, now=None) -> tuple[str, bool]

DESCRIPTION
    Writes CONFIG_DIR/testsmtpd-cert.pem and CONFIG_DIR/testsmtpd-key.pem,
    the files the embedded main.cf names in smtpd_tls_cert_file and
    smtpd_tls_key_file: an RSA 2048 key and a self-signed X.509
    certificate for CN=localhost with subjectAltName DNS:localhost and
    IP:127.0.0.1, made with `cryptography`.

    Idempotent: an existing pair is kept when both files exist, the
    certificate parses, has not expired, and matches the key.  Otherwise
    both are made anew.  ensure_certificate() returns the certificate's
    path and whether it made a new pair; the command prints one line
    saying which.

SECURITY
    The files live in the configuration directory, outside the
    queue_directory jail: the smtpd test server reads them in pre_init,
    as root, before it drops privileges.  The key is created with mode
    0600 through O_EXCL on a temporary name and renamed into place, so
    it is never readable by anyone but its owner (root, when run as
    root, as `make run` does), not even for a moment.  The certificate
    is 0644.

DIAGNOSTICS
    `mkcert: fatal: ...` on stderr and exit status 1 when the directory
    is missing or a file cannot be written.

BUGS
    A test certificate only: nothing verifies it, and it is replaced
    when it expires, not renewed ahead of time.

SEE ALSO
    smtpd_tls_cert_file, smtpd_tls_key_file in postconf(5); docs/clients.md
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CERT_NAME = "testsmtpd-cert.pem"
KEY_NAME = "testsmtpd-key.pem"
DEFAULT_DAYS = 365


def ensure_certificate(
    config_dir: str, days: int = DEFAULT_DAYS, now: datetime.datetime | None = None
) -> tuple[str, bool]:
    """Make the pair unless a usable one exists; raises OSError on file errors."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert_path = os.path.join(config_dir, CERT_NAME)
    key_path = os.path.join(config_dir, KEY_NAME)
    if _usable(cert_path, key_path, now):
        return cert_path, False
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _self_signed(key, now, days)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(key_path, key_pem, 0o600)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, True


def _self_signed(key: rsa.RSAPrivateKey, now: datetime.datetime, days: int) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "minipostfix test"),
        ]
    )
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _usable(cert_path: str, key_path: str, now: datetime.datetime) -> bool:
    """Both files readable, the certificate current and matching the key."""
    try:
        with open(cert_path, "rb") as fp:
            cert = x509.load_pem_x509_certificate(fp.read())
        with open(key_path, "rb") as fp:
            key = serialization.load_pem_private_key(fp.read(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if cert.not_valid_after_utc <= now:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Write data to path through a fresh O_EXCL file of that mode and a rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        # The umask can only narrow the mode; set exactly what was asked for.
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mkcert", description="Make the smtpd test server's self-signed certificate."
    )
    parser.add_argument("config_dir", metavar="CONFIG_DIR")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (days)")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    if not os.path.isdir(args.config_dir):
        print(f"mkcert: fatal: {args.config_dir}: no such directory", file=sys.stderr)
        return 1
    try:
        path, made = ensure_certificate(args.config_dir, args.days)
    except OSError as err:
        print(f"mkcert: fatal: {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    key = os.path.join(args.config_dir, KEY_NAME)
    print(f"mkcert: {'created' if made else 'kept existing'} {path} and {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
