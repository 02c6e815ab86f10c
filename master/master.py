"""The resident master: services, listeners, a loop of named steps, reload, stop.

SYNOPSIS
    from master.master import run

    status = run(config_dir, foreground=False, ready_fd=None, notifier=None)

    master = Master.start(config_dir, foreground=False, ready=Readiness(fd),
                          notifier=Notifier.from_environment())
    status = master.run()                   # what run() does after step 1

DESCRIPTION
    run() is Postfix's master(8) after its -w fork (control.py detaches
    first, or stays in the foreground for start-fg).  In order:

    1. Reserve fds 0-6 (/dev/null) so no pipe or socket lands on the
       numbers children expect; close any other inherited descriptor.
    2. Read main.cf and master.cf; any error is fatal (`fatal:
       master.cf:12: ...`, exit 1) and nothing has been created yet.
    3. Apply import_environment; set MAIL_CONFIG, MAIL_LOGTAG and, with
       maillog_file, POSTLOG_SERVICE and POSTLOG_HOSTNAME for children.
    4. Create $queue_directory/{pid,private,public} and $data_directory
       with Debian's ownership and modes (instance.layout()); chdir to the
       queue directory, so sockets are named relatively (private/tlsmgr).
    5. Lock pid/master.pid and $data_directory/master.lock for the
       master's lifetime (instance.py says how).  A held lock means
       another master runs: `fatal: the minipostfix mail system is
       already running`.
    6. Create every listener, then log `daemon started -- version V,
       configuration DIR`, write one byte to `ready_fd`, send READY=1
       to systemd (start-fg as a Type=notify service: `notifier`), and
       loop.

    Each turn of the loop waits for events (listeners, status records,
    timers, signals; signal handlers only record), then acts in this
    order: reap_children(), stop_if_asked(), reload_if_hup(),
    start_wanted(), publish_state().

    Reload (SIGHUP) re-reads both files (and the spawn servers' entry
    points) before anything changes.  A bad new configuration is
    logged and the running one stays.  A service whose identity (internal
    name, type) is unchanged keeps its listeners, so no connection is
    refused during a reload; it takes the new settings and gets a new
    status socketpair; its old children count neither as available nor
    toward maxproc (avail.py), and its wake-up timer restarts.  When a
    service of connections (HANDOFF_TYPES: not unix-dgram or fifo, whose
    messages wait in their queue and keep their order with one reader)
    has a running child that had sent a READY status record (proto.py;
    ours do), the master starts the successor at once and the old children
    keep serving until the successor sends its own (or 5 s pass,
    avail.HANDOFF_TIME): only then do they see EOF on fd 5 and drain
    (finish what they hold, then exit), so no client waits for a child
    to start.  Otherwise (no child running, a daemon that sends no READY,
    such as Postfix's, or a unix-dgram or fifo service) they see EOF at
    once and the first connection or message starts the successor.  Removed
    services' children get SIGTERM and their listeners close at once (the
    master does not block waiting for them, unlike Postfix).  New
    services start.  Under systemd a reload is framed by RELOADING=1 and
    READY=1, a stop begins with STOPPING=1.

    Stop (SIGTERM, SIGINT): log `terminating on signal N`, TERM every
    child by pid but postlogd's, wait for them, then TERM postlogd (it
    writes what the others logged as they left, and what is still queued
    on its socket), wait (5 s in all), KILL what is left, reap, exit 0.
    From postlogd's TERM on (from the start, when no postlogd runs, and
    for an abort) the master appends its own records to maillog_file, and
    at exit it appends the records still queued on postlogd's socket.
    Abort (SIGQUIT): the same TERMs without the waits, and exit at once.

    publish_state() rewrites $queue_directory/pid/master.state (JSON,
    0644, temp file + rename) at most once a second when something
    changed, and at once when a spawn server started, became ready or
    went; `minipostfix status -v` reads it.  The children's last stderr
    lines go to pid/master.stderr (0600) instead: a child may print
    anything there, and master.state is readable by everyone.

SECURITY
    The master runs as root and stays root; children drop privileges in
    their skeleton.  Files in mail_owner's directories (master.lock, unix
    sockets, fifos) are opened or created with euid mail_owner
    (privs.saved_eugid), never by root through a link mail_owner planted.

DIAGNOSTICS
    Fatal startup errors are logged and also written to `ready_fd` so
    that `minipostfix start` can print them.  Reload errors are logged.

BUGS
    Changing queue_directory, config_directory or inet_protocols needs a
    stop and start; reload warns and keeps the old value for the master.

SEE ALSO
    src/master/master.c, master_ent.c, master_service.c, master_sig.c,
    master_wakeup.c (Postfix); instance.py, spawn.py, listen.py, control.py
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

from master import listen, privs, proto, zygote
from master.avail import Service
from master.config import Config
from master.errors import ConfigError
from master.events import EventLoop, Timer
from master.instance import (
    DATA_LOCK,
    PID_FILE,
    STATE_FILE,
    STDERR_FILE,
    Owner,
    layout,
    lock_pid_file,
    lookup_owner,
    make_directories,
    read_configuration,
    reserve_fds,
    write_state,
)
from master.log import (
    fallback_only,
    log_config,
    log_init,
    msg_error,
    msg_fatal,
    msg_info,
    msg_warn,
    postlog_path,
)
from master.maillog import STDOUT, MaillogError, append_once, check_prefixes, open_maillog
from master.mastercf import ServiceEntry
from master.sdnotify import Notifier
from master.spawn import Spawner, become_subreaper

__all__ = ["Master", "Readiness", "run", "version"]

STOP_WAIT = 5.0
KILL_WAIT = 5.0
PUBLISH_INTERVAL = 1.0
DRAIN_LIMIT = 10000  # log records the master writes at exit, at most
DGRAM_MAX = 65536  # the largest datagram a unix-dgram socket delivers
WATCHDOG_TIME = 1000  # Postfix's MASTER_WATCHDOG_TIME: one loop turn may not last longer
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RESTART_ONLY = ("config_directory", "queue_directory", "inet_protocols")
# Where a reload's old children serve until their successor does: a connection waits for a
# child that accepts; a datagram or fifo trigger waits in its queue, read by one process in
# order (two postlogds reading side by side would mix the order of the log).
HANDOFF_TYPES = ("unix", "inet", "pass")


@functools.cache
def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("minipostfix")
    except metadata.PackageNotFoundError:
        return "unknown"


def _init_logging(config: Config, foreground: bool) -> None:
    """Log as main.cf says: through postlogd when maillog_file is set, appending
    to the file when postlogd cannot take a record; MaillogError for a
    maillog_file outside maillog_file_prefixes.  In the foreground the lines
    are also on stderr, unless maillog_file is /dev/stdout (they are on the
    terminal already)."""
    path = config.get("maillog_file")
    log_config("master", config, "fallback", stderr=foreground and path != STDOUT)
    if path:  # refuse at start a file that the fallback could not append to
        os.close(open_maillog(path))
    _export_logging(config)


def _export_logging(config: Config) -> None:
    """What children need to log before they read main.cf (maillog_client_init())."""
    os.environ[proto.ENV_MAIL_LOGTAG] = config.get("syslog_name")
    if config.get("maillog_file"):
        os.environ[proto.ENV_POSTLOG_SERVICE] = postlog_path(config)
        os.environ[proto.ENV_POSTLOG_HOSTNAME] = config.get("myhostname") or socket.gethostname()
    else:
        os.environ.pop(proto.ENV_POSTLOG_SERVICE, None)
        os.environ.pop(proto.ENV_POSTLOG_HOSTNAME, None)


def _init_environment(config: Config) -> None:
    """import_environment, then what every child needs (master.c: clean_env(); maillog_client.c)."""
    keep: dict[str, str] = {}
    for item in config.get_list("import_environment"):
        name, eq, value = item.partition("=")
        if eq:
            keep[name] = value
        elif name in os.environ:
            keep[name] = os.environ[name]
    os.environ.clear()
    os.environ.update(keep)
    os.environ[proto.ENV_MAIL_CONFIG] = config.config_dir
    _export_logging(config)


# The master --------------------------------------------------------------


class Readiness:
    """The pipe to `minipostfix start`: one NUL byte once listening, or the fatal error."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def tell(self, data: bytes) -> None:
        """Write data and close the pipe; nothing after the first call, or without a pipe."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, data)
                os.close(self.fd)
            self.fd = None

    def fatal(self, text: str) -> NoReturn:
        """Log a fatal startup error, tell `minipostfix start`, exit 1."""
        self.tell(f"fatal: {text}\n".encode())
        msg_fatal(text)


class Master:
    """One resident master; see the module docstring for the steps.

    Master.start() reads the configuration, prepares the instance on disk
    and then builds the master whole: a Master always has its
    configuration, mail_owner, event loop and spawner.
    """

    def __init__(
        self,
        config_dir: str,
        config: Config,
        owner: Owner,
        *,
        foreground: bool,
        lock_fds: list[int],
        notifier: Notifier | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.config = config
        self.owner = owner
        self.foreground = foreground
        self.lock_fds = lock_fds
        self.notifier = notifier or Notifier()
        self.loop = EventLoop()
        self.loop.set_watchdog(WATCHDOG_TIME)
        self.spawner = Spawner(self.loop, dict(os.environ), foreground=foreground)
        why = become_subreaper()
        if why is not None:
            msg_warn(f"prctl(PR_SET_CHILD_SUBREAPER): {why}; no spawn servers")
        self.spawner.subreaper = why is None
        self.spawn_servers = zygote.registered_commands()
        self.services: dict[tuple[str, str], Service] = {}
        self.wakeups: dict[Service, Timer] = {}
        self.condwake: set[Service] = set()
        self.addresses: dict[Service, list[listen.Address]] = {}
        self.started = time.time()
        self.hup = False
        self.stop_signal = 0
        self.last_publish = 0.0
        self.last_state: dict[str, str] = {}  # path -> the text last written there
        self.publish_timer: object | None = None

    # Startup -------------------------------------------------------------

    @classmethod
    def start(
        cls,
        config_dir: str,
        *,
        foreground: bool,
        ready: Readiness,
        notifier: Notifier | None = None,
    ) -> Master:
        """Steps 2 to 6 of the module docstring; a startup error is fatal (exit 1)."""
        try:
            config, entries = read_configuration(config_dir)
            _init_logging(config, foreground)
            owner = lookup_owner(config)
            _init_environment(config)
            make_directories(layout(config, owner))
            os.chdir(config.get("queue_directory"))
            lock_fds = [lock_pid_file(PID_FILE)]
            with privs.saved_eugid(owner.uid, owner.gid):
                data_lock = os.path.join(config.get("data_directory"), DATA_LOCK)
                lock_fds.append(lock_pid_file(data_lock))
        except ConfigError as err:
            ready.fatal(str(err))
        except OSError as err:
            ready.fatal(f"{err.filename or 'startup'}: {err.strerror}")
        master = cls(
            config_dir, config, owner, foreground=foreground, lock_fds=lock_fds, notifier=notifier
        )
        try:
            for entry in entries:
                master.start_service(entry)
        except OSError as err:
            ready.fatal(f"service startup: {err.strerror}")
        for signum in (signal.SIGHUP, signal.SIGCHLD, *STOP_SIGNALS):
            master.loop.on_signal(signum, master.record_signal)
        master.loop.ignore_signal(signal.SIGPIPE)
        for service in master.services.values():
            master.wakeup_init(service)
        # The state file exists before anyone is told the master is up (status -v, tests).
        master.publish_state(force=True)
        msg_info(f"daemon started -- version {version()}, configuration {config.config_dir}")
        ready.tell(b"\0")
        master.notifier.ready()
        return master

    def as_owner(self) -> contextlib.AbstractContextManager[None]:
        return privs.saved_eugid(self.owner.uid, self.owner.gid)

    # Services ------------------------------------------------------------

    def service_args(self, entry: ServiceEntry, listen_count: int) -> tuple[str, list[str], bool]:
        """The program path, argv and stress flag of a service's children."""
        path = os.path.join(self.config.get("daemon_directory"), entry.command)
        stress = entry.type == "inet" and entry.maxproc > 1 and not self._loopback_only(entry)
        argv = proto.child_argv(
            entry.command,
            entry.name,
            entry.type,
            maxproc=entry.maxproc,
            unpriv=entry.unpriv,
            chroot=entry.chroot,
            stress="" if stress else None,
            listen_count=listen_count,
            args=entry.args,
        )
        return path, argv, stress

    def _loopback_only(self, entry: ServiceEntry) -> bool:
        try:
            addrs = [a for (_f, a), _opt in listen.inet_addresses(entry, self.config)]
        except OSError:
            return False  # unresolvable now; open_listeners() reports it
        return all(a[0].startswith("127.") or a[0] == "::1" for a in addrs)

    def start_service(self, entry: ServiceEntry) -> Service:
        """A new service: its listeners, then the service built with its settings, listening."""
        fds = listen.open_listeners(entry, self.config, self.as_owner)
        path, argv, stress = self.service_args(entry, len(fds))
        throttle = self.config.get_time("service_throttle_time")
        service = Service(entry, path, argv, fds, self.loop, throttle, stress)
        self.addresses[service] = listen.listener_addresses(fds) if entry.type == "inet" else []
        self.services[entry.identity] = service
        if self.wants_spawn_server(entry, path):
            self.spawner.start_zygote(service)
        self.watch(service, entry)
        return service

    def wants_spawn_server(self, entry: ServiceEntry, path: str) -> bool:
        """A command registered in the spawners' entry-point group, and a #! Python script."""
        return entry.command in self.spawn_servers and zygote.interpreter(path) is not None

    def reconfigure(self, service: Service, entry: ServiceEntry) -> bool:
        """A kept service after reload: the new settings and a fresh status channel;
        True when its old children wait for a successor before they leave (handoff)."""
        path, argv, stress = self.service_args(entry, len(service.listen_fds))
        throttle = self.config.get_time("service_throttle_time")
        service.configure(entry, path, argv, throttle, stress)
        handoff = (
            entry.type in HANDOFF_TYPES
            and not service.throttled
            and any(child.ready and not child.draining for child in service.children.values())
        )
        service.open_status_channel(handoff)
        if not self.wants_spawn_server(entry, path):
            self.spawner.stop_zygote(service)
        elif self.spawner.zygote_state(service) is None:
            self.spawner.start_zygote(service)
        else:
            self.spawner.refresh_zygote(service)
        self.watch(service, entry)
        return handoff

    def watch(self, service: Service, entry: ServiceEntry) -> None:
        """Listen as the service's state allows; a conditional wake-up waits for a child."""
        service.update_listen()
        self.condwake.discard(service)
        if entry.wakeup and entry.wakeup_conditional:
            self.condwake.add(service)

    def stop_service(self, service: Service) -> None:
        """A service removed by reload: TERM its children, close its endpoints."""
        service.removed = True
        self.wakeup_cancel(service)
        service.update_listen()
        service.close_status_channel()
        self.spawner.stop_zygote(service)
        self.spawner.signal_service(service, signal.SIGTERM)
        listen.close_listeners(service.listen_fds)
        service.listen_fds = []
        self.addresses.pop(service, None)

    # Wake-ups ------------------------------------------------------------

    def wakeup_init(self, service: Service) -> None:
        if service.entry.wakeup and service not in self.condwake:
            self.wakeup_event(service)

    def wakeup_cancel(self, service: Service) -> None:
        self.loop.cancel_timer(self.wakeups.pop(service, None))

    def wakeup_event(self, service: Service) -> None:
        if not service.throttled:
            try:
                listen.send_wakeup(
                    service.entry, self.addresses.get(service, []), self.loop, self.as_owner
                )
            except OSError as err:
                msg_warn(f"master_wakeup_timer_event: service {service.name}: {err.strerror}")
        self.wakeups[service] = self.loop.request_timer(
            service.entry.wakeup, lambda _loop: self.wakeup_event(service)
        )

    # The loop ------------------------------------------------------------

    def record_signal(self, signum: int, _loop: EventLoop) -> None:
        if signum == signal.SIGHUP:
            self.hup = True
        elif signum != signal.SIGCHLD:
            self.stop_signal = self.stop_signal or signum

    def run(self) -> int:
        while True:
            self.loop.run_once(None)
            self.reap_children()
            if self.stop_if_asked():
                return 0
            self.reload_if_hup()
            self.start_wanted()
            self.publish_state()

    def reap_children(self) -> None:
        self.spawner.reap()

    def start_wanted(self) -> None:
        for service in list(self.services.values()):
            if service.wanted:
                self.start_child(service)

    def start_child(self, service: Service) -> bool:
        """One child of `service`; a conditional wake-up starts with its first."""
        if not self.spawner.spawn(service):
            return False
        if service in self.condwake:
            self.condwake.discard(service)
            self.wakeup_init(service)
        return True

    def stop_if_asked(self) -> bool:
        signum = self.stop_signal
        if not signum:
            return False
        self.notifier.stopping()
        self.spawner.stopping = True
        abort = signum == signal.SIGQUIT
        logger = self.postlogd_service()
        if abort or logger is None or not logger.children:
            fallback_only()  # no postlogd that will be there to write it
        msg_info(f"{'aborting' if abort else 'terminating'} on signal {signum}")
        # postlogd goes last, so that it writes what the others log as they
        # leave (a cache flush warning, say) and drains its socket; from then
        # on the master writes maillog_file itself.
        for service in self.services.values():
            if service is not logger:
                self.spawner.signal_service(service, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        if not abort:
            # Children of services removed at a reload (TERMed then) count too.
            self.wait_children(lambda: self.only_children_of(logger), deadline)
        fallback_only()
        if logger is not None:
            self.spawner.signal_service(logger, signal.SIGTERM)
        if not abort:
            self.wait_children(lambda: not self.spawner.children, deadline)
            if self.spawner.children:
                msg_warn(f"killing {len(self.spawner.children)} child(ren) still running")
                self.spawner.signal_all(signal.SIGKILL)
                self.spawner.wait_all(KILL_WAIT)
        self.drain_postlog(logger)
        for path in (STATE_FILE, STDERR_FILE):
            with contextlib.suppress(OSError):
                os.unlink(path)
        return True

    def postlogd_service(self) -> Service | None:
        """The service that writes maillog_file (public/$postlog_service_name, unix-dgram)."""
        name = self.config.get("postlog_service_name")
        return self.services.get((f"public/{name}", "unix-dgram"))

    def drain_postlog(self, logger: Service | None) -> None:
        """At exit: append to maillog_file the records still queued on postlogd's
        socket (sent after postlogd left, or while none ran), as postlogd would."""
        path = self.config.get("maillog_file")
        if logger is None or not path:
            return
        records: list[bytes] = []
        for fd in logger.listen_fds:
            while len(records) < DRAIN_LIMIT:
                try:
                    records.append(os.read(fd, DGRAM_MAX))
                except OSError:
                    break
        if records:
            try:
                append_once(path, b"".join(record + b"\n" for record in records))
            except MaillogError as err:
                msg_warn(f"cannot write the last {len(records)} log record(s): {err}")

    def only_children_of(self, logger: Service | None) -> bool:
        """No child is left but postlogd's."""
        return all(child.service is logger for child in self.spawner.children.values())

    def wait_children(self, done: Callable[[], bool], deadline: float) -> None:
        """Reap children until done() or the deadline."""
        while not done() and time.monotonic() < deadline:
            self.loop.run_once(min(0.1, max(0.0, deadline - time.monotonic())))
            self.reap_children()

    def reload_if_hup(self) -> None:
        if not self.hup:
            return
        self.hup = False
        self.notifier.reloading()
        try:
            self.reload()
        finally:
            self.notifier.ready()

    def reload(self) -> None:
        """Re-read both files and apply them; a bad configuration keeps the running one."""
        msg_info(f"reload -- version {version()}, configuration {self.config_dir}")
        try:
            config, entries = read_configuration(self.config_dir)
            if config.get("maillog_file"):
                check_prefixes(config.get("maillog_file"), config.get_list("maillog_file_prefixes"))
        except ConfigError as err:
            msg_error(f"reload: {err}; keeping the running configuration")
            return
        kept = []
        for name in RESTART_ONLY:
            if config.get(name) != self.config.get(name):
                msg_warn(f"ignoring {name} parameter value change")
                msg_warn(f"to change {name}, stop and start minipostfix")
                kept.append((name, self.config.get(name)))
        if kept:
            config = config.with_overrides(kept, origin="kept from the running configuration")
        self.config = config
        _init_logging(config, self.foreground)
        self.apply_plan(entries)
        self.publish_state(force=True)

    def apply_plan(self, entries: list[ServiceEntry]) -> None:
        self.spawner.env = dict(os.environ)
        self.spawn_servers = zygote.registered_commands()
        wanted = {entry.identity: entry for entry in entries}
        for identity, service in list(self.services.items()):
            if identity not in wanted:
                del self.services[identity]
                self.condwake.discard(service)
                self.stop_service(service)
        for identity, entry in wanted.items():
            current = self.services.get(identity)
            handoff = False
            if current is None:
                try:
                    service = self.start_service(entry)
                except OSError as err:
                    msg_error(f"service {entry.name}: {err.strerror}; not started")
                    continue
            else:
                service = current
                self.check_interfaces(service, entry)
                self.wakeup_cancel(service)
                handoff = self.reconfigure(service, entry)
            self.wakeup_init(service)
            if handoff and not self.start_child(service):
                service.retire_old()  # no successor to wait for

    def check_interfaces(self, service: Service, entry: ServiceEntry) -> None:
        if entry.type != "inet" or entry.inet_host:
            return
        try:
            now = [a for a, _opt in listen.inet_addresses(entry, self.config)]
        except OSError:
            now = []
        have = self.addresses.get(service, [])
        if {(f, a[:2]) for f, a in now} - {(f, a[:2]) for f, a in have}:
            msg_warn(f"service {entry.name}: ignoring inet_interfaces change")
            msg_warn("to change inet_interfaces, stop and start minipostfix")

    # Published state -----------------------------------------------------

    def publish_state(self, force: bool = False) -> None:
        """Rewrite pid/master.state when it changed, at most once a second."""
        now = time.monotonic()
        if self.spawner.zygotes_changed:  # rare, and what tells its processes apart
            self.spawner.zygotes_changed = False
            force = True
        if not force and now - self.last_publish < PUBLISH_INTERVAL:
            if self.publish_timer is None:
                delay = PUBLISH_INTERVAL - (now - self.last_publish)
                self.publish_timer = self.loop.request_timer(delay, self._publish_event)
            return
        self.last_publish = now
        state = {
            "pid": os.getpid(),
            "version": version(),
            "config_directory": self.config_dir,
            "started": self.started,
            "forks": self.spawner.generation,
            "services": [self.service_state(s) for s in self.services.values()],
        }
        text = json.dumps(state, indent=1)
        tails = {f"{s.name}/{s.entry.type}": s.last_stderr for s in self.services.values()}
        tails = {name: tail for name, tail in tails.items() if tail}
        self._publish(STATE_FILE, text, 0o644)
        self._publish(STDERR_FILE, json.dumps(tails, indent=1), 0o600)

    def _publish(self, path: str, text: str, mode: int) -> None:
        """Rewrite a state file when its text changed; a failure is a warning."""
        if text == self.last_state.get(path):
            return
        try:
            write_state(path, text, mode)
            self.last_state[path] = text
        except OSError as err:
            msg_warn(f"cannot write {path}: {err.strerror}")

    def service_state(self, service: Service) -> dict[str, object]:
        state = service.snapshot()
        state["spawn_server"] = self.spawner.zygote_state(service)
        return state

    def _publish_event(self, _loop: EventLoop) -> None:
        self.publish_timer = None
        self.publish_state()


def run(
    config_dir: str,
    *,
    foreground: bool = False,
    ready_fd: int | None = None,
    notifier: Notifier | None = None,
) -> int:
    """The resident master; returns the exit status (see the module docstring)."""
    # Sanity check: logging must hold no descriptor while reserve_fds() closes
    # everything (a syslog or maillog fd closed under it could be reused by a
    # listener); until main.cf is read, log to stderr only (/dev/null detached).
    log_init("master", maillog_file="/dev/stderr")
    ready = Readiness(reserve_fds(ready_fd))
    os.umask(0o077)
    try:
        master = Master.start(config_dir, foreground=foreground, ready=ready, notifier=notifier)
        return master.run()
    except SystemExit:
        raise
    except Exception as err:  # the top of the loop: log once, exit 1
        for line in traceback.format_exc().rstrip().splitlines():
            msg_error(line)
        ready.tell(f"fatal: unexpected error: {err}; see the log\n".encode())
        return 1
