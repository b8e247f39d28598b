"""The records eqlstream writes to Kafka and reads back from its own candidates topic (app.service.records).

No broker is needed: the formats, the limits, and above all the validation of candidate lines,
since whoever can write to the candidates topic must not be able to crash the sequence stage or
put a value in its state that it cannot take.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import orjson
import pytest

from app.core import Alert, AlertKind, Candidate, Rejection, RejectReason
from app.core.timeparse import MAX_MS, MIN_MS
from app.service.records import (
    DEAD_LETTER_KEY_MAX_BYTES,
    DEAD_LETTER_MAX_BYTES,
    InvalidCandidate,
    alert_records,
    dead_letter,
    decode_candidate,
    encode_candidate,
    header_map,
    pack,
    partition_of,
)

LIMIT = 1 << 20


def candidate(event: dict[str, Any] | None = None, **fields: Any) -> Candidate:
    event = {"a": [1, "x"], "é": "\t"} if event is None else event
    values: dict[str, Any] = {
        "rule_id": "rule",
        "key": ("h1", "{GUID}"),
        "stages": (0, 1),
        "timestamp_ms": 1_714_557_600_123,
        "event_id": "ev",
        "event": event,
        "event_json": orjson.dumps(event),
        "watermark_host": "h1",
        "origin": "topic/3",
    }
    return Candidate(**(values | fields))


def test_a_candidate_line_round_trips_and_carries_the_event_bytes_as_made() -> None:
    original = candidate()
    line = encode_candidate(original, received_ms=456)
    meta, tab, event_json = line.partition(b"\t")
    assert tab and event_json == original.event_json  # the event's JSON is never re-serialized
    assert b"\n" not in line  # one candidate per line of a packed record
    received = decode_candidate(line, LIMIT)
    # read back, only the bytes travel on: the event is parsed again if an alert needs it
    assert (received.candidate, received.received_ms) == (replace(original, event=None), 456)
    assert orjson.loads(meta)["timestamp_ms"] == 1_714_557_600_123


def test_the_partition_of_a_join_key_is_stable_and_spreads_keys() -> None:
    """Every event of a sequence must meet on one partition, in every process and version."""
    assert partition_of("rule", ("h1", "e1"), 8) == zlib.crc32(b'["rule","h1","e1"]') % 8
    assert len({partition_of("rule", ("h1", f"e{i}"), 8) for i in range(200)}) == 8


def test_pack_joins_lines_up_to_the_limit_and_a_long_line_goes_alone() -> None:
    lines = [b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 200, b"e"]
    records = list(pack(lines, limit=100))
    assert records == [b"a" * 40 + b"\n" + b"b" * 40, b"c" * 40, b"d" * 200, b"e"]
    assert [line for record in records for line in record.split(b"\n")] == lines
    assert list(pack([])) == []


GOOD = orjson.loads(encode_candidate(candidate(), received_ms=7).partition(b"\t")[0])
EVENT = b'{"a":1}'


def line(meta: Any, event: bytes = EVENT) -> bytes:
    return orjson.dumps(meta) + b"\t" + event


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not a candidate", "not a candidate line"),
        (b"not json\t{}", "not JSON"),
        (line(GOOD, b"{not json"), "not JSON"),
        (b"[]\t{}", "a JSON list, not an object"),
        (line(GOOD, b"[1]"), "the event is not a JSON object"),
        (line({k: v for k, v in GOOD.items() if k != "rule_id"}), "rule_id is missing"),
        (line({**GOOD, "rule_id": "r" * 1025}), "rule_id is missing, not a string, or longer than 1024"),
        (line({**GOOD, "key": []}), "key is not a list of 1-16"),
        (line({**GOOD, "key": "h1"}), "key is not a list"),
        (line({**GOOD, "key": ["h1", {"x": 1}]}), "key is not a list"),
        (line({**GOOD, "key": ["h1", 1.5]}), "key is not a list"),
        (line({**GOOD, "key": ["h1", 2**63]}), "key is not a list"),
        (line({**GOOD, "key": ["x" * 1025]}), "key is not a list"),
        (line({**GOOD, "key": ["\U0001f600" * 513]}), "key is not a list"),  # 1,026 UTF-16 units
        (line({**GOOD, "key": ["k"] * 17}), "key is not a list"),
        (line({**GOOD, "stages": []}), "stages is not an ascending list"),
        (line({**GOOD, "stages": [-1]}), "stages is not an ascending list"),
        (line({**GOOD, "stages": [1, 0]}), "stages is not an ascending list"),
        (line({**GOOD, "stages": [0, 0]}), "stages is not an ascending list"),
        (line({**GOOD, "stages": [64]}), "stages is not an ascending list"),
        (line({**GOOD, "stages": [True]}), "stages is not an ascending list"),
        (line({**GOOD, "timestamp_ms": "5"}), "timestamp_ms is not an integer"),
        (line({**GOOD, "timestamp_ms": True}), "timestamp_ms is not an integer"),
        (line({**GOOD, "timestamp_ms": 1.5}), "timestamp_ms is not an integer"),
        (line({**GOOD, "timestamp_ms": MAX_MS + 1}), "between years 1 and 9999"),
        (line({**GOOD, "timestamp_ms": MIN_MS - 1}), "between years 1 and 9999"),
        (line({**GOOD, "received_ms": None}), "received_ms is not a non-negative integer"),
        (line({**GOOD, "received_ms": -1}), "received_ms is not a non-negative integer"),
        (line({**GOOD, "event_id": ""}), "event_id is empty"),
        (line({**GOOD, "event_id": "e" * 257}), "event_id is missing, not a string, or longer than 256"),
        (line({**GOOD, "watermark_host": 5}), "watermark_host is missing"),
        (line({**GOOD, "origin": None}), "origin is missing"),
        (line(GOOD, b"[" * 100 + b"]" * 100), "the event is not a JSON object"),
        (line(GOOD, b'{"a":' + b"[" * 100 + b"]" * 100 + b"}"), "nested deeper than 100"),
    ],
)
def test_anything_but_a_valid_candidate_line_is_refused_with_the_reason(value: bytes, problem: str) -> None:
    """Every field is checked for type, range and size: a forged line is a dead letter, never a crash."""
    with pytest.raises(InvalidCandidate, match=problem):
        decode_candidate(value, LIMIT)


def test_the_limits_themselves_are_accepted() -> None:
    meta = {**GOOD, "key": ["x" * 1024, "\U0001f600" * 512, 2**63 - 1, -(2**63)], "stages": list(range(64))}
    meta |= {"timestamp_ms": MIN_MS, "event_id": "e" * 256}
    received = decode_candidate(line(meta, b'{"a":' + b"[" * 99 + b"]" * 99 + b"}"), LIMIT)
    assert received.candidate.key[2:] == (2**63 - 1, -(2**63)) and received.candidate.timestamp_ms == MIN_MS


def test_a_line_longer_than_the_limit_is_refused_unparsed() -> None:
    good = encode_candidate(candidate(), received_ms=7)
    assert decode_candidate(good, len(good)).candidate == replace(candidate(), event=None)
    with pytest.raises(InvalidCandidate, match=f"{len(good)} bytes, more than {len(good) - 1}"):
        decode_candidate(good, len(good) - 1)


def test_dead_letter_keeps_the_original_bytes_and_key_and_says_why() -> None:
    rejection = Rejection(RejectReason.INVALID_JSON, "not JSON", b"plain text")
    key, value, headers = dead_letter(rejection, "in", 2, 41, b"the-key")
    assert (key, value) == (b"the-key", b"plain text")
    assert header_map(headers) == {
        "eqlstream.reason": "invalid_json",
        "eqlstream.detail": "not JSON",
        "eqlstream.topic": "in",
        "eqlstream.partition": "2",
        "eqlstream.offset": "41",
    }


def test_a_multi_line_records_dead_letter_lists_its_bad_lines() -> None:
    rejection = Rejection(RejectReason.INVALID_JSON, "2 bad line(s)", b"a\nb\nc", lines=(2, 3), count=2)
    _, _, headers = dead_letter(rejection, "in", 0, 0, None)
    assert header_map(headers)["eqlstream.lines"] == "2,3"
    assert header_map(headers)["eqlstream.count"] == "2"


def test_huge_dead_letters_are_cut_and_marked() -> None:
    raw = b"x" * (DEAD_LETTER_MAX_BYTES + 10)
    long_key = b"k" * (DEAD_LETTER_KEY_MAX_BYTES + 1)
    key, value, headers = dead_letter(Rejection(RejectReason.RECORD_TOO_LARGE, "big", raw), "in", 0, 0, long_key)
    assert value == raw[:DEAD_LETTER_MAX_BYTES]
    assert key == long_key[:DEAD_LETTER_KEY_MAX_BYTES]
    assert header_map(headers)["eqlstream.original_size"] == str(len(raw))
    assert header_map(headers)["eqlstream.original_key_size"] == str(len(long_key))
    _, _, short = dead_letter(Rejection(RejectReason.INVALID_JSON, "d" * 5000, b"x"), "t" * 2000, 0, 0, None)
    assert len(header_map(short)["eqlstream.detail"]) == 1000 and len(header_map(short)["eqlstream.topic"]) == 1024


def test_every_document_of_a_match_is_keyed_by_its_shell_blocks_first() -> None:
    """One key per match: its documents share a partition and arrive blocks first, then the shell."""
    documents = ({"kibana.alert.uuid": "b0"}, {"kibana.alert.uuid": "b1"}, {"kibana.alert.uuid": "shell"})
    alert = Alert(rule_id="r", rule_name="R", kind=AlertKind.NEW, documents=documents, last_event_ms=5)
    assert alert_records(alert) == [(b"shell", orjson.dumps(doc)) for doc in documents]
