"""Shared fixtures and marker handling.

Markers (registered in setup.cfg, --strict-markers):
    root     skipped unless running as uid 0
    postfix  skipped unless Debian's postfix package is installed
    haproxy  skipped unless Debian's haproxy package is installed
    redis    skipped unless Debian's redis-server package is installed
    slow     runs anyway; lets `-m "not slow"` give a quick pass

Fixtures:
    folder   a world-searchable (0755) temporary folder under /tmp, removed after
    maillog  master.log lines sent to a file; returns a function that reads it
    tmpfs    mount(size) -> a folder on a fresh tmpfs of that size ("2m"), to fill a
             file system for real; root only (skipped otherwise), unmounted after

Shared helpers are in tests/support, imported as `support` (setup.cfg's pythonpath).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from master import log
from support import postfix, redis_server
from support.disks import mount_tmpfs, unmount


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root (chroot/setuid checks)")
    skip_postfix = pytest.mark.skip(reason="Debian's postfix package is not installed")
    skip_haproxy = pytest.mark.skip(reason="Debian's haproxy package is not installed")
    skip_redis = pytest.mark.skip(reason="Debian's redis-server package is not installed")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "postfix" in item.keywords and not postfix.installed():
            item.add_marker(skip_postfix)
        if "haproxy" in item.keywords and shutil.which("haproxy") is None:
            item.add_marker(skip_haproxy)
        if "redis" in item.keywords and not redis_server.installed():
            item.add_marker(skip_redis)


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


@pytest.fixture
def tmpfs():
    """mount(size) -> a folder on a new tmpfs of that size; unmounted and removed after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[str] = []

    def mount(size: str) -> str:
        path, why = mount_tmpfs(size)
        if path is None:
            pytest.skip(f"cannot mount a tmpfs: {why}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        unmount(path)
