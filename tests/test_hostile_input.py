"""Malformed, oversized, hostile or wrongly typed records: a reason, never an exception, nothing else lost."""

from __future__ import annotations

import copy
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.detector import CandidateExtractor, SequenceStage
from app.rule import load_rules
from app.settings import Settings

RULE = load_rules()[0]
START = {
    "@timestamp": "2024-05-01T10:00:00Z",
    "event": {"id": "start", "category": ["process"], "type": ["start"]},
    "host": {"id": "h1"},
    "process": {"name": "mshta.exe", "entity_id": "e1", "args": ["mshta.exe", "-Embedding"]},
}
INBOUND = {
    "@timestamp": "2024-05-01T10:00:30Z",
    "event": {"id": "inbound", "category": ["network"], "type": ["start"]},
    "host": {"id": "h1"},
    "process": {"name": "mshta.exe", "entity_id": "e1"},
    "network": {"direction": "ingress", "transport": "tcp"},
    "source": {"ip": "10.0.0.5", "port": 50000},
    "destination": {"ip": "10.0.0.9", "port": 50001},
}

HOSTILE = {
    "not json": b"mshta.exe is not json",
    "truncated": orjson.dumps(START)[:-5],
    "invalid utf-8": b'{"process": {"name": "mshta.exe\xff\xfe"}}',
    "array": b'["mshta.exe"]',
    "string": b'"mshta.exe"',
    "number": b"12345",
    "null": b"null",
    "nul bytes": b'{"process": {"name": "mshta.exe\x00"}}',
    "10 MB record": b'{"process": {"name": "mshta.exe", "args": "' + b"A" * 10_000_000 + b'"}}',
    "deep nesting": b'{"mshta.exe": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "million-element array": b'{"process": {"name": "mshta.exe", "args": [' + b"1," * 999_999 + b"1]}}",
    "duplicate keys": b'{"process": {"name": "mshta.exe", "name": "x"}, "process": 5}',
    "NaN literal": b'{"process": {"name": "mshta.exe"}, "source": {"port": NaN}}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_records_never_raise_and_attacks_around_them_are_found(name: str) -> None:
    extractor = CandidateExtractor([RULE])
    stage = SequenceStage([RULE], Settings())
    alerts = []
    for record in (orjson.dumps(START), HOSTILE[name], orjson.dumps(INBOUND)):
        candidates, _ = extractor.extract(record)
        for candidate in candidates:
            alerts += stage.process(candidate, 0)
    assert [tuple(e.event_id for e in a.match.events) for a in alerts] == [("start", "inbound")]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"mshta.exe is not json", "invalid_json"),
        (b'["mshta.exe"]', "not_an_object"),
        (b'{"process": {"name": "mshta.exe\xff"}}', "invalid_json"),
        (b'{"mshta.exe": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
    ],
)
def test_rejections_carry_a_reason_and_the_original_bytes(record: bytes, reason: str) -> None:
    extractor = CandidateExtractor([RULE])
    candidates, rejections = extractor.extract(record)
    assert candidates == []
    assert [(r.reason, r.raw) for r in rejections] == [(reason, record)]
    assert extractor.stats.rejected[reason] == 1


@pytest.mark.parametrize(
    "timestamp", ["0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "yesterday", None, {"a": 1}, [1, 2], True, 1e300]
)
def test_absurd_timestamps_on_candidates_are_rejected(timestamp: object) -> None:
    doc = {**START, "@timestamp": timestamp}
    extractor = CandidateExtractor([RULE])
    candidates, rejections = extractor.extract(orjson.dumps(doc))
    assert candidates == []
    assert [r.reason for r in rejections] == ["invalid_timestamp"]


WRONG_TYPES = [{"a": 1}, [{"a": 1}], True, False, 2**64, -(2**70), 1.5e308, "", "x" * 5000, None, []]


@pytest.mark.parametrize(
    "field",
    [
        "process.name",
        "process.args",
        "event.type",
        "event.category",
        "host.id",
        "process.entity_id",
        "source.port",
        "destination.port",
        "source.address",
        "network.direction",
        "network.transport",
        "source.ip",
    ],
)
@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_every_field_the_rule_reads_with_a_wrong_type_never_raises(field: str, value: object) -> None:
    for template in (START, INBOUND):
        doc = copy.deepcopy(template)
        node = doc
        *parents, leaf = field.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        extractor = CandidateExtractor([RULE])
        candidates, _ = extractor.extract(json.dumps(doc).encode())  # json: orjson refuses ints beyond 64 bits
        stage = SequenceStage([RULE], Settings())
        for candidate in candidates:
            stage.process(candidate, 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(record: bytes) -> None:
    CandidateExtractor([RULE]).extract(record + b"mshta.exe")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([START, INBOUND]),
    st.dictionaries(
        st.sampled_from(
            ["process", "event", "host", "source", "destination", "network", "@timestamp", "process.name", "winlog"]
        ),
        json_values,
        max_size=3,
    ),
)
def test_candidates_with_garbage_fields_never_raise(template: dict, garbage: dict) -> None:
    doc = {**template, **garbage}
    extractor = CandidateExtractor([RULE])
    stage = SequenceStage([RULE], Settings())
    candidates, _ = extractor.extract(json.dumps(doc).encode())
    for candidate in candidates:
        stage.process(candidate, 0)
