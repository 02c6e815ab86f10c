"""Shared ticket keys between real tlsmgr processes under our master, chrooted, as mail_owner.

Three instances (A, B, C) are given the same tls_session_ticket_secret_file and a
fourth (D) another one.  Their tlsmgrs never talk to each other: each derives its
keys from the secret.  Checked: the keybufs are byte-identical and equal to the
keys computed here from the secret alone; names are found across hosts and after a
restart; the previous and next epochs are accepted and older ones are not; the
chain state file; the secret's bytes are nowhere in the jailed process's memory;
an unusable secret file stops tlsmgr with a clear fatal message.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import tempfile
import time

import pytest

from support.instance import MiniInstance, running_tlsmgr
from support.keychain_reference import reference_chain, reference_keybuf
from support.secret_files import write_secret
from tlsmgr import keychain
from tlsmgr.keyfiles import STATE_FILE, StateFile

pytestmark = pytest.mark.root

H = 1800  # half the default smtpd_tls_session_cache_timeout
SECRET = os.urandom(48)
OTHER = os.urandom(48)


@pytest.fixture(scope="module")
def fleet():
    """A, B, C with the same secret, D with another; all started."""
    keys = tempfile.mkdtemp(prefix="mpfx-keys-", dir="/tmp")
    same = write_secret(keys, SECRET, name="fleet.key")
    other = write_secret(keys, OTHER, name="other.key")
    try:
        with contextlib.ExitStack() as stack:
            yield [
                stack.enter_context(running_tlsmgr({"tls_session_ticket_secret_file": path}))
                for path in (same, same, same, other)
            ]
    finally:
        shutil.rmtree(keys)


def tktkey(host: MiniInstance, name: bytes = b""):
    with host.client() as client:
        return client.tktkey(name)


def in_one_epoch(fetch):
    """fetch() within a single epoch (retried once across a boundary); (epoch, result)."""
    for _ in range(2):
        before = keychain.epoch_of(time.time(), H)
        result = fetch()
        if keychain.epoch_of(time.time(), H) == before:
            return before, result
    raise AssertionError("two epoch boundaries in a row")


def test_same_secret_gives_byte_identical_keys(fleet):
    a, b, c, d = fleet
    epoch, bufs = in_one_epoch(lambda: [tktkey(host).data for host in (a, b, c, d)])
    assert bufs[0] == bufs[1] == bufs[2] == reference_keybuf(SECRET, epoch, H)
    assert bufs[3] == reference_keybuf(OTHER, epoch, H) != bufs[0]


def test_a_name_from_one_host_is_found_on_the_others(fleet):
    a, b, c, d = fleet
    issued = tktkey(a)
    assert issued.ok
    name = issued.data[:16]
    for host in (b, c):
        found = tktkey(host, name)
        assert found.ok and found.data == issued.data
    lost = tktkey(d, name)  # another secret: an unknown name, echoed as Postfix does
    assert not lost.ok and lost.data == name


def test_previous_and_next_epochs_are_accepted_older_are_not(fleet):
    a = fleet[0]
    epoch = keychain.epoch_of(time.time(), H)
    base = reference_chain(SECRET, epoch - 2)
    bufs = {
        d: reference_keybuf(SECRET, epoch + d, H, keychain.walk(base, d + 2)) for d in range(-2, 3)
    }
    answers = {d: tktkey(a, buf[:16]) for d, buf in bufs.items()}
    if keychain.epoch_of(time.time(), H) != epoch:
        pytest.skip("an epoch boundary passed during the test")
    for d in (-1, 0, 1):
        assert answers[d].ok and answers[d].data == bufs[d]
    for d in (-2, 2):  # the ratchet moved past e-2; e+2 is too far ahead
        assert not answers[d].ok


def test_names_survive_a_restart(fleet):
    a, b = fleet[0], fleet[1]
    issued = tktkey(a)
    old_pid = a.tlsmgr_pid()
    a.cli("stop").check()
    a.wait_for(lambda: not a.processes(), "instance A to stop")
    a.cli("start").check()
    found = tktkey(a, issued.data[:16])
    assert a.tlsmgr_pid() != old_pid
    assert found.ok and found.data == issued.data
    assert tktkey(b, issued.data[:16]).data == issued.data


def test_chain_state_file(fleet):
    a = fleet[0]
    tktkey(a)
    path = a.data / STATE_FILE
    info = path.stat()
    owner = pwd.getpwnam("postfix")
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (owner.pw_uid, owner.pw_gid, 0o600)
    roots = keychain.Roots.derive(keychain.genesis(SECRET))
    epoch = keychain.epoch_of(time.time(), H)
    saved_epoch, state = StateFile.read(str(path), roots)
    assert saved_epoch in (epoch - 1, epoch - 2)  # the floor: the previous epoch
    assert state == reference_chain(SECRET, saved_epoch)
    log = a.log()
    fingerprint = roots.fingerprint.hex()
    assert re.search(
        rf"shared ticket keys: secret fingerprint {fingerprint}, epoch \d+ of {H}s", log
    )
    assert "warning" not in log and "fatal" not in log


def test_the_jailed_process_does_not_hold_the_secret(fleet):
    a = fleet[0]
    tktkey(a)
    pid = a.tlsmgr_pid()
    assert os.readlink(f"/proc/{pid}/root") == str(a.queue)
    memory = read_memory(pid)
    assert len(memory) > 1_000_000  # really read
    assert reference_chain(SECRET, keychain.epoch_of(time.time(), H))[:16] in memory
    assert SECRET not in memory and SECRET[:16] not in memory and SECRET[-16:] not in memory


def read_memory(pid: int) -> bytes:
    """Every readable private mapping of the process, through /proc/PID/mem."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except OSError:
                continue
    return b"".join(chunks)


@pytest.mark.parametrize(
    "data, mode, message",
    [
        pytest.param(
            SECRET, 0o644, "has mode 0644: group and others must have no access", id="mode"
        ),
        pytest.param(b"x" * 31, 0o600, "is too short: 31 bytes, at least 32", id="short"),
    ],
)
def test_an_unusable_secret_file_is_fatal(folder, data, mode, message):
    path = write_secret(folder, data, name="bad.key", mode=mode)
    with running_tlsmgr({"tls_session_ticket_secret_file": path}) as inst:
        with inst.client(attempts=1, timeout=2) as client:
            assert not client.tktkey().ok  # the master forks tlsmgr, which stops
        inst.wait_log(re.escape(f"fatal: ticket secret file {path} {message}"))


def test_with_tickets_off_the_secret_is_unused_and_a_stale_state_removed(folder):
    path = write_secret(folder, SECRET, name="fleet.key")
    settings = {"tls_session_ticket_secret_file": path, "smtpd_tls_session_cache_timeout": "0"}
    with running_tlsmgr(settings) as inst:
        inst.data.mkdir(exist_ok=True)
        stale = inst.data / STATE_FILE
        stale.write_bytes(b"left by an earlier configuration")
        result = tktkey(inst)  # the master forks tlsmgr now
        assert not result.ok and result.data == b""  # tickets off: ERR
        inst.wait_log(
            "warning: tls_session_ticket_secret_file is not used:"
            " smtpd_tls_session_cache_timeout is 0"
        )
        inst.wait_log(f"removed {re.escape(str(stale))}: shared ticket keys are off")
        assert not stale.exists()
