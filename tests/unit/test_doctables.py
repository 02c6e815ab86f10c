"""Tables in docs/ that mirror code or data match their source (support.doctables).

When one fails, `.venv/bin/python -m support.doctables` rewrites the tables from
their sources; the diff then shows what changed.
"""

from __future__ import annotations

import pytest

from support.doctables import TABLES, current, expected


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_generated_table_matches_its_source(table):
    assert current(table) == expected(table), (
        f"{table.doc}: the {table.name} table is out of date; "
        "run .venv/bin/python -m support.doctables"
    )
