"""tlsmgr: the TLS session cache and PRNG manager (the program).

SYNOPSIS
    tlsmgr [generic Postfix daemon options]      (run by the master)

    from tlsmgr import daemon
    daemon.main(argv=None)                       # console script `tlsmgr`

DESCRIPTION
    The daemon tlsmgr(8) describes, built on master/multi_server.py: one
    process serving every smtpd/smtp/lmtp client on private/tlsmgr, over
    the session caches (scache.py), the ticket keys (tickets.py) and the
    PRNG pool (prng.py, entropy.py).  This module is only the glue:
    Postfix's tlsmgr_pre_init, tlsmgr_post_init, tlsmgr_loop and
    tlsmgr_before_exit, and the *_event timers.  Its state comes in two
    stages, each whole once made: Opened, what pre_init opens as root
    before the jail; Running, the daemon after post_init (the service, the
    loop, the timers).  Tlsmgr holds the hooks and the two stages.

    pre_init (root, before the jail, cwd queue_directory):
        mix the time of day (tv_sec ^ pid) into a new pool; open
        tls_random_source; with euid/egid mail_owner: open or create the
        exchange file (redirected into data_directory like a cache), then
        make every enabled cache and its eviction index new (under a
        temporary name, renamed into place: a draining predecessor keeps
        its own files until it exits).  Bad
        cache settings (timeout above 8640000 s, two caches on one file)
        and files that cannot be opened are fatal: exit 1, which the
        master throttles.  With tls_session_ticket_secret_file: read the
        secret as root (a file that fails its checks is fatal), then, as
        mail_owner, start the key chain from it and the saved state in
        data_directory (keyfiles.start_chain); the secret and C(0) are
        erased before the jail.  Without it (or with smtpd tickets off)
        a chain state left by an earlier run is removed.  With
        tls_session_cache_redis: checked (it needs the secret file and
        smtpd tickets on; a unix: socket must lie inside the jail when
        tlsmgr is chrooted: each a fatal configuration error), its host
        resolved (a failure is a warning: no Redis until the next start),
        the Redis modules imported (only then: they cost start-up time),
        and the chain made to keep the seal keys of as many past epochs
        as an entry can live (the longest enabled cache timeout / H, plus
        one).
    post_init (after chroot and the drop to mail_owner):
        max_idle = max_use = 0 (tlsmgr is persistent); on the first loop
        turn: reseed, mix the exchange file in and rewrite it; start every cache's cleanup
        timer; the Redis second level (redislevel.py; it connects from the
        first loop turn); build the Service.
    timers:
        reseed_event      every reseed_period x byte/255: read the source;
                          a lost source saves the exchange file, logs and
                          exits 0 (no throttling; the master restarts us).
        prng_exch_event   every prng_update_period x byte/255: update the
                          exchange file; a removed file exits 0 unsaved.
        cache_run_event   every cache timeout: start a cleanup scan.
        chain_event       at every epoch boundary: advance the key chain
                          (erasing the states that left its window, saving
                          the new floor state in place).
        warning_flush_event  every 60 s: the "N more warnings ...
                          suppressed" line, when client warnings were
                          rate-limited (service.WarningLimit); the same
                          for warnings about values in Redis.
    loop (every loop turn):
        mix the time of day; advance each running cleanup scan by
        CLEANUP_BUDGET entries; return 0 while a scan has work left.
    reload: the skeleton's drain hands the connections between requests
        to the successor (multi_server handover): a connection carries no
        state of tlsmgr's between requests (one whose lookup waits for
        Redis is not between requests until its reply is written).
    pre_exit (TERM, INT, master EOF at stop or reload once drained, max_use):
        close (flush) the caches, close the Redis connection, save the
        exchange file, erase the key chain.  Postfix's tlsmgr dies on TERM
        without saving; ours saves.  A cache whose last flush fails (a full
        disk) costs a warning, not the others' flush.

SECURITY
    Privileged code opens, unprivileged code reads: the entropy source is
    opened as root and read only after the drop; the exchange file and
    caches are created as mail_owner, never root-owned.

DIAGNOSTICS
    Problems and transactions go to the log (maillog_file or syslog) under
    `postfix/tlsmgr[pid]`.  Cache activity at *_tls_loglevel >= 2.

SEE ALSO
    tlsmgr(8), src/tlsmgr/tlsmgr.c (Postfix); docs/tlsmgr.md, docs/prng.md
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

from master import log, multi_server, privs
from master.config import Config
from master.errors import ConfigError, ParamError
from master.events import EventLoop
from master.log import msg_fatal
from master.skeleton import ServerContext
from tlsmgr import entropy, exchange, keychain, keyfiles, prng, redirect, scache, service
from tlsmgr.dbhash import DBError
from tlsmgr.params import CACHE_TABLE, PARAMS
from tlsmgr.tickets import SharedTicketKeys

# Cleanup scan entries examined per loop turn (Postfix: one).  Small enough
# that a turn stays far below a millisecond, large enough that a scan of
# 100000 entries does not keep the loop spinning for long.
CLEANUP_BUDGET = 32
# The chain timer fires this long after an epoch ends, so that time.time()
# is surely in the new epoch.
EPOCH_SLACK = 1.0


class Opened:
    """What pre_init opens as root, before the jail (Postfix's tlsmgr_pre_init)."""

    def __init__(self, ctx: ServerContext) -> None:
        cfg = ctx.config
        self.pool = prng.Pool()
        self.pool.mix_time(pid=True)
        self.source = entropy.open_source(
            cfg.get("tls_random_source"), cfg.get_int("tls_random_bytes")
        )
        self.specs = _plan(cfg)
        self.redis_address = self._redis_address(ctx)  # a redisconn.RedisAddress, or None
        self.chain: keychain.Chain | None = None
        self.roots: keychain.Roots | None = None
        self.chain_file: keyfiles.StateFile | None = None
        self.caches: dict[str, scache.SessionCache] = {}
        secret = self._read_secret(ctx)
        with _as_mail_owner(ctx):
            self._open_chain(ctx, secret)
            self.exch = self._open_exchange(ctx)
            for spec in self.specs:
                if spec.enabled:
                    self.caches[spec.cache_type] = self._open_cache(ctx, spec)

    def _read_secret(self, ctx: ServerContext) -> bytearray | None:
        """The shared secret, read with our own (root) privileges; fatal when unusable."""
        path = ctx.config.get("tls_session_ticket_secret_file")
        if not path:
            return None
        try:
            return keyfiles.read_secret(path)
        except keyfiles.KeyFileError as err:
            msg_fatal(str(err))

    def _open_chain(self, ctx: ServerContext, secret: bytearray | None) -> None:
        """Start the key chain (as mail_owner); without one, remove a stale state."""
        state_path = os.path.join(ctx.data_directory, keyfiles.STATE_FILE)
        smtpd = next((s for s in self.specs if s.cache_type == "smtpd"), None)
        period = smtpd.timeout // 2 if smtpd else 0
        if secret is not None and period == 0:
            secret[:] = bytes(len(secret))
            secret = None
            log.msg_warn(
                "tls_session_ticket_secret_file is not used:"
                " smtpd_tls_session_cache_timeout is 0 (session tickets are off)"
            )
        if secret is None:
            _remove_stale(state_path)
            return
        keep_past = keychain.TICKET_PAST_EPOCHS
        if self.redis_address is not None:
            # Sealed Redis entries live as long as the longest cache timeout.
            longest = max(s.timeout for s in self.specs if s.enabled)
            keep_past = max(keep_past, keychain.past_epochs(longest, period))
        try:
            self.chain, self.roots, self.chain_file = keyfiles.start_chain(
                secret, state_path, period, time.time(), keep_past=keep_past
            )
        except keyfiles.KeyFileError as err:
            msg_fatal(str(err))

    def _redis_address(self, ctx: ServerContext) -> Any:
        """tls_session_cache_redis checked and resolved (a redisconn.RedisAddress),
        or None; ParamError for a configuration error (fatal, at its main.cf line)."""
        cfg = ctx.config
        name = "tls_session_cache_redis"
        text = cfg.get(name)
        if not text:
            return None
        if not cfg.get("tls_session_ticket_secret_file"):
            raise ParamError(
                f"{text} requires tls_session_ticket_secret_file: entries in Redis are"
                " sealed with keys derived from that secret",
                name,
            )
        smtpd = next((s for s in self.specs if s.cache_type == "smtpd"), None)
        if smtpd is None or smtpd.timeout == 0:
            raise ParamError(
                f"{text} requires smtpd_tls_session_cache_timeout above 0:"
                " half of it is the key epoch",
                name,
            )
        if not any(s.enabled for s in self.specs):
            log.msg_warn(f"{name} is not used: no TLS session cache is enabled")
            return None
        # Speed: the Redis modules (the AEAD, hiredis) only when configured,
        # and here, before the jail (post_init builds the level from redislevel).
        from tlsmgr import redisconn, redislevel  # noqa: F401

        try:
            address = redisconn.RedisAddress.parse(text)
            if ctx.options.chroot and os.geteuid() == 0:
                address = address.inside_jail(ctx.queue_directory)
        except redisconn.AddressError as err:
            raise ParamError(str(err), name) from None
        try:
            return address.resolved()
        except redisconn.AddressError as err:
            log.msg_warn(f"{err}; no Redis until tlsmgr restarts")
            return None

    def _open_exchange(self, ctx: ServerContext) -> exchange.ExchangeFile | None:
        name = ctx.config.get("tls_random_exchange_name")
        if not name:
            return None
        path = _redirect_file(name, ctx)
        try:
            return exchange.ExchangeFile.open(path, self.pool)
        except exchange.ExchangeError as err:
            msg_fatal(str(err))

    def _open_cache(self, ctx: ServerContext, spec: service.CacheSpec) -> scache.SessionCache:
        cfg = ctx.config
        try:
            return scache.SessionCache.open(
                spec.cache_type,
                spec.database,
                timeout=spec.timeout,
                max_entries=cfg.get_int("tls_session_cache_max_entries"),
                max_bytes=cfg.get_int("tls_session_cache_size_limit"),
                data_directory=ctx.data_directory,
                mail_owner=ctx.mail_owner,
                mail_owner_uid=_owner_uid(ctx),
                default_database_type=cfg.get("default_database_type"),
                verbose=spec.verbose,
            )
        except DBError as err:
            msg_fatal(f"{spec.cache_type} TLS cache: {err}")


class Running:
    """The daemon after post_init, in the jail: the service, its loop and its timers
    (Postfix's tlsmgr_post_init, tlsmgr_loop and the *_event timers)."""

    def __init__(self, ctx: ServerContext, opened: Opened) -> None:
        ctx.max_idle = 0
        ctx.max_use = 0
        cfg = ctx.config
        self.opened = opened
        self.pool = opened.pool
        self.caches = opened.caches
        self.reseed_period = prng.clamp_period(cfg.get_time("tls_random_reseed_period"))
        self.update_period = prng.clamp_period(cfg.get_time("tls_random_prng_update_period"))
        slots = [
            service.CacheSlot(s.cache_type, s.timeout, self.caches.get(s.cache_type))
            for s in opened.specs
        ]
        chain = opened.chain
        self.tickets = SharedTicketKeys(chain) if chain is not None else None
        self.redis: Any = None  # redislevel.RedisLevel, when Redis is configured
        if opened.redis_address is not None and chain is not None and opened.roots is not None:
            from tlsmgr import redislevel  # imported in pre_init already

            self.redis = redislevel.open_level(
                ctx.events,
                opened.redis_address,
                chain,
                opened.roots,
                budget=cfg.get_int("tls_session_cache_redis_read_budget") / 1000,
                log=log,
            )
        self.service = service.Service(
            slots,
            rand=self.pool,
            log=log,
            started=time.time(),
            tickets=self.tickets,
            second_level=self.redis,
        )
        events = ctx.events
        if opened.source is not None:
            events.request_timer(0, self.reseed_event)
        if opened.exch is not None:
            events.request_timer(0, self._prng_exch_event(opened.exch))
        for cache_type in self.caches:
            events.request_timer(0, self._cache_run_event(cache_type))
        if chain is not None:
            events.request_timer(_next_epoch_delay(chain), self._chain_event(chain))
        events.request_timer(service.WARN_INTERVAL, self.warning_flush_event)

    def loop(self) -> float | None:
        self.pool.mix_time()
        now = time.time()
        more = False
        for cache in self.caches.values():
            if cache.cleaning:
                more = cache.cleanup_step(now, CLEANUP_BUDGET) or more
        return 0 if more else None

    def handler(self, conn: Any) -> Any:
        return service.TlsmgrHandler(self.service, conn, time.time)

    # -- timers ---------------------------------------------------------

    def reseed_event(self, events: EventLoop) -> None:
        entropy.reseed_event(self.opened.source, self.pool, self.opened.exch)
        events.request_timer(prng.next_delay(self.reseed_period, self.pool), self.reseed_event)

    def _prng_exch_event(self, exch: exchange.ExchangeFile) -> Any:
        def prng_exch_event(events: EventLoop) -> None:
            try:
                entropy.exchange_event(exch, self.pool)
            except exchange.ExchangeError as err:
                msg_fatal(str(err))
            events.request_timer(prng.next_delay(self.update_period, self.pool), prng_exch_event)

        return prng_exch_event

    def _chain_event(self, chain: keychain.Chain) -> Any:
        def chain_event(events: EventLoop) -> None:
            chain.advance(time.time())
            events.request_timer(_next_epoch_delay(chain), chain_event)

        return chain_event

    def warning_flush_event(self, events: EventLoop) -> None:
        now = time.time()
        self.service.warnings.flush(now)
        if self.redis is not None:
            self.redis.warnings.flush(now)
        events.request_timer(service.WARN_INTERVAL, self.warning_flush_event)

    def _cache_run_event(self, cache_type: str) -> Any:
        def cache_run_event(events: EventLoop) -> None:
            cache = self.caches.get(cache_type)
            if cache is None:
                return
            if not cache.cleaning:
                cache.start_cleanup(time.time())
            events.request_timer(cache.timeout, cache_run_event)

        return cache_run_event


class Tlsmgr:
    """The daemon's hooks: pre_init opens (Opened), post_init runs (Running)."""

    def __init__(self) -> None:
        self.opened: Opened | None = None
        self.running: Running | None = None

    def pre_init(self, ctx: ServerContext) -> None:
        self.opened = Opened(ctx)

    def post_init(self, ctx: ServerContext) -> None:
        self.running = Running(ctx, self._opened())

    def loop(self, ctx: ServerContext) -> float | None:
        return self._running().loop()

    def handler_factory(self, conn: Any) -> Any:
        return self._running().handler(conn)

    def pre_exit(self, ctx: ServerContext) -> None:
        """Flush what was opened, however far the start got."""
        opened = self.opened
        if opened is None:
            return
        for cache_type, cache in opened.caches.items():
            try:
                cache.close()
            except DBError as err:
                # A full disk: the pages are lost, as the next start truncates anyway.
                log.msg_warn(f"{cache_type} TLS cache: {err}")
        opened.caches.clear()
        running = self.running
        if running is not None and running.redis is not None:
            running.redis.close()
        entropy.save_at_exit(opened.exch, opened.pool)
        if running is not None and running.tickets is not None:
            running.tickets.erase()
        if opened.chain is not None:
            opened.chain.erase()

    def _opened(self) -> Opened:
        if self.opened is None:
            raise RuntimeError("tlsmgr: post_init before pre_init")
        return self.opened

    def _running(self) -> Running:
        if self.running is None:
            raise RuntimeError("tlsmgr: served before post_init")
        return self.running


def _next_epoch_delay(chain: keychain.Chain) -> float:
    """Seconds until just after the current epoch ends."""
    now = time.time()
    end = keychain.tout(chain.epoch(now), chain.period) + 1
    return end - now + EPOCH_SLACK


def _plan(cfg: Config) -> list[service.CacheSpec]:
    """The cache table read from main.cf; fatal on Postfix's start-up errors."""
    rows = []
    try:
        for row in CACHE_TABLE:
            rows.append(
                (
                    row.cache_type,
                    cfg.get(row.database_param),
                    cfg.get_time(row.timeout_param),
                    cfg.get(row.loglevel_param),
                )
            )
        return service.plan_caches(rows)
    except (ConfigError, ValueError) as err:
        msg_fatal(str(err))


def _remove_stale(state_path: str) -> None:
    """A chain state nobody uses still gives keys of its fleet: remove it."""
    try:
        os.unlink(state_path)
    except FileNotFoundError:
        return
    except OSError as err:
        log.msg_warn(f"cannot remove {state_path}: {err.strerror}")
        return
    log.msg_info(f"removed {state_path}: shared ticket keys are off")


def _owner_uid(ctx: ServerContext) -> int:
    """Who will own the files: mail_owner, or ourselves when not started as root
    (then data_directory is ours, and nothing is redirected)."""
    if os.geteuid() != 0 or ctx.uid is None:
        return os.geteuid()
    return ctx.uid


def _as_mail_owner(ctx: ServerContext) -> contextlib.AbstractContextManager[None]:
    """Create files as mail_owner when we are root (never root-owned files)."""
    if os.geteuid() == 0 and ctx.uid is not None and ctx.gid is not None:
        return privs.saved_eugid(ctx.uid, ctx.gid)
    return contextlib.nullcontext()


def _redirect_file(path: str, ctx: ServerContext) -> str:
    """Postfix's data_redirect_file(): a file in a folder not owned by mail_owner
    is redirected into data_directory, with Postfix's two warnings."""
    path, warnings = redirect.redirect_file(
        path,
        data_directory=ctx.data_directory,
        mail_owner=ctx.mail_owner,
        mail_owner_uid=_owner_uid(ctx),
    )
    for warning in warnings:
        log.msg_warn(warning)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `tlsmgr`: run under the master (never by hand)."""
    state = Tlsmgr()
    multi_server.main(
        state.handler_factory,
        params=PARAMS,
        pre_init=state.pre_init,
        post_init=state.post_init,
        loop=state.loop,
        pre_exit=state.pre_exit,
        solitary=True,
        handover=True,
        argv=argv,
        warm_up=(prng.warm_up,),
    )
