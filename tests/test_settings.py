"""Configuration lives in one place and the README documents all of it."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def documented_variables() -> set[str]:
    """EQLSTREAM_* names in the README's tables, with `_SUFFIX` shorthands expanded (`A_B` / `_C` -> A_C)."""
    names = set()
    for row in re.findall(r"^\| (`EQLSTREAM_[^|]+)\|", README, flags=re.MULTILINE):
        parts = re.findall(r"`([A-Z_]+)`", row)
        first = parts[0]
        names.add(first)
        for suffix in parts[1:]:
            stem = first.rsplit("_", suffix.count("_"))[0]
            names.add(stem + suffix)
    return names


def test_every_setting_is_documented_in_the_readme() -> None:
    variables = {f"EQLSTREAM_{name.upper()}" for name in Settings.model_fields}
    assert variables - documented_variables() == set()


def test_the_readme_documents_no_setting_that_does_not_exist() -> None:
    variables = {f"EQLSTREAM_{name.upper()}" for name in Settings.model_fields}
    assert documented_variables() - variables == set()
