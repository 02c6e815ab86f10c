"""Shared fixtures and marker handling.

Markers (registered in setup.cfg, --strict-markers):
    root     skipped unless running as uid 0
    postfix  skipped unless Debian's postfix package is installed
    haproxy  skipped unless Debian's haproxy package is installed
    slow     runs anyway; lets `-m "not slow"` give a quick pass

Fixtures:
    folder   a world-searchable (0755) temporary folder under /tmp, removed after
    maillog  master.log lines sent to a file; returns a function that reads it

This folder is on sys.path (pytest's prepend import mode), so tests import
the shared helpers of tests/common.py as `common`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from master import log

POSTFIX_SBIN = "/usr/lib/postfix/sbin"


def postfix_installed() -> bool:
    return shutil.which("postconf") is not None and os.path.isdir(POSTFIX_SBIN)


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root (chroot/setuid checks)")
    skip_postfix = pytest.mark.skip(reason="Debian's postfix package is not installed")
    skip_haproxy = pytest.mark.skip(reason="Debian's haproxy package is not installed")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "postfix" in item.keywords and not postfix_installed():
            item.add_marker(skip_postfix)
        if "haproxy" in item.keywords and shutil.which("haproxy") is None:
            item.add_marker(skip_haproxy)


@pytest.fixture
def folder():
    path = tempfile.mkdtemp(dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def maillog(tmp_path):
    """Send master.log lines to a file; returns a function that reads it."""
    path = tmp_path / "maillog"
    log.log_init("tlsmgr", maillog_file=str(path))
    yield lambda: path.read_text() if path.exists() else ""
    log.log_init("pytest", maillog_file="/dev/stderr")
