"""Shared fixtures and marker handling.

Markers (registered in setup.cfg, --strict-markers):
    root     skipped unless running as uid 0
    postfix  skipped unless Debian's postfix package is installed
    slow     runs anyway; lets `-m "not slow"` give a quick pass
"""

from __future__ import annotations

import os
import shutil

import pytest

POSTFIX_SBIN = "/usr/lib/postfix/sbin"


def postfix_installed() -> bool:
    return shutil.which("postconf") is not None and os.path.isdir(POSTFIX_SBIN)


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root (chroot/setuid checks)")
    skip_postfix = pytest.mark.skip(reason="Debian's postfix package is not installed")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "postfix" in item.keywords and not postfix_installed():
            item.add_marker(skip_postfix)
