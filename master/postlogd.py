"""postlogd: the internal log server that writes maillog_file (Postfix's postlogd(8)).

SYNOPSIS
    postlogd [generic daemon options]     # master.cf: postlog unix-dgram n - n - 1 postlogd

DESCRIPTION
    With maillog_file set, every process of the instance (the master, the
    control commands, tlsmgr, every daemon on our skeletons, and Postfix's
    own daemons under our master) sends each log record as one datagram
    to $queue_directory/public/$postlog_service_name (log.py); postlogd,
    a trigger_server daemon on that unix-dgram socket, appends them to
    maillog_file in the order they arrive.  One writer keeps the lines of
    all processes whole and in order, and only postlogd (run as root,
    unjailed, `n - n` in master.cf) holds the file open; daemons keep no
    descriptor of it.

    pre_init, as root: the service takes no arguments (fatal
    `unexpected command-line argument: ARG`); maillog_file, already
    checked against maillog_file_prefixes by the skeleton, is opened with
    maillog.open_maillog() (fatal `open logfile 'PATH': REASON`: a
    symbolic link, a second hard link, a FIFO, a file of another user or
    writable by others), and postlogd's own records go straight to it
    from then on, never to its own socket.  Until then (start-up) they
    go to the socket like any daemon's, and postlogd writes them once it
    runs, as Postfix's does.

    Each datagram is written as it is plus a newline, in one write(2).
    maillog_file = /dev/stdout is postlogd's standard output, which under
    `minipostfix start-fg` is the master's (spawn.py).

    After a reload that emptied maillog_file, records from processes that
    still use the old setting go to syslog: the date, host and name[pid]
    that the sender put in front are taken off and the name[pid] becomes
    the syslog tag, as Postfix's postlogd does.

    post_init: max_use 0 (postlogd never exits on its use count); the
    watchdog is postlogd_watchdog_timeout (10 s) instead of
    daemon_timeout.  max_idle applies: an idle postlogd exits and the
    master starts one at the next record.  pre_exit writes every record
    still queued on the socket (at most DRAIN_LIMIT) when postlogd is
    stopped (TERM: the master logs its last line before it stops
    postlogd) or idle.  At a reload (a logrotate's included) postlogd
    leaves as the trigger server does: it stops reading at once, and
    what is queued stays on the socket for its successor, which opens
    maillog_file anew; so only one postlogd reads the socket at a time
    and the records keep their order.

    The service must have maxproc 1 (`-l`).

SEE ALSO
    src/postlogd/postlogd.c (Postfix); trigger_server.py, log.py,
    maillog.py, docs/operating.md
"""

from __future__ import annotations

import os
import syslog

from master import log, trigger_server
from master.config import Param
from master.log import msg_fatal
from master.macro import CHARS_SPACE
from master.maillog import MaillogError
from master.skeleton import ServerContext

PARAMS = (
    Param(
        "postlogd_watchdog_timeout",
        "10s",
        "time",
        10,
        doc="How long postlogd may take for one record before its watchdog kills it.",
    ),
)
DRAIN_LIMIT = 10000  # records written at exit, at most


class Writer:
    """Where records go: maillog_file's descriptor, or syslog when maillog_file is empty."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.facility = syslog.LOG_MAIL

    def open(self, ctx: ServerContext) -> None:
        """pre_init: check the arguments, open maillog_file, log there directly."""
        if ctx.options.args:
            msg_fatal(f"unexpected command-line argument: {ctx.options.args[0]}")
        config = ctx.config
        self.facility = log.facility_code(config.get("syslog_facility"))
        if not config.get("maillog_file"):
            return
        try:
            log.log_config(ctx.process_name, config, "writer", stderr=ctx.options.stderr)
        except MaillogError as err:
            msg_fatal(str(err))
        self.fd = log.maillog_fd()

    def write(self, record: bytes, _ctx: ServerContext | None = None) -> None:
        """The service: one record, one line."""
        if self.fd is None:
            self.forward(record)
            return
        try:
            os.write(self.fd, record + b"\n")
        except OSError:
            pass  # a full disk: nobody to tell but the file itself (Postfix ignores it too)

    def forward(self, record: bytes) -> None:
        """Postfix's redirection to syslog: `Mmm dd hh:mm:ss host name[pid]: text`."""
        parts = record.decode("utf-8", "replace").split(None, 4)
        if len(parts) < 5:
            return
        tag, _colon, text = parts[4].partition(":")
        syslog.openlog(tag, 0, self.facility)
        syslog.syslog(syslog.LOG_INFO, text.lstrip(CHARS_SPACE))
        syslog.closelog()

    def drain(self, ctx: ServerContext) -> None:
        """pre_exit: write what is still queued on the socket."""
        for fd in ctx.listen_fds:
            for _ in range(DRAIN_LIMIT):
                try:
                    record = os.read(fd, trigger_server.DGRAM_BUF_SIZE)
                except OSError:
                    break
                self.write(record)


def _post_init(ctx: ServerContext) -> None:
    ctx.max_use = 0
    ctx.daemon_timeout = ctx.config.get_time("postlogd_watchdog_timeout")


def main() -> None:
    writer = Writer()
    trigger_server.main(
        writer.write,
        params=PARAMS,
        pre_init=writer.open,
        post_init=_post_init,
        pre_exit=writer.drain,
        solitary=True,
    )


if __name__ == "__main__":
    main()
