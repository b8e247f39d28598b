"""Producing to and reading from a test broker, always within a deadline.

Reading never relies on the high watermark (the embedded broker reports it wrong after a
multi-record batch): readers assign every partition from the start and stop once they have the
records they expect and the topic has stayed quiet for a moment, so that extra records show.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from app.kafka.ingest import IngestStage

QUIET_S = 1.0  # how long a topic must stay silent after the expected records before reading stops


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, int]]) -> list[tuple[int, int]]:
    """Produce (key, value, partition) records in order; returns each one's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    positions: list[tuple[int, int] | None] = [None] * len(records)
    errors = []

    def delivered(index: int):
        def callback(error, message: Message) -> None:
            if error is not None:
                errors.append(error)
            else:
                positions[index] = (message.partition(), message.offset())

        return callback

    for index, (key, value, partition) in enumerate(records):
        producer.produce(topic, value=value, key=key, partition=partition, on_delivery=delivered(index))
    assert producer.flush(30) == 0 and not errors, errors
    return positions  # type: ignore[return-value]


def read_topic(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 30.0) -> list[Message]:
    """Every record of ``topic``: at least ``expected`` of them, plus whatever arrives within ``QUIET_S`` after."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    last_arrival = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(1000, 0.2) if m.error() is None]
            found += batch
            now = time.monotonic()
            if batch:
                last_arrival = now
            elif len(found) >= expected and now - last_arrival >= QUIET_S:
                return found
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: {len(found)} records within {timeout} s, expected {expected}")


def ingest_until(stage: IngestStage, records: int, timeout: float = 30.0) -> int:
    """Poll the stage until it has handled ``records`` records (fails after ``timeout`` s); returns the count."""
    handled = 0
    deadline = time.monotonic() + timeout
    while handled < records:
        assert time.monotonic() < deadline, f"the ingest stage handled {handled} of {records} records in {timeout} s"
        handled += stage.poll_once(0.5)
    return handled


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset of each partition (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets}


def unread(bootstrap: str, group: str, topic: str, partitions: int, wait: float = 1.5) -> int:
    """How many records a consumer resuming at the group's committed offsets still gets within ``wait`` s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])  # no offset: the committed one
    count = 0
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            count += sum(1 for m in consumer.consume(1000, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return count
