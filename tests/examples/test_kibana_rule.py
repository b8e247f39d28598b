"""The Kibana rule that promotes eqlstream's alerts to the Security app (examples/kibana).

No Kibana runs here, so the rule is checked three ways: against what Kibana's rule import API
accepts (``kibana-query-rule-import.schema.json``, transcribed from Kibana's rule schemas; it also
refuses keys Kibana would silently drop), against the alert documents eqlstream really writes
(replayed: the query selects exactly one document per match, the shell, and the overrides find
their values in it the way Kibana looks them up), and against the index template and the shippers
(every field it reads is mapped with the type it declares, its index pattern covers the index the
alerts are loaded into).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from fnmatch import fnmatch
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app.load_alerts import DEFAULT_INDEX
from app.settings import ServiceSettings
from tests.examples.conftest import EXAMPLES, ROOT

RULE_FILE = EXAMPLES / "kibana" / "eqlstream-alerts.rule.ndjson"
SCHEMA = json.loads((ROOT / "tests" / "examples" / "kibana-query-rule-import.schema.json").read_text())
ALERT_SCHEMA = json.loads((ROOT / "schemas" / "alert.schema.json").read_text())
TEMPLATE = json.loads((EXAMPLES / "elasticsearch" / "eqlstream-alerts.index-template.json").read_text())
PIPELINE = json.loads((EXAMPLES / "elasticsearch" / "eqlstream-alerts.ingest-pipeline.json").read_text())
LOGSTASH_ALERTS = (EXAMPLES / "logstash" / "eqlstream-alerts.conf").read_text()


def rules() -> list[dict[str, Any]]:
    return [json.loads(line) for line in RULE_FILE.read_text().splitlines() if line.strip()]


RULE = rules()[0]


def schema_errors(rule: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(rule)]


def kibana_get(source: dict[str, Any], path: str) -> Any:
    """A field of a source document as Kibana's overrides read it (lodash ``get``): a key spelt
    exactly like the path first (alerts-as-data documents have dotted top-level keys), else the
    nested objects along it."""
    if path in source:
        return source[path]
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def kql_matches(query: str, doc: dict[str, Any]) -> bool:
    """The rule's KQL on one document, for the only form it uses: ``[not ]field: value|*`` clauses
    joined by ``and`` (anything else fails here, so a new form gets a deliberate evaluator)."""
    results = []
    for clause in query.split(" and "):
        match = re.fullmatch(r"(not )?([\w.@]+): (\*|[\w.-]+)", clause.strip())
        assert match, f"the KQL evaluator of this test does not know {clause!r}"
        negated, field, value = match.groups()
        found = kibana_get(doc, field)
        hit = found is not None if value == "*" else str(found) == value
        results.append(hit != bool(negated))
    return all(results)


def mapping_type(path: str) -> str | None:
    node: dict[str, Any] = TEMPLATE["template"]["mappings"]
    for part in path.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node.get("type")


def fields_read(rule: dict[str, Any]) -> set[str]:
    """Every field of the source documents the rule reads: its query, overrides and time."""
    fields = set(re.findall(r"([\w.@]+):", rule["query"]))
    fields |= {rule["rule_name_override"], rule["timestamp_override"]}
    fields |= {item["field"] for item in rule["severity_mapping"] + rule["risk_score_mapping"]}
    return fields


def shells(alerts: list[bytes]) -> Iterator[dict[str, Any]]:
    for line in alerts:
        doc = json.loads(line)
        if doc["kibana.alert.depth"] == 2:
            yield doc


# -- the import format -----------------------------------------------------------------------


def test_the_file_is_one_rule_per_line_as_the_import_api_reads_it() -> None:
    text = RULE_FILE.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert len(text.splitlines()) == len(rules()) == 1, "one rule object per line, nothing else"


def test_the_rule_is_a_query_rule_kibanas_import_api_accepts() -> None:
    assert schema_errors(RULE) == []
    assert RULE["type"] == "query" and RULE["language"] == "kuery"


@pytest.mark.parametrize(
    ("change", "refused_at"),
    [
        ({"rule_name_overide": "kibana.alert.rule.name"}, "Additional properties"),
        ({"severity": "High"}, "severity"),
        ({"risk_score": 101}, "risk_score"),
        ({"version": None}, "version"),
        ({"rule_id": None}, "rule_id"),
        ({"language": "eql"}, "language"),
        ({"from": "5m"}, "from"),
        ({"severity_mapping": [{"field": "kibana.alert.severity", "value": "low", "severity": "low"}]}, "operator"),
        ({"required_fields": [{"name": "kibana.alert.depth"}]}, "required_fields/0"),
        ({"timeline_id": "abc"}, "timeline_title"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else value,
)
def test_the_import_schema_refuses_mistakes(change: dict[str, Any], refused_at: str) -> None:
    """Each change is a mistake Kibana refuses on import, or (a misspelt key) silently ignores."""
    rule = copy.deepcopy(RULE)
    for key, value in change.items():
        if value is None:
            del rule[key]
        else:
            rule[key] = value
    errors = schema_errors(rule)
    assert errors and any(refused_at in error for error in errors), errors


def test_the_rule_id_is_a_stable_uuid_and_the_rule_starts_disabled() -> None:
    """A fixed rule_id makes a second import (with ?overwrite=true) update the rule instead of
    adding a twin; disabled, so that nothing runs before the index, pipeline and Logstash exist."""
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", RULE["rule_id"])
    assert RULE["enabled"] is False


def test_the_look_back_overlaps_the_schedule() -> None:
    """Kibana's runs are not exactly on time: each run must reach back further than its interval
    (the overlap is deduplicated by Kibana, a gap would lose alerts)."""
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    interval = int(RULE["interval"][:-1]) * seconds[RULE["interval"][-1]]
    look_back = int(RULE["from"][len("now-") : -1]) * seconds[RULE["from"][-1]]
    assert look_back >= 2 * interval


# -- against the alert documents -------------------------------------------------------------


def test_the_query_selects_one_document_per_match_the_shell(
    demo_alerts: list[bytes], fleet_alerts: list[bytes]
) -> None:
    docs = [json.loads(line) for line in demo_alerts + fleet_alerts]
    selected = [doc for doc in docs if kql_matches(RULE["query"], doc)]
    groups = {doc["kibana.alert.group.id"] for doc in docs}
    assert len(selected) == len(groups) > 2
    assert all(doc["kibana.alert.uuid"] == doc["kibana.alert.group.id"] for doc in selected)
    assert not any(kql_matches(RULE["query"], doc) for doc in docs if "kibana.alert.building_block_type" in doc)


def test_a_shell_of_a_building_block_rule_stays_out(demo_alerts: list[bytes]) -> None:
    """eqlstream marks the shells of building-block rules as Kibana does; those stay hidden."""
    shell = next(shells(demo_alerts))
    assert kql_matches(RULE["query"], shell)
    assert not kql_matches(RULE["query"], {**shell, "kibana.alert.building_block_type": "default"})


def test_name_severity_and_risk_score_come_from_each_shell(demo_alerts: list[bytes], fleet_alerts: list[bytes]) -> None:
    for shell in shells(demo_alerts + fleet_alerts):
        name = kibana_get(shell, RULE["rule_name_override"])
        assert isinstance(name, str) and name == shell["kibana.alert.rule.name"]  # Kibana takes strings only
        (severity,) = [m["severity"] for m in RULE["severity_mapping"] if kibana_get(shell, m["field"]) == m["value"]]
        assert severity == shell["kibana.alert.severity"]
        (mapping,) = RULE["risk_score_mapping"]
        score = kibana_get(shell, mapping["field"])
        assert isinstance(score, (int, float)) and 0 <= score <= 100  # Kibana ignores anything else


def test_every_severity_eqlstream_writes_is_mapped_to_itself() -> None:
    written = ALERT_SCHEMA["properties"]["kibana.alert.severity"]["enum"]
    assert [(m["field"], m["value"], m["severity"]) for m in RULE["severity_mapping"]] == [
        ("kibana.alert.severity", severity, severity) for severity in written
    ]


# -- against the index template and the shippers ---------------------------------------------


def test_every_field_the_rule_reads_is_declared_and_mapped_with_that_type() -> None:
    declared = {field["name"]: field["type"] for field in RULE["required_fields"]}
    assert set(declared) == fields_read(RULE)
    assert {field: mapping_type(field) for field in declared} == declared


def test_the_schedule_field_is_stamped_by_the_template_pipeline() -> None:
    """event.ingested is when a document reached Elasticsearch: whatever delayed an alert (its
    sequence, Logstash), the next run after it arrives still finds it."""
    assert RULE["timestamp_override"] == "event.ingested"
    assert TEMPLATE["template"]["settings"]["index"]["final_pipeline"] == "eqlstream-alerts"
    (processor,) = PIPELINE["processors"]
    assert processor["set"]["field"] == RULE["timestamp_override"]


def test_the_index_pattern_covers_where_the_alerts_are_loaded() -> None:
    (logstash_index,) = re.findall(r'^\s*index => "([^"]+)"', LOGSTASH_ALERTS, flags=re.M)
    loaded = {ServiceSettings.model_fields["alerts_index"].default, DEFAULT_INDEX, logstash_index}
    assert loaded == {"eqlstream-alerts-default"}
    assert all(any(fnmatch(index, pattern) for pattern in RULE["index"]) for index in loaded)
    assert TEMPLATE["index_patterns"] == RULE["index"]
