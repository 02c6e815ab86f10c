"""tlsmgr's parameter table: the Param rows the daemon reads.

SYNOPSIS
    from tlsmgr.params import PARAMS, CACHE_TABLE, CacheRow

DESCRIPTION
    PARAMS are the main.cf parameters named in tlsmgr(8), with Postfix
    3.7's defaults and bounds, plus minipostfix's own
    tls_session_cache_max_entries and tls_session_cache_size_limit
    (tlsmgr(8) BUGS: nothing bounded the number of cache entries or the
    size of the cache files), tls_session_ticket_secret_file (ticket
    keys shared by several hosts, docs/cluster.md) and
    tls_session_cache_redis with its read budget (a Redis server shared
    by several hosts behind every session cache).  `minipostconf -d`
    finds this table through the `minipostfix.params` entry point group,
    so master/ never imports tlsmgr/.

    CACHE_TABLE mirrors cache_table[] in Postfix's tlsmgr.c: one row per
    cache type with the names of its database, timeout and loglevel
    parameters.

    No sockets, no clock, no third-party imports.

SEE ALSO
    tlsmgr(8), postconf(5), src/tlsmgr/tlsmgr.c (Postfix)
"""

from __future__ import annotations

from typing import NamedTuple

from master.config import Param

# Postfix's MAX_*_TLS_SCACHETIME: 100 days.  A larger value is fatal.
MAX_SCACHE_TIMEOUT = 8640000
# TLS_SESSION_LIFEMIN: a timeout between 1 and 119 is raised to this.
SCACHE_LIFEMIN = 120


class CacheRow(NamedTuple):
    """One row of the cache table."""

    cache_type: str
    database_param: str
    timeout_param: str
    loglevel_param: str


CACHE_TABLE: tuple[CacheRow, ...] = tuple(
    CacheRow(
        t, f"{t}_tls_session_cache_database", f"{t}_tls_session_cache_timeout", f"{t}_tls_loglevel"
    )
    for t in ("smtpd", "smtp", "lmtp")
)

_CACHE_DOC = {
    "smtpd": "Postfix SMTP server",
    "smtp": "Postfix SMTP client",
    "lmtp": "Postfix LMTP client",
}


def _cache_params() -> list[Param]:
    rows: list[Param] = []
    for row in CACHE_TABLE:
        who = _CACHE_DOC[row.cache_type]
        rows += [
            Param(
                row.database_param,
                "",
                doc=f"`type:path` of the {who} TLS session cache; empty disables it.",
            ),
            Param(
                row.timeout_param,
                "3600s",
                "time",
                0,
                MAX_SCACHE_TIMEOUT,
                doc=f"Expiry of {who} TLS session cache entries; 0 disables the cache"
                + (" and session tickets." if row.cache_type == "smtpd" else "."),
            ),
            Param(
                row.loglevel_param,
                "0",
                doc=f"{who} TLS logging; 2 or more, or the word `cache`, logs cache activity.",
            ),
        ]
    return rows


PARAMS: tuple[Param, ...] = (
    *_cache_params(),
    Param(
        "tls_session_cache_max_entries",
        "100000",
        "int",
        0,
        doc="minipostfix: most entries per session cache; the oldest are evicted. "
        "0 means unlimited (Postfix's behaviour).",
    ),
    Param(
        "tls_session_cache_size_limit",
        "1073741824",
        "long",
        0,
        doc="minipostfix: most bytes of entries (cache_id and stored value) per session "
        "cache; the oldest are evicted. 0 means unlimited.",
    ),
    Param(
        "tls_session_ticket_secret_file",
        "",
        doc="minipostfix: a file of at least 32 secret bytes (root-owned, mode 0600 or "
        "0400), the same on several hosts, from which each tlsmgr derives the same session "
        "ticket keys (docs/tlsmgr.md, docs/cluster.md); empty gives each tlsmgr random keys "
        "(Postfix's behaviour).",
    ),
    Param(
        "tls_session_cache_redis",
        "",
        doc="minipostfix: `inet:HOST:PORT[/DB]` or `unix:/path[/DB]` of a Redis server that "
        "several hosts share behind every enabled session cache, its entries sealed with keys "
        "from tls_session_ticket_secret_file, which it requires (docs/tlsmgr.md, "
        "docs/cluster.md); empty means local caches only.",
    ),
    Param(
        "tls_session_cache_redis_read_budget",
        "20",
        "int",
        1,
        1000,
        doc="minipostfix: milliseconds a lookup waits for Redis before it answers a miss.",
    ),
    Param(
        "tls_random_source",
        "dev:/dev/urandom",
        doc="External entropy source: `dev:PATH`, `egd:PATH`, or a regular file.",
    ),
    Param(
        "tls_random_bytes", "32", "int", 1, doc="Bytes read from tls_random_source per (re)seed."
    ),
    Param(
        "tls_random_exchange_name",
        "${data_directory}/prng_exch",
        doc="PRNG state file, 1024 bytes; empty disables it.",
    ),
    Param(
        "tls_random_reseed_period",
        "3600s",
        "time",
        1,
        doc="Longest time between reseeds from tls_random_source.",
    ),
    Param(
        "tls_random_prng_update_period",
        "3600s",
        "time",
        1,
        doc="Longest time between exchange file updates.",
    ),
    Param(
        "tls_daemon_random_bytes",
        "32",
        "int",
        1,
        doc="Bytes a TLS client or server asks tlsmgr for (`seed`).",
    ),
    Param("tlsmgr_service_name", "tlsmgr", doc="The tlsmgr service name in master.cf."),
    Param("default_database_type", "hash", doc="Table type when a database has no `type:` prefix."),
    Param(
        "berkeley_db_read_buffer_size",
        "131072",
        "int",
        1,
        doc="Postfix's Berkeley DB read buffer; read and checked, but tlsmgr sizes each "
        "cache's buffer pools itself (docs/tlsmgr.md, Memory and speed).",
    ),
)
