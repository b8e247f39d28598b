"""The ingest stage: raw event topics in, candidates and dead letters out (plain confluent-kafka).

Nearly every event is noise, so this stage must keep up with the firehose: it consumes large
batches, runs one prefilter scan per batch (``CandidateExtractor.extract_many``) and parses only
the records that may matter. What it finds goes to the candidates topic, one record per poll and
partition (``app.service.records``); what cannot be evaluated goes, byte for byte, to the
dead-letter topic.

Delivery is at-least-once without waiting on the brokers in the hot loop. A batch's records are
produced without blocking, and its input offsets are committed (asynchronously) once every
record produced from it, and from every batch before it, has been acknowledged (``acks=all``):
offsets never pass an unacknowledged record, while batch N+1 is already read and scanned. A
record the brokers refuse for good (too large, invalid) becomes a small dead letter of its own
(``produce_refused``) rather than a reason to stop; a record they cannot take for a while (a
broker outage) is sent again until ``DELIVERY_ATTEMPTS`` fail, then the stage stops with
``IngestError`` without committing, and its restart reads the batch again. The duplicates this
can create are harmless: the sequence engine drops repeated events and alert ids are
deterministic.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from app.core import Candidate, Detector, Rejection, RejectReason
from app.logs import RateLimiter, kafka_logger
from app.service.kafka import PERMANENT_DELIVERY_ERRORS, KafkaConnection, describe, redacted
from app.service.observer import Observer
from app.service.records import dead_letter, encode_candidate, pack, partition_of
from app.service.topics import RECORD_OVERHEAD_BYTES
from app.service.web import Health
from app.settings import ServiceSettings

log = logging.getLogger("eqlstream.ingest")

STAGE = "ingest"
BATCH_SIZE = 5_000  # records per consume(): large enough for one prefilter scan to pay off
POLL_TIMEOUT_S = 0.1  # consume() waits this long for a full batch: it bounds the latency added at low rates
COMMIT_INTERVAL_S = 0.5  # acknowledged batches are committed at most this often (and on revoke and close)
LAG_INTERVAL_S = 5.0  # how often the consumer lag gauge is refreshed
TOPIC_CHECK_INTERVAL_S = 30.0  # how often the subscribed topics are checked for existence
PROBLEM_CHECK_INTERVAL_S = 5.0  # the same, while the brokers are unreachable or no partition is assigned
DELIVERY_TIMEOUT_MS = 30_000  # librdkafka retries a record internally for this long before reporting failure
DELIVERY_ATTEMPTS = 3  # deliveries of one record that may time out before the stage stops
FLUSH_TIMEOUT_S = DELIVERY_TIMEOUT_MS / 1000 + 10
REFUSED_SAMPLE_BYTES = 64 * 1024  # what a produce_refused dead letter keeps of the refused record
# Commit failures that only mean the partition moved to another member in a rebalance, or that the
# coordinator cannot be reached for now: the offsets are re-read by their next owner or covered by
# a later commit (duplicates, no loss), so the stage carries on.
_TRANSIENT_COMMIT_ERRORS = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError._NO_OFFSET,
    }
)
_UNREACHABLE = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})


class IngestError(RuntimeError):
    """The stage cannot go on (records could not be delivered, or a fatal client error)."""


@dataclass
class IngestStats:
    """What the stage has done (for tests and the closing log line)."""

    records: int = 0
    batches: int = 0
    candidates: int = 0
    dead_letters: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    produce_errors: int = 0
    consumer_errors: int = 0


@dataclass(slots=True)
class _Outgoing:
    """A record to produce, kept until acknowledged so a retry sends exactly the same bytes."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int = -1  # -1: the producer's partitioner
    timestamp_ms: int = 0  # 0: no event time, the producer stamps the send time
    headers: list[tuple[str, str | bytes | None]] | None = None
    batch: _Batch | None = None
    attempts: int = 0
    refusal: bool = False  # the dead letter of a refused record: if refused too, dropped


@dataclass(slots=True)
class _Batch:
    """One consumed batch: where to commit once all it produced is acknowledged."""

    positions: list[TopicPartition]
    outstanding: int = 0


class IngestStage:
    """Consume the input topics, extract candidates, produce them and the dead letters, commit.

    Use ``run(stop)`` in the service; tests drive ``poll_once`` and close the stage (it is a
    context manager).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        detector: Detector,
        connection: KafkaConnection,
        observer: Observer,
        health: Health,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.extractor = detector.extractor
        self.observer = observer
        self.health = health
        self.stats = IngestStats()
        self._rule_names = {rule.meta.rule_id: rule.meta.name for rule in detector.rules}
        self._topics = list(settings.input_topics) if not settings.input_topic_pattern else []
        observer.prepare(STAGE, list(self._rule_names.values()), self._topics)
        health.register(STAGE)
        health.set_ready(STAGE, False, "waiting for the consumer group to assign the input partitions")
        self._dead_log = RateLimiter(on_dropped=observer.log_lines_dropped)
        self._broker_problem: str | None = None
        self._pending: deque[_Batch] = deque()
        self._retry: list[_Outgoing] = []
        self._stored: dict[tuple[str, int], int] = {}  # acknowledged positions not committed yet
        self._commit_due = 0.0
        self._lag_due = 0.0
        self._topics_due = 0.0
        self._assigned = False
        self._closed = False
        base = connection.librdkafka()
        session_ms = settings.session_timeout
        consumer_config: dict[str, object] = {
            **base,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            # Frequent heartbeats make a group form faster after a (re)join; Kafka asks for <= 1/3 of the session.
            "heartbeat.interval.ms": max(session_ms // 10, 500),
            "fetch.wait.max.ms": settings.fetch_max_wait,
            # Input topics created after the start (or new ones matching a pattern) are found within 30 s,
            # not librdkafka's default 5 minutes.
            "topic.metadata.refresh.interval.ms": 30_000,
            "on_commit": self._committed,
            "error_cb": self._client_error,
            "logger": kafka_logger("consumer"),
        }
        if settings.instance_id:
            consumer_config["group.instance.id"] = settings.instance_id
        producer_config: dict[str, object] = {
            **base,
            "acks": "all",
            # librdkafka's own retries then neither duplicate nor reorder records.
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "message.max.bytes": settings.max_record_bytes + RECORD_OVERHEAD_BYTES,
            "error_cb": self._client_error,
            "logger": kafka_logger("producer"),
        }
        self._consumer = Consumer(consumer_config)
        self._producer = Producer(producer_config)
        if settings.input_topic_pattern:
            pattern = settings.input_topic_pattern
            subscription = [pattern if pattern.startswith("^") else f"^{pattern}"]  # librdkafka: ^ marks a regex
        else:
            subscription = list(settings.input_topics)
        self._subscription = subscription
        self._consumer.subscribe(subscription, on_assign=self._on_assign, on_revoke=self._on_revoke)
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
                now = time.monotonic()
                if now >= self._lag_due:
                    self._lag_due = now + LAG_INTERVAL_S
                    self.report_lag()
                if now >= self._topics_due:
                    # Sooner while something is wrong, so readiness comes back soon after the fix.
                    problem = self._broker_problem is not None or not self._assigned
                    self._topics_due = now + (PROBLEM_CHECK_INTERVAL_S if problem else TOPIC_CHECK_INTERVAL_S)
                    self.check_topics()
        finally:
            self.close()

    def poll_once(self, timeout: float) -> int:
        """Consume one batch (waiting up to ``timeout`` seconds), produce what it yields, commit what is acknowledged.

        Returns the number of records handled. Raises ``IngestError`` when records could not be
        delivered after every attempt (their batches are then never committed).
        """
        messages = self._consumer.consume(num_messages=self.batch_size, timeout=timeout)
        self._producer.poll(0)
        self._resend()
        if not messages:
            self._commit_acknowledged(force=False)
            return 0
        started = time.perf_counter()
        # Per-record Python work costs as much as the detection itself: the common case goes through
        # C-level map/any only.
        records = messages
        if any(map(Message.error, messages)):
            records = [message for message in messages if not self._is_error(message)]
            if not records:
                return 0
        batch = _Batch(self._consumer.position(self._consumer.assignment()))
        values: list[bytes] = list(map(Message.value, records))  # type: ignore[arg-type]  # None handled below
        if None in values:  # a tombstone has no value
            values = [value or b"" for value in values]
        received_ms = time.time_ns() // 1_000_000
        no_join_key = self.extractor.stats.no_join_key
        found: list[Candidate] = []
        dead: list[tuple[Rejection, Message]] = []
        origins: Sequence[str] = _Origins(records)  # type: ignore[assignment]  # indexable like a sequence
        for index, (candidates, rejections) in self.extractor.extract_many(values, origins):
            found += candidates
            dead += [(rejection, records[index]) for rejection in rejections]
        outgoing = self._candidate_records(found, received_ms)
        outgoing += [self._dead_letter(rejection, source) for rejection, source in dead]
        self._pending.append(batch)
        for record in outgoing:
            record.batch = batch
            batch.outstanding += 1
            self._send(record)
        self._count(records, found, dead, self.extractor.stats.no_join_key - no_join_key, received_ms)
        self._commit_acknowledged(force=False)
        self.observer.batch_done(STAGE, time.perf_counter() - started)
        return len(records)

    def flush(self) -> None:
        """Wait until everything produced is acknowledged and commit it (tests; revoke and close)."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S * DELIVERY_ATTEMPTS
        while self._pending and any(batch.outstanding for batch in self._pending):
            if time.monotonic() > deadline:
                raise IngestError("records not acknowledged in time; their input offsets were not committed")
            self._producer.flush(1.0)
            self._resend()
        self._commit_acknowledged(force=True)

    def _candidate_records(self, found: list[Candidate], received_ms: int) -> list[_Outgoing]:
        """The batch's candidates, one record per candidates partition (split when large)."""
        if not found:
            return []
        partitions = self.settings.candidates_partitions
        lines: dict[int, list[bytes]] = {}
        newest: dict[int, int] = {}
        for candidate in found:
            partition = partition_of(candidate.rule_id, candidate.key, partitions)
            lines.setdefault(partition, []).append(encode_candidate(candidate, received_ms))
            newest[partition] = max(newest.get(partition, 0), candidate.timestamp_ms)
        return [
            # Kafka reserves negative timestamps; an event dated before 1970 gets the send time instead.
            _Outgoing(self.settings.candidates_topic, None, value, partition, max(newest[partition], 0))
            for partition, partition_lines in lines.items()
            for value in pack(partition_lines)
        ]

    def _count(
        self,
        records: Sequence[Message],
        found: list[Candidate],
        dead: list[tuple[Rejection, Message]],
        no_join_key: int,
        received_ms: int,
    ) -> None:
        """Stats and metrics of a batch; dead letters logged at most once per reason, topic and interval."""
        observer = self.observer
        for rejection, source in dead:
            self.stats.rejected[rejection.reason] += 1
            observer.rejected(STAGE, rejection.reason)
            allowed, dropped = self._dead_log.allow(f"{rejection.reason}:{source.topic()}")
            if allowed:
                more = f" (and {dropped} more since)" if dropped else ""
                log.info(
                    "dead letter reason=%s topic=%s partition=%d offset=%d detail=%s%s",
                    rejection.reason,
                    source.topic(),
                    source.partition(),
                    source.offset(),
                    rejection.detail[:200],
                    more,
                )
        self.stats.records += len(records)
        self.stats.batches += 1
        self.stats.candidates += len(found)
        self.stats.dead_letters += len(dead)
        if len(self._topics) == 1:
            observer.consumed(self._topics[0], len(records))
        else:
            for topic, count in Counter(map(Message.topic, records)).items():
                observer.consumed(topic or "", count)
        if found:
            for rule_id, count in Counter(candidate.rule_id for candidate in found).items():
                observer.candidates(self._rule_names[rule_id], count)
            for candidate in found:
                observer.event_lag(STAGE, (received_ms - candidate.timestamp_ms) / 1000)
        if dead:
            observer.dead_letters(STAGE, len(dead))
        if no_join_key:
            observer.without_join_key(no_join_key)

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
            self.observer.consumer_lag(STAGE, topic, records)

    def check_topics(self) -> None:
        """Say which subscribed topics do not exist (or that no topic matches the pattern), in words.

        An answer also shows the brokers are reachable again after an outage.
        """
        try:
            existing = set(self._consumer.list_topics(timeout=5.0).topics)
        except KafkaException:
            return  # the error callback reports the unreachable brokers
        self._broker_problem = None
        if self.settings.input_topic_pattern:
            pattern = re.compile(self._subscription[0])
            matched = any(pattern.match(topic) for topic in existing)
            problem = (
                None
                if matched
                else (f"no topic matches EQLSTREAM_INPUT_TOPIC_PATTERN={self.settings.input_topic_pattern!r}")
            )
        else:
            missing = [topic for topic in self._subscription if topic not in existing]
            problem = (
                f"input topic(s) {', '.join(missing)} do not exist: check EQLSTREAM_INPUT_TOPICS "
                "and the topic your shippers write to"
                if missing
                else None
            )
        if problem is not None:
            allowed, _ = self._dead_log.allow("missing-topics")
            if allowed:
                log.warning("%s", problem)
            self.health.set_ready(STAGE, False, problem)
        elif self._assigned:
            self.health.set_ready(STAGE, True)

    def close(self) -> None:
        """Deliver and commit what was read, leave the consumer group (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        except IngestError as exc:
            log.warning("closing without committing the last batches: %s", exc)
        finally:
            self._consumer.close()
        log.info(
            "ingest stage closed records=%d batches=%d candidates=%d dead_letters=%d produce_errors=%d",
            self.stats.records,
            self.stats.batches,
            self.stats.candidates,
            self.stats.dead_letters,
            self.stats.produce_errors,
        )

    def __enter__(self) -> IngestStage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- delivery --------------------------------------------------------------------------

    def _send(self, record: _Outgoing) -> None:
        record.attempts += 1

        def delivered(error: KafkaError | None, _message: Message) -> None:
            self._delivered(record, error)

        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=record.partition,
                    timestamp=record.timestamp_ms,
                    headers=record.headers,
                    on_delivery=delivered,
                )
                return
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused locally, e.g. a record over message.max.bytes
                self._delivered(record, exc.args[0])
                return

    def _delivered(self, record: _Outgoing, error: KafkaError | None) -> None:
        """A delivery report: count the record done, or send it again, or make it a dead letter."""
        if error is None:
            batch = record.batch
            if batch is not None:
                batch.outstanding -= 1
            return
        self.stats.produce_errors += 1
        self.observer.produce_errors(STAGE, 1)
        if error.code() in PERMANENT_DELIVERY_ERRORS:
            self._refused(record, error)
            return
        if record.attempts >= DELIVERY_ATTEMPTS:
            raise IngestError(
                f"could not deliver a record to {record.topic} in {DELIVERY_ATTEMPTS} attempts ({describe(error)}); "
                "the input offsets of its batch were not committed"
            )
        log.warning(
            "delivery failed, sending again topic=%s attempt=%d error=%s",
            record.topic,
            record.attempts,
            describe(error),
        )
        self._retry.append(record)

    def _refused(self, record: _Outgoing, error: KafkaError) -> None:
        """A record the brokers will never take: a small dead letter says so, and the batch moves on."""
        if record.refusal:
            log.error("a dead letter was refused too, dropped error=%s", describe(error))
            if record.batch is not None:
                record.batch.outstanding -= 1
            return
        rejection = Rejection(
            RejectReason.PRODUCE_REFUSED,
            f"the brokers refused a {len(record.value)}-byte record for {record.topic}: {describe(error)}",
            record.value[:REFUSED_SAMPLE_BYTES],
        )
        self.observer.rejected(STAGE, RejectReason.PRODUCE_REFUSED)
        self.observer.dead_letters(STAGE, 1)
        _key, value, letter_headers = dead_letter(rejection, record.topic, record.partition, -1, None)
        headers: list[tuple[str, str | bytes | None]] = list(letter_headers)
        log.warning(
            "record refused by the brokers, written as a dead letter topic=%s error=%s", record.topic, describe(error)
        )
        replacement = _Outgoing(
            self.settings.dead_letter_topic, record.key, value, headers=headers, batch=record.batch, refusal=True
        )
        self._retry.append(replacement)

    def _resend(self) -> None:
        retry, self._retry = self._retry, []
        for record in retry:
            self._send(record)

    # -- commits ---------------------------------------------------------------------------

    def _commit_acknowledged(self, force: bool) -> None:
        """Commit the positions of the longest run of fully acknowledged batches (asynchronously)."""
        while self._pending and self._pending[0].outstanding == 0:
            for position in self._pending.popleft().positions:
                if position.offset >= 0:
                    self._stored[(position.topic, position.partition)] = position.offset
        if not self._stored or (not force and time.monotonic() < self._commit_due):
            return
        self._commit_due = time.monotonic() + COMMIT_INTERVAL_S
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._stored.items()]
        self._stored.clear()
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not force)  # type: ignore[call-overload]
        except KafkaException as exc:
            self._commit_failed(exc.args[0])

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self._commit_failed(error)
            return
        for partition in partitions:
            if partition.error is not None:
                self._commit_failed(partition.error)

    def _commit_failed(self, error: KafkaError) -> None:
        if error.code() in _TRANSIENT_COMMIT_ERRORS:
            if error.code() != KafkaError._NO_OFFSET:
                self.stats.consumer_errors += 1
                self.observer.consumer_errors(STAGE, 1)
                log.warning("commit failed, a later commit covers these offsets error=%s", describe(error))
            return
        raise IngestError(f"cannot commit offsets: {describe(error)}")

    # -- the group and the brokers -----------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave this member its partitions (possibly none, with more members than partitions)."""
        log.info("partitions assigned count=%d partitions=%s", len(partitions), _names(partitions))
        self.observer.rebalance(STAGE)
        self._assigned = True
        self.health.set_ready(STAGE, True)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before the partitions move: deliver and commit what was read from them, so little is read twice."""
        log.info("partitions revoked count=%d partitions=%s", len(partitions), _names(partitions))
        try:
            self.flush()
        except (IngestError, KafkaException) as exc:
            log.warning(
                "partitions revoked before their last batches were committed (they will be read again): %s", exc
            )
            self._pending.clear()
            self._stored.clear()

    def _client_error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors: an unreachable broker said once per interval, in words."""
        if error.fatal():
            raise IngestError(f"fatal Kafka client error: {describe(error)}")
        if error.code() in _UNREACHABLE:
            problem = f"cannot reach the Kafka brokers at {self.settings.kafka_bootstrap_servers}: {error.str()}"
            allowed, dropped = self._dead_log.allow("unreachable")
            if allowed:
                log.warning("%s%s", problem, f" (repeated {dropped} times)" if dropped else "")
            self.health.set_ready(STAGE, False, problem)
            self._broker_problem = problem
            return
        log.debug("kafka client error=%s", describe(error))

    def _is_error(self, message: Message) -> bool:
        """Consumer errors come as messages: fatal ones stop the stage, the others are logged and skipped."""
        error = message.error()
        if error is None:
            return False
        if error.fatal():
            raise IngestError(f"fatal consumer error: {describe(error)}")
        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            self.check_topics()
        elif error.code() != KafkaError._PARTITION_EOF:
            self.stats.consumer_errors += 1
            self.observer.consumer_errors(STAGE, 1)
            allowed, _ = self._dead_log.allow(f"consumer:{error.code()}")
            if allowed:
                log.warning("consumer error error=%s topic=%s", error.name(), message.topic())
        return True

    def _dead_letter(self, rejection: Rejection, source: Message) -> _Outgoing:
        key, value, headers = dead_letter(
            rejection, source.topic() or "", source.partition() or 0, source.offset() or 0, source.key()
        )
        return _Outgoing(self.settings.dead_letter_topic, key, value, headers=list(headers))


def _names(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}/{tp.partition}" for tp in partitions)


class _Origins:
    """``topic/partition`` of a batch's records, made only for the few records the extractor reports
    (formatting it for all 5,000 records of every batch cost ~0.4 µs per event)."""

    def __init__(self, records: Sequence[Message]) -> None:
        self._records = records

    def __getitem__(self, index: int) -> str:
        message = self._records[index]
        return f"{message.topic()}/{message.partition()}"

    def __len__(self) -> int:
        return len(self._records)
