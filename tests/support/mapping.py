"""What a normalizer changed in an event: the shared checks of the mapping tests (tests/unit/core/normalize)."""

from __future__ import annotations

import copy
from typing import Any

from app.core.normalize import normalize

_MISSING = object()


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if type(value) is dict and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def mapped_changes(doc: dict[str, Any]) -> dict[str, Any]:
    """Normalize ``doc``; check it was left intact and lost nothing; return what changed."""
    before = copy.deepcopy(doc)
    out = normalize(doc)
    assert doc == before, "the input was modified"
    assert out is not doc
    flat_in, flat_out = flatten(before), flatten(out)
    assert flat_in.keys() <= flat_out.keys(), f"fields lost: {sorted(flat_in.keys() - flat_out.keys())}"
    return {path: value for path, value in flat_out.items() if flat_in.get(path, _MISSING) != value}
