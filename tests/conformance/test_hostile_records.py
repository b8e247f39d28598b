"""The hostile records of issue 17, each against the code that must hold: one bad record never stops
a stage, never costs unbounded memory, never floods, never loses or blinds an alert.

Each record is something anyone who can write to an input topic (or the candidates topic) can send.
The real service meets the same records in tests/integration/reliability/test_poison_pills.py.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import orjson
import pytest

from app.core import DetectionOptions, Detector, RejectReason, load_rules
from app.core.engine.state import MemoryStore, encode_state
from app.service.records import (
    DEAD_LETTER_KEY_MAX_BYTES,
    ORIGINAL_KEY_SIZE_HEADER,
    InvalidCandidate,
    dead_letter,
    decode_candidate,
    encode_candidate,
)

RULES = load_rules()
HOST = "7c0e5d2a-91b4-4f36-a8e1-3b5f0d9c6e21"
WINDOWS_MAX_COMMAND_LINE = 32_767


def start(entity: str, second: int, host: str = HOST, **extra: object) -> dict:
    return {
        "@timestamp": f"2024-05-14T08:{second // 60:02d}:{second % 60:02d}.000Z",
        "event": {"category": ["process"], "type": ["start"]},
        "host": {"id": host, "name": host[:8]},
        "process": {"name": "mshta.exe", "entity_id": entity, "args": ["mshta.exe", "-Embedding"]},
        **extra,
    }


def inbound(entity: str, second: int, host: str = HOST, **extra: object) -> dict:
    return {
        "@timestamp": f"2024-05-14T08:{second // 60:02d}:{second % 60:02d}.000Z",
        "event": {"category": ["network"], "type": ["start"]},
        "host": {"id": host, "name": host[:8]},
        "process": {"name": "mshta.exe", "entity_id": entity},
        "network": {"direction": "ingress", "transport": "tcp"},
        "source": {"ip": "10.0.0.5", "port": 50123},
        "destination": {"ip": "10.0.0.9", "port": 55000},
        **extra,
    }


def line_of(event: dict) -> bytes:
    (candidate,), _ = Detector(RULES).extractor.extract(orjson.dumps(event))
    return encode_candidate(candidate, received_ms=0)


# 1. A forged candidate whose fields the engine could not take ------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp_ms", 2**63 + 1),
        ("timestamp_ms", -(2**70)),
        ("timestamp_ms", 1.5),
        ("received_ms", -1),
        ("stages", [1, 0]),
        ("stages", [0, 0]),
        ("stages", [99]),
        ("stages", []),
        ("key", [True, "x"]),
        ("key", ["x" * 1025]),
        ("key", [2**64]),
        ("key", []),
        ("event_id", ""),
        ("event_id", "x" * 257),
        ("rule_id", None),
        ("origin", "o" * 2000),
    ],
)
def test_a_candidate_with_any_field_out_of_range_is_refused_before_the_engine(field: str, value: object) -> None:
    meta, _, event = line_of(start("e1", 0)).partition(b"\t")
    fields = orjson.loads(meta)
    fields[field] = "PLACEHOLDER"
    # The standard library writes the integers beyond 64 bits a forged record may hold; orjson does not.
    forged = orjson.dumps(fields).replace(b'"PLACEHOLDER"', json.dumps(value).encode()) + b"\t" + event
    with pytest.raises(InvalidCandidate):
        decode_candidate(forged, 1 << 20)


@pytest.mark.parametrize(
    "line",
    [b"", b"not a candidate", b'{"rule_id": "x"}', b"{}\t[]", b"{}\t{", b'{"a":1}\t' + b"[" * 150 + b"]" * 150],
)
def test_lines_that_are_not_candidates_are_refused(line: bytes) -> None:
    with pytest.raises(InvalidCandidate):
        decode_candidate(line, 1 << 20)


def test_an_event_nested_deeper_than_the_limit_is_refused_even_inside_a_candidate() -> None:
    meta, _, _ = line_of(start("e1", 0)).partition(b"\t")
    deep: dict = {"leaf": 1}
    for _ in range(150):
        deep = {"d": deep}
    with pytest.raises(InvalidCandidate, match="nested deeper"):
        decode_candidate(meta + b"\t" + orjson.dumps(deep), 1 << 20)


# 2. A huge record key on a bad value --------------------------------------------------------------


def test_a_dead_letter_cuts_a_huge_key_and_says_how_long_it_was() -> None:
    rejection = Detector(RULES).extractor.extract(b"not json " * 10)[1][0]
    key, value, headers = dead_letter(rejection, "input", 0, 7, b"k" * 1_100_000)
    assert key == b"k" * DEAD_LETTER_KEY_MAX_BYTES
    assert dict(headers)[ORIGINAL_KEY_SIZE_HEADER] == b"1100000"
    assert value == b"not json " * 10


# 3. Join-key fan-out without bound ----------------------------------------------------------------


def test_a_stage_1_event_with_300_by_300_join_key_values_is_refused_without_building_them() -> None:
    event = start("e0", 0)
    event["host"] = {"id": [f"host-{i}" for i in range(300)]}
    event["process"]["entity_id"] = [f"entity-{i}" for i in range(300)]
    tracemalloc.start()
    began = time.perf_counter()
    candidates, (rejection,) = Detector(RULES).extractor.extract(orjson.dumps(event))
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert candidates == []
    assert rejection.reason is RejectReason.TOO_MANY_JOIN_KEYS
    assert "more than 64 join keys" in rejection.detail
    assert peak < 5_000_000, f"{peak} bytes allocated"  # 90,000 keys would be hundreds of MB
    assert seconds < 1.0


def test_fan_out_within_the_limit_still_joins_every_key_as_elasticsearch_does() -> None:
    hosts = [f"h{i}" for i in range(8)]
    first, second = start("e1", 0), inbound("e1", 10)
    for event in (first, second):
        event["host"] = {"id": hosts}
    report = Detector(RULES).detect([first, second])
    assert len(report.alerts) == len(hosts)


# 4. One record of half a million bad lines --------------------------------------------------------


def test_a_json_lines_record_of_500000_bad_lines_is_one_rejection_listing_the_first_lines() -> None:
    record = b"\n".join([b"{"] * 500_000)  # just under the 1 MiB record limit
    began = time.perf_counter()
    candidates, rejections = Detector(RULES).extractor.extract(record)
    assert time.perf_counter() - began < 10
    assert candidates == []
    (rejection,) = rejections
    assert rejection.count == 500_000
    assert rejection.lines == tuple(range(1, 21))
    assert rejection.reason is RejectReason.INVALID_JSON


def test_good_lines_of_a_partly_bad_json_lines_record_are_still_detected() -> None:
    record = b"\n".join([orjson.dumps(start("e1", 0)), b"{oops", orjson.dumps(inbound("e1", 5))])
    detector = Detector(RULES)
    candidates, (rejection,) = detector.extractor.extract(record)
    assert rejection.lines == (2,) and rejection.count == 1
    sequencer = detector.sequencer()
    assert [len(sequencer.process(c, 0).alerts) for c in candidates] == [0, 1]


# 5. State grown past the changelog's record limit --------------------------------------------------


def test_a_key_flooded_with_32k_command_lines_stays_under_its_byte_budget_and_still_alerts() -> None:
    options = DetectionOptions(max_state_bytes=900 * 1024, max_event_bytes=768 * 1024)
    detector = Detector(RULES, options)
    store = MemoryStore()
    sequencer = detector.sequencer(store)
    long_argument = "A" * WINDOWS_MAX_COMMAND_LINE
    for second in range(20):
        event = start("e1", second)
        event["process"]["command_line"] = f"mshta.exe -Embedding {long_argument}"
        event["process"]["args"] = ["mshta.exe", "-Embedding", long_argument]
        for candidate in detector.extractor.extract(orjson.dumps(event))[0]:
            sequencer.process(candidate, 0)
        (state,) = [state for _, state in store.items()]
        assert len(encode_state(state)) <= options.max_state_bytes + 64 * 1024
    alerts = [
        a
        for c in detector.extractor.extract(orjson.dumps(inbound("e1", 25)))[0]
        for a in sequencer.process(c, 0).alerts
    ]
    assert len(alerts) == 1
    assert sequencer.stats()[RULES[0].meta.rule_id].evicted > 0


# 6. Blinding by replays ---------------------------------------------------------------------------


def test_a_thousand_replays_of_an_alerted_event_emit_nothing_and_a_new_attack_still_alerts() -> None:
    attack = [start("e1", 0), inbound("e1", 10)]
    replays = [inbound("e1", 10)] * 1000
    other_host = "0a1b2c3d-0000-4000-8000-000000000001"
    fresh = [start("e9", 20, host=other_host), inbound("e9", 30, host=other_host)]
    # A cap of two new alerts per interval: were the replays counted, the fresh attack would be held back.
    report = Detector(RULES, DetectionOptions(alert_cap=2)).detect([*attack, *replays, *fresh])
    assert [alert.documents[0]["process"]["entity_id"] for alert in report.alerts] == ["e1", "e9"]
    assert report.suppressed == []
    assert report.engine.duplicates == 1000


# 7. Alert fields injected from the event ----------------------------------------------------------


def test_an_event_cannot_close_or_hide_its_alert() -> None:
    injected = {
        "kibana": {"alert": {"workflow_status": "closed", "building_block_type": "default", "status": "untracked"}},
        "kibana.alert.workflow_status": "closed",
        "signal": {"status": "closed"},
    }
    (alert,) = Detector(RULES).detect([start("e1", 0, **injected), inbound("e1", 10, **injected)]).alerts
    *blocks, shell = alert.documents
    for document in alert.documents:
        assert document["kibana.alert.workflow_status"] == "open"
        assert document["kibana.alert.status"] == "active"
        assert "kibana" not in document and "signal" not in document
    assert "kibana.alert.building_block_type" not in shell
    assert all(block["kibana.alert.building_block_type"] == "default" for block in blocks)


# And: dates in digits Elasticsearch does not read ----------------------------------------------------


def test_a_timestamp_in_fullwidth_digits_is_not_a_date() -> None:
    event = start("e1", 0)
    event["@timestamp"] = "２０２４-05-14T08:00:00Z"
    candidates, (rejection,) = Detector(RULES).extractor.extract(orjson.dumps(event))
    assert candidates == [] and rejection.reason is RejectReason.INVALID_TIMESTAMP
