"""The document of `minipostfix status --json`: its JSON Schema, and the check tests make.

SYNOPSIS
    from support.statusdoc import STATUS_SCHEMA, load_schema, validate

    validate(document)          # jsonschema.ValidationError naming the path

DESCRIPTION
    docs/status.schema.json is the published schema (draft 2020-12).
    validate() checks a document with jsonschema's validator for that
    draft, the one a consumer of the interface would use, after
    checking the schema itself against the draft's meta-schema.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

STATUS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "status.schema.json"


def load_schema() -> dict[str, Any]:
    return json.loads(STATUS_SCHEMA.read_text())


@functools.cache
def _validator() -> Draft202012Validator:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(document: Any) -> None:
    """jsonschema.ValidationError unless `document` is a valid status --json document."""
    _validator().validate(document)
