"""The index template for alert documents: it maps what the alert schema promises, with fitting types.

The required fields and their types are read from ``schemas/alert.schema.json`` (the contract the
service's records are validated against), not from a list kept here; then real alert documents
(replayed from every source shape) are checked against the explicit mappings, value by value, as
Elasticsearch would parse them. The fields the Kibana promotion rule reads keep the types Kibana's
own alerts index gives them, and the template's final pipeline stamps the ingest time it runs on.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.examples.conftest import EXAMPLES, ROOT

TEMPLATE = json.loads((EXAMPLES / "elasticsearch" / "eqlstream-alerts.index-template.json").read_text())
PIPELINE = json.loads((EXAMPLES / "elasticsearch" / "eqlstream-alerts.ingest-pipeline.json").read_text())
SCHEMA = json.loads((ROOT / "schemas" / "alert.schema.json").read_text())
MAPPINGS = TEMPLATE["template"]["mappings"]

STRING_TYPES = {"keyword", "constant_keyword", "wildcard"}
INTEGER_TYPES = {"long", "integer", "short", "byte", "unsigned_long"}
NUMBER_TYPES = INTEGER_TYPES | {"float", "double", "half_float", "scaled_float"}
DATE_TYPES = {"date", "date_nanos"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target: Any = SCHEMA
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(target)


def _mapping(path: str) -> dict[str, Any] | None:
    """The field mapping at a dotted path (Elasticsearch reads dots in names as object levels)."""
    node: dict[str, Any] = MAPPINGS
    for part in path.split("."):
        if node.get("type") == "flattened":
            return node
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


def _accepted_types(schema: dict[str, Any]) -> set[str]:
    """Elasticsearch field types that hold a JSON Schema scalar without losing what it means."""
    if schema.get("$ref", "").endswith("/date") or _resolve(schema) is SCHEMA["$defs"]["date"]:
        return DATE_TYPES
    schema = _resolve(schema)
    values = schema.get("enum", [schema["const"]] if "const" in schema else [])
    kind = schema.get("type") or ("integer" if values and all(isinstance(v, int) for v in values) else "string")
    if kind == "integer":
        return NUMBER_TYPES
    assert kind == "string", schema
    return STRING_TYPES


def _schema_fields(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(dotted path, scalar schema, is required) for every field the schema declares, at any depth."""
    schema = _resolve(schema)
    if schema.get("type") == "array":
        yield from _schema_fields(schema["items"], path)
        return
    if schema.get("type") == "object":
        required = set(schema.get("required", []))
        for name, sub in schema.get("properties", {}).items():
            for field_path, leaf, is_required in _schema_fields(sub, f"{path}.{name}" if path else name):
                yield field_path, leaf, is_required and name in required
        return
    yield path, schema, True


SCHEMA_FIELDS = list(_schema_fields(SCHEMA))


def test_the_schema_walk_covers_every_required_field() -> None:
    top_level = {path.split(".")[0] if not path.startswith("kibana.") else path for path, _, _ in SCHEMA_FIELDS}
    for name in SCHEMA["required"]:
        assert name in top_level or any(path.startswith(name + ".") for path, _, _ in SCHEMA_FIELDS), name
    assert len(SCHEMA_FIELDS) > 30


@pytest.mark.parametrize(("path", "schema", "required"), SCHEMA_FIELDS, ids=[p for p, _, _ in SCHEMA_FIELDS])
def test_every_schema_field_is_mapped_with_a_compatible_type(path: str, schema: dict, required: bool) -> None:
    mapping = _mapping(path)
    assert mapping is not None, f"{path} is not mapped"
    if mapping.get("type") == "flattened":
        return  # holds any JSON below it; rule parameters are mapped this way, as Kibana does
    assert mapping.get("type") in _accepted_types(schema), f"{path}: {mapping} for {schema}"


def test_template_is_composable_and_keeps_the_rest_of_the_event() -> None:
    assert TEMPLATE["index_patterns"] == ["eqlstream-alerts-*"]
    assert set(TEMPLATE) <= {"index_patterns", "priority", "template", "composed_of", "_meta", "data_stream", "version"}
    assert MAPPINGS.get("dynamic", True) is True  # every source field of the event copy is kept and searchable
    assert MAPPINGS["date_detection"] is False  # raw Sysmon strings like UtcTime must not turn a field into a date
    (rule,) = MAPPINGS["dynamic_templates"]
    assert rule["strings_as_keyword"]["mapping"]["type"] == "keyword"


def test_ecs_fields_the_rule_and_analysts_use_have_their_ecs_types() -> None:
    expected = {
        "source.ip": "ip",
        "destination.ip": "ip",
        "host.ip": "ip",
        "source.port": "long",
        "destination.port": "long",
        "process.pid": "long",
        "host.id": "keyword",
        "process.entity_id": "keyword",
        "process.name": "keyword",
        "event.created": "date",
        "kibana.alert.original_time": "date",
    }
    assert {path: _mapping(path)["type"] for path in expected} == expected


def test_the_fields_kibana_reads_have_the_types_of_kibanas_alerts_index() -> None:
    """The promotion rule filters, overrides and schedules on these (examples/kibana): a keyword
    severity and rule name (matched and copied as strings), numeric depth and risk score, dates."""
    expected = {
        "@timestamp": "date",
        "event.ingested": "date",
        "kibana.alert.uuid": "keyword",
        "kibana.alert.depth": "long",
        "kibana.alert.building_block_type": "keyword",
        "kibana.alert.group.id": "keyword",
        "kibana.alert.severity": "keyword",
        "kibana.alert.risk_score": "float",
        "kibana.alert.rule.name": "keyword",
        "kibana.alert.original_time": "date",
        "kibana.alert.ancestors.id": "keyword",
        "kibana.alert.ancestors.index": "keyword",
    }
    assert {path: _mapping(path)["type"] for path in expected} == expected


def test_every_document_gets_its_ingest_time_from_the_final_pipeline(
    demo_alerts: list[bytes], fleet_alerts: list[bytes]
) -> None:
    """The template runs the pipeline on every document however it is sent (Logstash, load-alerts),
    and its one processor cannot fail on an alert: ``event`` is always an object to set into."""
    settings = TEMPLATE["template"]["settings"]["index"]
    assert settings["final_pipeline"] == "eqlstream-alerts"
    (processor,) = PIPELINE["processors"]
    assert processor == {
        "set": {"tag": "event-ingested", "field": "event.ingested", "value": "{{{_ingest.timestamp}}}"}
    }
    for line in demo_alerts + fleet_alerts:
        assert isinstance(json.loads(line)["event"], dict)
    readme = (EXAMPLES / "elasticsearch" / "README.md").read_text()
    assert f"$ES/_ingest/pipeline/{settings['final_pipeline']}" in readme
    assert readme.index("$ES/_ingest/pipeline/") < readme.index("$ES/_index_template/"), "the pipeline goes first"


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, sub in value.items():
            yield from _leaves(sub, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, path)
    else:
        yield path, value


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def _fits(mapping_type: str, value: Any) -> bool:
    """Whether Elasticsearch would index the value into a field of that type."""
    if mapping_type in STRING_TYPES | {"match_only_text", "text"}:
        return isinstance(value, (str, int, float, bool))
    if mapping_type in INTEGER_TYPES:
        return isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
    if mapping_type in NUMBER_TYPES:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if mapping_type == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    if mapping_type in DATE_TYPES:
        if not (isinstance(value, str) and _DATE.match(value)):
            return False
        datetime.datetime.fromisoformat(value[:19])
        return True
    if mapping_type == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    return False


def test_replayed_alerts_of_every_source_fit_the_explicit_mappings(
    demo_alerts: list[bytes], fleet_alerts: list[bytes]
) -> None:
    """No alert the service writes would be rejected (or silently lose a field) under the template."""
    agents = set()
    checked = 0
    for line in demo_alerts + fleet_alerts:
        doc = json.loads(line)
        agents.add((doc.get("agent", {}).get("type"), doc.get("agent", {}).get("version", "")[:1]))
        for path, value in _leaves(doc, ""):
            mapping = _mapping(path)
            if mapping is None:
                assert isinstance(value, (str, int, float, bool)), path  # dynamic: strings become keyword
                continue
            if mapping.get("type") == "flattened":
                continue
            assert "type" in mapping, f"{path}: an object is mapped where the alert has {value!r}"
            assert _fits(mapping["type"], value), f"{path}: {value!r} does not fit {mapping['type']}"
            checked += 1
    assert {("endpoint", "8"), ("winlogbeat", "7"), ("winlogbeat", "8")} <= agents
    assert checked > 1000
