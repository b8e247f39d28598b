"""Every record eqlstream writes validates against its JSON Schema in schemas/ (2020-12).

The schemas are the contract with whoever reads the topics (Logstash pipelines, Elasticsearch
templates, consumers of the dead letters), so each kind of record the service writes is produced
here through the same code and validated: alert documents, candidate lines, dead-letter headers of
every reason, and input events after normalization.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import orjson
import pytest
from eqlstream_dev import synthetic

from app.core import Detector, Rejection, RejectReason
from app.core.normalize import normalize
from app.service.records import dead_letter, encode_candidate, header_map
from tests.support.detection import NOW, RULES, detect
from tests.support.hostile import CASES
from tests.support.schemas import ALERT, CANDIDATE, DEAD_LETTER, INPUT


@functools.cache
def corpus() -> list[dict[str, Any]]:
    return synthetic.generate_corpus(5, 1500, attack_rate=0.004, near_miss_rate=0.02, source_mix=0.4, raw_share=0.3)


def test_alert_documents_of_every_source_shape() -> None:
    found = detect(corpus(), RULES, now_ms=NOW)
    documents = [document for alert in found.alerts for document in alert.documents]
    assert len(found.alerts) >= 3 and len(documents) == 3 * len(found.alerts)
    for document in documents:
        ALERT.validate(json.loads(orjson.dumps(document)))


def test_candidate_lines() -> None:
    extractor = Detector(RULES).extractor
    lines = 0
    for event in corpus():
        for candidate in extractor.extract(orjson.dumps(event))[0]:
            meta, tab, event_json = encode_candidate(candidate, received_ms=NOW).partition(b"\t")
            assert tab
            CANDIDATE.validate(orjson.loads(meta))
            assert orjson.loads(event_json) == candidate.event
            lines += 1
    assert lines > 10


def test_the_alert_schema_tells_building_blocks_from_shells() -> None:
    alert = detect(corpus()).alerts[0]
    block, _, shell = alert.documents
    assert not ALERT.is_valid({**shell, "kibana.alert.group.index": 0})
    assert not ALERT.is_valid({k: v for k, v in block.items() if k != "kibana.alert.building_block_type"})
    assert not ALERT.is_valid({**block, "kibana.alert.uuid": "not a sha256"})
    assert not ALERT.is_valid({**block, "kibana.alert.original_time": "2024-05-01 10:00:00Z"})


@pytest.mark.parametrize("case", [case for case in CASES if case.reason], ids=lambda case: case.name)
def test_dead_letter_headers_of_every_rejected_input(case: Any) -> None:
    _, rejections = Detector(RULES).extractor.extract(case.record)
    (rejection,) = rejections
    key, value, headers = dead_letter(rejection, "winlogbeat", 3, 17, b"k" * 2000)
    DEAD_LETTER.validate(header_map(headers))


@pytest.mark.parametrize("reason", [RejectReason.INVALID_CANDIDATE, RejectReason.PRODUCE_REFUSED])
def test_dead_letter_headers_of_the_services_own_rejections(reason: RejectReason) -> None:
    rejection = Rejection(reason, "the brokers refused a 2000000-byte record for alerts: too large", b"x" * 600_000)
    # A refused record has no offset yet (-1), nor, for an alert, a partition of its own (-1).
    _, _, headers = dead_letter(rejection, "eqlstream-alerts", -1, -1, b"key")
    DEAD_LETTER.validate(header_map(headers))


def test_input_fields_of_every_source_shape() -> None:
    for event in corpus():
        INPUT.validate(normalize(event))
    assert not INPUT.is_valid({"@timestamp": "2024-05-01T10:00:00Z", "process": {"name": {"nested": "object"}}})
