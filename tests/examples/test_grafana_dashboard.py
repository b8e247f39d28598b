"""The Grafana dashboard queries only metrics the service exports, and shows all of them.

The names come from the service's own registry (``tests.deploy.service_metrics``), so a renamed or
removed metric fails this test until the dashboard follows (and so does a new metric no panel
shows): a dashboard on a metric that no longer exists shows "no data", which reads as "all quiet".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.deploy.service_metrics import exported_metrics, series_names, unknown_labels
from tests.examples.conftest import EXAMPLES, ROOT

DASHBOARD = json.loads((EXAMPLES / "grafana" / "eqlstream-dashboard.json").read_text())
# Aggregations, functions and keywords the dashboard may use; anything else followed by "(" fails.
PROMQL_FUNCTIONS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "rate",
    "irate",
    "increase",
    "delta",
    "histogram_quantile",
    "time",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "clamp_min",
    "abs",
    "label_values",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset"}
STANDARD_PREFIXES = ("process_", "python_")  # prometheus_client's own collectors


def panels(items: list[dict]) -> Iterator[dict]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def expressions() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"]) for panel in panels(DASHBOARD["panels"]) for target in panel.get("targets", [])
    ]


def identifiers(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, function names) of a PromQL expression with Grafana variables."""
    bare = re.sub(r'"[^"]*"', '""', expr)  # label values, which may hold anything
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors ($__rate_interval, $__range)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", r"\1", bare)  # label lists
    functions = set(re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*\(", bare))
    functions |= set(re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s+(?:by|without)\b", bare))  # sum by (...) (...)
    words = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b", bare))
    return words - functions - PROMQL_KEYWORDS, functions - PROMQL_KEYWORDS


def test_every_query_uses_exported_metrics_and_known_functions() -> None:
    exported = series_names(exported_metrics())
    exprs = expressions()
    assert len(exprs) > 20
    for title, expr in exprs:
        metrics, functions = identifiers(expr)
        assert metrics, f"{title}: no metric in {expr}"
        for metric in metrics:
            assert metric in exported or metric.startswith(STANDARD_PREFIXES), f"{title}: unknown metric {metric}"
        assert functions <= PROMQL_FUNCTIONS, f"{title}: {functions - PROMQL_FUNCTIONS}"


def test_every_query_groups_and_filters_by_labels_its_metrics_have() -> None:
    """Grouping by a label a metric lacks gives one unlabelled line instead of the breakdown promised."""
    for title, expr in expressions():
        assert not unknown_labels(expr), f"{title}: {unknown_labels(expr)} in {expr}"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    exported = series_names(exported_metrics())
    shown = {exported[m] for _, expr in expressions() for m in identifiers(expr)[0] if m in exported}
    assert shown == set(exported_metrics())
    used = {m for _, expr in expressions() for m in identifiers(expr)[0]}
    assert "process_resident_memory_bytes" in used


def test_histograms_are_read_as_quantiles_of_summed_bucket_rates() -> None:
    histograms = {name for name, kind in exported_metrics().items() if kind == "histogram"}
    for title, expr in expressions():
        for name in histograms & {m.removesuffix("_bucket") for m in identifiers(expr)[0]}:
            assert re.search(rf"histogram_quantile\(0\.\d+, sum by \(le\b[^)]*\) \(rate\({name}_bucket\{{", expr), title


def test_counters_are_read_as_rates_or_increases() -> None:
    counters = {name for name, kind in exported_metrics().items() if kind == "counter"}
    for title, expr in expressions():
        for name in counters & identifiers(expr)[0]:
            assert re.search(rf"\b(rate|increase)\({name}\{{", expr), f"{title}: raw counter {name}"


def test_datasource_is_a_variable_and_no_uid_is_hard_coded() -> None:
    variables = {item["name"]: item for item in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert DASHBOARD["schemaVersion"] >= 36
    refs = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                refs.append(node["datasource"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(DASHBOARD["panels"])
    collect([v for v in DASHBOARD["templating"]["list"] if v["name"] != "datasource"])
    assert refs and all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs)
    assert "__inputs" not in DASHBOARD


def test_every_query_is_scoped_to_the_selected_job_and_instance() -> None:
    for title, expr in expressions():
        for selector in re.findall(r"\b(?:eqlstream|process)_[a-z_]+(\{[^}]*\})?", expr):
            assert selector == '{job=~"$job", instance=~"$instance"}', f"{title}: {expr}"


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    all_panels = list(panels(DASHBOARD["panels"]))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, panel["title"]
        cells |= area


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule, with Grafana's variables filled in."""
    promtool = shutil.which("promtool", path=f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    assert promtool, "promtool is missing: run `make tools`"
    rules = [
        {"record": f"eqlstream:dashboard_check:{index}", "expr": _grafana_substituted(expr)}
        for index, (_, expr) in enumerate(expressions())
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _grafana_substituted(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "6h")
        .replace("$job", ".*")
        .replace("$instance", ".*")
    )
