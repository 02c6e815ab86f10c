"""mkcert: a self-signed pair, mode 0600 key, idempotent unless expired or mismatched."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import subprocess
import sys

from cryptography import x509

from tlsmgr.clients import mkcert, tlsutil


def _cert(d):
    return x509.load_pem_x509_certificate((d / mkcert.CERT_NAME).read_bytes())


def test_creates_pair_with_modes_and_names(tmp_path):
    path, made = mkcert.ensure_certificate(str(tmp_path))
    assert made and path == str(tmp_path / mkcert.CERT_NAME)
    key_st = os.stat(tmp_path / mkcert.KEY_NAME)
    assert stat.S_IMODE(key_st.st_mode) == 0o600
    assert key_st.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    cert = _cert(tmp_path)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["localhost"]
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    # Usable by the smtpd test server.
    tlsutil.server_context(
        (tmp_path / mkcert.CERT_NAME).read_bytes(),
        (tmp_path / mkcert.KEY_NAME).read_bytes(),
        b"x",
    )
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_keeps_a_current_pair(tmp_path):
    mkcert.ensure_certificate(str(tmp_path))
    before = (tmp_path / mkcert.KEY_NAME).read_bytes()
    _, made = mkcert.ensure_certificate(str(tmp_path))
    assert not made
    assert (tmp_path / mkcert.KEY_NAME).read_bytes() == before


def test_replaces_an_expired_pair(tmp_path):
    mkcert.ensure_certificate(str(tmp_path), days=1)
    serial = _cert(tmp_path).serial_number
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    _, made = mkcert.ensure_certificate(str(tmp_path), now=later)
    assert made and _cert(tmp_path).serial_number != serial


def test_replaces_a_mismatched_or_broken_pair(tmp_path, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    mkcert.ensure_certificate(str(tmp_path))
    mkcert.ensure_certificate(str(other))
    (tmp_path / mkcert.KEY_NAME).write_bytes((other / mkcert.KEY_NAME).read_bytes())
    assert mkcert.ensure_certificate(str(tmp_path))[1]
    (tmp_path / mkcert.CERT_NAME).write_text("garbage")
    assert mkcert.ensure_certificate(str(tmp_path))[1]
    os.unlink(tmp_path / mkcert.KEY_NAME)
    assert mkcert.ensure_certificate(str(tmp_path))[1]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "tlsmgr.clients.mkcert", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_command_line(tmp_path):
    first = _run(str(tmp_path))
    assert first.returncode == 0 and first.stdout.startswith("mkcert: created ")
    second = _run(str(tmp_path))
    assert second.returncode == 0 and second.stdout.startswith("mkcert: kept existing ")
    missing = _run(str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert "nope: no such directory" in missing.stderr and "Traceback" not in missing.stderr
