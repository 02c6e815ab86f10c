"""Fixtures of the process tests.

lab    a support.lab.Lab: instances and fake masters for the skeleton tests;
       every child is killed and reaped, every directory removed after.
"""

from __future__ import annotations

import pytest

from support.lab import Lab


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab
