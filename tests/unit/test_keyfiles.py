"""tlsmgr.keyfiles: the secret file's checks, the saved chain state, and start_chain()."""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass

import pytest

from support.keychain_reference import reference_chain
from support.secret_files import write_secret
from support.stand_ins import Log
from tlsmgr import keychain
from tlsmgr.keyfiles import (
    STATE_RECORD_SIZE,
    KeyFileError,
    StateFile,
    decode_state,
    encode_state,
    read_secret,
    start_chain,
)

SECRET = bytes(range(200, 248))
H = 1800
NOW = 1_000 * H + 7  # epoch 1000


def roots_of(secret: bytes = SECRET) -> keychain.Roots:
    return keychain.Roots.derive(keychain.genesis(secret))


# The secret file.


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secret_is_read_whole(folder, mode):
    secret = read_secret(write_secret(folder, SECRET, mode=mode))
    assert isinstance(secret, bytearray) and secret == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o610])
def test_secret_readable_or_writable_by_others_is_refused(folder, mode):
    path = write_secret(folder, SECRET, mode=mode)
    with pytest.raises(KeyFileError) as err:
        read_secret(path)
    assert str(err.value) == (
        f"ticket secret file {path} has mode {mode:04o}:"
        " group and others must have no access (chmod 600)"
    )


def test_secret_size_bounds(folder):
    assert len(read_secret(write_secret(folder, b"k" * 32))) == 32
    path = write_secret(folder, b"k" * 31)
    with pytest.raises(
        KeyFileError, match=f"^ticket secret file {path} is too short: 31 bytes, at least 32$"
    ):
        read_secret(path)
    path = write_secret(folder, b"")
    with pytest.raises(KeyFileError, match="too short: 0 bytes"):
        read_secret(path)
    path = write_secret(folder, b"k" * 65537)
    with pytest.raises(KeyFileError, match="too long: 65537 bytes, at most 65536"):
        read_secret(path)


def test_secret_must_be_a_regular_file(folder):
    os.mkfifo(os.path.join(folder, "fifo"), 0o600)
    for path in (os.path.join(folder, "fifo"), folder, "/dev/null"):
        with pytest.raises(
            KeyFileError, match=f"^ticket secret file {path} is not a regular file$"
        ):
            read_secret(path)  # a FIFO is refused without waiting for a writer


def test_secret_symlink_is_refused(folder):
    target = write_secret(folder, SECRET)
    link = os.path.join(folder, "link")
    os.symlink(target, link)
    with pytest.raises(
        KeyFileError, match=f"^ticket secret file {link} is a symbolic link; name the file itself$"
    ):
        read_secret(link)


def test_missing_secret(folder):
    path = os.path.join(folder, "nope")
    with pytest.raises(
        KeyFileError, match=f"^cannot open ticket secret file {path}: No such file or directory$"
    ):
        read_secret(path)


@pytest.mark.root
def test_secret_owned_by_another_user_is_refused(folder):
    path = write_secret(folder, SECRET)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(path, nobody, -1)
    with pytest.raises(KeyFileError, match=f"owned by uid {nobody}: it must belong to root$"):
        read_secret(path)


# The state record.


def test_state_record_round_trip_and_layout():
    roots = roots_of()
    state = reference_chain(SECRET, 999)
    record = encode_state(roots, 999, state)
    assert len(record) == STATE_RECORD_SIZE == 88
    assert record[:8] == b"MPFXKC\x00\x01"
    assert record[8:16] == roots.fingerprint
    assert record[16:24] == (999).to_bytes(8, "little")
    assert record[24:56] == state
    assert decode_state(roots, record) == (999, state)


def test_damaged_torn_or_foreign_records_are_refused():
    roots = roots_of()
    old = encode_state(roots, 999, reference_chain(SECRET, 999))
    new = encode_state(roots, 1000, reference_chain(SECRET, 1000))
    flipped = bytearray(new)
    flipped[30] ^= 1
    cases = {
        "it is 87 bytes, not 88": new[:-1],
        "it is 0 bytes": b"",
        "unknown magic or version": b"X" + new[1:],
        "belongs to another secret": encode_state(roots_of(b"x" * 32), 1000, bytes(32)),
        "damaged \\(bad MAC\\)": bytes(flipped),
    }
    for why, data in cases.items():
        with pytest.raises(ValueError, match=why):
            decode_state(roots, data)
    for cut in (17, 20, 40, 60, 80, 87):  # the first bytes of a new record over an old one
        with pytest.raises(ValueError, match="bad MAC"):
            decode_state(roots, new[:cut] + old[cut:])


# The state file.


def test_state_file_is_created_atomically_and_saved_in_place(folder):
    roots = roots_of()
    path = os.path.join(folder, "tls_key_chain")
    assert StateFile.read(path, roots) is None
    state_file = StateFile.create(path, roots, 999, reference_chain(SECRET, 999))
    try:
        info = os.stat(path)
        assert oct(info.st_mode & 0o777) == "0o600" and info.st_size == STATE_RECORD_SIZE
        assert os.listdir(folder) == ["tls_key_chain"]  # no temporary file left
        assert StateFile.read(path, roots) == (999, reference_chain(SECRET, 999))
        state_file.save(1000, reference_chain(SECRET, 1000))
        assert os.stat(path).st_ino == info.st_ino  # written in place, through the fd
        assert StateFile.read(path, roots) == (1000, reference_chain(SECRET, 1000))
        # The jailed process cannot see the name: saving through the fd still works.
        os.rename(path, path + ".moved")
        state_file.save(1001, reference_chain(SECRET, 1001))
        assert StateFile.read(path + ".moved", roots)[0] == 1001
    finally:
        state_file.close()


def test_creation_removes_what_a_killed_tlsmgr_left(folder):
    path = os.path.join(folder, "tls_key_chain")
    with open(path + ".abcdefgh.tmp", "wb") as f:  # killed between mkstemp and rename
        f.write(b"partial")
    StateFile.create(path, roots_of(), 999, reference_chain(SECRET, 999)).close()
    assert os.listdir(folder) == ["tls_key_chain"]


def test_unusable_state_files_say_why(folder):
    roots = roots_of()
    path = os.path.join(folder, "tls_key_chain")
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(
        KeyFileError, match=f"^ticket key chain state {path} is unusable: it is 7 bytes"
    ):
        StateFile.read(path, roots)
    os.unlink(path)
    os.mkdir(path)
    with pytest.raises(KeyFileError, match="is not a regular file"):
        StateFile.read(path, roots)


# start_chain(): the start-up sequence.


@dataclass
class Started:
    chain: keychain.Chain
    roots: keychain.Roots
    state_file: StateFile
    path: str


@contextlib.contextmanager
def start(folder, secret: bytes = SECRET, now: float = NOW, log: Log | None = None):
    """start_chain() in `folder`; the state file is closed afterwards."""
    path = os.path.join(folder, "tls_key_chain")
    buf = bytearray(secret)
    chain, roots, state_file = start_chain(buf, path, H, now, log=log or Log())
    assert buf == bytes(len(secret))  # the caller's copy of the secret is zeroed
    try:
        yield Started(chain, roots, state_file, path)
    finally:
        state_file.close()


def test_first_start_walks_from_the_secret_and_saves_the_floor(folder):
    log = Log()
    with start(folder, log=log) as host:
        assert (host.chain.floor, host.chain.current) == (999, 1000)
        assert host.chain.state(1000) == reference_chain(SECRET, 1000)
        assert StateFile.read(host.path, host.roots) == (999, reference_chain(SECRET, 999))
        assert log.lines == [
            f"shared ticket keys: secret fingerprint {host.roots.fingerprint.hex()},"
            f" epoch 1000 of {H}s"
        ]
        # As epochs pass, the floor state is saved in place.
        host.chain.advance(NOW + 2 * H)
        assert StateFile.read(host.path, host.roots) == (1001, reference_chain(SECRET, 1001))


def test_restart_resumes_from_the_saved_state(folder):
    with start(folder):
        pass
    log = Log()
    with start(folder, now=NOW + 5 * H, log=log) as host:
        assert host.chain.state(1005) == reference_chain(SECRET, 1005)
        assert len(log.lines) == 1 and "warning" not in log.lines[0]
        assert StateFile.read(host.path, host.roots)[0] == 1004


OTHER = b"another secret, 32 bytes or more"


def flip_a_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(b"\xff")


@pytest.mark.parametrize(
    "first_now, damage, secret, message",
    [
        pytest.param(
            NOW,
            flip_a_byte,
            SECRET,
            "warning: ticket key chain state {path} is unusable: it is damaged (bad MAC);"
            " starting the chain from the secret",
            id="damaged",
        ),
        pytest.param(
            NOW,
            None,
            OTHER,
            "warning: ticket key chain state {path} is unusable: it belongs to another secret"
            " (fingerprint {fingerprint}); starting the chain from the secret",
            id="another-secret",
        ),
        pytest.param(  # the clock went back, or the period grew
            NOW + 10 * H,
            None,
            SECRET,
            "ticket key chain state {path}: chain state of epoch 1009 is after the epoch"
            " needed (999); starting from the secret",
            id="newer-than-needed",
        ),
    ],
)
def test_an_unusable_saved_state_restarts_from_the_secret(
    folder, first_now, damage, secret, message
):
    with start(folder, now=first_now) as first:
        pass
    if damage:
        damage(first.path)
    log = Log()
    with start(folder, secret=secret, log=log) as host:
        assert log.lines[0] == message.format(
            path=host.path, fingerprint=first.roots.fingerprint.hex()
        )
        assert host.chain.state(1000) == reference_chain(secret, 1000)
        # Rewritten from the new walk.
        assert StateFile.read(host.path, host.roots) == (999, reference_chain(secret, 999))


def test_a_failed_save_is_a_warning(folder):
    log = Log()
    with start(folder, log=log) as host:
        full = os.open("/dev/full", os.O_WRONLY)  # every write fails: No space left on device
        os.dup2(full, host.state_file.fileno())
        os.close(full)
        host.chain.advance(NOW + H)
    assert log.lines[-1] == (
        f"warning: cannot save ticket key chain state {host.path}: No space left on device"
    )
    assert host.chain.state(1001) == reference_chain(SECRET, 1001)  # the keys are unaffected
