"""The ingest stage against a broker: candidates, dead letters and commits, as the extractor says.

The input is what the service meets: a few hundred synthetic events of every source shape (Elastic
Defend, Winlogbeat 7, raw Winlogbeat 8) with attacks and near misses, written to random partitions
with null keys as Beats does, plus records that must be dead-lettered. The expected output is
``CandidateExtractor.extract`` over the same records, one by one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import KafkaError, Producer

from app.detector import CandidateExtractor
from app.engine.sequence import Candidate
from app.kafka import ingest
from app.kafka.admin import ensure_topics
from app.kafka.ingest import IngestError, IngestStage
from app.kafka.records import (
    OFFSET_HEADER,
    PARTITION_HEADER,
    REASON_HEADER,
    TOPIC_HEADER,
    candidate_key,
    decode_candidate,
    header_map,
)
from app.rule import load_rules
from app.settings import Settings
from app.synthetic import generate_corpus
from tests.kafka.helpers import committed, ingest_until, produce, read_topic, unread

RULES = load_rules()
INPUT_PARTITIONS = 3
EVENTS = [orjson.dumps(e) for e in generate_corpus(7, 400, attack_rate=0.01, near_miss_rate=0.02, raw_share=0.3)]
START = orjson.dumps(
    {
        "@timestamp": "2024-05-14T08:00:00Z",
        "event": {"id": "jl-start", "category": ["process"], "type": ["start"]},
        "host": {"id": "json-lines-host"},
        "process": {"name": "mshta.exe", "entity_id": "jl-1", "args": ["mshta.exe", "-Embedding"]},
    }
)
BAD = [
    b"Mar 14 08:00:00 dc01 sshd[42]: Accepted publickey for admin",  # Logstash's plain codec
    EVENTS[0][: len(EVENTS[0]) // 2],  # truncated JSON
    b'[{"@timestamp": "2024-05-14T08:00:00Z"}]',  # a JSON array
    b"",  # an empty value
    START.replace(b"2024-05-14T08:00:00Z", b"yesterday").replace(b"jl-start", b"undated"),  # a candidate, no date
    START + b"\n" + b'{"truncated": ' + b"\n" + START.replace(b"jl-start", b"jl-start-2"),  # json_lines, one bad line
]


def _sample(noise: int) -> list[bytes]:
    """Five events that are candidates, then ``noise`` events of the corpus (mostly noise)."""
    extractor = CandidateExtractor(RULES)
    return [e for e in EVENTS if extractor.extract(e)[0]][:5] + EVENTS[:noise]


def _candidate_count(events: list[bytes]) -> int:
    extractor = CandidateExtractor(RULES)
    return sum(len(extractor.extract(e)[0]) for e in events)


def _identity(candidate: Candidate) -> bytes:
    """Everything the stage writes about a candidate except its receive time."""
    return orjson.dumps(
        [candidate.rule_id, candidate.key, candidate.stages, candidate.timestamp_ns, candidate.event_id]
        + [candidate.source, candidate.origin, candidate.event],
        option=orjson.OPT_SORT_KEYS,
    )


def _expected(topic: str, records: list[tuple[bytes | None, bytes, int]], positions: list[tuple[int, int]]):
    """What the extractor makes of each record: candidates, and dead letters as (key, value, headers)."""
    extractor = CandidateExtractor(RULES)
    candidates: Counter[bytes] = Counter()
    dead: Counter[tuple] = Counter()
    for (key, value, _), (partition, offset) in zip(records, positions, strict=True):
        found, rejections = extractor.extract(value, f"{topic}/{partition}")
        candidates.update(_identity(c) for c in found)
        dead.update((key, r.raw, r.reason, topic, str(partition), str(offset)) for r in rejections)
    return candidates, dead


def _mixed_input(rng: random.Random) -> list[tuple[bytes | None, bytes, int]]:
    records: list[tuple[bytes | None, bytes]] = [(None, event) for event in EVENTS]
    records += [(f"bad-{i}".encode() if i % 2 else None, value) for i, value in enumerate(BAD)]
    rng.shuffle(records)
    return [(key, value, rng.randrange(INPUT_PARTITIONS)) for key, value in records]


def test_candidates_dead_letters_and_commits(kafka_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings = kafka_settings
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.input_topics
    ensure_topics(settings, {topic: INPUT_PARTITIONS, settings.candidates_topic: 4, settings.dead_letter_topic: 1})
    records = _mixed_input(random.Random(11))
    positions = produce(bootstrap, topic, records)
    expected_candidates, expected_dead = _expected(topic, records, positions)
    assert len(expected_candidates) >= 15 and len(expected_dead) == len(BAD)  # the input covers what it should

    caplog.set_level(logging.INFO, logger="eqlstream.ingest")
    with IngestStage(settings, RULES, batch_size=150) as stage:
        ingest_until(stage, len(records))
        assert stage.poll_once(0.5) == 0
    assert stage.stats.records == len(records) and stage.stats.batches >= 3
    assert stage.stats.candidates == expected_candidates.total()
    assert stage.stats.dead_letters == expected_dead.total() == stage.stats.rejected.total()
    assert stage.stats.produce_errors == stage.stats.consumer_errors == 0

    # Every candidate exactly as the extractor makes it, keyed and stamped; one partition per join key.
    messages = read_topic(bootstrap, settings.candidates_topic, 4, expected_candidates.total())
    found: Counter[bytes] = Counter()
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for message in messages:
        candidate, received_ns = decode_candidate(message.value())
        assert message.key() == candidate_key(candidate)
        assert message.timestamp()[1] == candidate.timestamp_ns // 1_000_000
        assert received_ns > 0
        found[_identity(candidate)] += 1
        partitions_of_key[message.key()].add(message.partition())
    assert set(found) == set(expected_candidates)
    assert all(found[c] >= n for c, n in expected_candidates.items())  # at-least-once: duplicates are copies
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())
    assert len(partitions_of_key) > 1

    # Dead letters: the original bytes and key, and where they came from.
    letters = read_topic(bootstrap, settings.dead_letter_topic, 1, expected_dead.total())
    got = Counter()
    for message in letters:
        headers = header_map(message.headers())
        where = (headers[TOPIC_HEADER], headers[PARTITION_HEADER], headers[OFFSET_HEADER])
        got[(message.key(), message.value() or b"", headers[REASON_HEADER], *where)] += 1
    assert got == expected_dead
    assert {reason for _, _, reason, *_ in got} == {"invalid_json", "not_an_object", "invalid_timestamp"}

    # One structured line per dead letter, without the record's content.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead letter ")]
    assert len(lines) == expected_dead.total()
    assert all("reason=" in line and f"topic={topic} " in line and "offset=" in line for line in lines)
    assert not any(b"sshd" in line.encode() or b"jl-start" in line.encode() for line in lines)

    # The input offsets were committed: the group resumes after the last record of each partition.
    ends = {p: max(o for q, o in positions if q == p) + 1 for p, _ in positions}
    assert committed(bootstrap, settings.consumer_group, topic, INPUT_PARTITIONS) == ends
    assert unread(bootstrap, settings.consumer_group, topic, INPUT_PARTITIONS) == 0


def test_run_with_a_pattern_subscription_reads_every_matching_topic_until_stopped(
    kafka_settings: Settings, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("winlogbeat")
    matching = [f"{prefix}-a", f"{prefix}-b"]
    other = unique_name("other")
    settings = kafka_settings.model_copy(update={"input_topic_pattern": f"{prefix}-.*"})  # no ^: the stage adds it
    bootstrap = settings.kafka_bootstrap_servers
    ensure_topics(settings, {**dict.fromkeys([*matching, other], 2), settings.candidates_topic: 4})
    events = _sample(95)
    for topic in [*matching, other]:
        produce(bootstrap, topic, [(None, event, i % 2) for i, event in enumerate(events)])
    expected = _candidate_count(events)

    stage = IngestStage(settings, RULES)
    stop = threading.Event()
    runner = threading.Thread(target=stage.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while stage.stats.records < 2 * len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # time enough for records of the other topic to show, were they read
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert stage.stats.records == 2 * len(events)
    messages = read_topic(bootstrap, settings.candidates_topic, 4, 2 * expected)
    origins = Counter(decode_candidate(m.value())[0].origin.rsplit("/", 1)[0] for m in messages)
    assert origins == {matching[0]: expected, matching[1]: expected}


class _FlakyProducer:
    """A real producer whose first ``failures`` delivery rounds fail every record (as a broker outage would)."""

    def __init__(self, config: dict, failures: int) -> None:
        self._producer = Producer(config)
        self.failures = failures
        self._failing: list = []

    def produce(self, topic: str, **kwargs) -> None:
        if self.failures:
            self._failing.append(kwargs["on_delivery"])
        else:
            self._producer.produce(topic, **kwargs)

    def flush(self, timeout: float) -> int:
        if self._failing:
            for delivered in self._failing:
                delivered(KafkaError(KafkaError._MSG_TIMED_OUT, "broker unreachable (test)"), None)
            self._failing.clear()
            self.failures -= 1
        return self._producer.flush(timeout)

    def poll(self, timeout: float) -> int:
        return self._producer.poll(timeout)


def _prepare(settings: Settings) -> tuple[list[tuple[int, int]], int]:
    """20 events (some candidates) on a 1-partition input; returns their positions and the candidate count."""
    ensure_topics(settings, {settings.input_topics: 1, settings.candidates_topic: 4, settings.dead_letter_topic: 1})
    events = _sample(15)
    positions = produce(settings.kafka_bootstrap_servers, settings.input_topics, [(None, e, 0) for e in events])
    return positions, _candidate_count(events)


def test_a_failed_production_is_retried_before_committing(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = kafka_settings
    positions, candidates = _prepare(settings)
    monkeypatch.setattr(ingest, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(ingest, "Producer", lambda config: _FlakyProducer(config, failures=1))
    with IngestStage(settings, RULES) as stage:
        ingest_until(stage, len(positions))
    assert stage.stats.produce_errors > 0
    assert len(read_topic(settings.kafka_bootstrap_servers, settings.candidates_topic, 4, candidates)) == candidates
    assert committed(settings.kafka_bootstrap_servers, settings.consumer_group, settings.input_topics, 1) == {
        0: len(positions)
    }


def test_production_that_keeps_failing_stops_the_stage_uncommitted_and_a_restart_reads_it_again(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = kafka_settings
    bootstrap = settings.kafka_bootstrap_servers
    positions, candidates = _prepare(settings)
    monkeypatch.setattr(ingest, "RETRY_BACKOFF_S", 0.01)
    with monkeypatch.context() as patch:
        patch.setattr(ingest, "Producer", lambda config: _FlakyProducer(config, failures=1_000))
        with IngestStage(settings, RULES) as stage, pytest.raises(IngestError) as raised:
            ingest_until(stage, len(positions))
    message = str(raised.value)
    assert f"records to {settings.candidates_topic} in 3 attempts (broker unreachable (test)" in message
    assert "the input offsets were not committed" in message
    assert stage.stats.produce_errors > 0 and stage.stats.produce_errors % 3 == 0
    assert committed(bootstrap, settings.consumer_group, settings.input_topics, 1)[0] < 0  # nothing committed

    with IngestStage(settings, RULES) as restarted:
        ingest_until(restarted, len(positions))
    assert len(read_topic(bootstrap, settings.candidates_topic, 4, candidates)) == candidates
    assert committed(bootstrap, settings.consumer_group, settings.input_topics, 1) == {0: len(positions)}
