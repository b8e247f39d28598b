"""The JSON Schemas of schemas/ (2020-12) as validators, for tests that check what eqlstream writes.

``ALERT`` validates an alert document, ``CANDIDATE`` the fields of a candidates-topic line (the
JSON before its tab), ``DEAD_LETTER`` the headers of a dead letter (as ``header_map`` gives them),
``INPUT`` an input event after normalization.
"""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator, FormatChecker

from tests.support.paths import ROOT


def validator(name: str) -> Draft202012Validator:
    """A validator of ``schemas/<name>``, after checking the schema itself."""
    schema = json.loads((ROOT / "schemas" / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


ALERT = validator("alert.schema.json")
CANDIDATE = validator("candidate.schema.json")
DEAD_LETTER = validator("dead-letter.schema.json")
INPUT = validator("input-fields.schema.json")
