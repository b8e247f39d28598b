"""Data-driven scenarios (tests/scenarios/*.toml): the product and the reference agree with the expected ids."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.detector import CandidateExtractor, SequenceStage
from app.rule import load_rules
from app.settings import Settings
from app.timeparse import format_timestamp
from tests.oracle import es_sequences

RULE = load_rules()[0]
T0 = 1_714_557_600 * 1_000_000_000
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
        event.setdefault("@timestamp", format_timestamp(T0 + round(event.pop("_at") * 1e9)))
        event.pop("_at", None)
    return event


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
    extractor = CandidateExtractor([RULE])
    stage = SequenceStage([RULE], Settings(**scenario.get("settings", {})))
    found = []
    for event in events:
        for candidate in extractor.candidates(event):
            found += [tuple(e.event_id for e in alert.match.events) for alert in stage.process(candidate, 0)]
    assert found == expected
    if scenario.get("elasticsearch", True):
        assert [ids for _, ids in es_sequences(RULE, events)] == expected
