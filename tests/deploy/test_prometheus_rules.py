"""The alerting rules: promtool accepts them and their unit tests pass, they read only metrics
that docs/metrics.md defines, and the chart's PrometheusRule carries exactly these rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.deploy.helpers import CHART, CI_VALUES, REPO, Rendered, load_yaml, run, tool

RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def alerting_rules() -> list[dict]:
    (document,) = load_yaml(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = RULE_TESTS.read_text()
    for rule in alerting_rules():
        assert re.search(rf"alertname: {rule['alert']}\n\s+exp_alerts:\n\s+- exp_labels:", tests), rule["alert"]


def test_rules_read_only_documented_metrics() -> None:
    documented = set(re.findall(r"^\| `(eqlstream_[a-z_]+)`", (REPO / "docs" / "metrics.md").read_text(), re.M))
    assert documented, "docs/metrics.md lists no metric"
    for rule in alerting_rules():
        for name in re.findall(r"\beqlstream_[a-z_]+\b", rule["expr"]):
            base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.removesuffix(s) in documented), name)
            assert base in documented, f"{rule['alert']} reads {name}, which docs/metrics.md does not define"


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].keys() >= {"summary", "description"}, rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), f"{rule['alert']} must hold for minutes before it pages"


def test_chart_prometheus_rule_is_the_rules_file(rendered: Callable[[Path | None], Rendered]) -> None:
    (values_file,) = [path for path in CI_VALUES if path.stem == "monitoring-keda"]
    (rule,) = rendered(values_file).of_kind("PrometheusRule")
    (document,) = load_yaml(RULES.read_text())
    assert rule["spec"]["groups"] == document["groups"]
