"""Every wire case, through the pure handler and through a real socket server.

The same table (support/wire_cases.py) drives the differential test against the
real tlsmgr (tests/interop/test_tlsmgr_diff.py); here it checks minipostfix's own
replies, byte for byte.
"""

from __future__ import annotations

import os
import signal
import time

from support import tlsmgr_server
from support.caches import open_cache
from support.stand_ins import Conn, Log, Rand
from support.wire_cases import CASES, GREETING, exchange, matches
from tlsmgr import service


def test_table_is_consistent():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        # Every deliberate difference says why, and only differences do.
        assert bool(case.differs) == (case.postfix is not None), case.name


def test_cases_through_handler(folder):
    log = Log()
    smtp = open_cache(folder, max_entries=1000, log=log)
    svc = service.Service(
        [
            service.CacheSlot("smtpd", 3600),
            service.CacheSlot("smtp", 3600, smtp),
            service.CacheSlot("lmtp", 3600),
        ],
        rand=Rand(),
        log=log,
        started=time.time(),
    )
    try:
        for case in CASES:
            conn = Conn("wire-test")
            handler = svc.handler_factory(time.time)(conn)
            assert handler.connection_made() == GREETING
            got = handler.data_received(case.sent)
            got += handler.data_received(b"")
            handler.connection_lost()
            assert matches(case.reply, got), (case.name, got[:200])
    finally:
        smtp.close()
    assert 'warning: bogus cache type "bogus" in "lookup" request' in log.lines
    assert 'warning: bogus seed length "0" in "seed" request' in log.lines
    assert "warning: invalid session ticket key name length: 3" in log.lines


def test_cases_over_a_socket(folder):
    path = os.path.join(folder, "tlsmgr")
    proc = tlsmgr_server.start(folder)
    try:
        for case in CASES:
            got = exchange(path, case.sent)
            assert matches(case.reply, got), (case.name, got[:200])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
