"""The repository explains itself, and the parts of docs/ that mirror code follow the code.

- No file cites a document the repository does not hold: a design note,
  a numbered issue or decision, a section of a specification kept
  elsewhere.  Each such place says the reason itself, in a line, and
  where it helps names the Postfix source file and function it follows.
- The generated sections of docs/ (support.docgen: the parameter tables
  of docs/configuration.md, the layering rules of docs/design.md, the
  status --json fields and the metric table of docs/operating.md) are
  what `make docs` writes from the code today.
"""

from __future__ import annotations

import re
from pathlib import Path

from master.config import MASTER_PARAMS
from master.postconf_names import daemon_params
from support.docgen import ROOT, SECTIONS, param_tables, regenerate, stale_sections

# What the check reads: the trees and files that make up the project.
CHECKED = ("master", "tlsmgr", "tests", "bench", "docs", "etc", ".ci")
CHECKED_FILES = ("README.md", "Makefile", "setup.cfg", "setup.py", "pyproject.toml", "ruff.toml")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache"}

# Citations of documents kept outside the repository.  Each word is written with a
# character class so that this file does not cite them itself.
# A citation may be broken across lines (and comment or docstring margins).
CITATION = re.compile(
    r"decision[s](\.md)?"
    r"|referenc[e]\s+(\#\s*)?[0-9]"
    r"|issu[e]\s+(\#\s*)?[0-9]"
    r"|(?-i:ARCHITECTUR[E])"  # the document's name; platform's architecture() is no citation
    r"|postfix-fact[s]"
    r"|postfix-3\.7-referenc[e]"
    r"|python-note[s]"
    r"|spawn-note[s]"
    r"|fleet-note[s]"
    r"|tlsmgr-probe-postfi[x]"
    r"|share[d]/"
    r"|the\s+team'[s]",
    re.IGNORECASE,
)


def _project_files() -> list[Path]:
    files = [ROOT / name for name in CHECKED_FILES if (ROOT / name).is_file()]
    for top in CHECKED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and not SKIPPED_DIRS & set(path.parts):
                files.append(path)
    return files


def test_no_file_cites_a_document_outside_the_repository():
    found = []
    for path in _project_files():
        text = path.read_bytes().decode("utf-8", errors="replace")
        for match in CITATION.finditer(text):
            lineno = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{lineno}: {' '.join(match.group().split())}")
    assert not found, (
        "write the reason itself (and the Postfix file and function) instead of citing:\n"
        + "\n".join(found)
    )


def test_generated_sections_of_docs_are_current():
    stale = stale_sections()
    assert not stale, "stale generated sections, run `make docs`: " + ", ".join(stale)


def test_regenerating_changes_only_the_generated_sections():
    for path in SECTIONS:
        text = (ROOT / path).read_text()
        outside = re.sub(r"<!-- BEGIN GENERATED.*?<!-- END GENERATED", "", text, flags=re.S)
        again = regenerate(path, text)
        assert re.sub(r"<!-- BEGIN GENERATED.*?<!-- END GENERATED", "", again, flags=re.S) == (
            outside
        )
        assert regenerate(path, again) == again


def test_the_parameter_tables_list_the_rows_minipostconf_knows():
    documented = [row.name for _who, _where, rows in param_tables() for row in rows]
    known = [row.name for row in (*MASTER_PARAMS, *daemon_params())]
    assert sorted(documented) == sorted(known)
