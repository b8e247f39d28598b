"""The sequence stage's batch (app.service.sequence), with a recording producer and an in-memory store.

What makes the stage at-least-once without losing a sequence is an order: a batch's alerts (and
dead letters) are produced and acknowledged first, then its state changes go to the changelog and
are acknowledged, then they are written to the store, and only a batch that got through all of it
may be committed. A failure of the store or of the brokers is a ``StageFailure`` (the process then
exits without committing); nothing a record contains can be one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError

from app.core import Detector
from app.core.engine.sequence import EXPIRE_PER_CALL
from app.core.engine.state import decode_state
from app.service.observer import NullObserver
from app.service.records import encode_candidate, header_map, partition_of
from app.service.sequence import InRecord, SequenceStage, StageFailure, WriteBackStore
from app.settings import ServiceSettings
from tests.support.detection import RULES, T0, attack, mshta_start

SETTINGS = ServiceSettings(
    alerts_topic="alerts", dead_letter_topic="dead", candidates_topic="candidates", candidates_partitions=4
)
CHANGELOG = "changelog"


class _Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset


class RecordingProducer:
    """Acknowledges everything at flush, noting the order; ``refuse`` makes a topic's records fail."""

    def __init__(self, journal: list[tuple[str, Any]]) -> None:
        self.journal = journal
        self.refuse: dict[str, KafkaError] = {}
        self._waiting: list[tuple[str, Any, Any]] = []
        self._offsets: dict[str, int] = {}

    def produce(self, topic: str, value: bytes | None, key: bytes | None, on_delivery: Any, **kwargs: Any) -> None:
        self._waiting.append((topic, (key, value, kwargs), on_delivery))

    def flush(self, _timeout: float) -> int:
        waiting, self._waiting = self._waiting, []
        for topic, record, delivered in waiting:
            if topic in self.refuse:
                delivered(self.refuse[topic], None)
                continue
            self.journal.append((topic, record))
            self._offsets[topic] = self._offsets.get(topic, -1) + 1
            delivered(None, _Message(self._offsets[topic]))
        return 0

    def poll(self, _timeout: float) -> int:
        return 0


class MemoryPartitions:
    """``PartitionStore`` in memory; ``fail`` makes writes raise as RocksDB does on a full disk."""

    def __init__(self, journal: list[tuple[str, Any]]) -> None:
        self.journal = journal
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int | None] = {}
        self.fail = False

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def write(self, partition: int, changes: Mapping[bytes, bytes | None], changelog_offset: int | None) -> None:
        if self.fail:
            raise Exception("IO error: No space left on device")  # noqa: TRY002 - what rocksdict raises
        self.journal.append(("store", (partition, dict(changes), changelog_offset)))
        data = self.data.setdefault(partition, {})
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self.offsets[partition] = changelog_offset

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.get(partition, {}).items()))

    def figures(self) -> tuple[int, int]:
        return sum(map(len, self.data.values())), 0


@pytest.fixture
def journal() -> list[tuple[str, Any]]:
    return []


@pytest.fixture
def stage(journal: list[tuple[str, Any]]) -> SequenceStage:
    return SequenceStage(
        SETTINGS, Detector(RULES), MemoryPartitions(journal), RecordingProducer(journal), NullObserver(), CHANGELOG
    )


def records_of(*events: dict[str, Any], offset: int = 0) -> list[InRecord]:
    """The candidates records the ingest stage would write for ``events``, one per line."""
    extractor = Detector(RULES).extractor
    records = []
    for event in events:
        for candidate in extractor.extract(orjson.dumps(event))[0]:
            partition = partition_of(candidate.rule_id, candidate.key, SETTINGS.candidates_partitions)
            records.append(InRecord(partition, offset + len(records), None, encode_candidate(candidate, T0)))
    return records


def run(stage: SequenceStage, records: list[InRecord]) -> Any:
    return asyncio.run(stage.process(records))


def test_alerts_are_acknowledged_before_the_state_is_produced_and_written(
    stage: SequenceStage, journal: list[tuple[str, Any]]
) -> None:
    start, inbound = attack(0)
    first = run(stage, records_of(start))
    assert first.alerts == [] and [topic for topic, _ in journal] == [CHANGELOG, "store"]
    journal.clear()
    second = run(stage, records_of(inbound, offset=1))
    assert len(second.alerts) == 1
    topics = [topic for topic, _ in journal]
    assert topics == ["alerts", "alerts", "alerts", CHANGELOG, "store"]  # blocks, shell, then the state
    keys = {record[0] for topic, record in journal if topic == "alerts"}
    assert keys == {second.alerts[0].id.encode()}  # every document of the match under the shell's key
    (_, (partition, changes, offset)) = journal[-1]
    assert offset == 1  # the changelog offset the store's write reaches
    (state,) = [decode_state(value) for value in changes.values() if value is not None]
    assert [entry.event_id for entry in state.entries] == list(second.alerts[0].event_ids)
    assert state.emitted  # the alerted pair is remembered: a re-read batch writes the same alert id only


def test_a_store_that_cannot_write_fails_the_batch_after_its_alerts(
    stage: SequenceStage, journal: list[tuple[str, Any]]
) -> None:
    """A full disk: the alerts are already acknowledged (never lost), the batch is not finished, so it
    is not committed and is read again after the restart (same alert ids)."""
    stage.store.fail = True  # type: ignore[attr-defined]
    with pytest.raises(StageFailure, match="cannot write the state of partition .*No space left"):
        run(stage, records_of(*attack(0)))
    assert [topic for topic, _ in journal].count("alerts") == 3


def test_a_state_record_the_brokers_refuse_fails_the_batch(
    stage: SequenceStage, journal: list[tuple[str, Any]]
) -> None:
    stage._producer.refuse[CHANGELOG] = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)  # type: ignore[attr-defined]  # noqa: SLF001
    with pytest.raises(StageFailure, match="refused a .*-byte state record"):
        run(stage, records_of(attack(0)[0]))
    assert "store" not in [topic for topic, _ in journal]


def test_an_alert_the_brokers_refuse_becomes_a_produce_refused_dead_letter(
    stage: SequenceStage, journal: list[tuple[str, Any]]
) -> None:
    stage._producer.refuse["alerts"] = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)  # type: ignore[attr-defined]  # noqa: SLF001
    result = run(stage, records_of(*attack(0)))
    assert len(result.alerts) == 1
    letters = [record for topic, record in journal if topic == "dead"]
    assert len(letters) == 3  # one per refused document
    for key, value, kwargs in letters:
        headers = header_map(kwargs["headers"])
        assert headers["eqlstream.reason"] == "produce_refused" and headers["eqlstream.topic"] == "alerts"
        assert key == result.alerts[0].id.encode() and orjson.loads(value)["kibana.alert.group.id"]
    assert [topic for topic, _ in journal][-2:] == [CHANGELOG, "store"]  # the batch finishes


def test_bad_lines_and_tombstones_are_dead_letters_one_by_one(
    stage: SequenceStage, journal: list[tuple[str, Any]]
) -> None:
    start, inbound = attack(0)
    (good,) = records_of(start)
    packed = InRecord(good.partition, 7, b"k", b"\n".join([b"garbage", good.value or b"", b'{"a":1}\t{}']))
    tombstone = InRecord(2, 8, b"t", None)
    result = run(stage, [packed, tombstone])
    assert (result.candidates, result.dead_letters) == (1, 3)
    letters = [record for topic, record in journal if topic == "dead"]
    assert [(key, value) for key, value, _ in letters] == [(b"k", b"garbage"), (b"k", b'{"a":1}\t{}'), (b"t", b"")]
    assert all(header_map(kwargs["headers"])["eqlstream.reason"] == "invalid_candidate" for _, _, kwargs in letters)
    assert header_map(letters[0][2]["headers"])["eqlstream.offset"] == "7"
    assert len(run(stage, records_of(inbound, offset=9)).alerts) == 1  # the good line was kept


def test_unreadable_state_is_dropped_not_fatal(stage: SequenceStage) -> None:
    start, _ = attack(0)
    (record,) = records_of(start)
    view = WriteBackStore(stage.store, record.partition)
    key = stage.detector.sequencer(view).engines[RULES[0].meta.rule_id].state_key(("h1", "e0"))
    stage.store.data[record.partition] = {key.encode(): b"\x00 not state"}  # type: ignore[attr-defined]
    assert view.get(key) is None
    assert run(stage, [record]).candidates == 1


def test_state_behind_the_watermark_keeps_expiring_through_the_changelog_when_no_candidate_comes(
    journal: list[tuple[str, Any]],
) -> None:
    """After a flood of distinct keys, the timer finishes the expiry that a candidate only began."""
    settings = SETTINGS.model_copy(update={"watermark_quorum": 1})
    store = MemoryPartitions(journal)
    detector = Detector(RULES, settings.detection_options())
    stage = SequenceStage(settings, detector, store, RecordingProducer(journal), NullObserver(), CHANGELOG)
    flood = [mshta_start(f"f{i}", T0 + i, entity=f"e{i}") for i in range(6 * EXPIRE_PER_CALL)]
    run(stage, records_of(*flood))
    (late,) = records_of(mshta_start("late", T0 + 3_600_000, entity="late"), offset=len(flood))
    flooded_there = len(store.data[late.partition])
    assert flooded_there > EXPIRE_PER_CALL
    run(stage, [late])  # moves its partition's watermark an hour: expires the first EXPIRE_PER_CALL keys
    assert len(store.data[late.partition]) == flooded_there + 1 - EXPIRE_PER_CALL
    journal.clear()
    assert asyncio.run(stage.expire_idle()) == flooded_there - EXPIRE_PER_CALL
    assert asyncio.run(stage.expire_idle()) == 0
    assert list(store.data[late.partition]) == [b for b in store.data[late.partition] if b"late" in b]
    tombstones = [record for topic, record in journal if topic == CHANGELOG]
    assert len(tombstones) == flooded_there - EXPIRE_PER_CALL and all(value is None for _, value, _ in tombstones)
    assert [kind for kind, _ in journal][-1] == "store"  # acknowledged in the changelog, then written
