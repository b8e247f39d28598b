"""examples/README.md describes every example file, and its links lead somewhere."""

from __future__ import annotations

import re

from tests.examples.conftest import EXAMPLES


def test_every_example_file_is_listed_and_every_link_resolves() -> None:
    text = (EXAMPLES / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+)\)", text))
    files = {str(path.relative_to(EXAMPLES)) for path in EXAMPLES.rglob("*") if path.is_file()} - {"README.md"}
    assert files <= links, f"not described in examples/README.md: {sorted(files - links)}"
    assert all((EXAMPLES / link).is_file() for link in links), links
