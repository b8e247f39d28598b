"""Data-driven scenarios (tests/conformance/scenarios/*.toml): the product and the oracle agree with the expected ids.

Each scenario lists events in arrival order and the sequences Elasticsearch returns, as pairs of
``event.id``; the product (``tests.support.detection.detect``) must give exactly those, in that
order, and so must the oracle (``tests.support.oracle``) unless the scenario is an opt-in departure
from Elasticsearch (``elasticsearch = false``).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.timeparse import format_timestamp
from app.settings import DetectionSettings
from tests.support import oracle
from tests.support.detection import RULE, T0, detect

TEMPLATES: dict[str, dict[str, Any]] = {
    "start": {
        "event": {"category": ["process"], "type": ["start"], "action": "start"},
        "host": {"id": "h1", "name": "ws-01"},
        "process": {"name": "mshta.exe", "entity_id": "e1", "args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"]},
    },
    "inbound": {
        "event": {"category": ["network"], "type": ["start"], "action": "connection_accepted"},
        "host": {"id": "h1", "name": "ws-01"},
        "process": {"name": "mshta.exe", "entity_id": "e1"},
        "network": {"direction": "ingress", "transport": "tcp"},
        "source": {"ip": "10.0.0.5", "address": "10.0.0.5", "port": 50123},
        "destination": {"ip": "10.0.0.9", "port": 55683},
    },
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for name, value in override.items():
        if value is None:
            out.pop(name, None)
        elif isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = merge(out[name], value)
        else:
            out[name] = value
    return out


def build_event(line: str) -> dict[str, Any]:
    spec = orjson.loads(line)
    event = merge(TEMPLATES.get(spec.pop("_t", ""), {}), spec)
    if "_id" in event:
        event = merge(event, {"event": {"id": event.pop("_id")}})
    if "_at" in event:
        event.setdefault("@timestamp", format_timestamp(T0 + round(event.pop("_at") * 1000)))
        event.pop("_at", None)
    return event


def label(event: dict[str, Any]) -> str:
    return event.get("event", {}).get("id") or event["event.id"]


def load_scenarios() -> list[Any]:
    cases = []
    for path in sorted((Path(__file__).parent / "scenarios").glob("*.toml")):
        for scenario in tomllib.loads(path.read_text())["scenario"]:
            cases.append(pytest.param(scenario, id=f"{path.stem}: {scenario['name']}"))
    return cases


@pytest.mark.parametrize("scenario", load_scenarios())
def test_scenario(scenario: dict[str, Any]) -> None:
    events = [build_event(line) for line in scenario["events"].splitlines() if line.strip()]
    expected = [tuple(ids) for ids in scenario["expected"]]
    options = DetectionSettings(**scenario.get("settings", {})).detection_options()
    assert detect(events, [RULE], options).labels() == expected
    if scenario.get("elasticsearch", True):
        names = {oracle.identity(event): label(event) for event in events}
        found = [tuple(names[i] for i in seq.event_ids) for seq in oracle.es_sequences(RULE, events)]
        assert found == expected
