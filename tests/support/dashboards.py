"""The PromQL queries of the example Grafana dashboard (examples/grafana), for the observability test.

A copy of the two small helpers of tests/examples/test_grafana_dashboard.py (owned by the examples'
tests): test modules do not import one another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.support.paths import ROOT

DASHBOARD = ROOT / "examples" / "grafana" / "eqlstream-dashboard.json"


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels", []))


def expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def grafana_substituted(expr: str) -> str:
    """``expr`` with Grafana's variables replaced by what a plain Prometheus query accepts."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "6h")
        .replace("$job", ".*")
        .replace("$instance", ".*")
    )
