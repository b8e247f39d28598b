"""The ingest stage against a broker: candidates, dead letters and commits, as the extractor says.

The input is what the service meets: a few hundred synthetic events of every source shape (Elastic
Defend, Winlogbeat 7, raw Winlogbeat 8) with attacks and near misses, written to random partitions
with null keys as Beats does, plus records that must be dead-lettered. The expected output is the
extractor's (``Detector.extractor.extract``) over the same records, one by one: the stage packs
each poll's candidates per candidates partition (several lines per record, null key, the partition
of the rule and join key), dead-letters what cannot be evaluated with its original bytes and key,
and commits an input offset only once everything produced from it and before it is acknowledged.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from eqlstream_dev.synthetic import generate_corpus

from app.core import Candidate, Detector
from app.service import ingest
from app.service.ingest import IngestError, IngestStage
from app.service.kafka import KafkaConnection
from app.service.observer import NullObserver
from app.service.records import (
    COUNT_HEADER,
    LINES_HEADER,
    OFFSET_HEADER,
    PARTITION_HEADER,
    REASON_HEADER,
    TOPIC_HEADER,
    decode_candidate,
    header_map,
    partition_of,
)
from app.service.web import Health
from app.settings import ServiceSettings
from tests.support.broker import committed, create_topics, ingest_until, produce, read_topic, unread
from tests.support.detection import RULES, mshta_start
from tests.support.settings import input_topic, with_settings

INPUT_PARTITIONS = 3
EVENTS = [orjson.dumps(e) for e in generate_corpus(7, 400, attack_rate=0.01, near_miss_rate=0.02, raw_share=0.3)]
START = orjson.dumps(mshta_start("jl-start", host="json-lines-host", entity="jl-1"))
BAD = [
    b"Mar 14 08:00:00 dc01 sshd[42]: Accepted publickey for admin",  # Logstash's plain codec
    EVENTS[0][: len(EVENTS[0]) // 2],  # truncated JSON
    b'[{"@timestamp": "2024-05-14T08:00:00Z"}]',  # a JSON array
    b"",  # an empty value
    START.replace(b"2024-05-01T10:00:00.000Z", b"yesterday").replace(b"jl-start", b"undated"),  # a candidate, no date
    START + b"\n" + b'{"truncated": ' + b"\n" + START.replace(b"jl-start", b"jl-start-2"),  # json_lines, one bad line
    b'{"EventCode": 1, "Image": "C:\\\\Windows\\\\System32\\\\mshta.exe"}',  # an unknown Windows layout
    orjson.dumps(mshta_start("fan-out", entity=[f"e{i}" for i in range(65)])),  # 65 join keys
]
BOM = b"\xef\xbb\xbf" + START.replace(b"jl-start", b"bom-start")  # processed: a byte-order mark is no reason to refuse


def stage_of(settings: ServiceSettings, batch_size: int = ingest.BATCH_SIZE) -> IngestStage:
    observer = NullObserver()
    health = Health(60.0, observer)
    connection = KafkaConnection.from_settings(settings)
    return IngestStage(
        settings, Detector(RULES, settings.detection_options()), connection, observer, health, batch_size
    )


def extract(value: bytes, origin: str = "") -> tuple[list[Candidate], list[Any]]:
    return Detector(RULES).extractor.extract(value, origin)


def sample(noise: int) -> list[bytes]:
    """Five events that are candidates, then ``noise`` events of the corpus (mostly noise)."""
    return [e for e in EVENTS if extract(e)[0]][:5] + EVENTS[:noise]


def candidate_count(events: list[bytes]) -> int:
    return sum(len(extract(e)[0]) for e in events)


def identity(candidate: Candidate) -> bytes:
    """Everything the stage writes about a candidate except its receive time."""
    return orjson.dumps(
        [candidate.rule_id, candidate.key, candidate.stages, candidate.timestamp_ms, candidate.event_id]
        + [candidate.watermark_host, candidate.origin, candidate.event_json.decode()]
    )


def expected_output(topic: str, records: list[tuple[bytes | None, bytes, int]], positions: list[tuple[int, int]]):
    """What the extractor makes of each record: candidates, and dead letters as (key, value, reason, where)."""
    candidates: Counter[bytes] = Counter()
    dead: Counter[tuple[Any, ...]] = Counter()
    for (key, value, _), (partition, offset) in zip(records, positions, strict=True):
        found, rejections = extract(value or b"", f"{topic}/{partition}")
        candidates.update(identity(c) for c in found)
        dead.update((key, r.raw, str(r.reason), topic, str(partition), str(offset)) for r in rejections)
    return candidates, dead


def mixed_input(rng: random.Random) -> list[tuple[bytes | None, bytes, int]]:
    records: list[tuple[bytes | None, bytes]] = [(None, event) for event in [*EVENTS, BOM]]
    records += [(f"bad-{i}".encode() if i % 2 else None, value) for i, value in enumerate(BAD)]
    rng.shuffle(records)
    return [(key, value, rng.randrange(INPUT_PARTITIONS)) for key, value in records]


def read_candidates(settings: ServiceSettings, expected: int, records: int | None = None) -> list[tuple[Message, Any]]:
    """(record, decoded line) of every line on the candidates topic (waiting for ``expected`` lines)."""
    lines: list[tuple[Message, Any]] = []
    deadline = time.monotonic() + 30
    while len(lines) < expected:
        messages = read_topic(settings, settings.candidates_topic, 4, records or 1, timeout=30)
        lines = [(m, decode_candidate(line, 1 << 20)) for m in messages for line in m.value().split(b"\n")]
        assert time.monotonic() < deadline, f"{len(lines)} candidate lines, expected {expected}"
    return lines


def test_candidates_dead_letters_and_commits(kafka_settings: ServiceSettings, caplog: pytest.LogCaptureFixture) -> None:
    settings = kafka_settings
    topic = input_topic(settings)
    create_topics(settings, {topic: INPUT_PARTITIONS, settings.candidates_topic: 4, settings.dead_letter_topic: 1})
    records = mixed_input(random.Random(11))
    positions = produce(settings, topic, records)
    expected_candidates, expected_dead = expected_output(topic, records, positions)
    # The input covers what it should: many candidates, the BOM record's among them, every kind of dead letter.
    assert len(expected_candidates) >= 15 and len(expected_dead) == len(BAD)

    caplog.set_level(logging.INFO, logger="eqlstream.ingest")
    with stage_of(settings, batch_size=150) as stage:
        ingest_until(stage, len(records))
        assert stage.poll_once(0.5) == 0
        stage.flush()
        # Flushed: the input offsets were committed, the group resumes after the last record of each partition.
        ends = {p: max(o for q, o in positions if q == p) + 1 for p, _ in positions}
        assert committed(settings, settings.consumer_group, topic, INPUT_PARTITIONS) == ends
    assert stage.stats.records == len(records) and stage.stats.batches >= 3
    assert stage.stats.candidates == expected_candidates.total()
    assert stage.stats.dead_letters == expected_dead.total() == stage.stats.rejected.total()
    assert stage.stats.produce_errors == stage.stats.consumer_errors == 0
    assert unread(settings, settings.consumer_group, topic, INPUT_PARTITIONS) == 0

    # Every candidate exactly as the extractor makes it, packed per partition: null key, the join key's
    # partition, the record stamped with its latest event's time.
    lines = read_candidates(settings, expected_candidates.total())
    found: Counter[bytes] = Counter()
    packed: Counter[int] = Counter()
    for message, received in lines:
        candidate = received.candidate
        assert message.key() is None
        assert message.partition() == partition_of(candidate.rule_id, candidate.key, 4)
        assert received.received_ms > 0
        found[identity(candidate)] += 1
        packed[id(message)] += 1
    for message in {id(m): m for m, _ in lines}.values():
        newest = max(decode_candidate(line, 1 << 20).candidate.timestamp_ms for line in message.value().split(b"\n"))
        assert message.timestamp()[1] == max(newest, 0) or newest < 0
    assert found == expected_candidates
    assert max(packed.values()) > 1  # several candidates share a record

    # Dead letters: the original bytes and key, and where they came from; a multi-line record's bad lines.
    letters = read_topic(settings, settings.dead_letter_topic, 1, expected_dead.total())
    got: Counter[tuple[Any, ...]] = Counter()
    for message in letters:
        headers = header_map(message.headers())
        where = (headers[TOPIC_HEADER], headers[PARTITION_HEADER], headers[OFFSET_HEADER])
        got[(message.key(), message.value() or b"", headers[REASON_HEADER], *where)] += 1
        if headers[REASON_HEADER] == "invalid_json" and b"\n" in (message.value() or b""):
            assert (headers[LINES_HEADER], COUNT_HEADER in headers) == ("2", False)
    assert got == expected_dead
    assert {reason for _, _, reason, *_ in got} == {
        "invalid_json",
        "not_an_object",
        "invalid_timestamp",
        "unknown_layout",
        "too_many_join_keys",
    }

    # A structured line per kind of dead letter (rate-limited), without the record's content.
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead letter ")]
    assert {line.split()[2] for line in logged} == {f"reason={reason}" for _, _, reason, *_ in got}
    assert all(f"topic={topic} " in line and "offset=" in line for line in logged)
    assert not any(b"sshd" in line.encode() or b"jl-start" in line.encode() for line in logged)


def test_run_with_a_pattern_subscription_reads_every_matching_topic_until_stopped(
    kafka_settings: ServiceSettings, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("winlogbeat")
    matching = [f"{prefix}-a", f"{prefix}-b"]
    other = unique_name("other")
    settings = with_settings(kafka_settings, input_topic_pattern=f"{prefix}-.*")  # no ^: the stage adds it
    create_topics(settings, {**dict.fromkeys([*matching, other], 2), settings.candidates_topic: 4})
    events = sample(95)
    for topic in [*matching, other]:
        produce(settings, topic, [(None, event, i % 2) for i, event in enumerate(events)])
    expected = candidate_count(events)

    stage = stage_of(settings)
    stop = threading.Event()
    runner = threading.Thread(target=stage.run, args=(stop,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while stage.stats.records < 2 * len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # time enough for records of the other topic to show, were they read
    stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert stage.stats.records == 2 * len(events)
    origins = Counter(
        received.candidate.origin.rsplit("/", 1)[0] for _, received in read_candidates(settings, 2 * expected)
    )
    assert origins == {matching[0]: expected, matching[1]: expected}


class _FakeProducer:
    """A real producer in front of which deliveries can fail or be held back.

    ``fail(topic, count, error)``: the next ``count`` deliveries to ``topic`` report ``error``;
    ``hold()``/``release()``: records are kept, unsent and unacknowledged, until released.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self.failures: dict[str, tuple[int, KafkaError]] = {}
        self.held: list[tuple[str, dict[str, Any]]] | None = None
        self._failed: list[tuple[Any, KafkaError]] = []

    def fail(self, topic: str, count: int, error: KafkaError) -> None:
        self.failures[topic] = (count, error)

    def produce(self, topic: str, **kwargs: Any) -> None:
        count, error = self.failures.get(topic, (0, None))
        if count:
            self.failures[topic] = (count - 1, error)
            self._failed.append((kwargs["on_delivery"], error))
        elif self.held is not None:
            self.held.append((topic, kwargs))
        else:
            self._producer.produce(topic, **kwargs)

    def _report(self) -> None:
        """Serve the failed deliveries' reports; as librdkafka, one that raises leaves the rest for the next poll."""
        while self._failed:
            delivered, error = self._failed.pop(0)
            delivered(error, None)

    def poll(self, timeout: float) -> int:
        self._report()
        return self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        self._report()
        return self._producer.flush(timeout)

    def hold(self) -> None:
        self.held = []

    def release(self) -> None:
        held, self.held = self.held or [], None
        for topic, kwargs in held:
            self._producer.produce(topic, **kwargs)


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> list[_FakeProducer]:
    """Every producer the ingest stages of the test create, fakes in front of real ones."""
    made: list[_FakeProducer] = []

    def factory(config: dict[str, Any]) -> _FakeProducer:
        made.append(_FakeProducer(config))
        return made[-1]

    monkeypatch.setattr(ingest, "Producer", factory)
    return made


def prepare(settings: ServiceSettings, noise: int = 15) -> tuple[list[tuple[int, int]], int]:
    """Events (some candidates) on a 1-partition input; returns their positions and the candidate count."""
    create_topics(settings, {input_topic(settings): 1, settings.candidates_topic: 4, settings.dead_letter_topic: 1})
    events = sample(noise)
    positions = produce(settings, input_topic(settings), [(None, e, 0) for e in events])
    return positions, candidate_count(events)


def test_a_failed_production_is_sent_again_before_committing(
    kafka_settings: ServiceSettings, fake_producer: list[_FakeProducer]
) -> None:
    settings = kafka_settings
    positions, candidates = prepare(settings)
    with stage_of(settings) as stage:
        fake_producer[0].fail(settings.candidates_topic, 2, KafkaError(KafkaError._MSG_TIMED_OUT, "broker gone (test)"))
        ingest_until(stage, len(positions))
        stage.flush()
    assert stage.stats.produce_errors == 2
    assert len(read_candidates(settings, candidates)) == candidates
    assert committed(settings, settings.consumer_group, input_topic(settings), 1) == {0: len(positions)}


def test_offsets_are_never_committed_past_an_unacknowledged_record(
    kafka_settings: ServiceSettings, fake_producer: list[_FakeProducer]
) -> None:
    """Batches are read on while the first one's records wait for their acknowledgement: nothing is committed."""
    settings = kafka_settings
    positions, candidates = prepare(settings, noise=200)
    with stage_of(settings, batch_size=40) as stage:
        fake_producer[0].hold()
        ingest_until(stage, len(positions))
        time.sleep(ingest.COMMIT_INTERVAL_S * 2)
        assert stage.poll_once(0.2) == 0  # commits what is acknowledged: nothing
        assert stage.stats.batches >= 5
        assert committed(settings, settings.consumer_group, input_topic(settings), 1)[0] < 0
        fake_producer[0].release()
        stage.flush()
        assert committed(settings, settings.consumer_group, input_topic(settings), 1) == {0: len(positions)}
    assert len(read_candidates(settings, candidates)) == candidates


def test_a_record_the_brokers_refuse_becomes_a_produce_refused_dead_letter(
    kafka_settings: ServiceSettings, fake_producer: list[_FakeProducer]
) -> None:
    """A candidates record refused for good (too large): a small dead letter says so, and the batch moves on."""
    settings = kafka_settings
    positions, candidates = prepare(settings)
    with stage_of(settings) as stage:
        fake_producer[0].fail(settings.candidates_topic, 1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        ingest_until(stage, len(positions))
        stage.flush()
    (letter,) = read_topic(settings, settings.dead_letter_topic, 1, 1)
    headers = header_map(letter.headers())
    assert (headers[REASON_HEADER], headers[TOPIC_HEADER], headers[OFFSET_HEADER]) == (
        "produce_refused",
        settings.candidates_topic,
        "-1",
    )
    assert letter.key() is None  # the refused record's own key: a packed candidates record has none
    refused = [decode_candidate(line, 1 << 20) for line in letter.value().split(b"\n")]
    assert len(refused) + len(read_candidates(settings, candidates - len(refused))) == candidates
    assert committed(settings, settings.consumer_group, input_topic(settings), 1) == {0: len(positions)}


def test_production_that_keeps_failing_stops_the_stage_uncommitted_and_a_restart_reads_it_again(
    kafka_settings: ServiceSettings, fake_producer: list[_FakeProducer]
) -> None:
    settings = kafka_settings
    topic = input_topic(settings)
    positions, candidates = prepare(settings)
    with stage_of(settings) as stage, pytest.raises(IngestError) as raised:
        fake_producer[0].fail(settings.candidates_topic, 1_000, KafkaError(KafkaError._MSG_TIMED_OUT, "gone (test)"))
        ingest_until(stage, len(positions))
        stage.flush()
    message = str(raised.value)
    assert f"could not deliver a record to {settings.candidates_topic} in 3 attempts" in message
    assert "the input offsets of its batch were not committed" in message
    assert stage.stats.produce_errors >= 3
    assert committed(settings, settings.consumer_group, topic, 1)[0] < 0  # nothing committed

    with stage_of(settings) as restarted:
        ingest_until(restarted, len(positions))
        restarted.flush()
    assert len(read_candidates(settings, candidates)) == candidates
    assert committed(settings, settings.consumer_group, topic, 1) == {0: len(positions)}
