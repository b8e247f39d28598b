"""Fixtures of the deployment checks; the helpers that run the tools are in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.helpers import Rendered, render, values_args


@pytest.fixture(scope="session")
def rendered() -> Callable[[Path | None], Rendered]:
    """Render (cached per values file): ``rendered(path_or_None)``."""
    cache: dict[Path | None, Rendered] = {}

    def get(values_file: Path | None) -> Rendered:
        if values_file not in cache:
            cache[values_file] = render(*values_args(values_file))
        return cache[values_file]

    return get
