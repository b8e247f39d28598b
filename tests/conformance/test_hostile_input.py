"""Malformed, oversized, hostile or wrongly typed records: a reason, never an exception, nothing else lost.

The table of cases is ``tests.support.hostile.CASES``: each record either lands in the dead letters
with its reason or is processed as stated. Here it runs through the extractor (all three entry
points: one record, a Kafka batch, an NDJSON block) and the engine;
tests/integration/reliability/test_hostile_service.py runs the same table through the service.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core import DetectionOptions, Detector, RejectReason
from app.core.extract import CandidateExtractor
from app.core.options import MAX_DEPTH
from tests.support.detection import RULE, detect, event_labels
from tests.support.hostile import (
    CANDIDATE_HEAD,
    CANDIDATE_TAIL,
    CASES,
    CASES_BY_NAME,
    INBOUND,
    START,
    Case,
    dumps,
    nested,
)


def extractor(**options: Any) -> CandidateExtractor:
    return Detector([RULE], DetectionOptions(**options)).extractor


def test_the_table_covers_every_reason_and_many_kinds_of_hostile_input() -> None:
    input_reasons = set(RejectReason) - {RejectReason.INVALID_CANDIDATE, RejectReason.PRODUCE_REFUSED}
    assert {case.reason for case in CASES} == {*input_reasons, None}  # every reason an input record can get
    assert len(CASES) >= 80
    assert sum(1 for case in CASES if case.pair) >= 15


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_case_is_rejected_with_its_reason_or_processed(case: Case) -> None:
    candidates, rejections = extractor().extract(case.record)
    assert [r.reason for r in rejections] == ([case.reason] if case.reason else [])
    assert all(r.raw == case.record for r in rejections)  # the dead letter carries the original bytes
    assert all(r.lines == case.lines for r in rejections)
    assert len(candidates) == case.candidates
    if case.partner is None:
        return
    # A stage-2 case arrives first: the engine sorts by @timestamp.
    assert [event_labels(alert) for alert in detect([case.record, case.partner], [RULE]).alerts] == [case.pair]


def _outcome(extraction: tuple[list, list]) -> tuple[list, list[str]]:
    found, rejections = extraction
    return sorted((c.event_id, c.key, c.stages) for c in found), [r.reason for r in rejections]


def test_a_batch_of_every_case_gives_what_each_record_gives_alone() -> None:
    """The ingest stage's path (one prefilter scan over the batch) and the replay's (NDJSON blocks)."""
    records = [case.record for case in CASES]
    alone = [_outcome(extractor().extract(record)) for record in records]
    batch = extractor().extract_many(records, ["t/0"] * len(records))
    assert {index: _outcome(extraction) for index, extraction in batch} == {
        index: outcome for index, outcome in enumerate(alone) if outcome != ([], [])
    }
    # A blank line is no record in NDJSON, so the blank cases are left out of the block.
    lines = [record for record in records if record.strip()]
    lines = [record for record in lines if b"\n" not in record]  # a multi-line record is several NDJSON lines
    block_extractor = extractor()
    found, rejections = block_extractor.extract_block(b"\n".join(lines) + b"\n")
    expected = [_outcome(extractor().extract(line)) for line in lines]
    assert sorted((c.event_id, c.key, c.stages) for c in found) == sorted(x for e in expected for x in e[0])
    assert sorted(r.reason for r in rejections) == sorted(x for e in expected for x in e[1])
    assert block_extractor.stats.records == len(lines)


def test_the_size_limit_is_applied_before_the_prefilter_and_the_parser() -> None:
    limit = 4096
    spied = extractor(max_record_bytes=limit, max_event_bytes=limit // 2, max_state_bytes=limit)
    base = b'{"message": "mshta.exe PAD", "host": {"id": "h"}}'
    at_limit, over = (base.replace(b"PAD", b"x" * (limit - len(base) + 3 + extra)) for extra in (0, 1))
    assert (len(at_limit), len(over)) == (limit, limit + 1)
    scanned: list[bytes] = []
    prefilter = spied.prefilter

    class Spy:
        """The prefilter, noting everything it is asked to scan."""

        def __call__(self, raw: bytes) -> bool:
            scanned.append(raw)
            return prefilter(raw)

        def lines_to_check(self, block: bytes, start: int = 0, end: int | None = None) -> list:
            scanned.append(block[start:end])
            return prefilter.lines_to_check(block, start, end)

        def present(self, raw: bytes) -> frozenset[bytes] | None:
            scanned.append(raw)
            return prefilter.present(raw)

        def met(self, present: frozenset[bytes] | None) -> frozenset | None:
            return prefilter.met(present)

    spied.prefilter = Spy()  # type: ignore[assignment]
    assert _outcome(spied.extract(at_limit)) == ([], [])
    assert _outcome(spied.extract(over)) == ([], ["record_too_large"])
    assert [_outcome(e) for _, e in spied.extract_many([over, at_limit], ["t/0"] * 2)] == [([], ["record_too_large"])]
    assert _outcome(spied.extract_block(over + b"\n" + at_limit + b"\n" + over)) == ([], ["record_too_large"] * 2)
    assert scanned and not any(over in chunk for chunk in scanned)  # never scanned, let alone parsed
    assert spied.stats.parsed == 3  # at_limit, each time
    assert spied.stats.rejected == {"record_too_large": 4}


def test_a_raised_record_limit_evaluates_the_big_records() -> None:
    """With EQLSTREAM_MAX_RECORD_BYTES at 16 MiB the 10 MB and million-element records are ordinary events."""
    big = extractor(max_record_bytes=16 << 20, max_event_bytes=15 << 20, max_state_bytes=15 << 20)
    assert len(big.extract(CASES_BY_NAME["ten_megabytes"].record)[0]) == 1  # a stage-1 event with a long message
    assert _outcome(big.extract(CASES_BY_NAME["million_element_array"].record)) == ([], [])  # no -Embedding
    assert len(big.extract(CASES_BY_NAME["megabyte_string_in_process_args"].record)[0]) == 1


def test_an_event_too_large_to_travel_as_a_candidate_is_refused_before_the_engine() -> None:
    """Under the record limit but over the event limit: refused, so no key's state can exceed one record."""
    record = CASES_BY_NAME["half_megabyte_string_in_process_args"].record
    found, rejections = extractor(max_event_bytes=400_000).extract(record)
    assert found == [] and [r.reason for r in rejections] == ["record_too_large"]
    assert "as a candidate" in rejections[0].detail


def test_nesting_up_to_the_limit_is_evaluated_and_one_level_more_is_rejected() -> None:
    def record(value: bytes) -> bytes:
        return CANDIDATE_HEAD + b'"x":' + value + b"," + CANDIDATE_TAIL

    assert _outcome(extractor().extract(record(nested(MAX_DEPTH - 1))))[1] == []
    for deeper in (nested(MAX_DEPTH), b'{"y":' + nested(MAX_DEPTH - 1) + b"}", nested(MAX_DEPTH - 2, b'{"y":{}}')):
        assert _outcome(extractor().extract(record(deeper))) == ([], ["too_deep"])


@pytest.mark.parametrize(
    "name",
    [
        "not_json",
        "truncated_object",
        "invalid_utf8",
        "json_array",
        "json_null",
        "ten_megabytes",
        "nesting_100000_levels",
        "million_element_array",
        "duplicate_keys_last_one_wins",
        "nan_literal",
        "raw_nul_in_a_string",
        "timestamp_year_10000",
        "timestamp_fullwidth_digits",
        "windows_event_in_an_unknown_layout",
        "join_key_fanning_out_to_65_keys",
        "json_lines_with_a_bad_line",
        "half_megabyte_string_in_process_args",
    ],
)
def test_hostile_records_never_raise_and_attacks_around_them_are_found(name: str) -> None:
    found = detect([orjson.dumps(START), CASES_BY_NAME[name].record, orjson.dumps(INBOUND)], [RULE])
    assert found.labels() == [("start", "inbound")]


WRONG_TYPES = [{"a": 1}, [{"a": 1}], True, False, 2**64, -(2**70), 1.5e308, "", "x" * 5000, None, [], "\u0000"]


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
        "@timestamp",
    ],
)
@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_every_field_the_rule_reads_with_a_wrong_type_never_raises(field: str, value: object) -> None:
    for template in (START, INBOUND):
        doc = copy.deepcopy(template)
        *parents, leaf = field.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        found = detect([dumps(doc)], [RULE])
        assert set(found.reasons()) <= {"invalid_timestamp"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    found = detect([dumps({**template, **garbage}), orjson.dumps(INBOUND)], [RULE])
    assert set(found.reasons()) <= {"invalid_timestamp", "invalid_json"}  # json writes Infinity, not JSON
