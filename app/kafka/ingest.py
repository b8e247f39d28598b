"""The ingest stage: raw event topics in, candidates and dead letters out (plain confluent-kafka).

Nearly every event is noise, so this stage must keep up with the firehose: it consumes large
batches, runs one prefilter scan per batch (``CandidateExtractor.extract_many``) and parses only the
records that may matter. What it finds goes to the candidates topic keyed by join key (every event
of a sequence then meets on one partition, whatever partition Beats picked); what cannot be
evaluated goes, byte for byte, to the dead-letter topic (formats in ``app.kafka.records``).

Delivery is at-least-once. A batch's input offsets are committed only after every record produced
from it has been acknowledged by the brokers (``acks=all``); a produce failure is retried a few
times, then the stage stops with ``IngestError`` without committing, and its restart reads the
batch again. The duplicates this can create are harmless: the sequence engine drops repeated event
ids and alert ids are deterministic. Nothing is kept between batches, so a rebalance (which
librdkafka runs inside ``consume``) never finds uncommitted work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from app import metrics
from app.detector import CandidateExtractor, Rejection
from app.engine.sequence import Candidate
from app.kafka.config import client_config, redacted
from app.kafka.records import candidate_key, dead_letter, encode_candidate
from app.rule.compiler import CompiledRule
from app.settings import Settings
from app.timeparse import NS_PER_MS, NS_PER_S, parse_duration
from app.web import Health

log = logging.getLogger("eqlstream.ingest")

BATCH_SIZE = 5_000  # records per consume(): large enough for one prefilter scan to pay off
POLL_TIMEOUT_S = 0.1  # consume() waits this long for a full batch: it bounds the latency added at low rates
LAG_INTERVAL_S = 5.0  # how often the consumer lag gauge is refreshed (it asks librdkafka per partition)
STAGE = "ingest"
PRODUCE_ATTEMPTS = 3
RETRY_BACKOFF_S = 1.0  # doubled after each failed attempt
DELIVERY_TIMEOUT_MS = 30_000  # librdkafka retries a record internally for this long before reporting failure
# flush() waits for every delivery report; each arrives within the delivery timeout, so this only
# guards against a report that never comes.
FLUSH_TIMEOUT_S = DELIVERY_TIMEOUT_MS / 1000 + 10
# Commit failures that only mean the partition moved to another member in a rebalance: its new
# owner re-reads the uncommitted batch (duplicates, no loss), so the stage carries on.
_REBALANCE_ERRORS = frozenset(
    {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}
)
# Commit failures while the brokers or the group coordinator cannot be reached (a broker restart,
# a network cut): the batch's records are acknowledged already, so the stage carries on; its next
# commit covers these offsets, and a restart before that re-reads them (duplicates, no loss).
_UNREACHABLE_ERRORS = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }
)


class IngestError(RuntimeError):
    """The stage cannot go on (records could not be produced, or a fatal client error)."""


@dataclass
class IngestStats:
    """What the stage has done, for metrics. Counts are of committed batches, except the error counts."""

    records: int = 0
    batches: int = 0
    candidates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    produce_errors: int = 0
    consumer_errors: int = 0
    commit_errors: int = 0


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A record to produce, computed once per batch so a retry sends exactly the same bytes."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int  # 0: no event time, the producer stamps the send time
    headers: list[tuple[str, bytes]] | None = None


class IngestStage:
    """Consume the input topics, extract candidates, produce them and the dead letters, commit.

    Use ``run(stop)`` in the service; tests drive ``poll_once`` and close the stage (it is a
    context manager).
    """

    def __init__(
        self,
        settings: Settings,
        rules: list[CompiledRule],
        batch_size: int = BATCH_SIZE,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.extractor = CandidateExtractor(rules, settings)
        self.stats = IngestStats()
        self.health = health if health is not None else Health(parse_duration(settings.stall_timeout) / NS_PER_S)
        self.health.register(STAGE)
        self.health.set_ready(STAGE, False, "waiting for the consumer group to assign the input partitions")
        self._rule_names = {rule.meta.rule_id: rule.meta.name for rule in rules}
        for name in self._rule_names.values():  # series exist from the start: dashboards show 0, not "no data"
            metrics.CANDIDATES.labels(name)
        for counter in (metrics.PRODUCE_ERRORS, metrics.CONSUMER_ERRORS, metrics.DEAD_LETTERS):
            counter.labels(STAGE)
        self._lag_due = 0.0
        base = client_config(settings)
        session_ms = parse_duration(settings.session_timeout) // NS_PER_MS
        consumer_config: dict[str, object] = {
            **base,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            # Frequent heartbeats make a group form faster after a (re)join; Kafka asks for <= 1/3 of the session.
            "heartbeat.interval.ms": max(session_ms // 10, 500),
            "fetch.wait.max.ms": parse_duration(settings.fetch_max_wait) // NS_PER_MS,
            # Input topics created after the start (or new ones matching a pattern) are found within 30 s,
            # not librdkafka's default 5 minutes.
            "topic.metadata.refresh.interval.ms": 30_000,
            "logger": log,
        }
        if settings.instance_id:
            consumer_config["group.instance.id"] = settings.instance_id
        producer_config: dict[str, object] = {
            **base,
            "acks": "all",
            # librdkafka's own retries then neither duplicate nor reorder records; the embedded broker accepts
            # it too (the broker tests produce through this configuration).
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            # A candidate holds at most max_record_bytes (the extractor refuses bigger events).
            "message.max.bytes": max(settings.max_record_bytes, 1_000_000),
            "logger": log,
        }
        self._consumer = Consumer(consumer_config)
        self._producer = Producer(producer_config)
        self._closed = False
        if settings.input_topic_pattern:
            pattern = settings.input_topic_pattern
            subscription = [pattern if pattern.startswith("^") else f"^{pattern}"]  # librdkafka: ^ marks a regex
        else:
            subscription = [topic.strip() for topic in settings.input_topics.split(",") if topic.strip()]
        self._consumer.subscribe(subscription, on_assign=self._on_assign, on_revoke=_log_assignment("revoked"))
        log.info(
            "ingest stage subscribed topics=%s group=%s candidates_topic=%s dead_letter_topic=%s config=%s",
            ",".join(subscription),
            settings.consumer_group,
            settings.candidates_topic,
            settings.dead_letter_topic,
            redacted(base),
        )

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set (checked between batches), then close the stage."""
        try:
            while not stop.is_set():
                self.poll_once(POLL_TIMEOUT_S)
                self.health.beat(STAGE)
                if time.monotonic() >= self._lag_due:
                    self._lag_due = time.monotonic() + LAG_INTERVAL_S
                    self.report_lag()
        finally:
            self.close()

    def poll_once(self, timeout: float) -> int:
        """Consume one batch (waiting up to ``timeout`` seconds), produce what it yields, commit it.

        Returns the number of records handled. Raises ``IngestError`` when the batch's records could
        not be produced (its offsets are then not committed).
        """
        messages = self._consumer.consume(num_messages=self.batch_size, timeout=timeout)
        started = time.perf_counter()
        received_ns = time.time_ns()
        # Per-record Python work costs as much as the detection itself (bench/RESULTS.md, ingest profile):
        # the common case goes through C-level map/any only.
        records = messages
        if any(map(Message.error, messages)):
            records = [message for message in messages if not self._is_error(message)]
        if not records:
            return 0
        no_join_key = self.extractor.stats.no_join_key
        values = list(map(Message.value, records))
        if None in values:  # a tombstone has no value
            values = [value or b"" for value in values]
        origins = _Origins(records)
        outgoing: list[_Outgoing] = []
        dead: list[tuple[Rejection, Message]] = []
        found_by_rule: Counter[str] = Counter()
        for index, (found, rejections) in self.extractor.extract_many(values, origins):
            source = records[index]
            outgoing += [self._candidate(candidate, received_ns) for candidate in found]
            outgoing += [self._dead_letter(rejection, source) for rejection in rejections]
            dead += [(rejection, source) for rejection in rejections]
            found_by_rule.update(candidate.rule_id for candidate in found)
            for candidate in found:
                metrics.EVENT_TIME_LAG.labels(STAGE).observe((received_ns - candidate.timestamp_ns) / NS_PER_S)
        if outgoing:
            self._deliver(outgoing)
        self._commit()
        self._count(records, found_by_rule, dead, self.extractor.stats.no_join_key - no_join_key)
        metrics.INGEST_BATCH_DURATION.observe(time.perf_counter() - started)
        return len(records)

    def _count(
        self,
        records: list[Message],
        found_by_rule: Counter[str],
        dead: list[tuple[Rejection, Message]],
        no_join_key: int,
    ) -> None:
        """Stats and metrics of a committed batch; one log line per dead letter (they are rare)."""
        for rejection, source in dead:
            log.info(
                "dead letter reason=%s topic=%s partition=%d offset=%d",
                rejection.reason,
                source.topic(),
                source.partition(),
                source.offset(),
            )
            self.stats.rejected[rejection.reason] += 1
            metrics.EVENTS_REJECTED.labels(STAGE, rejection.reason).inc()
        self.stats.records += len(records)
        self.stats.batches += 1
        self.stats.candidates += sum(found_by_rule.values())
        self.stats.dead_letters += len(dead)
        for topic, count in Counter(map(Message.topic, records)).items():
            metrics.EVENTS_CONSUMED.labels(topic).inc(count)
        for rule_id, count in found_by_rule.items():
            metrics.CANDIDATES.labels(self._rule_names[rule_id]).inc(count)
        if dead:
            metrics.DEAD_LETTERS.labels(STAGE).inc(len(dead))
        if no_join_key:
            metrics.WITHOUT_JOIN_KEY.inc(no_join_key)
        metrics.LAST_PROCESSED.labels(STAGE).set(time.time())

    def report_lag(self) -> None:
        """Set the consumer lag gauge from the high watermarks librdkafka saw in its last fetches."""
        lag: Counter[str] = Counter()
        try:
            assigned = self._consumer.assignment()
            for position in self._consumer.position(assigned):
                _low, high = self._consumer.get_watermark_offsets(position, cached=True)
                # Before the first fetch of a partition its position is unknown (negative): counted as 0.
                lag[position.topic] += max(high - position.offset, 0) if position.offset >= 0 and high >= 0 else 0
        except KafkaException as exc:
            log.debug("consumer lag unavailable error=%s", exc)
            return
        for topic, records in lag.items():
            metrics.CONSUMER_LAG.labels(STAGE, topic).set(records)

    def close(self) -> None:
        """Leave the consumer group and flush the producer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._consumer.close()
        left = self._producer.flush(FLUSH_TIMEOUT_S)
        log.info(
            "ingest stage closed records=%d batches=%d candidates=%d dead_letters=%d produce_errors=%d unflushed=%d",
            self.stats.records,
            self.stats.batches,
            self.stats.candidates,
            self.stats.dead_letters,
            self.stats.produce_errors,
            left,
        )

    def __enter__(self) -> IngestStage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _is_error(self, message: Message) -> bool:
        """Consumer errors come as messages: fatal ones stop the stage, the others are logged and skipped."""
        error = message.error()
        if error is None:
            return False
        if error.fatal():
            raise IngestError(f"fatal consumer error: {error.str()} ({error.name()})")
        if error.code() != KafkaError._PARTITION_EOF:
            self.stats.consumer_errors += 1
            metrics.CONSUMER_ERRORS.labels(STAGE).inc()
            log.warning(
                "consumer error error=%s topic=%s partition=%s", error.name(), message.topic(), message.partition()
            )
        return True

    def _candidate(self, candidate: Candidate, received_ns: int) -> _Outgoing:
        return _Outgoing(
            self.settings.candidates_topic,
            candidate_key(candidate),
            encode_candidate(candidate, received_ns=received_ns),
            # Kafka reserves negative timestamps; an event dated before 1970 gets the send time instead.
            max(candidate.timestamp_ns // NS_PER_MS, 0),
        )

    def _dead_letter(self, rejection: Rejection, source: Message) -> _Outgoing:
        value, headers = dead_letter(rejection, source.topic(), source.partition(), source.offset())
        return _Outgoing(self.settings.dead_letter_topic, source.key(), value, 0, headers)

    def _deliver(self, outgoing: list[_Outgoing]) -> None:
        """Produce the records until all are acknowledged, in up to ``PRODUCE_ATTEMPTS`` attempts.

        A retry sends the whole batch again (records that made it the first time are duplicated,
        which the readers tolerate); after the last failure ``IngestError`` stops the stage.
        """
        backoff = RETRY_BACKOFF_S
        for attempt in range(1, PRODUCE_ATTEMPTS + 1):
            errors = self._produce(outgoing)
            if not errors:
                return
            self.stats.produce_errors += len(errors)
            metrics.PRODUCE_ERRORS.labels(STAGE).inc(len(errors))
            log.warning(
                "produce failed attempt=%d/%d records=%d errors=%d error=%s",
                attempt,
                PRODUCE_ATTEMPTS,
                len(outgoing),
                len(errors),
                _describe(errors[0]),
            )
            if attempt < PRODUCE_ATTEMPTS:
                time.sleep(backoff)
                backoff *= 2
        raise IngestError(
            f"could not produce {len(outgoing)} records to {', '.join(sorted({r.topic for r in outgoing}))} in "
            f"{PRODUCE_ATTEMPTS} attempts ({_describe(errors[0])}); the input offsets were not committed"
        )

    def _produce(self, outgoing: list[_Outgoing]) -> list[KafkaError]:
        """One attempt: produce every record and wait for all delivery reports; returns the errors."""
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                errors.append(error)

        for record in outgoing:
            try:
                self._send(record, delivered)
            except KafkaException as exc:  # refused locally, e.g. a record over message.max.bytes
                errors.append(exc.args[0])
        left = self._producer.flush(FLUSH_TIMEOUT_S)
        if left:
            errors.append(KafkaError(KafkaError._MSG_TIMED_OUT, f"{left} records not acknowledged in time"))
        return errors

    def _send(self, record: _Outgoing, delivered: Callable[[KafkaError | None, Message], None]) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    timestamp=record.timestamp_ms,
                    headers=record.headers,
                    on_delivery=delivered,
                )
                return
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self._producer.poll(0.1)

    def _commit(self) -> None:
        """Commit, synchronously, the offsets after the last records consume() returned: the batch's end.

        librdkafka stores each returned record's offset (enable.auto.offset.store), so committing the
        stored offsets needs no pass over the batch's records.
        """
        try:
            committed = self._consumer.commit(asynchronous=False) or []
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._NO_OFFSET:  # nothing new to commit
                return
            self._commit_failed(exc.args[0], self._consumer.assignment())
            return
        for partition in committed:
            if partition.error is not None:
                self._commit_failed(partition.error, [partition])

    def _commit_failed(self, error: KafkaError, offsets: list[TopicPartition]) -> None:
        where = _names(offsets)
        if error.code() in _REBALANCE_ERRORS:
            self.stats.commit_errors += 1
            metrics.CONSUMER_ERRORS.labels(STAGE).inc()
            log.warning(
                "commit lost to a rebalance, the batch will be read again error=%s partitions=%s", error.name(), where
            )
            return
        if error.code() in _UNREACHABLE_ERRORS:
            self.stats.commit_errors += 1
            metrics.CONSUMER_ERRORS.labels(STAGE).inc()
            log.warning(
                "commit failed, the brokers cannot be reached; a later commit covers the batch error=%s partitions=%s",
                error.name(),
                where,
            )
            return
        raise IngestError(f"cannot commit offsets of {where}: {_describe(error)}")


    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave this member its partitions (possibly none, with more members than partitions)."""
        log.info("partitions assigned count=%d partitions=%s", len(partitions), _names(partitions))
        metrics.REBALANCES.labels(STAGE).inc()
        self.health.set_ready(STAGE, True)


def _describe(error: KafkaError) -> str:
    return f"{error.str()} ({error.name()})"


def _log_assignment(change: str) -> Callable[[Consumer, list[TopicPartition]], None]:
    """A rebalance callback that logs the partitions gained or lost in one line."""

    def callback(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions %s count=%d partitions=%s", change, len(partitions), _names(partitions))

    return callback


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}/{tp.partition}" for tp in partitions)


class _Origins:
    """``topic/partition`` of a batch's records, made only for the few records the extractor reports
    (formatting it for all 5,000 records of every batch cost ~0.4 µs per event)."""

    def __init__(self, records: list[Message]) -> None:
        self._records = records

    def __getitem__(self, index: int) -> str:
        message = self._records[index]
        return f"{message.topic()}/{message.partition()}"
