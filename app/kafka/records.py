"""The records eqlstream writes to Kafka, and reads back from its own candidates topic.

* **Candidates** (``EQLSTREAM_CANDIDATES_TOPIC``): key = the rule-scoped join key as canonical JSON
  (``["<rule_id>", "<host.id>", "<process.entity_id>"]``), so that every event of a sequence lands on
  one partition whatever partition Beats picked; value = JSON of the candidate (below); record
  timestamp = the event's ``@timestamp``.
* **Dead letters** (``EQLSTREAM_DEAD_LETTER_TOPIC``): value = the original bytes, unchanged; key = the
  original key; headers ``eqlstream.reason`` (a stable label), ``eqlstream.detail`` (a sentence),
  ``eqlstream.topic``, ``eqlstream.partition``, ``eqlstream.offset``. A record longer than
  ``DEAD_LETTER_MAX_BYTES`` is cut to that length (Kafka's default limit is 1 MB, and a dead letter
  that cannot be written would stall the ingest stage); ``eqlstream.original_size`` then says so.
* **Alerts** (``EQLSTREAM_ALERTS_TOPIC``): one record per Kibana alert document (two building
  blocks, then the shell), key = the document's ``kibana.alert.uuid``, value = the document's JSON,
  record timestamp = the time of the sequence's last event. Indexing by key never duplicates.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.detector import Alert, Rejection
from app.engine.sequence import Candidate

REASON_HEADER = "eqlstream.reason"
DETAIL_HEADER = "eqlstream.detail"
TOPIC_HEADER = "eqlstream.topic"
PARTITION_HEADER = "eqlstream.partition"
OFFSET_HEADER = "eqlstream.offset"
ORIGINAL_SIZE_HEADER = "eqlstream.original_size"
DEAD_LETTER_MAX_BYTES = 512 * 1024


def candidate_key(candidate: Candidate) -> bytes:
    """The candidates-topic key: the rule id and the join key, canonical JSON."""
    return orjson.dumps([candidate.rule_id, *candidate.key])


def encode_candidate(candidate: Candidate, received_ns: int) -> bytes:
    """The candidates-topic value; ``received_ns`` is when ingest read the event (for detection latency)."""
    return orjson.dumps(
        {
            "rule_id": candidate.rule_id,
            "key": list(candidate.key),
            "stages": list(candidate.stages),
            "timestamp_ns": candidate.timestamp_ns,
            "event_id": candidate.event_id,
            "source": candidate.source,
            "origin": candidate.origin,
            "received_ns": received_ns,
            "event": candidate.event,
        }
    )


class InvalidCandidate(ValueError):
    """A record on the candidates topic that is not a candidate this service wrote."""


# The candidate fields and their JSON types; bool is excluded from int on purpose (True is an int in Python).
_CANDIDATE_FIELDS: dict[str, type] = {
    "rule_id": str,
    "key": list,
    "stages": list,
    "timestamp_ns": int,
    "event_id": str,
    "event": dict,
    "source": str,
    "origin": str,
    "received_ns": int,
}


_JSON_NAMES = {str: "string", list: "array", int: "integer", dict: "object"}


def decode_candidate(value: bytes) -> tuple[Candidate, int]:
    """Inverse of ``encode_candidate``: the candidate and the time ingest received it.

    Raises ``InvalidCandidate`` for anything else (another producer on the topic, a corrupt
    record): the engine must never see a wrongly typed field.
    """
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidCandidate(f"not JSON ({exc})") from None
    if type(data) is not dict:
        raise InvalidCandidate(f"a JSON {type(data).__name__}, not an object")
    for name, kind in _CANDIDATE_FIELDS.items():
        if type(data.get(name)) is not kind:
            raise InvalidCandidate(f"{name} is missing or not a JSON {_JSON_NAMES[kind]}")
    if not all(type(part) is str for part in data["key"]):
        raise InvalidCandidate("key holds a value that is not a string")
    if not data["stages"] or not all(type(stage) is int and stage >= 0 for stage in data["stages"]):
        raise InvalidCandidate("stages is not a list of stage numbers")
    candidate = Candidate(
        rule_id=data["rule_id"],
        key=tuple(data["key"]),
        stages=tuple(data["stages"]),
        timestamp_ns=data["timestamp_ns"],
        event_id=data["event_id"],
        event=data["event"],
        source=data["source"],
        origin=data["origin"],
    )
    return candidate, data["received_ns"]


def dead_letter(rejection: Rejection, topic: str, partition: int, offset: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead-letter value (the original bytes, cut if huge) and headers that say why and where from."""
    headers = [
        (REASON_HEADER, rejection.reason.encode()),
        (DETAIL_HEADER, rejection.detail[:1000].encode()),
        (TOPIC_HEADER, topic.encode()),
        (PARTITION_HEADER, str(partition).encode()),
        (OFFSET_HEADER, str(offset).encode()),
    ]
    value = rejection.raw
    if len(value) > DEAD_LETTER_MAX_BYTES:
        headers.append((ORIGINAL_SIZE_HEADER, str(len(value)).encode()))
        value = value[:DEAD_LETTER_MAX_BYTES]
    return value, headers


def alert_records(alert: Alert) -> list[tuple[bytes, bytes]]:
    """(key, value) of the alert's documents, building blocks first and the shell last."""
    return [(doc["kibana.alert.uuid"].encode(), orjson.dumps(doc)) for doc in alert.documents]


def alert_timestamp_ms(alert: Alert) -> int:
    """The record timestamp of an alert: when its last event happened."""
    return alert.match.events[-1].timestamp_ns // 1_000_000


def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
    """Headers as a dict of strings (for readers of the dead-letter topic)."""
    return {name: value.decode() for name, value in headers or []}
