"""Record formats (no broker needed) and the alert cap."""

from __future__ import annotations

import orjson
import pytest

from app.detector import Rejection
from app.engine.sequence import Candidate
from app.kafka.records import (
    DEAD_LETTER_MAX_BYTES,
    InvalidCandidate,
    candidate_key,
    dead_letter,
    decode_candidate,
    encode_candidate,
)
from app.kafka.sequence import AlertCap

S = 1_000_000_000


def test_candidate_round_trip_and_key() -> None:
    candidate = Candidate("rule", ("h1", "{GUID}"), (0, 1), 123, "ev", {"a": [1, "x"]}, "h1", "topic/3")
    decoded, received = decode_candidate(encode_candidate(candidate, received_ns=456))
    assert (decoded, received) == (candidate, 456)
    assert candidate_key(candidate) == b'["rule","h1","{GUID}"]'


GOOD = orjson.loads(encode_candidate(Candidate("r", ("h1", "e1"), (0,), 5, "ev", {}, "h1", "t/0"), received_ns=7))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "a JSON list, not an object"),
        (orjson.dumps({**GOOD, "timestamp_ns": "5"}), "timestamp_ns is missing or not a JSON integer"),
        (orjson.dumps({**GOOD, "timestamp_ns": True}), "timestamp_ns is missing or not a JSON integer"),
        (orjson.dumps({**GOOD, "timestamp_ns": 1.5}), "timestamp_ns is missing or not a JSON integer"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "event"}), "event is missing or not a JSON object"),
        (orjson.dumps({**GOOD, "event": []}), "event is missing or not a JSON object"),
        (orjson.dumps({**GOOD, "key": ["h1", {"x": 1}]}), "key holds a value that is not a string"),
        (orjson.dumps({**GOOD, "stages": []}), "stages is not a list of stage numbers"),
        (orjson.dumps({**GOOD, "stages": [-1]}), "stages is not a list of stage numbers"),
        (orjson.dumps({**GOOD, "received_ns": None}), "received_ns is missing or not a JSON integer"),
    ],
)
def test_anything_but_a_candidate_is_refused_with_the_reason(value: bytes, problem: str) -> None:
    """The engine must never see a wrongly typed field, whoever wrote to the candidates topic."""
    with pytest.raises(InvalidCandidate, match=problem):
        decode_candidate(value)


def test_dead_letter_keeps_the_original_bytes_and_says_why() -> None:
    value, headers = dead_letter(Rejection("invalid_json", "not JSON", b"plain text"), "in", 2, 41)
    assert value == b"plain text"
    assert dict(headers) == {
        "eqlstream.reason": b"invalid_json",
        "eqlstream.detail": b"not JSON",
        "eqlstream.topic": b"in",
        "eqlstream.partition": b"2",
        "eqlstream.offset": b"41",
    }


def test_huge_dead_letter_is_cut_and_marked() -> None:
    raw = b"x" * (DEAD_LETTER_MAX_BYTES + 10)
    value, headers = dead_letter(Rejection("invalid_json", "not JSON", raw), "in", 0, 0)
    assert value == raw[:DEAD_LETTER_MAX_BYTES]
    assert dict(headers)["eqlstream.original_size"] == str(len(raw)).encode()


def test_alert_cap_per_interval() -> None:
    cap = AlertCap(2, 300 * S)
    assert [cap.allow(t * S) for t in (0, 1, 2, 299, 300, 301)] == [True, True, False, False, True, True]
    assert cap.suppressed == 2
    unlimited = AlertCap(0, 300 * S)
    assert all(unlimited.allow(t) for t in range(1000))
