"""The records eqlstream writes to Kafka, and reads back from its own candidates topic.

* **Candidates** (``EQLSTREAM_CANDIDATES_TOPIC``): the ingest stage sends each poll's candidates
  for one partition as one record: the value holds one candidate per line (JSON, below), the key is
  null and the partition is chosen from the rule and the join key (``partition_of``), so that every
  event of a sequence meets on one partition whatever partition Beats picked; record timestamp =
  the latest event's ``@timestamp``. Packing many candidates per record lets the sequence stage
  absorb floods: its per-record cost is Faust's, its per-candidate cost only the engine's.
* **Dead letters** (``EQLSTREAM_DEAD_LETTER_TOPIC``): value = the original bytes, key = the
  original key, both cut when large (``eqlstream.original_size`` / ``eqlstream.original_key_size``
  then say so); headers ``eqlstream.reason`` (a stable label), ``eqlstream.detail`` (a sentence),
  ``eqlstream.topic``, ``eqlstream.partition``, ``eqlstream.offset`` and, for a multi-line record,
  ``eqlstream.lines`` (the first bad line numbers) and ``eqlstream.count`` (how many were bad).
* **Alerts** (``EQLSTREAM_ALERTS_TOPIC``): one record per Kibana alert document, the building
  blocks first and the shell last, all keyed by the shell's id so that one match's documents share
  a partition and arrive in that order; record timestamp = the time of the sequence's last event.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from app.core import Alert, Candidate, Rejection
from app.core.fields import KEYWORD_IGNORE_ABOVE
from app.core.options import MAX_DEPTH
from app.core.timeparse import MAX_MS, MIN_MS

REASON_HEADER = "eqlstream.reason"
DETAIL_HEADER = "eqlstream.detail"
TOPIC_HEADER = "eqlstream.topic"
PARTITION_HEADER = "eqlstream.partition"
OFFSET_HEADER = "eqlstream.offset"
LINES_HEADER = "eqlstream.lines"
COUNT_HEADER = "eqlstream.count"
ORIGINAL_SIZE_HEADER = "eqlstream.original_size"
ORIGINAL_KEY_SIZE_HEADER = "eqlstream.original_key_size"
DEAD_LETTER_MAX_BYTES = 512 * 1024
DEAD_LETTER_KEY_MAX_BYTES = 1024
DETAIL_MAX_CHARS = 1000
# Most bytes of candidates packed into one record; well under the topic's max.message.bytes.
PACK_MAX_BYTES = 512 * 1024
_MAX_EVENT_ID = 256
_MAX_TEXT = 1024
_INT64 = 2**63


def partition_of(rule_id: str, key: tuple[Any, ...], partitions: int) -> int:
    """The candidates (and state) partition of a rule's join key: stable across processes and versions."""
    return zlib.crc32(orjson.dumps([rule_id, *key])) % partitions


def encode_candidate(candidate: Candidate, received_ms: int) -> bytes:
    """One line of a candidates record: its fields as JSON, a tab, the event's JSON as made once.

    ``received_ms`` is when ingest read the event (for the detection latency). JSON never holds a
    raw tab, so the first one separates the two parts.
    """
    meta = orjson.dumps(
        {
            "rule_id": candidate.rule_id,
            "key": candidate.key,
            "stages": candidate.stages,
            "timestamp_ms": candidate.timestamp_ms,
            "event_id": candidate.event_id,
            "watermark_host": candidate.watermark_host,
            "origin": candidate.origin,
            "received_ms": received_ms,
        }
    )
    return meta + b"\t" + candidate.event_json


def pack(lines: list[bytes], limit: int = PACK_MAX_BYTES) -> Iterator[bytes]:
    """Candidate lines joined into record values of at most ``limit`` bytes (a longer line goes alone)."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        if batch and size + len(line) + 1 > limit:
            yield b"\n".join(batch)
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield b"\n".join(batch)


class InvalidCandidate(ValueError):
    """A line on the candidates topic that is not a candidate this service wrote."""


@dataclass(frozen=True, slots=True)
class ReceivedCandidate:
    """A candidate read back from the candidates topic, and when the ingest stage had read its event."""

    candidate: Candidate
    received_ms: int


def decode_candidate(line: bytes, max_bytes: int) -> ReceivedCandidate:
    """Inverse of ``encode_candidate``, refusing anything the engine could choke on.

    Every field is checked for type, range and size, so that a forged record can never reach the
    engine (nor its state store or expiry index) with a value it cannot take: a dead letter, not a
    crash that would re-read the record forever. Which rule and stages it names is checked by the
    sequence stage, which knows its rules.
    """
    if len(line) > max_bytes:
        raise InvalidCandidate(f"{len(line)} bytes, more than {max_bytes}")
    meta, tab, event_json = line.partition(b"\t")
    if not tab:
        raise InvalidCandidate("not a candidate line (its fields, a tab, its event)")
    try:
        data = orjson.loads(meta)
        event = orjson.loads(event_json)
    except orjson.JSONDecodeError as exc:
        raise InvalidCandidate(f"not JSON ({exc})") from None
    if type(data) is not dict:
        raise InvalidCandidate(f"a JSON {type(data).__name__}, not an object")
    rule_id = _text(data, "rule_id", _MAX_TEXT)
    key = data.get("key")
    if type(key) is not list or not key or len(key) > 16 or not all(_key_value(part) for part in key):
        raise InvalidCandidate("key is not a list of 1-16 strings (at most 1,024 UTF-16 units) or 64-bit integers")
    stages = data.get("stages")
    if (
        type(stages) is not list
        or not 0 < len(stages) <= 64
        or not all(type(s) is int and 0 <= s < 64 for s in stages)
        or stages != sorted(set(stages))
    ):
        raise InvalidCandidate("stages is not an ascending list of distinct stage numbers")
    timestamp = data.get("timestamp_ms")
    if type(timestamp) is not int or not MIN_MS <= timestamp <= MAX_MS:
        raise InvalidCandidate("timestamp_ms is not an integer between years 1 and 9999")
    received = data.get("received_ms")
    if type(received) is not int or not 0 <= received <= MAX_MS:
        raise InvalidCandidate("received_ms is not a non-negative integer")
    event_id = _text(data, "event_id", _MAX_EVENT_ID)
    if not event_id:
        raise InvalidCandidate("event_id is empty")
    if type(event) is not dict:
        raise InvalidCandidate("the event is not a JSON object")
    # Counting brackets in the bytes settles nearly every line at C speed; only a line with more
    # brackets than the limit is walked.
    if event_json.count(b"{") + event_json.count(b"[") > MAX_DEPTH and _deeper_than(event, MAX_DEPTH):
        raise InvalidCandidate(f"event is nested deeper than {MAX_DEPTH} levels")
    # The parse above only checks the bytes: most candidates are held and expire without an alert,
    # so keeping their parsed events would cost a third of the stage's time (allocation and the
    # collector); an entry parses its bytes again if an alert needs them.
    candidate = Candidate(
        rule_id=rule_id,
        key=tuple(key),
        stages=tuple(stages),
        timestamp_ms=timestamp,
        event_id=event_id,
        event=None,
        event_json=event_json,
        watermark_host=_text(data, "watermark_host", _MAX_TEXT),
        origin=_text(data, "origin", _MAX_TEXT),
    )
    return ReceivedCandidate(candidate, received)


def _text(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if type(value) is not str or len(value) > limit:
        raise InvalidCandidate(f"{name} is missing, not a string, or longer than {limit} characters")
    return value


def _key_value(value: Any) -> bool:
    if type(value) is str:
        # ignore_above counts UTF-16 units: a string of at most half the limit fits whatever it holds.
        return len(value) <= KEYWORD_IGNORE_ABOVE // 2 or len(value.encode("utf-16-le")) // 2 <= KEYWORD_IGNORE_ABOVE
    return type(value) is int and -_INT64 <= value < _INT64


def _deeper_than(node: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        children = current.values() if type(current) is dict else current
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def dead_letter(
    rejection: Rejection, topic: str, partition: int, offset: int, key: bytes | None
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a dead letter: the original bytes, cut if large, and why and where from."""
    headers = [
        (REASON_HEADER, str(rejection.reason).encode()),
        (DETAIL_HEADER, rejection.detail[:DETAIL_MAX_CHARS].encode()),
        (TOPIC_HEADER, topic[:_MAX_TEXT].encode()),
        (PARTITION_HEADER, str(partition).encode()),
        (OFFSET_HEADER, str(offset).encode()),
    ]
    if rejection.lines:
        headers.append((LINES_HEADER, ",".join(map(str, rejection.lines)).encode()))
    if rejection.count > 1:
        headers.append((COUNT_HEADER, str(rejection.count).encode()))
    value = rejection.raw
    if len(value) > DEAD_LETTER_MAX_BYTES:
        headers.append((ORIGINAL_SIZE_HEADER, str(len(value)).encode()))
        value = value[:DEAD_LETTER_MAX_BYTES]
    if key is not None and len(key) > DEAD_LETTER_KEY_MAX_BYTES:
        headers.append((ORIGINAL_KEY_SIZE_HEADER, str(len(key)).encode()))
        key = key[:DEAD_LETTER_KEY_MAX_BYTES]
    return key, value, headers


def alert_records(alert: Alert) -> list[tuple[bytes, bytes]]:
    """(key, value) of the alert's documents, building blocks first and the shell last, all keyed by the match."""
    key = alert.id.encode()
    return [(key, orjson.dumps(doc)) for doc in alert.documents]


def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as a dict of strings (for readers of the dead-letter topic)."""
    return {name: value.decode() for name, value in headers or []}
