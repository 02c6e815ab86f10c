"""Postfix 3.7.11's built-in parameter defaults, and the ones computed on the host.

SYNOPSIS
    from master.builtin import builtin_defaults, computed_default

    table = builtin_defaults()          # BuiltinDefaults, parsed on first use
    table.values["mail_name"]           # raw default text
    table.raw / .readonly / .legacy / .computed   # frozensets of names
    table.service_parameters([(service, command), ...]) -> {name: default}
    computed_default(name, main_eval) -> str | None
    inet_families(words) -> [AF_INET, AF_INET6]   # inet_protocols, also for listen.py

DESCRIPTION
    The table is the packaged postfix_defaults.txt (DEFAULTS_FILE, next to
    this module), generated from the real postconf by
    tests/interop/test_postconf_defaults.py, which also checks it against
    the installed postconf.  One line a name:
    `[%flag ...] name = value`, flags raw (never $-expanded), readonly
    (main.cf assignments ignored), legacy (known, not listed by
    `postconf -d`) and computed (the value depends on the host); a
    `%service programs:suffix = value` line says that a master.cf service
    running one of the programs has the parameter SERVICE+suffix.

    computed_default() gives what Postfix computes on the host:
    myhostname (the node name, plus .$mydomain or .localdomain when it has
    no dot), mydomain (myhostname without its first label, else
    localdomain), mynetworks (the networks of the interfaces that
    inet_interfaces and inet_protocols choose, per mynetworks_style, whose
    default follows compatibility_level), process_id and process_name.
    main_eval(name) is the main.cf value of name expanded with main.cf
    names only (mail_conf_lookup_eval), or None when main.cf lacks it.

DIAGNOSTICS
    ConfigError when the table is missing ("reinstall minipostfix") or
    getifaddrs(3) fails; ParamError naming mynetworks_style,
    compatibility_level or inet_interfaces for a bad setting behind
    mynetworks.

SEE ALSO
    src/postconf/postconf_builtin.c, src/global/mynetworks.c,
    src/util/inet_addr_local.c (Postfix); master/config.py
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

from master.errors import ConfigError, ParamError
from master.macro import compat_level, split_list

DEFAULTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "postfix_defaults.txt")


# Postfix's built-in defaults ---------------------------------------------------------


class BuiltinDefaults(NamedTuple):
    """Postfix 3.7.11's parameter table, read from postfix_defaults.txt.

    values: name -> raw default, for every built-in and legacy name.
    raw: names never $-expanded; readonly: main.cf assignments ignored;
    legacy: known but not listed by `postconf -d`; computed: the value
    depends on the host (computed_default() gives it).
    service: (programs, suffix, default) rows: a master.cf service whose
    command is one of the programs has the parameter SERVICE+suffix.
    """

    values: dict[str, str]
    raw: frozenset[str]
    readonly: frozenset[str]
    legacy: frozenset[str]
    computed: frozenset[str]
    service: tuple[tuple[frozenset[str], str, str], ...]

    def service_parameters(self, services: Iterable[tuple[str, str]]) -> dict[str, str]:
        """name -> default for (service name, command) pairs from master.cf."""
        out: dict[str, str] = {}
        for service, command in services:
            for programs, suffix, default in self.service:
                if command in programs and service + suffix not in self.values:
                    out.setdefault(service + suffix, default)
        return out


_BUILTIN: BuiltinDefaults | None = None


def builtin_defaults() -> BuiltinDefaults:
    """The packaged table, parsed on first use; ConfigError if it is missing."""
    global _BUILTIN
    if _BUILTIN is None:
        try:
            with open(DEFAULTS_FILE, encoding="utf-8") as fp:
                _BUILTIN = _parse_defaults(fp.read())
        except OSError as err:
            raise ConfigError(
                f"open {DEFAULTS_FILE}: {err.strerror} (reinstall minipostfix)"
            ) from None
    return _BUILTIN


def _parse_defaults(text: str) -> BuiltinDefaults:
    values: dict[str, str] = {}
    flags: dict[str, set[str]] = {
        "raw": set(),
        "readonly": set(),
        "legacy": set(),
        "computed": set(),
    }
    service: list[tuple[frozenset[str], str, str]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        words = []
        while line.startswith("%"):
            word, _, line = line.partition(" ")
            words.append(word[1:])
        left, _, value = line.partition(" =")
        value = value[1:] if value.startswith(" ") else value
        if words and words[0] == "service":
            programs, _, suffix = left.partition(":")
            service.append((frozenset(programs.split(",")), suffix.strip(), value))
            continue
        values[left] = value
        for word in words:
            flags[word].add(left)
    return BuiltinDefaults(
        values,
        frozenset(flags["raw"]),
        frozenset(flags["readonly"]),
        frozenset(flags["legacy"]),
        frozenset(flags["computed"]),
        tuple(service),
    )


# Defaults computed on the host (postconf_builtin.c, mynetworks.c) ------------------


def computed_default(name: str, main_eval: Callable[[str], str | None]) -> str | None:
    """myhostname, mydomain, mynetworks, process_id, process_name as Postfix computes them.

    main_eval(name) is the main.cf value of name expanded with main.cf
    names only (mail_conf_lookup_eval), or None when main.cf lacks it.
    """
    if name == "myhostname":
        host = os.uname().nodename
        if "." not in host:
            domain = main_eval("mydomain")
            host += "." + ("localdomain" if domain is None else domain)
        return host
    if name == "mydomain":
        fqdn = main_eval("myhostname")
        if fqdn is None:
            fqdn = computed_default("myhostname", main_eval) or ""
        return fqdn.split(".", 1)[1] if "." in fqdn else "localdomain"
    if name == "mynetworks":
        return _mynetworks(main_eval)
    if name == "process_id":
        return str(os.getpid())
    if name == "process_name":
        return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return None


_IFF_UP, _IFF_LOOPBACK = 0x1, 0x8
_CLASS_PREFIX = ((128, 8), (192, 16), (224, 24), (240, 4))  # IN_CLASSA..D


def _mynetworks(main_eval: Callable[[str], str | None]) -> str:
    """mynetworks(): the networks of this host's interfaces, per mynetworks_style."""
    import socket

    style = main_eval("mynetworks_style")
    if style is None:
        try:
            level = compat_level(main_eval("compatibility_level") or "0")
        except ValueError as err:
            raise ParamError(str(err), "compatibility_level") from None
        style = "subnet" if level < compat_level("2") else "host"
    style = style.strip().lower()
    if style not in ("class", "subnet", "host"):
        raise ParamError(
            f'unknown mynetworks mask style value "{style}" (use host, subnet or class)',
            "mynetworks_style",
        )
    families = inet_families(split_list(main_eval("inet_protocols") or ""))
    local = [a for a in _interface_addresses() if a[0] in families]
    chosen = _chosen_interfaces(local, main_eval("inet_interfaces") or "all", families)
    networks = []
    for family, addr, mask in sorted(set(chosen)):
        bits = len(addr) * 8
        prefix = bin(int.from_bytes(mask, "big")).count("1")
        if style == "host":
            prefix = bits
        elif style == "class" and family == socket.AF_INET:
            prefix = next((p for top, p in _CLASS_PREFIX if addr[0] < top), 0)
            if not prefix:
                raise ParamError(
                    f"unknown address class: {socket.inet_ntop(family, addr)}", "mynetworks_style"
                )
        net = int.from_bytes(addr, "big") & ~((1 << (bits - prefix)) - 1)
        text = socket.inet_ntop(family, net.to_bytes(len(addr), "big"))
        networks.append(f"{text}/{prefix}" if family == socket.AF_INET else f"[{text}]/{prefix}")
    return " ".join(networks)


def inet_families(words: Iterable[str]) -> list[int]:
    """inet_protocols as address families (inet_proto_init()): AF_INET, then AF_INET6.

    "ipv4", "ipv6" or "all", in any case; no word means all; IPv6 only
    where Python has it.  Other words are ignored.
    """
    import socket

    chosen = {word.lower() for word in words} or {"all"}
    families: list[int] = []
    if chosen & {"all", "ipv4"}:
        families.append(socket.AF_INET)
    if chosen & {"all", "ipv6"} and socket.has_ipv6:
        families.append(socket.AF_INET6)
    return families


def _chosen_interfaces(
    local: list[tuple[int, bytes, bytes, bool]], setting: str, families: list[int]
) -> list[tuple[int, bytes, bytes]]:
    """own_inet_addr_list(): inet_interfaces resolved to (family, address, netmask)."""
    import socket

    chosen: list[tuple[int, bytes, bytes]] = []
    for word in split_list(setting):
        if word.lower() == "all":
            chosen += [(f, a, m) for f, a, m, _ in local]
            continue
        if word.lower() == "loopback-only":
            chosen += [(f, a, m) for f, a, m, loop in local if loop]
            continue
        host = word[1:-1] if word.startswith("[") and word.endswith("]") else word
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise ParamError(f"bad address {word}: {err}", "inet_interfaces") from None
        for family, *_, sockaddr in infos:
            if family not in families:
                continue
            packed = socket.inet_pton(family, str(sockaddr[0]).split("%")[0])
            match = [(f, a, m) for f, a, m, _ in local if (f, a) == (family, packed)]
            if not match:
                raise ParamError(f"no local interface found for {sockaddr[0]}", "inet_interfaces")
            chosen += match[:1]
    return chosen


def _interface_addresses() -> list[tuple[int, bytes, bytes, bool]]:
    """(family, address, netmask, is_loopback) of each up interface (getifaddrs(3))."""
    import ctypes
    import socket

    class Sockaddr(ctypes.Structure):
        _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 26)]

    class Ifaddrs(ctypes.Structure):
        pass

    Ifaddrs._fields_ = [
        ("next", ctypes.POINTER(Ifaddrs)),
        ("name", ctypes.c_char_p),
        ("flags", ctypes.c_uint),
        ("addr", ctypes.POINTER(Sockaddr)),
        ("netmask", ctypes.POINTER(Sockaddr)),
        ("ifu", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
    ]
    libc = ctypes.CDLL(None, use_errno=True)
    head = ctypes.POINTER(Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise ConfigError(f"getifaddrs: {os.strerror(ctypes.get_errno())}")
    where = {socket.AF_INET: slice(2, 6), socket.AF_INET6: slice(6, 22)}
    out = []
    try:
        node = head
        while node:
            ifa = node.contents
            node = ifa.next
            if not ifa.flags & _IFF_UP or not ifa.addr or not ifa.netmask:
                continue
            family = ifa.addr.contents.family
            if family not in where:
                continue
            addr = bytes(ifa.addr.contents.data[where[family]])
            mask = bytes(ifa.netmask.contents.data[where[family]])
            if any(addr):
                out.append((family, addr, mask, bool(ifa.flags & _IFF_LOOPBACK)))
    finally:
        libc.freeifaddrs(head)
    return out
