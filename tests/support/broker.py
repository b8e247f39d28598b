"""The test broker, and producing to it and reading from it, always within a deadline.

Broker tests run against ``$KAFKA_BOOTSTRAP_SERVERS`` when it is set (a real Kafka, PLAINTEXT),
else against one embedded Tansu broker started for the whole session (``kafka_bootstrap``, a
fixture of ``tests.support.plugin``), only if a test asks for it.

Reading never relies on the high watermark (the embedded broker reports it wrong after a
multi-record batch): readers assign every partition from the start and stop once they have the
records they expect and the topic has stayed quiet for a moment, so that extra records show.
Every function takes either bootstrap servers or a test's ``ServiceSettings`` (whose security
settings its clients then use, e.g. TLS).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from eqlstream_dev.broker import EmbeddedBroker

from app.service.ingest import IngestStage
from app.service.kafka import KafkaConnection
from app.service.topics import OwnedTopic, TopicAdmin, changelog_topic, owned_topics
from app.settings import ServiceSettings

QUIET_S = 1.0  # how long a topic must stay silent after the expected records before reading stops
EXTERNAL = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
Target = str | ServiceSettings


@contextmanager
def broker_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the Kafka the broker tests use: the external one, or an embedded broker."""
    if EXTERNAL:
        yield EXTERNAL
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


def client_config(target: Target, **extra: Any) -> dict[str, Any]:
    """librdkafka settings of a test's own client: the service's bootstrap and security settings."""
    if isinstance(target, str):
        base: dict[str, Any] = {"bootstrap.servers": target}
    else:
        base = KafkaConnection.from_settings(target).librdkafka()
    return {**base, "log_level": 0, **extra}


def prepare_topics(settings: ServiceSettings, input_partitions: int = 4) -> None:
    """The input topics and the service's own topics, created before any worker starts, as the service would."""
    admin = TopicAdmin(KafkaConnection.from_settings(settings))
    inputs = [OwnedTopic(topic, input_partitions, {}) for topic in settings.input_topics]
    admin.ensure(settings, [*inputs, *owned_topics(settings)])


def create_topics(settings: ServiceSettings, partitions: dict[str, int]) -> None:
    """Create topics with the given partition counts (checked if they exist)."""
    admin = TopicAdmin(KafkaConnection.from_settings(settings))
    admin.ensure(settings, [OwnedTopic(name, count, {}, exact_partitions=True) for name, count in partitions.items()])


def produce(
    target: Target, topic: str, records: list[tuple[bytes | None, bytes | None, int]], **config: Any
) -> list[tuple[int, int]]:
    """Produce (key, value, partition) records in order; returns each one's (partition, offset)."""
    producer = Producer(client_config(target, **{"linger.ms": 5, "acks": "all", **config}))
    positions: list[tuple[int, int] | None] = [None] * len(records)
    errors = []

    def delivered(index: int) -> Any:
        def callback(error: Any, message: Message) -> None:
            if error is not None:
                errors.append(error)
            else:
                positions[index] = (message.partition(), message.offset())

        return callback

    for index, (key, value, partition) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and not errors, errors
    return positions  # type: ignore[return-value]


def read_topic(target: Target, topic: str, partitions: int, expected: int, timeout: float = 30.0) -> list[Message]:
    """Every record of ``topic``: at least ``expected`` of them, plus whatever arrives within ``QUIET_S`` after."""
    consumer = Consumer(client_config(target, **{"group.id": "test-reader", "enable.auto.commit": False}))
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


def committed(target: Target, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset of each partition (negative: none)."""
    consumer = Consumer(client_config(target, **{"group.id": group, "enable.auto.commit": False}))
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in offsets}


def unread(target: Target, group: str, topic: str, partitions: int, wait: float = 1.5) -> int:
    """How many records a consumer resuming at the group's committed offsets still gets within ``wait`` s."""
    consumer = Consumer(
        client_config(target, **{"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
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


def wait_for_state(settings: ServiceSettings, writes: int, timeout: float = 60.0) -> list[Message]:
    """Until the sequence stage's changelog holds ``writes`` records (its pending sequences are stored)."""
    return read_topic(settings, changelog_topic(settings), settings.candidates_partitions, writes, timeout)
