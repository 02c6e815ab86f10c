"""Tables in docs/ that mirror code or data, made from their source; rewrites them on demand.

SYNOPSIS
    from support.doctables import TABLES, expected, current, rewrite

    for table in TABLES:                  # DocTable(doc, name, render)
        assert current(table) == expected(table)

    .venv/bin/python -m support.doctables   # rewrite every table in docs/

DESCRIPTION
    A generated table sits in its document between two comment lines,
        <!-- BEGIN NAME: generated, see tests/support/doctables.py -->
        <!-- END NAME -->
    so that the prose around it stays hand-written.  current() is what
    the document holds there, expected() what the table's source gives
    now; rewrite() puts the latter in place.  tests/unit/test_doctables.py
    holds every table to its source.

    status-schema: the fields of `minipostfix status --json`, from
    docs/status.schema.json (schema_rows(): path, type, description, in
    the schema's order; `[]` marks array items, NAME and TYPE the keys of
    an object whose members are named by data).

    metrics: the metric families of the metrics service, from its
    definitions (tlsmgr.clients.metrics.METRICS: name, kind, labels,
    help), in their order.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.statusdoc import load_schema
from tlsmgr.clients.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DocTable:
    doc: Path
    name: str
    render: Callable[[], str]


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# The status --json schema ------------------------------------------------


def schema_rows(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, type, description) of every field, depth first in the schema's order."""
    return list(_walk(schema, schema, ""))


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _walk(schema: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[tuple[str, ...]]:
    node = _resolve(schema, node)
    for name, sub in node.get("properties", {}).items():
        yield from _field(schema, sub, f"{path}.{name}" if path else name)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        key = node.get("propertyNames", {}).get("title", "NAME")
        yield from _field(schema, extra, f"{path}.{key}")
    items = node.get("items")
    if isinstance(items, dict):
        yield from _walk(schema, items, f"{path}[]")


def _field(schema: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[tuple[str, ...]]:
    node = _resolve(schema, node)
    yield (f"`{path}`", _type_text(node), node.get("description", ""))
    yield from _walk(schema, node, path)


def _type_text(node: dict[str, Any]) -> str:
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return ", ".join(json.dumps(value) for value in node["enum"])
    kinds = node.get("type", "any")
    return " or ".join(kinds) if isinstance(kinds, list) else kinds


def status_schema_table() -> str:
    return markdown_table(("field", "type", "meaning"), schema_rows(load_schema()))


# The metrics service ------------------------------------------------------


def metrics_table() -> str:
    rows = [
        (f"`{d.name}`", d.kind, ", ".join(f"`{label}`" for label in d.labels), d.help)
        for d in METRICS
    ]
    return markdown_table(("metric", "type", "labels", "meaning"), rows)


# Tables in documents -----------------------------------------------------

OPERATING = ROOT / "docs" / "operating.md"
TABLES = (
    DocTable(OPERATING, "status-schema", status_schema_table),
    DocTable(OPERATING, "metrics", metrics_table),
)


def _markers(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN {re.escape(name)}: [^\n]*-->\n)(.*?)(<!-- END {re.escape(name)} -->)",
        re.DOTALL,
    )


def current(table: DocTable) -> str:
    """What the document holds between the table's markers; AssertionError without them."""
    found = _markers(table.name).search(table.doc.read_text())
    assert found, f"{table.doc}: no <!-- BEGIN {table.name}: ... --> ... <!-- END --> lines"
    return found.group(2)


def expected(table: DocTable) -> str:
    return table.render()


def rewrite(table: DocTable) -> bool:
    """Put expected() between the markers; True when the document changed."""
    current(table)
    text = table.doc.read_text()
    new = _markers(table.name).sub(lambda m: m.group(1) + expected(table) + m.group(3), text)
    if new != text:
        table.doc.write_text(new)
    return new != text


def main() -> int:
    for table in TABLES:
        if rewrite(table):
            print(f"rewrote {table.name} in {table.doc.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
