"""Sections of docs/ generated from the code they mirror: `make docs` writes them, tests check them.

SYNOPSIS
    .venv/bin/python -m support.docgen            # rewrite every generated section (make docs)
    .venv/bin/python -m support.docgen --check    # exit 1 and name each stale section

    from support.docgen import SECTIONS, regenerate, stale_sections
    regenerate(path, text) -> text with its generated sections rendered anew
    stale_sections() -> ["docs/configuration.md: params", ...]

DESCRIPTION
    A generated section is the text between two marker lines of a
    Markdown file:

        <!-- BEGIN GENERATED params: make docs writes this section -->
        ...
        <!-- END GENERATED params -->

    Everything between the markers belongs to the section's renderer and
    is replaced as a whole; the rest of the file is prose, written by hand.
    SECTIONS says which file holds which section:

    params      docs/configuration.md: a table per Param table, with name,
                type and bounds, default and meaning (Param.doc).  The
                tables are the master's MASTER_PARAMS (master/config.py)
                and every table of this distribution in the entry point
                group `minipostfix.params`, in entry point name order: the
                rows minipostconf knows.  A doc that starts with
                "minipostfix: " marks a name Postfix does not have.
    modules     docs/design.md: each module of master/, tlsmgr/ and
                tlsmgr/clients/ with the first line of its docstring.
    layering    docs/design.md: who may import whom, read from the tables
                of tests/unit/test_layering.py (PURE, OWNED_IMPORTS,
                OWNED_CALLS, EXCEPTIONS, ...).  The test module is parsed
                with ast, never imported (no module imports a test module),
                so its tables must stay literals.
    status-schema
                docs/operating.md: the fields of `minipostfix status
                --json`, from docs/status.schema.json (schema_rows(): path,
                type, description, depth first in the schema's order; `[]`
                marks array items, NAME and TYPE, from propertyNames' title,
                the members of an object named by data).
    metrics     docs/operating.md: the metrics service's families, from
                their definitions (tlsmgr.clients.metrics.METRICS: name,
                kind, labels, help), in their order.

DIAGNOSTICS
    ValueError naming the file when a section's markers are missing or
    out of order, when a Param row has no doc, or when a table of the
    layering test is not a literal.

SEE ALSO
    tests/unit/test_repository.py (fails when a committed section is
    stale), docs/design.md, docs/configuration.md
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points, packages_distributions
from pathlib import Path
from typing import Any

from master.builtin import builtin_defaults
from master.config import MASTER_PARAMS, Param
from master.postconf_names import PARAMS_GROUP
from support.statusdoc import load_schema
from tlsmgr.clients.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "minipostfix"
LAYERING_TEST = "tests/unit/test_layering.py"
OWN = "minipostfix: "


# Parameter tables ------------------------------------------------------------------


def param_tables() -> list[tuple[str, str, tuple[Param, ...]]]:
    """(who reads them, where they are defined, rows): the master's, then each daemon's."""
    tables = [
        ("the master and the child skeletons", "`MASTER_PARAMS`, master/config.py", MASTER_PARAMS)
    ]
    points = [p for p in entry_points(group=PARAMS_GROUP) if p.dist and p.dist.name == DISTRIBUTION]
    for point in sorted(points, key=lambda p: p.name):
        module, _, attr = point.value.partition(":")
        where = module.replace(".", "/") + ".py"
        rows = tuple(row for row in point.load() if isinstance(row, Param))
        tables.append((point.name, f"`{attr}`, {where}", rows))
    return tables


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(row: Param) -> str:
    if row.min is not None and row.max is not None:
        return f"{row.type} ({row.min} to {row.max})"
    if row.min is not None:
        return f"{row.type} (min {row.min})"
    if row.max is not None:
        return f"{row.type} (max {row.max})"
    return row.type


def _default(row: Param, computed: frozenset[str]) -> str:
    if row.name in computed:
        return "(computed)"
    return f"`{_cell(row.default)}`" if row.default else "(empty)"


def _meaning(row: Param, where: str) -> str:
    if not row.doc:
        raise ValueError(f"{where}: Param row {row.name} has no doc (its meaning in docs/)")
    doc = row.doc
    if doc.startswith(OWN):
        doc = "**minipostfix's own**: " + doc[len(OWN) :]
    return _cell(doc)


def render_params() -> str:
    computed = builtin_defaults().computed
    out: list[str] = []
    for who, where, rows in param_tables():
        out += [f"### Read by {who} ({where})", ""]
        out += ["| name | type | default | meaning |", "|---|---|---|---|"]
        for row in rows:
            cells = (f"`{row.name}`", _type(row), _default(row, computed), _meaning(row, where))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# Layering rules --------------------------------------------------------------------


_LAYERING_NEEDS = (
    "PURE",
    "PURE_PROJECT_IMPORTS",
    "IMPURE_STDLIB",
    "OWNED_CALLS",
    "OWNED_IMPORTS",
    "EXCEPTIONS",
    "CLIENT_SIDE_ALLOWED",
    "CLIENT_SIDE_EXTRA",
    "SMTPD_EXTRA_ALLOWED",
    "FACADES",
    "PATH_EXCEPTIONS",
)


def layering_tables(path: Path | None = None) -> dict[str, Any]:
    """The literal tables (UPPER_CASE names) of the layering test, by name."""
    path = path or ROOT / LAYERING_TEST
    tables: dict[str, Any] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not isinstance(target, ast.Name) or not target.id.isupper() or node.value is None:
            continue
        try:
            tables[target.id] = ast.literal_eval(node.value)
        except ValueError:
            if target.id in _LAYERING_NEEDS:
                raise ValueError(f"{LAYERING_TEST}: {target.id} is not a literal") from None
    missing = [name for name in _LAYERING_NEEDS if name not in tables]
    if missing:
        raise ValueError(f"{LAYERING_TEST}: no table {', '.join(missing)}")
    return tables


def _code(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in sorted(names))


def _owners(value: str | Iterable[str]) -> list[str]:
    """An owner table's value: one module, or several (a second owner)."""
    return [value] if isinstance(value, str) else sorted(value)


def _import_label(name: str, dists: Mapping[str, list[str]]) -> str:
    dist = dists.get(name, [name])[0]
    return f"`import {name}` ({dist})" if dist.lower() != name.lower() else f"`import {name}`"


def render_layering() -> str:
    t = layering_tables()
    dists = packages_distributions()
    owned: dict[str, list[tuple[str, str]]] = {}  # module -> [(name, label)]
    for name, owner in t["OWNED_IMPORTS"].items():
        for module in _owners(owner):
            owned.setdefault(module, []).append((name, _import_label(name, dists)))
    for call, owner in t["OWNED_CALLS"].items():
        for module in _owners(owner):
            owned.setdefault(module, []).append((call, f"`{call}`"))
    out = [
        "**Pure core.** " + _code(t["PURE"]) + " (each says so in its docstring: "
        '"No sockets, no clock"). They import no third-party module, of the standard '
        "library all but "
        + _code(t["IMPURE_STDLIB"])
        + ", and of the project only "
        + _code(t["PURE_PROJECT_IMPORTS"])
        + ".",
        "",
        "**Single owners.** Each of these is used in one module only:",
        "",
        "| module | the only user of |",
        "|---|---|",
    ]
    for module in sorted(owned):
        labels = [label for _name, label in sorted(owned[module])]
        out.append(f"| `{module}` | {', '.join(labels)} |")
    out += _reasons(
        "**Exceptions**, each with its reason:",
        ("module", "may also use"),
        t["EXCEPTIONS"],
    )
    extra = {
        (module, ", ".join(f"`{m}`" for m in sorted(modules))): reason
        for module, (modules, reason) in t["CLIENT_SIDE_EXTRA"].items()
    }
    out += [
        "",
        "**The client side** (`tlsmgr/client.py`, `tlsmgr/clients/`) imports of the project only "
        + _code(t["CLIENT_SIDE_ALLOWED"])
        + "; the smtpd test server (`tlsmgr/clients/smtpd.py`) may also import "
        + _code(f"{name}.*" for name in t["SMTPD_EXTRA_ALLOWED"])
        + ".",
    ]
    out += _reasons("Besides:", ("module", "may also import"), extra, code=False)
    facades = {(module, ""): reason for module, reason in t["FACADES"].items()}
    if facades:
        out += _reasons("**Facades** (may pass on other modules' names):", ("module", ""), facades)
    else:
        out += ["", "**Facades** (modules that pass on other modules' names): none."]
    out += _reasons(
        "**Import path edits** under tests/ and bench/, each with its reason (no others):",
        ("file", "edit"),
        t["PATH_EXCEPTIONS"],
    )
    return "\n".join(out) + "\n"


def _reasons(
    title: str,
    heads: tuple[str, str],
    rows: Mapping[tuple[str, str], str],
    *,
    code: bool = True,
) -> list[str]:
    out = ["", title, "", f"| {heads[0]} | {heads[1]} | because |", "|---|---|---|"]
    for (module, what), reason in sorted(rows.items()):
        what = f"`{what}`" if code and what else what
        out.append(f"| `{module}` | {what} | {_cell(reason)} |")
    return out


# The module map --------------------------------------------------------------------

PACKAGES = ("master", "tlsmgr", "tlsmgr/clients")


def render_modules() -> str:
    """Per package, each module with the first line of its docstring."""
    out: list[str] = []
    for package in PACKAGES:
        folder = ROOT / package
        out += [f"**{package}/**: {_summary(folder / '__init__.py')}", ""]
        out += ["| module | what |", "|---|---|"]
        for path in sorted(folder.glob("*.py")):
            if path.name != "__init__.py":
                out.append(f"| `{path.name}` | {_cell(_summary(path))} |")
        out.append("")
    return "\n".join(out)


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(), str(path))) or ""
    return doc.split("\n", 1)[0].strip()


# The status --json schema ----------------------------------------------------------


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
    yield (f"`{path}`", _schema_type(node), node.get("description", ""))
    yield from _walk(schema, node, path)


def _schema_type(node: dict[str, Any]) -> str:
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return ", ".join(json.dumps(value) for value in node["enum"])
    kinds = node.get("type", "any")
    return " or ".join(kinds) if isinstance(kinds, list) else kinds


def _table(heads: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    out += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def render_status_schema() -> str:
    return _table(("field", "type", "meaning"), schema_rows(load_schema()))


# The metrics service ---------------------------------------------------------------


def render_metrics() -> str:
    rows = (
        (f"`{d.name}`", d.kind, ", ".join(f"`{label}`" for label in d.labels), d.help)
        for d in METRICS
    )
    return _table(("metric", "type", "labels", "meaning"), rows)


# Sections --------------------------------------------------------------------------

SECTIONS: dict[str, dict[str, Callable[[], str]]] = {
    "docs/configuration.md": {"params": render_params},
    "docs/design.md": {"layering": render_layering, "modules": render_modules},
    "docs/operating.md": {"status-schema": render_status_schema, "metrics": render_metrics},
}


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN GENERATED {name}: make docs writes this section -->",
        f"<!-- END GENERATED {name} -->",
    )


def regenerate(path: str, text: str) -> str:
    """`text` (the file at `path`, relative to the checkout) with its sections rendered anew."""
    for name, render in SECTIONS[path].items():
        match = _section(path, text, name)
        text = text[: match.start(1)] + _rendered(render) + text[match.end(1) :]
    return text


def stale_sections() -> list[str]:
    """`file: section` for each committed section that differs from its rendering."""
    return [
        f"{path}: {name}"
        for path, sections in SECTIONS.items()
        for name, render in sections.items()
        if _section(path, (ROOT / path).read_text(), name).group(1) != _rendered(render)
    ]


def _section(path: str, text: str, name: str) -> re.Match[str]:
    begin, end = _markers(name)
    match = re.search(rf"^{re.escape(begin)}\n(.*?)^{re.escape(end)}$", text, re.M | re.S)
    if match is None:
        raise ValueError(f"{path}: no section {name} (lines {begin!r} ... {end!r})")
    return match


def _rendered(render: Callable[[], str]) -> str:
    """A section's text: the rendering, then one blank line before the end marker."""
    return render().rstrip("\n") + "\n\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.docgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report stale sections, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_sections()
        for item in stale:
            print(f"stale generated section: {item} (run `make docs`)", file=sys.stderr)
        return 1 if stale else 0
    for path in SECTIONS:
        file = ROOT / path
        text = file.read_text()
        new = regenerate(path, text)
        if new != text:
            file.write_text(new)
            print(f"docgen: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
