"""RFC 5077 session ticket keys: random per host, or derived from a shared key chain.

SYNOPSIS
    from tlsmgr.tickets import TicketKeys, SharedTicketKeys, pack_key, unpack_key

    keys = TicketKeys(timeout, rand)      # timeout: sanitised smtpd timeout T
    keys = SharedTicketKeys(chain)        # keychain.Chain with period T // 2
    keys.enabled                          # T > 0
    keys.lookup(b"", now)       -> bytes | None   # current key, made if needed
    keys.lookup(name16, now)    -> bytes | None   # the key with that name

DESCRIPTION
    No sockets, no clock, no third-party imports.  Time comes in as
    `now` (seconds); randomness from `rand.draw(n) -> bytes`.

    This is tlsmgr_key() in Postfix's tlsmgr.c with tls_scache_key() and
    tls_scache_key_rotate() from tls_scache.c.  A key is
    returned as the raw 88-byte TLS_TICKET_KEY struct that smtpd expects
    in the keybuf attribute (protocol.py's KEYBUF_SIZE and TICKET_*):
        16 bytes  name
        32 bytes  AES-256 key
        32 bytes  HMAC-SHA256 key
         8 bytes  tout: little-endian signed time_t, end of encryption
    With H = T // 2:
    - an empty name asks for the encryption key: keys[0] while its tout
      is in the future (tout > now); otherwise a new key is made (80
      random bytes, tout = now + H - 1), stored in the keys[1] slot
      (overwriting the previous key) and swapped into keys[0] when
      keys[0] is missing or expires earlier than the new key;
    - a 16-byte name looks at keys[0] then keys[1] and stops at the first
      key with that name: it is returned while tout + H > now, else
      nothing.  An unknown name gives nothing.
    Keys live in memory only and are new after every restart, as in
    Postfix.  With T <= 0 tickets are disabled: lookup() returns None.

    SharedTicketKeys (tls_session_ticket_secret_file) has the same
    interface over a keychain.Chain whose epochs are H seconds long.  The
    key of epoch e is the chain's ticket material for e (name, AES and
    HMAC keys, derived together) with tout = (e + 1) * H - 1, the last
    second of the epoch; every host given the same secret hands out the
    same 88 bytes.  With e the epoch of `now`:
    - an empty name gets epoch e's key (smtpd encrypts with it while
      tout > now, then asks again and gets the next epoch's);
    - a 16-byte name is looked for among epochs e, e - 1 and e + 1 (the
      previous epoch's tickets are still good; the next epoch's come from
      a host whose clock is a little ahead); any other name, an older
      epoch's included, gets nothing.
    Each lookup first advances the chain to `now`; keys of epochs before
    e - 1 are erased when the window moves.  If the clock steps back
    before the chain's window, an empty name gets nothing (smtpd then
    issues no ticket) until the clock catches up.

SECURITY
    Key material is kept in bytearrays and overwritten when a key is
    dropped; Python may still hold copies (the bytes handed out).

BUGS
    The tout field assumes a 64-bit little-endian time_t (amd64 Linux),
    as the rest of the project does.

SEE ALSO
    src/tlsmgr/tlsmgr.c tlsmgr_key(), src/tls/tls_scache.c (Postfix), RFC 5077
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Protocol

from tlsmgr.keychain import TICKET_PAST_EPOCHS, Chain, tout
from tlsmgr.protocol import KEYBUF_SIZE, TICKET_MATERIAL_LEN, TICKET_NAME_LEN, TICKET_TOUT_FORMAT


class Random(Protocol):
    def draw(self, n: int) -> bytes: ...


class TicketKey(NamedTuple):
    """One key: 80 bytes of name + AES + HMAC material, and its tout."""

    material: bytearray
    tout: int

    @property
    def name(self) -> bytes:
        return bytes(self.material[:TICKET_NAME_LEN])

    def erase(self) -> None:
        self.material[:] = bytes(len(self.material))


def pack_key(key: TicketKey) -> bytes:
    """The 88-byte keybuf of `key`."""
    return bytes(key.material) + struct.pack(TICKET_TOUT_FORMAT, key.tout)


def unpack_key(keybuf: bytes) -> TicketKey:
    """Inverse of pack_key(); ValueError unless keybuf is 88 bytes."""
    if len(keybuf) != KEYBUF_SIZE:
        raise ValueError(f"keybuf is {len(keybuf)} bytes, not {KEYBUF_SIZE}")
    (tout,) = struct.unpack(TICKET_TOUT_FORMAT, keybuf[TICKET_MATERIAL_LEN:])
    return TicketKey(bytearray(keybuf[:TICKET_MATERIAL_LEN]), tout)


class TicketKeys:
    """The two-slot key store of tls_scache.c; see the module docstring."""

    def __init__(self, timeout: int, rand: Random) -> None:
        self.timeout = timeout
        self._rand = rand
        self._keys: list[TicketKey | None] = [None, None]

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def lookup(self, name: bytes, now: float) -> bytes | None:
        """The keybuf for `name` (b"" = the current encryption key), or None.

        ValueError when name is neither empty nor 16 bytes (the caller
        checks and answers FAIL first)."""
        if len(name) not in (0, TICKET_NAME_LEN):
            raise ValueError(f"invalid session ticket key name length: {len(name)}")
        if not self.enabled:
            return None
        now = int(now)
        half = self.timeout // 2
        key = self._find(name, now, half)
        if key is None and not name:
            key = self._rotate(TicketKey(bytearray(self._draw()), now + half - 1))
        return None if key is None else pack_key(key)

    def _draw(self) -> bytes:
        material = self._rand.draw(TICKET_MATERIAL_LEN)
        if len(material) != TICKET_MATERIAL_LEN:
            raise ValueError("random source returned a short read")
        return material

    def _find(self, name: bytes, now: int, half: int) -> TicketKey | None:
        if not name:
            current = self._keys[0]
            return current if current is not None and current.tout > now else None
        for key in self._keys:
            if key is None:
                break
            if key.name == name:
                return key if key.tout + half > now else None
        return None

    def _rotate(self, new: TicketKey) -> TicketKey:
        old = self._keys[1]
        if old is not None:
            old.erase()
        self._keys[1] = new
        if self._keys[0] is None or self._keys[0].tout < new.tout:
            self._keys[0], self._keys[1] = new, self._keys[0]
        return new


class SharedTicketKeys:
    """Ticket keys derived from a key chain; see the module docstring."""

    enabled = True

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.timeout = 2 * chain.period
        self._keys: dict[int, TicketKey] = {}
        self._epoch = chain.current

    def lookup(self, name: bytes, now: float) -> bytes | None:
        """The keybuf for `name` (b"" = epoch of `now`), or None; ValueError
        when name is neither empty nor 16 bytes."""
        if len(name) not in (0, TICKET_NAME_LEN):
            raise ValueError(f"invalid session ticket key name length: {len(name)}")
        epoch = self.chain.epoch(now)
        if epoch > self._epoch:
            self.chain.advance(now)
            self._forget(epoch - TICKET_PAST_EPOCHS)
            self._epoch = epoch
        if not name:
            key = self._key(epoch)
            return None if key is None else pack_key(key)
        for candidate in (epoch, epoch - 1, epoch + 1):
            key = self._key(candidate)
            if key is not None and key.name == name:
                return pack_key(key)
        return None

    def erase(self) -> None:
        self._forget(None)

    def _key(self, epoch: int) -> TicketKey | None:
        key = self._keys.get(epoch)
        if key is None:
            if epoch < self.chain.floor:
                return None
            material = bytearray(self.chain.ticket_material(epoch))
            key = self._keys[epoch] = TicketKey(material, tout(epoch, self.chain.period))
        return key

    def _forget(self, floor: int | None) -> None:
        """Erase the keys of epochs before `floor` (None: all of them)."""
        for epoch in [e for e in self._keys if floor is None or e < floor]:
            self._keys.pop(epoch).erase()
