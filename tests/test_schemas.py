"""Every record eqlstream writes validates against its JSON Schema in schemas/ (2020-12)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from app import synthetic
from app.detector import CandidateExtractor, SequenceStage
from app.kafka.records import dead_letter, encode_candidate, header_map
from app.normalize import normalize
from app.rule import load_rules
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RULES = load_rules()


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


ALERT = validator("alert.schema.json")
CANDIDATE = validator("candidate.schema.json")
DEAD_LETTER = validator("dead-letter.schema.json")
INPUT = validator("input-fields.schema.json")


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return synthetic.generate_corpus(5, 1500, attack_rate=0.004, near_miss_rate=0.02, source_mix=0.4, raw_share=0.3)


def test_alert_documents_and_candidates(corpus: list[dict]) -> None:
    extractor = CandidateExtractor(RULES)
    stage = SequenceStage(RULES, Settings())
    documents = candidates = 0
    for event in corpus:
        for candidate in extractor.extract(orjson.dumps(event))[0]:
            CANDIDATE.validate(orjson.loads(encode_candidate(candidate, received_ns=1)))
            candidates += 1
            for alert in stage.process(candidate, 1_714_557_600_000_000_000):
                for document in alert.documents:
                    ALERT.validate(json.loads(orjson.dumps(document)))
                    documents += 1
    assert candidates > 10 and documents >= 9


def test_the_alert_schema_tells_building_blocks_from_shells(corpus: list[dict]) -> None:
    extractor = CandidateExtractor(RULES)
    stage = SequenceStage(RULES, Settings())
    alert = next(a for e in corpus for c in extractor.extract(orjson.dumps(e))[0] for a in stage.process(c, 0))
    block, _, shell = alert.documents
    assert not ALERT.is_valid({**shell, "kibana.alert.group.index": 0})
    assert not ALERT.is_valid({k: v for k, v in block.items() if k != "kibana.alert.building_block_type"})
    assert not ALERT.is_valid({**block, "kibana.alert.uuid": "not a sha256"})


@pytest.mark.parametrize("record", [b"plain text mshta.exe", b'["mshta.exe"]', b'{"mshta.exe": ', b"x" * 600_000])
def test_dead_letter_headers(record: bytes) -> None:
    _, rejections = CandidateExtractor(RULES).extract(record + b" mshta.exe")
    for rejection in rejections:
        _, headers = dead_letter(rejection, "winlogbeat", 3, 17)
        DEAD_LETTER.validate(header_map(headers))


def test_input_fields_of_every_source_shape(corpus: list[dict]) -> None:
    for event in corpus:
        INPUT.validate(normalize(event))
    assert not INPUT.is_valid({"@timestamp": "2024-05-01T10:00:00Z", "process": {"name": {"nested": "object"}}})
