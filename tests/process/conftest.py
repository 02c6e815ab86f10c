"""Fixtures of the process tests.

lab    a harness.Lab: instances and fake masters for the skeleton tests;
       every child is killed and reaped, every directory removed after.
"""

from __future__ import annotations

import harness
import pytest


@pytest.fixture
def lab():
    with harness.Lab() as lab:
        yield lab
