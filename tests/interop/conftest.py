"""The interop tests share the process tests' instances and the wire cases.

tests/process (instance.py, test_master_helpers.py) and tests/wire (cases.py)
go on sys.path here, before pytest imports the test modules of this folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for _folder in ("process", "wire"):
    if str(TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(TESTS / _folder))
