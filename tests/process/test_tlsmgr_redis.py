"""The Redis second level between real tlsmgr processes under our master, chrooted, as mail_owner.

Two instances (A and B) share a tls_session_ticket_secret_file and one private
redis-server on a loopback port (their tlsmgrs are chrooted, so a unix socket outside
their jails is out of reach); a third one has its Redis socket inside its own jail.
Checked: a session stored through one tlsmgr is found through the other; a restart
keeps sessions through Redis; Redis killed in the middle of traffic costs no error
and no hang, and sharing resumes by itself once it is back; a frozen Redis makes
lookups fail open; an altered value is a logged miss; configuration errors are fatal
with a clear message.  Bounds are generous hang guards (a reply within 1 s), never
measurements: the 20 ms read budget is a figure for bench/redis_bench.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time

import pytest

from support.instance import OUR_TLSMGR, MiniInstance, running_tlsmgr
from support.keychain_reference import reference_chain, reference_hkdf
from support.redis_server import RedisServer
from support.secret_files import write_secret
from support.sockets import free_port
from support.statusdoc import validate
from support.waiting import wait_until
from tlsmgr.protocol import Status
from tlsmgr.sealing import redis_key

pytestmark = [pytest.mark.root, pytest.mark.redis]

SECRET = os.urandom(48)
INDEX = reference_hkdf(reference_chain(SECRET, 0), b"index", 32)
REPLY_BOUND = 1.0  # seconds: a hang guard for each request while Redis misbehaves
CACHES = {
    "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
}


@pytest.fixture(scope="module")
def keys():
    folder = tempfile.mkdtemp(prefix="mpfx-keys-", dir="/tmp")
    yield write_secret(folder, SECRET, name="fleet.key")
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def fleet(keys):
    """(redis, A, B): both tlsmgrs started and connected to the same Redis."""
    folder = tempfile.mkdtemp(prefix="mpfx-redis-", dir="/tmp")
    try:
        with RedisServer(folder, port=free_port()) as redis, contextlib.ExitStack() as stack:
            settings = {
                **CACHES,
                "tls_session_ticket_secret_file": keys,
                "tls_session_cache_redis": redis.address,
            }
            hosts = [stack.enter_context(running_tlsmgr(settings)) for _ in "AB"]
            for host in hosts:
                wait_up(host)
            yield redis, *hosts
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stats(host: MiniInstance) -> dict[str, str]:
    with host.client() as client:
        result = client.stats()
    assert result.status is Status.OK, result.reason
    return dict(result.items)


def wait_up(host: MiniInstance) -> None:
    wait_until(lambda: stats(host).get("redis.state") == "up", "tlsmgr's Redis connection")


def timed(call):
    """call() -> (result, seconds)."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_a_session_stored_through_one_tlsmgr_is_found_through_the_other(fleet):
    redis, a, b = fleet
    with a.client() as ca, b.client() as cb:
        assert ca.update("smtp", "[mx.example.com]:25", b"SESSION-A").status is Status.OK
        key = redis_key(INDEX, "smtp", "[mx.example.com]:25")
        wait_until(lambda: redis.call("EXISTS", key), "the entry in Redis")
        found = cb.lookup("smtp", "[mx.example.com]:25")
        assert found.status is Status.OK and found.data == b"SESSION-A"
        # The smtpd cache too, under its own names.
        assert cb.update("smtpd", "ABCD&s=smtp&l=805306608", b"SESSION-B").status is Status.OK
        wait_until(
            lambda: redis.call("EXISTS", redis_key(INDEX, "smtpd", "ABCD&s=smtp&l=805306608")),
            "the smtpd entry",
        )
        assert ca.lookup("smtpd", "ABCD&s=smtp&l=805306608").data == b"SESSION-B"
    figures = stats(b)
    assert figures["redis.hits"] >= "1" and figures["smtp.entries"] == "1"
    assert b"example" not in b"".join(redis.keys())


def test_status_shows_the_redis_figures(fleet):
    _redis, _a, b = fleet
    document = json.loads(b.cli("status", "--json").stdout)
    validate(document)  # every figure of the redis group is in the schema
    figures = document["providers"]["tlsmgr"]["data"]["redis"]
    assert figures["state"] == "up" and {"hits", "oversized", "late"} <= set(figures)
    assert "redis: state up, hits " in b.cli("status", "-v").stdout


def test_a_value_altered_in_redis_is_a_miss_and_a_log_line(fleet):
    redis, a, b = fleet
    pid = b.tlsmgr_pid()
    with a.client() as ca, b.client() as cb:
        ca.update("smtp", "altered", b"GOOD")
        key = redis_key(INDEX, "smtp", "altered")
        wait_until(lambda: redis.call("EXISTS", key), "the entry in Redis")
        value = redis.call("GET", key)
        redis.call("SET", key, value[:-1] + bytes([value[-1] ^ 0x80]))
        assert cb.lookup("smtp", "altered").status is Status.ERR
    b.wait_log(
        r"postfix/tlsmgr\[\d+\]: warning: redis inet:127\.0\.0\.1:\d+: smtp cache id=altered:"
        r" the value in Redis fails authentication .*; treated as a miss"
    )
    assert b.tlsmgr_pid() == pid and stats(b)["redis.tampered"] == "1"


def test_a_frozen_redis_makes_lookups_fail_open(fleet):
    redis, a, b = fleet
    redis.freeze()
    try:
        with b.client() as cb:
            for i in range(5):
                result, seconds = timed(lambda i=i: cb.lookup("smtp", f"frozen-{i}"))
                assert result.status is Status.ERR and seconds < REPLY_BOUND
            assert cb.update("smtp", "while-frozen", b"S").status is Status.OK
            assert cb.lookup("smtp", "while-frozen").data == b"S"  # the first level serves
        figures = stats(b)
        assert int(figures["redis.timeouts"]) + int(figures["redis.skipped"]) >= 5
    finally:
        redis.thaw()
    wait_up(b)


def test_redis_killed_mid_traffic_costs_no_error_and_sharing_resumes(fleet):
    redis, a, b = fleet
    slowest = 0.0
    with a.client() as ca, b.client() as cb:
        for i in range(90):
            if i == 30:
                redis.stop()
            if i == 60:
                redis.start()
            for result, seconds in (
                timed(lambda i=i: ca.update("smtp", f"load-{i}", b"L%d" % i)),
                timed(lambda i=i: cb.lookup("smtp", f"load-{i}")),
                timed(lambda i=i: cb.lookup("smtp", f"load-{i - 1}")),
            ):
                assert result.status in (Status.OK, Status.ERR), result.reason
                slowest = max(slowest, seconds)
        assert slowest < REPLY_BOUND
        # Back by itself: a session stored by A from now on is found by B.
        wait_up(a)
        wait_up(b)
        assert ca.update("smtp", "after-restart", b"AGAIN").status is Status.OK
        key = redis_key(INDEX, "smtp", "after-restart")
        wait_until(lambda: redis.call("EXISTS", key), "A's entry in the new Redis")
        found = cb.lookup("smtp", "after-restart")
        assert found.status is Status.OK and found.data == b"AGAIN"
    for host in (a, b):
        log = host.log()
        assert len(re.findall(r"warning: redis .*; serving from the local caches", log)) == 1
        assert "redis inet:127.0.0.1" in log and "connected again" in log
        assert "fatal" not in log and "panic" not in log
        assert int(stats(host)["redis.reconnects"]) >= 1


def test_a_restart_keeps_sessions_through_redis_on_a_socket_inside_the_jail(keys):
    settings = {**CACHES, "tls_session_ticket_secret_file": keys}
    with contextlib.ExitStack() as stack:
        inst = stack.enter_context(MiniInstance(settings, tlsmgr=OUR_TLSMGR))
        folder = inst.queue / "redis"
        folder.mkdir(parents=True)
        inst.write_main_cf(tls_session_cache_redis=f"unix:{folder}/redis.sock/2")
        stack.enter_context(inst.running())
        redis = stack.enter_context(RedisServer(str(folder)))  # stopped before the instance
        wait_up(inst)
        with inst.client() as client:
            assert client.update("smtp", "kept", b"KEPT").status is Status.OK
        wait_until(lambda: redis.call("DBSIZE", db=2) == 1, "the entry in Redis database 2")
        inst.stop()
        inst.start()  # the cache files are truncated at every start
        wait_up(inst)
        with inst.client() as client:
            found = client.lookup("smtp", "kept")
        assert found.status is Status.OK and found.data == b"KEPT"
        assert redis.call("DBSIZE") == 0  # database 0 untouched


@pytest.mark.parametrize(
    "settings, message",
    [
        pytest.param(
            {"tls_session_cache_redis": "inet:127.0.0.1:6379"},
            r"fatal: \S+/main\.cf:\d+: parameter tls_session_cache_redis: inet:127\.0\.0\.1:6379"
            r" requires tls_session_ticket_secret_file",
            id="no-secret",
        ),
        pytest.param(
            {
                "tls_session_cache_redis": "inet:127.0.0.1:6379",
                "smtpd_tls_session_cache_timeout": "0",
                "secret": True,
            },
            r"fatal: \S+/main\.cf:\d+: parameter tls_session_cache_redis: inet:127\.0\.0\.1:6379"
            r" requires smtpd_tls_session_cache_timeout above 0",
            id="no-tickets",
        ),
        pytest.param(
            {"tls_session_cache_redis": "unix:/run/redis/redis.sock", "secret": True},
            r"fatal: \S+/main\.cf:\d+: parameter tls_session_cache_redis: unix:/run/redis/redis"
            r"\.sock: the socket lies outside the jail",
            id="outside-jail",
        ),
        pytest.param(
            {"tls_session_cache_redis": "redis://127.0.0.1", "secret": True},
            r"fatal: \S+/main\.cf:\d+: parameter tls_session_cache_redis: \"redis://127\.0\.0\.1\":"
            r" expected inet:HOST:PORT\[/DB\] or unix:/path\[/DB\]",
            id="syntax",
        ),
    ],
)
def test_configuration_errors_are_fatal_and_clear(keys, settings, message):
    settings = dict(settings)
    if settings.pop("secret", False):
        settings["tls_session_ticket_secret_file"] = keys
    with running_tlsmgr({**CACHES, **settings}) as inst:
        with inst.client(attempts=1, timeout=2) as client:
            assert client.seed(16).status is Status.FAIL  # the master forks tlsmgr, which stops
        inst.wait_log(message)
