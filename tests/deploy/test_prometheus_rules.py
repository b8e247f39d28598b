"""The alerting rules: promtool accepts them and their unit tests pass, they read only metrics
the service exports, and the chart's PrometheusRule carries exactly these rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from app.core.model import RejectReason
from tests.deploy.helpers import CHART, CI_VALUES, Rendered, load_yaml, run, tool
from tests.deploy.service_metrics import exported_metrics, series_names, unknown_labels

RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("prometheus-rules.test.yaml")


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


def test_rules_read_only_exported_metrics_labels_and_reasons() -> None:
    """A renamed metric, label or rejection reason would leave an alert that can never fire."""
    exported = series_names(exported_metrics())
    reasons = {reason.value for reason in RejectReason}
    for rule in alerting_rules():
        for name in re.findall(r"\beqlstream_[a-z_]+\b", rule["expr"]):
            assert name in exported, f"{rule['alert']} reads {name}, which the service does not export"
        for reason in re.findall(r'reason="([^"]+)"', rule["expr"]):
            assert reason in reasons, f"{rule['alert']} reads the rejection reason {reason}, which does not exist"
        assert not unknown_labels(rule["expr"]), f"{rule['alert']} reads labels {unknown_labels(rule['expr'])}"


def test_unit_tests_feed_only_exported_series() -> None:
    """A unit test on a series the service never exports proves nothing about production."""
    exported = series_names(exported_metrics())
    fed = set(re.findall(r"series: '(eqlstream_[a-z_]+)\{", RULE_TESTS.read_text()))
    assert fed and fed <= exported.keys(), fed - exported.keys()


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
