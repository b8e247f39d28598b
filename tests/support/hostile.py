"""The one table of hostile input: malformed, oversized, evasive or wrongly typed records.

Each ``Case`` is a record and what must become of it: a dead letter with its reason, or processed
as stated (how many candidates it yields and, for a case with a partner event, the one alert the
pair must give). tests/conformance/test_hostile_input.py runs the table through the extractor (all
three entry points) and the engine; tests/integration/reliability/test_hostile_service.py through
the streaming service; the fuzz tests start from its events.

Every case has its own host and entity, so no two cases ever pair. Cases dated far in the future
share one host: the service test must keep such hosts below the watermark quorum (3).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.options import MAX_DEPTH
from tests.support.detection import with_fields
from tests.support.paths import INPUTS

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
FAR_FUTURE_HOST = "hostile-timestamp_year_2099"
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Case:
    """One hostile input and what must become of it.

    ``reason``: the dead-letter reason, or None when the record is processed. A processed record
    yields ``candidates`` candidates; with a ``partner`` (the other event of a sequence, on the
    same join key) the two must give exactly one alert, on (``first``, ``second``) ``event.id``s.
    """

    name: str
    record: bytes
    reason: str | None = None
    candidates: int = 0
    partner: bytes | None = None
    pair: tuple[str, str] | None = None
    # For a multi-line record (Logstash json_lines) with bad lines: their numbers. Its good lines are
    # still evaluated (``candidates``), its one dead letter lists the bad ones.
    lines: tuple[int, ...] = ()


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
    return with_fields(doc, fields)


def inbound(name: str, **fields: Any) -> dict:
    """A stage-2 event of case ``name`` 30 s after its ``start``."""
    host, entity, prefix = _ids(name)
    doc = copy.deepcopy(INBOUND)
    doc["event"]["id"] = f"{prefix}-inbound"
    doc["host"]["id"] = host
    doc["process"]["entity_id"] = entity
    return with_fields(doc, fields)


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
    doc = json.loads((INPUTS / "winlogbeat8_sysmon_1_mshta_embedding.json").read_text())
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
    # Years 1 to 9999 are dates (what Elasticsearch's ISO format writes); beyond, or not a date at all, not.
    rejected(
        "timestamp_year_10000",
        dumps(start("timestamp_year_10000", **{"@timestamp": "+10000-01-01T00:00:00Z"})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_epoch_beyond_year_9999",
        dumps(start("timestamp_epoch_beyond_year_9999", **{"@timestamp": 253402300800000})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_epoch_before_year_0001",
        dumps(start("timestamp_epoch_before_year_0001", **{"@timestamp": -62135596800001})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_space_for_t",
        dumps(start("timestamp_space_for_t", **{"@timestamp": "2024-05-01 10:00:00Z"})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_fullwidth_digits",
        dumps(start("timestamp_fullwidth_digits", **{"@timestamp": "\uff12\uff10\uff12\uff14-05-01T10:00:00Z"})),
        "invalid_timestamp",
    ),
    rejected(
        "timestamp_offset_beyond_18_hours",
        dumps(start("timestamp_offset_beyond_18_hours", **{"@timestamp": "2024-05-01T10:00:00+18:01"})),
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
    # -- what cannot match any rule, or would cost unbounded memory -------------------------------
    rejected(
        "windows_event_in_an_unknown_layout",
        dumps(
            {
                "EventID": 1,
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Image": "C:\\Windows\\System32\\mshta.exe",
                "CommandLine": "mshta.exe -Embedding",
            }
        ),
        "unknown_layout",
    ),
    rejected(
        "join_key_fanning_out_to_65_keys",
        dumps(start("join_key_fanning_out_to_65_keys", process__entity_id=[f"entity-{i}" for i in range(65)])),
        "too_many_join_keys",
    ),
    Case(
        "json_lines_with_a_bad_line",
        dumps(start("json_lines_with_a_bad_line"))
        + b"\n"
        + b'{"truncated": '
        + b"\n"
        + dumps(start("json_lines_with_a_bad_line", event__id="json_lines_with_a_bad_line-start-2")),
        "invalid_json",
        candidates=2,
        lines=(2,),
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
            with_fields(
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
            host__id=FAR_FUTURE_HOST,
            **{"@timestamp": "2262-04-11T23:47:16.854775807Z"},
        ),
        partner=False,
    ),
    first_stage(
        "timestamp_year_0001", start("timestamp_year_0001", **{"@timestamp": "0001-01-01T00:00:00Z"}), partner=False
    ),
    first_stage(
        "timestamp_epoch_year_0001",
        start("timestamp_epoch_year_0001", **{"@timestamp": -62135596800000}),
        partner=False,
    ),
    first_stage(
        "timestamp_year_9999",
        start("timestamp_year_9999", host__id=FAR_FUTURE_HOST, **{"@timestamp": "9999-12-31T23:59:59.999999999Z"}),
        partner=False,
    ),
    Case(
        "utf8_bom",
        BOM + dumps(start("utf8_bom")),
        None,
        1,
        dumps(inbound("utf8_bom")),
        ("utf8_bom-start", "utf8_bom-inbound"),
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
