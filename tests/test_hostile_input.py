"""Malformed, oversized, hostile or wrongly typed records: a reason, never an exception, nothing else lost.

``CASES`` is the one table of hostile inputs: each record either lands in the dead letters with
its reason or is processed as stated (how many candidates it yields and, for a case with a
partner event, the one alert the pair must give). The unit tests here run it through the
extractor (all three entry points) and the engine; tests/reliability/test_hostile_service.py runs
the same table through the streaming service.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.detector import MAX_DEPTH, CandidateExtractor, SequenceStage
from app.rule import load_rules
from app.settings import Settings

RULE = load_rules()[0]
FIXTURES = Path(__file__).parent / "fixtures" / "inputs"
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


@dataclass(frozen=True)
class Case:
    """One hostile input and what must become of it.

    ``reason``: the dead-letter reason, or None when the record is processed. A processed record
    yields ``candidates`` candidates; with a ``partner`` (the other event of a sequence, on the
    same join key) the two must give exactly one alert, on (``first``, ``second``) event ids.
    """

    name: str
    record: bytes
    reason: str | None = None
    candidates: int = 0
    partner: bytes | None = None
    pair: tuple[str, str] | None = None


def _ids(name: str) -> tuple[str, str, str]:
    """A case's own host and entity (it never pairs with another case) and event id prefix."""
    return f"hostile-{name}", f"entity-{name}", name


def start(name: str, **fields: Any) -> dict:
    """A stage-1 event of case ``name``; ``fields`` replace dotted paths (``process__name`` = process.name)."""
    host, entity, prefix = _ids(name)
    doc = copy.deepcopy(START)
    doc["event"]["id"] = f"{prefix}-start"
    doc["host"]["id"] = host
    doc["process"]["entity_id"] = entity
    return _with(doc, fields)


def inbound(name: str, **fields: Any) -> dict:
    """A stage-2 event of case ``name`` 30 s after its ``start``."""
    host, entity, prefix = _ids(name)
    doc = copy.deepcopy(INBOUND)
    doc["event"]["id"] = f"{prefix}-inbound"
    doc["host"]["id"] = host
    doc["process"]["entity_id"] = entity
    return _with(doc, fields)


def _with(doc: dict, fields: dict[str, Any]) -> dict:
    for path, value in fields.items():
        node = doc
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()  # json, not orjson: it writes integers beyond 64 bits


def rejected(name: str, record: bytes, reason: str) -> Case:
    return Case(name, record, reason)


def noise(name: str, record: bytes) -> Case:
    return Case(name, record)


def first_stage(name: str, doc: dict, candidates: int = 1, partner: bool = True, **partner_fields: Any) -> Case:
    """A stage-1 record; with ``partner`` the stage-2 event of its case (with ``partner_fields``) completes it."""
    if not partner:
        return Case(name, dumps(doc), candidates=candidates)
    second = inbound(name, **partner_fields)
    return Case(name, dumps(doc), None, candidates, dumps(second), (doc["event"]["id"], second["event"]["id"]))


def second_stage(name: str, doc: dict) -> Case:
    """A stage-2 record that the normal stage-1 event of its case must pair with."""
    return Case(name, dumps(doc), None, 1, dumps(start(name)), (f"{name}-start", doc["event"]["id"]))


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A JSON value ``depth`` arrays deep."""
    return b"[" * depth + inner + b"]" * depth


def _raw_sysmon(name: str) -> dict:
    doc = json.loads((FIXTURES / "winlogbeat8_sysmon_1_mshta_embedding.json").read_text())
    doc["host"]["id"] = _ids(name)[0]
    return doc


START_BYTES = dumps(start("truncated"))
CANDIDATE_HEAD = b'{"@timestamp":"2024-05-01T10:00:00Z","event":{"category":"process","type":"start"},'
CANDIDATE_TAIL = b'"host":{"id":"deep"},"process":{"name":"mshta.exe","entity_id":"deep","args":"-Embedding"}}'

CASES: list[Case] = [
    # -- not JSON at all, or not an object --------------------------------------------------
    rejected("not_json", b"mshta.exe is not json", "invalid_json"),
    rejected("syslog_line", b"<13>May  1 10:00:00 ws01 mshta.exe -Embedding", "invalid_json"),
    rejected("empty", b"", "invalid_json"),
    rejected("whitespace", b" \t  ", "invalid_json"),
    rejected("truncated_object", START_BYTES[:-5], "invalid_json"),
    rejected("truncated_in_a_string", START_BYTES[:70], "invalid_json"),
    rejected("trailing_garbage", START_BYTES + b" garbage", "invalid_json"),
    rejected("two_objects_in_one_record", START_BYTES + START_BYTES, "invalid_json"),
    rejected("invalid_utf8", START_BYTES.replace(b"mshta.exe", b"mshta.exe\xff\xfe", 1), "invalid_json"),
    rejected("overlong_utf8", START_BYTES.replace(b"mshta.exe", b"mshta.exe\xc0\xaf", 1), "invalid_json"),
    rejected("utf8_bom", b"\xef\xbb\xbf" + START_BYTES, "invalid_json"),
    rejected("lone_surrogate_escape", START_BYTES.replace(b"hostile-", b"\\ud800hostile-", 1), "invalid_json"),
    rejected("raw_nul_in_a_string", START_BYTES.replace(b"mshta.exe", b"mshta.exe\x00", 1), "invalid_json"),
    rejected("nul_after_the_object", START_BYTES + b"\x00", "invalid_json"),
    rejected("nan_literal", START_BYTES.replace(b'"args"', b'"pid": NaN, "args"'), "invalid_json"),
    rejected("infinity_literal", START_BYTES.replace(b'"args"', b'"pid": -Infinity, "args"'), "invalid_json"),
    rejected("double_overflow", START_BYTES.replace(b'"args"', b'"pid": 1e400, "args"'), "invalid_json"),
    rejected("json_array", b'[{"process": {"name": "mshta.exe"}}]', "not_an_object"),
    rejected("json_string", b'"mshta.exe"', "not_an_object"),
    rejected("json_number", b"12345", "not_an_object"),
    rejected("json_null", b"null", "not_an_object"),
    rejected("json_true", b"true", "not_an_object"),
    # -- limits ------------------------------------------------------------------------------
    rejected("ten_megabytes", dumps(start("ten_megabytes", message="A" * 10_000_000)), "record_too_large"),
    rejected(
        "million_element_array",
        dumps(start("million_element_array", process__args=[0] * 1_000_000)),
        "record_too_large",
    ),
    # Under the record limit, but too big to travel as a candidate (the event must fit in 1 MiB - 64 KiB).
    rejected(
        "megabyte_string_in_process_args",
        dumps(start("megabyte_string_in_process_args", process__args=["-Embedding", "A" * 1_000_000])),
        "record_too_large",
    ),
    rejected("nesting_100000_levels", b'{"mshta.exe": ' + nested(100_000) + b"}", "too_deep"),
    rejected(
        "nesting_1000_levels_in_process_args",
        CANDIDATE_HEAD.replace(b"{", b'{"a":' + nested(1000) + b",", 1) + CANDIDATE_TAIL,
        "too_deep",
    ),
    rejected(
        "nesting_300_levels_in_an_unread_field",
        CANDIDATE_HEAD + b'"x":' + nested(300) + b"," + CANDIDATE_TAIL,
        "too_deep",
    ),
    # -- timestamps of a candidate ------------------------------------------------------------
    rejected(
        "timestamp_year_0001",
        dumps(start("timestamp_year_0001", **{"@timestamp": "0001-01-01T00:00:00Z"})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_year_9999",
        dumps(start("timestamp_year_9999", **{"@timestamp": "9999-12-31T23:59:59Z"})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_epoch_year_0001",
        dumps(start("timestamp_epoch_year_0001", **{"@timestamp": -62135596800000})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_unparsable", dumps(start("timestamp_unparsable", **{"@timestamp": "yesterday"})), "invalid_timestamp"
    ),
    rejected("timestamp_object", dumps(start("timestamp_object", **{"@timestamp": {"$date": 1}})), "invalid_timestamp"),
    rejected(
        "timestamp_two_values", dumps(start("timestamp_two_values", **{"@timestamp": [1, 2]})), "invalid_timestamp"
    ),
    rejected(
        "timestamp_missing",
        dumps({k: v for k, v in start("timestamp_missing").items() if k != "@timestamp"}),
        "invalid_timestamp",
    ),
    # -- processed: noise, whatever the types --------------------------------------------------
    noise("literal_in_a_message", b'{"message": "mshta.exe", "host": {"id": "h"}}'),
    noise("process_name_object", dumps(start("process_name_object", process__name={"mshta.exe": 1}))),
    noise("event_category_bool", dumps(start("event_category_bool", event__category=True))),
    noise("process_args_number", dumps(start("process_args_number", process__args=12345))),
    noise("host_id_object", dumps(start("host_id_object", host__id={"id": "x"}))),
    noise("host_id_longer_than_ignore_above", dumps(start("host_id_longer_than_ignore_above", host__id="h" * 2000))),
    noise(
        "duplicate_keys_last_one_wins", START_BYTES.replace(b'"name": "mshta.exe"', b'"name": "mshta.exe", "name": "x"')
    ),
    noise("port_beyond_64_bits", dumps(inbound("port_beyond_64_bits", source__port=2**64))),
    noise("port_beyond_int64", dumps(inbound("port_beyond_int64", source__port=2**63))),
    noise("port_negative", dumps(inbound("port_negative", source__port=-50000))),
    noise("port_nan_string", dumps(inbound("port_nan_string", source__port="NaN"))),
    noise("port_object", dumps(inbound("port_object", source__port={"port": 50000}))),
    noise("port_bool", dumps(inbound("port_bool", destination__port=True))),
    noise(
        "raw_sysmon_wrong_types",
        dumps(
            _with(
                _raw_sysmon("raw_sysmon_wrong_types"),
                {"winlog__event_data__CommandLine": 5, "winlog__event_data__ProcessId": {"a": 1}},
            )
        ),
    ),
    noise("legacy_event_data_array", b'{"event_data": ["mshta.exe"], "source_name": "Microsoft-Windows-Sysmon"}'),
    noise(
        "fifty_thousand_keys", orjson.dumps({"process": {"name": "mshta.exe"}, **{f"k{i}": i for i in range(50_000)}})
    ),
    # -- processed: odd but valid candidates, completed by a partner --------------------------
    first_stage(
        "process_array_of_objects",
        start("process_array_of_objects") | {"process": [start("process_array_of_objects")["process"]]},
    ),
    first_stage(
        "args_objects_and_nested_arrays",
        start("args_objects_and_nested_arrays", process__args=[{"a": 1}, ["mshta.exe", ["-Embedding"]]]),
    ),
    first_stage(
        "dotted_key_next_to_the_object",
        start("dotted_key_next_to_the_object", process__name="notepad.exe") | {"process.name": "mshta.exe"},
    ),
    first_stage(
        "dotted_keys_instead_of_objects",
        {k: v for k, v in start("dotted_keys_instead_of_objects").items() if k != "process"}
        | {
            "process.name": "mshta.exe",
            "process.entity_id": "entity-dotted_keys_instead_of_objects",
            "process.args": ["-Embedding"],
        },
    ),
    Case(
        "duplicate_keys_last_one_matches",
        dumps(start("duplicate_keys_last_one_matches")).replace(
            b'"name": "mshta.exe"', b'"name": "x", "name": "mshta.exe"'
        ),
        None,
        1,
        dumps(inbound("duplicate_keys_last_one_matches")),
        ("duplicate_keys_last_one_matches-start", "duplicate_keys_last_one_matches-inbound"),
    ),
    first_stage(
        "nul_escape_in_the_join_key",
        start("nul_escape_in_the_join_key", host__id="nul\u0000host"),
        host__id="nul\u0000host",
    ),
    first_stage("host_id_number", start("host_id_number", host__id=12345), partner=False),
    first_stage(
        "entity_id_two_values",
        start("entity_id_two_values", process__entity_id=["entity-entity_id_two_values", "other"]),
        candidates=2,
    ),
    first_stage("event_type_nested_array", start("event_type_nested_array", event__type=[["start"]])),
    first_stage(
        "timestamp_one_element_array", start("timestamp_one_element_array", **{"@timestamp": ["2024-05-01T10:00:00Z"]})
    ),
    first_stage("timestamp_epoch_millis", start("timestamp_epoch_millis", **{"@timestamp": 1714557600000})),
    first_stage("timestamp_negative_epoch", start("timestamp_negative_epoch", **{"@timestamp": -1}), partner=False),
    first_stage(
        "timestamp_year_2099", start("timestamp_year_2099", **{"@timestamp": "2099-01-01T00:00:00Z"}), partner=False
    ),
    first_stage(
        "timestamp_last_nanosecond",
        # On the 2099 case's host: the service test keeps far-future hosts below the watermark quorum.
        start(
            "timestamp_last_nanosecond",
            host__id="hostile-timestamp_year_2099",
            **{"@timestamp": "2262-04-11T23:47:16.854775807Z"},
        ),
        partner=False,
    ),
    first_stage("winlog_not_an_object", start("winlog_not_an_object") | {"winlog": "mshta.exe"}),
    first_stage(
        "half_megabyte_string_in_process_args",
        start("half_megabyte_string_in_process_args", process__args=["-Embedding", "A" * 500_000]),
    ),
    first_stage("half_megabyte_unread_field", start("half_megabyte_unread_field", message="\u00e9" * 250_000)),
    Case(
        f"nesting_{MAX_DEPTH}_levels", CANDIDATE_HEAD + b'"x":' + nested(MAX_DEPTH - 1) + b"," + CANDIDATE_TAIL, None, 1
    ),
    second_stage("port_numeric_string", inbound("port_numeric_string", source__port="50000")),
    second_stage("port_float", inbound("port_float", source__port=50000.9)),
    second_stage("port_int64_max", inbound("port_int64_max", destination__port=2**63 - 1)),
    second_stage("source_address_number", inbound("source_address_number", source__address=127)),
    second_stage(
        "network_direction_mixed_array",
        inbound("network_direction_mixed_array", network__direction=[{"x": 1}, None, 7, "INGRESS"]),
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names are unique (they are the dead letters' keys in the service test)"


def test_the_table_covers_at_least_30_kinds_of_hostile_input() -> None:
    assert len(CASES) >= 60
    assert len({case.reason for case in CASES}) == 6  # the five reasons, and processed
    assert sum(1 for case in CASES if case.pair) >= 15


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_case_is_rejected_with_its_reason_or_processed(case: Case) -> None:
    extractor = CandidateExtractor([RULE])
    candidates, rejections = extractor.extract(case.record)
    assert [r.reason for r in rejections] == ([case.reason] if case.reason else [])
    assert all(r.raw == case.record for r in rejections)  # the dead letter carries the original bytes
    assert len(candidates) == case.candidates
    if case.partner is None:
        return
    stage = SequenceStage([RULE], Settings())
    alerts = []
    for record in (case.record, case.partner):  # a stage-2 case arrives first: the engine sorts by @timestamp
        for candidate in CandidateExtractor([RULE]).extract(record)[0]:
            alerts += stage.process(candidate, 0)
    assert [tuple(e.event_id for e in a.match.events) for a in alerts] == [case.pair]


def _outcome(extraction: tuple[list, list]) -> tuple[list, list[str]]:
    found, rejections = extraction
    return sorted((c.event_id, c.key, c.stages) for c in found), [r.reason for r in rejections]


def test_a_batch_of_every_case_gives_what_each_record_gives_alone() -> None:
    """The ingest stage's path (one prefilter scan over the batch) and the replay's (NDJSON blocks)."""
    records = [case.record for case in CASES]
    alone = [_outcome(CandidateExtractor([RULE]).extract(record)) for record in records]
    batch = CandidateExtractor([RULE]).extract_many(records, ["t/0"] * len(records))
    assert {index: _outcome(extraction) for index, extraction in batch} == {
        index: outcome for index, outcome in enumerate(alone) if outcome != ([], [])
    }
    # A blank line is no record in NDJSON, so the blank cases are left out of the block.
    lines = [record for record in records if record.strip()]
    block_extractor = CandidateExtractor([RULE])
    found, rejections = block_extractor.extract_block(b"\n".join(lines) + b"\n")
    expected = [_outcome(CandidateExtractor([RULE]).extract(line)) for line in lines]
    assert sorted((c.event_id, c.key, c.stages) for c in found) == sorted(x for e in expected for x in e[0])
    assert sorted(r.reason for r in rejections) == sorted(x for e in expected for x in e[1])
    assert block_extractor.stats.records == len(lines)


def test_the_size_limit_is_applied_before_the_prefilter_and_the_parser() -> None:
    limit = 4096
    extractor = CandidateExtractor([RULE], Settings(max_record_bytes=limit))
    base = b'{"message": "mshta.exe PAD", "host": {"id": "h"}}'
    at_limit, over = (base.replace(b"PAD", b"x" * (limit - len(base) + 3 + extra)) for extra in (0, 1))
    assert (len(at_limit), len(over)) == (limit, limit + 1)
    scanned: list[bytes] = []
    prefilter = extractor.prefilter

    class Spy:
        """The prefilter, noting everything it is asked to scan."""

        def __call__(self, raw: bytes) -> bool:
            scanned.append(raw)
            return prefilter(raw)

        def lines_to_check(self, block: bytes, start: int = 0, end: int | None = None) -> list:
            scanned.append(block[start:end])
            return prefilter.lines_to_check(block, start, end)

    extractor.prefilter = Spy()  # type: ignore[assignment]
    assert _outcome(extractor.extract(at_limit)) == ([], [])
    assert _outcome(extractor.extract(over)) == ([], ["record_too_large"])
    assert [_outcome(e) for _, e in extractor.extract_many([over, at_limit], ["t/0"] * 2)] == [
        ([], ["record_too_large"])
    ]
    assert _outcome(extractor.extract_block(over + b"\n" + at_limit + b"\n" + over)) == ([], ["record_too_large"] * 2)
    assert scanned and not any(over in chunk for chunk in scanned)  # never scanned, let alone parsed
    assert extractor.stats.parsed == 3  # at_limit, each time
    assert extractor.stats.rejected == {"record_too_large": 4}


def test_a_raised_record_limit_evaluates_the_big_records() -> None:
    """With EQLSTREAM_MAX_RECORD_BYTES at 16 MiB the 10 MB and million-element records are ordinary events."""
    extractor = CandidateExtractor([RULE], Settings(max_record_bytes=16 << 20))
    assert len(extractor.extract(CASES_BY_NAME["ten_megabytes"].record)[0]) == 1  # a stage-1 event with a long message
    assert _outcome(extractor.extract(CASES_BY_NAME["million_element_array"].record)) == ([], [])  # no -Embedding
    assert len(extractor.extract(CASES_BY_NAME["megabyte_string_in_process_args"].record)[0]) == 1


def test_nesting_up_to_the_limit_is_evaluated_and_one_level_more_is_rejected() -> None:
    def record(value: bytes) -> bytes:
        return CANDIDATE_HEAD + b'"x":' + value + b"," + CANDIDATE_TAIL

    assert _outcome(CandidateExtractor([RULE]).extract(record(nested(MAX_DEPTH - 1))))[1] == []
    for deeper in (nested(MAX_DEPTH), b'{"y":' + nested(MAX_DEPTH - 1) + b"}", nested(MAX_DEPTH - 2, b'{"y":{}}')):
        assert _outcome(CandidateExtractor([RULE]).extract(record(deeper))) == ([], ["too_deep"])


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
        "timestamp_year_9999",
        "half_megabyte_string_in_process_args",
    ],
)
def test_hostile_records_never_raise_and_attacks_around_them_are_found(name: str) -> None:
    extractor = CandidateExtractor([RULE])
    stage = SequenceStage([RULE], Settings())
    alerts = []
    for record in (orjson.dumps(START), CASES_BY_NAME[name].record, orjson.dumps(INBOUND)):
        candidates, _ = extractor.extract(record)
        for candidate in candidates:
            alerts += stage.process(candidate, 0)
    assert [tuple(e.event_id for e in a.match.events) for a in alerts] == [("start", "inbound")]


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
        doc = _with(copy.deepcopy(template), {field.replace(".", "__"): value})
        extractor = CandidateExtractor([RULE])
        candidates, rejections = extractor.extract(dumps(doc))
        assert {r.reason for r in rejections} <= {"invalid_timestamp"}
        stage = SequenceStage([RULE], Settings())
        for candidate in candidates:
            stage.process(candidate, 0)


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
    doc = {**template, **garbage}
    extractor = CandidateExtractor([RULE])
    stage = SequenceStage([RULE], Settings())
    candidates, rejections = extractor.extract(dumps(doc))
    assert {r.reason for r in rejections} <= {"invalid_timestamp", "invalid_json"}  # json writes Infinity, not JSON
    for candidate in candidates:
        stage.process(candidate, 0)
