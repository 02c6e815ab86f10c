"""Outbound: two Postfix relays share TLS sessions through one Redis, each through its own tlsmgr.

Three private Postfix 3.7 instances (support.instance.PostfixInstance: Debian's master
and daemons):
  - the target T: a real smtpd with STARTTLS on a free loopback port, Postfix's own
    tlsmgr, and mail for target.test accepted and handed to discard(8);
  - relays A and B: a plain smtpd on a loopback port to inject mail, cleanup, qmgr
    and Debian's smtp(8) relaying everything to [127.0.0.1]:T with
    smtp_tls_security_level = may and an smtp session cache, each with OUR tlsmgr,
    the same tls_session_ticket_secret_file and the same tls_session_cache_redis: a
    private redis-server on a unix socket.  Their myhostname differ (Postfix's smtp
    cache ids do not include the local name); their transport name, relayhost and TLS
    settings are the same (the ids include those).
A mail through A makes a full handshake, and A's smtp saves the session in A's tlsmgr,
which seals it into Redis.  Then a mail through B: B's smtp, on its first connection
ever, asks B's tlsmgr, which misses locally, finds A's session in Redis, and B's smtp
resumes it with the real smtpd.  The control: with Redis off (a relay C without it),
the first mail makes a full handshake.
"""

from __future__ import annotations

import contextlib
import pwd
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.instance import OUR_TLSMGR, PostfixInstance
from support.redis_server import RedisServer
from support.secret_files import write_secret
from support.sockets import free_port
from tlsmgr.clients.mkcert import CERT_NAME, KEY_NAME

pytestmark = [pytest.mark.postfix, pytest.mark.root, pytest.mark.redis]

WAIT = 60
QUEUE_FOLDERS = ("incoming", "active", "deferred", "defer", "bounce", "trace", "corrupt")
QUEUE_FOLDERS += ("hold", "saved", "flush")

COMMON_CF = {
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "smtputf8_enable": "no",
    "biff": "no",
}
QUEUE_SERVICES = """\
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
qmgr unix n - n 300 1 qmgr
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
anvil unix - - n - 1 anvil
tlsmgr unix - - n 1000? 1 tlsmgr
"""
TARGET_MASTER_CF = "127.0.0.1:{port} inet n - n - - smtpd\ndiscard unix - - n - - discard\n"
RELAY_MASTER_CF = "127.0.0.1:{port} inet n - n - - smtpd\nsmtp unix - - n - - smtp\n"


def make_queue(pfx: PostfixInstance) -> None:
    """The queue folders postfix(1) would make (Postfix's master does not)."""
    owner = pwd.getpwnam("postfix")
    for name in QUEUE_FOLDERS:
        folder = pfx.queue / name
        folder.mkdir(mode=0o700)
        shutil.chown(folder, owner.pw_uid, owner.pw_gid)


@contextlib.contextmanager
def target(folder: str) -> Iterator[tuple[PostfixInstance, int]]:
    port = free_port()
    settings = {
        **COMMON_CF,
        "myhostname": "mx.target.test",
        "mydestination": "target.test",
        "local_transport": "discard",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_loglevel": "2",
        "smtpd_tls_cert_file": f"{folder}/{CERT_NAME}",
        "smtpd_tls_key_file": f"{folder}/{KEY_NAME}",
    }
    master_cf = TARGET_MASTER_CF.format(port=port) + QUEUE_SERVICES
    with PostfixInstance(settings, master_cf) as pfx:
        make_queue(pfx)
        pfx.start()
        yield pfx, port
        pfx.stop()


@contextlib.contextmanager
def relay(name: str, target_port: int, **settings: str) -> Iterator[tuple[PostfixInstance, int]]:
    port = free_port()
    main_cf = {
        **COMMON_CF,
        "myhostname": f"relay-{name}.example.test",
        "relayhost": f"[127.0.0.1]:{target_port}",
        "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "2",
        "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
        "smtp_connection_cache_on_demand": "no",
        **settings,
    }
    master_cf = RELAY_MASTER_CF.format(port=port) + QUEUE_SERVICES
    with PostfixInstance(main_cf, master_cf, tlsmgr=OUR_TLSMGR) as pfx:
        make_queue(pfx)
        pfx.start()
        yield pfx, port
        pfx.stop()


def send_mail(port: int, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=WAIT) as client:
        client.sendmail(
            "sender@example.test",
            ["someone@target.test"],
            f"Subject: {subject}\r\n\r\n{subject}\r\n",
        )


def delivered(pfx: PostfixInstance, target_port: int) -> str:
    """The relay's smtp lines for its (one) mail, once it was sent."""
    pfx.wait_log(
        rf"postfix/smtp\[\d+\]: \w+: to=<someone@target\.test>,"
        rf" relay=127\.0\.0\.1\[127\.0\.0\.1\]:{target_port},.* status=sent",
        timeout=WAIT,
    )
    return "\n".join(line for line in pfx.log().splitlines() if "postfix/smtp[" in line)


@pytest.fixture(scope="module")
def world():
    folder = tempfile.mkdtemp(prefix="mpfx-relays-", dir="/tmp")
    Path(folder).chmod(0o755)
    try:
        subprocess.run(
            [sys.executable, "-m", "tlsmgr.clients.mkcert", folder], check=True, capture_output=True
        )
        secret = write_secret(folder, b"k" * 48, name="fleet.key")
        with contextlib.ExitStack() as stack:
            redis = stack.enter_context(RedisServer(folder))
            t, t_port = stack.enter_context(target(folder))
            shared = {
                "tls_session_ticket_secret_file": secret,
                "tls_session_cache_redis": redis.address,
            }
            a = stack.enter_context(relay("a", t_port, **shared))
            b = stack.enter_context(relay("b", t_port, **shared))
            c = stack.enter_context(relay("c", t_port))
            yield redis, (t, t_port), a, b, c
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_relay_b_resumes_on_its_first_connection_the_session_relay_a_stored(world):
    redis, (t, t_port), (a, a_port), (b, b_port), _ = world
    send_mail(a_port, "through A")
    a_smtp = delivered(a, t_port)
    assert re.search(r"save session \S+ to smtp cache", a_smtp), a_smtp
    assert "Reusing old session" not in a_smtp
    assert re.search(r"postfix/tlsmgr\[\d+\]: redis unix:\S+: connected", a.log())
    a.wait_for(lambda: redis.keys(), "A's session in Redis")

    send_mail(b_port, "through B")
    b_smtp = delivered(b, t_port)
    assert f"TLS connection established to 127.0.0.1[127.0.0.1]:{t_port}" in b_smtp
    assert re.search(r"reloaded session \S+ from smtp cache", b_smtp), b_smtp
    assert re.search(r"postfix/smtp\[\d+\]: \S+: Reusing old session", b_smtp), b_smtp
    # B's tlsmgr had it from Redis, and the real smtpd resumed it.
    with b.client() as client:
        figures = dict(client.stats().items)
    assert figures["redis.hits"] == "1" and figures["redis.state"] == "up"
    t.wait_log(r"postfix/smtpd\[\d+\]: \S+: Reusing old session", timeout=WAIT)
    for pfx in (a, b):
        log = pfx.log()
        assert "fatal" not in log and "panic" not in log and "warning: redis" not in log


def test_without_redis_the_first_connection_is_a_full_handshake(world):
    _, (_, t_port), _, _, (c, c_port) = world
    send_mail(c_port, "through C")
    c_smtp = delivered(c, t_port)
    assert re.search(r"save session \S+ to smtp cache", c_smtp), c_smtp
    assert "Reusing old session" not in c_smtp
