"""Candidates as the ingest stage writes them, made up for the sequence-stage parts.

The sequence stage's parts need many candidates (a flood) and a few attacks (two candidates that
complete a sequence), without running an ingest stage to make them. Both start from real
candidates: the two events of an attack of the synthetic fleet (Elastic Defend), put through the
detection core's extractor. A flood candidate is the attack's first candidate under a join key
of its own (an ``mshta.exe -Embedding`` process start of a new process entity) with the template's
event JSON, unchanged: the stage parses and checks every line alike and the engine keeps a stage-1
event's bytes as they come, so this changes nothing the stage does per candidate, while a million
of them cost no more than their keys to make. An attack's events
carry their key in their fields, so that its alert can be recognised on the alerts topic.

``FloodWriter`` packs candidate lines per candidates partition the way the ingest stage does
(``app.service.records.pack``), as if each poll of 5,000 raw records had been all candidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from confluent_kafka import Producer
from eqlstream_dev import synthetic

from app.core import Candidate, CompiledRule, Detector
from app.core.timeparse import format_timestamp
from app.service.records import encode_candidate, pack, partition_of
from bench.common import produce

FLOOD_HOSTS = 500  # hosts the flood comes from: the watermark sees a fleet, not one clock
LINES_PER_POLL = 5_000 // 8  # candidates per partition and poll when every record of a poll is one
ATTACK_PREFIX = "bench-attack-"


@dataclass(frozen=True)
class Templates:
    """The two candidates of one real attack: a process start and its inbound connection."""

    first: Candidate
    second: Candidate


def templates(rules: list[CompiledRule], seed: int) -> Templates:
    """The first attack of a small synthetic Defend fleet, as candidates."""
    extractor = Detector(rules).extractor
    found: dict[str, list[Candidate]] = {}
    for event in synthetic.iter_corpus(
        seed, 2_000, 1e-3, 0.0, 1.0, near_miss_kinds=(), attack_kinds=(synthetic.ATTACK,)
    ):
        case = event.get("labels", {}).get(synthetic.CASE_ID_LABEL)
        if case is not None:
            candidates, _ = extractor.extract(orjson.dumps(event))
            pair = found.setdefault(case, [])
            pair += candidates
            if [c.stages for c in pair] == [(0,), (1,)]:
                return Templates(pair[0], pair[1])
    raise RuntimeError("the synthetic fleet wrote no attack")


def host_id(index: int) -> str:
    """The host id of the ``index``-th host of the flood's fleet."""
    return str(uuid.UUID(bytes=hashlib.md5(b"host%d" % (index % FLOOD_HOSTS)).digest()))


def flood(
    template: Candidate, keys: int, start_ms: int, span_ms: int, *, hot: bool = False, first: int = 0
) -> Iterator[Candidate]:
    """``keys`` stage-1 candidates spread over ``span_ms`` of event time from ``FLOOD_HOSTS`` hosts, each
    under a join key of its own (or all under one key, ``hot``); numbered from ``first``, so that floods
    sent in parts never repeat a key."""
    for index in range(first, first + keys):
        entity = "hot" if hot else hashlib.blake2b(b"flood%d" % index, digest_size=24).hexdigest()
        host = host_id(0 if hot else index)
        yield dataclasses.replace(
            template,
            key=(host, entity),
            event_id=f"flood-{index}",
            timestamp_ms=start_ms + (index - first) * span_ms // max(keys, 1),
            watermark_host=host_id(index),
            origin="bench",
        )


def attack(templates_: Templates, number: int, timestamp_ms: int) -> tuple[Candidate, Candidate]:
    """A fresh attack: both candidates under a new key (``ATTACK_PREFIX`` + number), 100 ms apart."""
    entity = f"{ATTACK_PREFIX}{number}"
    pair = []
    for offset, template in enumerate((templates_.first, templates_.second)):
        event = dict(template.event)
        event["process"] = {**event["process"], "entity_id": entity}
        event["@timestamp"] = format_timestamp(timestamp_ms + 100 * offset)
        pair.append(
            dataclasses.replace(
                template,
                key=(template.key[0], entity),
                event_id=f"{entity}-{offset}",
                event=event,
                event_json=orjson.dumps(event),
                timestamp_ms=timestamp_ms + 100 * offset,
            )
        )
    return pair[0], pair[1]


class FloodWriter:
    """Packs candidate lines per candidates partition and produces them as the ingest stage would."""

    def __init__(self, producer: Producer, topic: str, partitions: int) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.records = 0
        self.candidates = 0
        self._lines: dict[int, list[bytes]] = {}

    def add(self, candidate: Candidate) -> None:
        partition = partition_of(candidate.rule_id, candidate.key, self.partitions)
        lines = self._lines.setdefault(partition, [])
        lines.append(encode_candidate(candidate, time.time_ns() // 1_000_000))
        self.candidates += 1
        if len(lines) >= LINES_PER_POLL:
            self._send(partition)

    def send_to(self, partition: int, candidates: list[Candidate]) -> None:
        """``candidates`` to ``partition`` whatever their keys' partition (to move that partition's watermark)."""
        received_ms = time.time_ns() // 1_000_000
        self._lines.setdefault(partition, []).extend(encode_candidate(c, received_ms) for c in candidates)
        self.candidates += len(candidates)
        self._send(partition)

    def flush(self) -> None:
        """Send every partition's pending lines (the end of a poll)."""
        for partition in list(self._lines):
            self._send(partition)
        self.producer.poll(0)

    def _send(self, partition: int) -> None:
        for value in pack(self._lines.pop(partition, [])):
            produce(self.producer, self.topic, value, partition)
            self.records += 1
