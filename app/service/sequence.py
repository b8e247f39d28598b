"""The sequence stage's work, per batch of candidate records, without knowing Faust.

``app.service.faust_app`` feeds it the records of each batch its agent takes, and gives it the
state store. Per batch:

1. each line of each record is decoded and checked (``decode_candidate``, then the rule and its
   stages); a line that fails any check is a dead letter, never an exception;
2. the candidates go through the detection core, one ``SequenceDetector`` per state partition
   over a write-back view of that partition, so that a key touched many times in a batch is read
   and written once;
3. the alerts (and dead letters) are produced and acknowledged; then the state of the keys the
   batch changed is produced to the changelog and acknowledged; then it is written to RocksDB in
   one write per partition, with the changelog offset it corresponds to;
4. only then does the agent take the next batch, and Faust commit this one's offsets.

So a batch's candidates are never committed before their alerts and their state are acknowledged,
and a crash at any step re-reads the batch: alerts written twice (same ids), never an alert lost.
A failure of the state store or of the brokers stops the process without committing
(``StageFailure``); nothing a record contains can.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.core import Alert, Candidate, Detector, Rejection, RejectReason, SequenceDetector
from app.core.engine.sequence import EngineStats
from app.core.engine.state import KeyState, decode_state, encode_state
from app.logs import RateLimiter
from app.service.kafka import PERMANENT_DELIVERY_ERRORS, describe
from app.service.observer import Observer
from app.service.records import (
    InvalidCandidate,
    ReceivedCandidate,
    alert_records,
    dead_letter,
    decode_candidate,
)
from app.settings import ServiceSettings

log = logging.getLogger("eqlstream.sequence")

STAGE = "sequence"
DELIVERY_ATTEMPTS = 3
FLUSH_TIMEOUT_S = 40.0
REFUSED_SAMPLE_BYTES = 64 * 1024


class StageFailure(RuntimeError):
    """The state store or the brokers failed: the batch cannot be finished, nor committed."""


class PartitionStore(Protocol):
    """The state of the partitions this worker owns, as the Faust table's store keeps it."""

    def read(self, partition: int, key: bytes) -> bytes | None:
        """The stored value of ``key`` in ``partition``."""

    def write(self, partition: int, changes: Mapping[bytes, bytes | None], changelog_offset: int | None) -> None:
        """Apply ``changes`` (None deletes) to ``partition`` in one write, with the changelog offset they reach."""

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value of ``partition``."""

    def figures(self) -> tuple[int, int]:
        """Estimates of (keys, bytes) over every partition held."""


@dataclass(frozen=True, slots=True)
class InRecord:
    """A candidates-topic record as the agent hands it over."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class _Out:
    """A record to produce and, after delivery, its offset (or the error)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    timestamp_ms: int = 0
    headers: list[tuple[str, str | bytes | None]] | None = None
    offset: int | None = None
    error: KafkaError | None = None

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        """The producer's delivery report for this record."""
        if error is not None:
            self.error = error
        else:
            self.offset = message.offset()


class WriteBackStore:
    """The engine's ``StateStore`` over one partition, holding a batch's changes until they are written.

    Reads see the batch's own changes first; ``take_changes`` hands the encoded changes over and
    starts the next batch. A value that cannot be decoded (written by something else) is logged and
    treated as no state, rather than stopping the stage on every read of that key.
    """

    def __init__(self, store: PartitionStore, partition: int) -> None:
        self._store = store
        self._partition = partition
        self._changes: dict[str, KeyState | None] = {}

    def get(self, key: str) -> KeyState | None:
        if key in self._changes:
            return self._changes[key]
        raw = self._store.read(self._partition, key.encode())
        return None if raw is None else _decoded(key, raw)

    def set(self, key: str, state: KeyState) -> None:
        self._changes[key] = state

    def delete(self, key: str) -> None:
        self._changes[key] = None

    def items(self) -> Iterator[tuple[str, KeyState]]:
        for raw_key, raw in self._store.items(self._partition):
            key = raw_key.decode(errors="replace")
            state = _decoded(key, raw)
            if state is not None:
                yield key, state

    def take_changes(self) -> dict[bytes, bytes | None]:
        changes = {key.encode(): None if state is None else encode_state(state) for key, state in self._changes.items()}
        self._changes.clear()
        return changes


def _decoded(key: str, raw: bytes) -> KeyState | None:
    try:
        return decode_state(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("unreadable state dropped key=%s error=%s", key[:200], exc)
        return None


@dataclass
class _Partition:
    store: WriteBackStore
    detector: SequenceDetector


@dataclass
class BatchResult:
    """What a batch did (for tests)."""

    candidates: int = 0
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: int = 0


class SequenceStage:
    """Turns batches of candidate records into alerts, dead letters and state (see the module docstring)."""

    def __init__(
        self,
        settings: ServiceSettings,
        detector: Detector,
        store: PartitionStore,
        producer: Producer,
        observer: Observer,
        changelog_topic: str,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.store = store
        self.observer = observer
        self.changelog_topic = changelog_topic
        self.caps = detector.alert_caps()
        self._producer = producer
        self._rules = {rule.meta.rule_id: rule for rule in detector.rules}
        self._partitions: dict[int, _Partition] = {}
        self._retired_by_rule: dict[str, EngineStats] = {rule.meta.name: EngineStats() for rule in detector.rules}
        self._log = RateLimiter(on_dropped=observer.log_lines_dropped)
        self._line_limit = settings.max_record_bytes
        # A batch and the expiry timer both change the write-back stores and wait on the producer
        # in between: one at a time.
        self._busy = asyncio.Lock()
        observer.prepare(STAGE, list(self._retired_by_rule), [settings.candidates_topic])

    async def process(self, records: list[InRecord]) -> BatchResult:
        """Handle one batch, up to the state written; raises ``StageFailure`` if it cannot be finished."""
        async with self._busy:
            return await self._process(records)

    async def expire_idle(self) -> int:
        """Go on expiring what the watermarks left behind when no candidate comes (a quiet stream
        after a flood of distinct keys), a bounded number of keys per partition and call, through
        the changelog like any change; returns the keys deleted."""
        async with self._busy:
            expired = sum(state.detector.expire() for state in list(self._partitions.values()))
            if expired:
                await self._save_state()
            return expired

    async def _process(self, records: list[InRecord]) -> BatchResult:
        started = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        result = BatchResult()
        outgoing: list[_Out] = []
        latencies: list[tuple[Alert, int]] = []
        for record in records:
            for received, problem, line in self._candidates(record):
                if received is None:
                    outgoing.append(self._dead_letter(problem, line, record))
                    result.dead_letters += 1
                    continue
                candidate = received.candidate
                result.candidates += 1
                self.observer.event_lag(STAGE, (now_ms - candidate.timestamp_ms) / 1000)
                outcome = self._partition(record.partition).detector.process(candidate, now_ms)
                for alert in outcome.suppressed:
                    self._suppressed(alert)
                for alert in outcome.alerts:
                    latencies.append((alert, received.received_ms))
                    outgoing += [
                        _Out(self.settings.alerts_topic, key, value, timestamp_ms=max(alert.last_event_ms, 0))
                        for key, value in alert_records(alert)
                    ]
                result.alerts += outcome.alerts
        await self._deliver_all(outgoing, alerts=True)
        acknowledged_ms = time.time_ns() // 1_000_000
        for alert, received_ms in latencies:
            self.observer.alert(alert.rule_name, max(acknowledged_ms - received_ms, 0) / 1000)
            log.info("alert rule_id=%s alert_id=%s kind=%s", alert.rule_id, alert.id, alert.kind)
        await self._save_state()
        self.observer.batch_done(STAGE, time.perf_counter() - started)
        return result

    def revoke(self, partitions: set[int]) -> None:
        """The partitions moved to another worker: forget their engines (keeping their counts)."""
        for partition in partitions:
            state = self._partitions.pop(partition, None)
            if state is not None:
                for rule_id, stats in state.detector.stats().items():
                    self._retired_by_rule[self._rules[rule_id].meta.name].add(stats)

    def engine_stats(self) -> dict[str, EngineStats]:
        """Per rule name, the engines' counters since start (live engines plus retired ones)."""
        totals = {name: EngineStats() for name in self._retired_by_rule}
        for name, stats in self._retired_by_rule.items():
            totals[name].add(stats)
        for state in list(self._partitions.values()):
            for rule_id, stats in state.detector.stats().items():
                totals[self._rules[rule_id].meta.name].add(stats)
        return totals

    def state_figures(self) -> tuple[int, int]:
        """The store's estimates of (keys, bytes) on this worker."""
        return self.store.figures()

    # -- internals -------------------------------------------------------------------------

    def _candidates(self, record: InRecord) -> Iterator[tuple[ReceivedCandidate | None, str, bytes]]:
        """(candidate, "", line) for each valid line of ``record``, (None, problem, line) for the others."""
        if record.value is None:
            yield None, "a record without a value (a tombstone), not a candidates record", b""
            return
        for line in record.value.split(b"\n"):
            try:
                received = decode_candidate(line, self._line_limit)
                self._check_rule(received.candidate)
            except InvalidCandidate as exc:
                yield None, str(exc), line
                continue
            yield received, "", line

    def _check_rule(self, candidate: Candidate) -> None:
        rule = self._rules.get(candidate.rule_id)
        if rule is None:
            raise InvalidCandidate(f"rule_id {candidate.rule_id[:80]!r} is not a rule this worker runs")
        if candidate.stages[-1] >= len(rule.stages):
            raise InvalidCandidate(f"stages {list(candidate.stages)[:10]} beyond the rule's {len(rule.stages)} stages")
        if len(candidate.key) != len(rule.stages[0].key_readers):
            raise InvalidCandidate(
                f"a join key of {len(candidate.key)} values; the rule joins on {len(rule.stages[0].key_readers)}"
            )

    def _partition(self, partition: int) -> _Partition:
        state = self._partitions.get(partition)
        if state is None:
            store = WriteBackStore(self.store, partition)
            detector = self.detector.sequencer(store, self.caps)
            restored = sum(engine.rebuild_expiry_index(store.items()) for engine in detector.engines.values())
            log.info("partition ready partition=%d restored_keys=%d", partition, restored)
            state = self._partitions[partition] = _Partition(store, detector)
        return state

    def _suppressed(self, alert: Alert) -> None:
        self.observer.suppressed(alert.rule_name)
        allowed, dropped = self._log.allow(f"cap:{alert.rule_id}")
        if allowed:
            more = f" (and {dropped} more since)" if dropped else ""
            log.warning("alert suppressed by the alert cap rule_id=%s alert_id=%s%s", alert.rule_id, alert.id, more)

    def _dead_letter(self, problem: str, line: bytes, record: InRecord) -> _Out:
        self.observer.rejected(STAGE, RejectReason.INVALID_CANDIDATE)
        self.observer.dead_letters(STAGE, 1)
        allowed, dropped = self._log.allow("invalid_candidate")
        if allowed:
            more = f" (and {dropped} more since)" if dropped else ""
            log.warning(
                "dead letter reason=invalid_candidate partition=%d offset=%d detail=%s%s",
                record.partition,
                record.offset,
                problem[:200],
                more,
            )
        rejection = Rejection(RejectReason.INVALID_CANDIDATE, problem, line)
        key, value, headers = dead_letter(
            rejection, self.settings.candidates_topic, record.partition, record.offset, record.key
        )
        return _Out(self.settings.dead_letter_topic, key, value, headers=list(headers))

    async def _save_state(self) -> None:
        """Produce the batch's state changes to the changelog, then write them to the store."""
        changes = {partition: state.store.take_changes() for partition, state in self._partitions.items()}
        changes = {partition: change for partition, change in changes.items() if change}
        if not changes:
            return
        records = [
            _Out(self.changelog_topic, key, value, partition=partition)
            for partition, change in changes.items()
            for key, value in change.items()
        ]
        await self._deliver_all(records, alerts=False)
        offsets: dict[int, int] = {}
        for record in records:
            if record.offset is not None and record.offset > offsets.get(record.partition, -1):
                offsets[record.partition] = record.offset
        for partition, change in changes.items():
            try:
                self.store.write(partition, change, offsets.get(partition))
            except Exception as exc:  # noqa: BLE001 - RocksDB reports a full or failing disk as a bare Exception
                raise StageFailure(f"cannot write the state of partition {partition}: {exc}") from exc

    async def _deliver_all(self, records: list[_Out], *, alerts: bool) -> None:
        """Produce ``records`` until each is acknowledged, sending timed-out ones again.

        A record the brokers refuse for good: an alert or a dead letter becomes a small
        ``produce_refused`` dead letter; a state record is a ``StageFailure`` (its size is bounded
        by construction, so the topic's limit is below the service's: a configuration problem).
        """
        pending = records
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            if not pending:
                return
            await self._produce(pending)
            failed = [record for record in pending if record.error is not None]
            if failed:
                self.observer.produce_errors(STAGE, len(failed))
            pending = []
            for record in failed:
                error = record.error
                assert error is not None
                if error.code() not in PERMANENT_DELIVERY_ERRORS:
                    record.error = None
                    pending.append(record)
                elif not alerts:
                    raise StageFailure(
                        f"the brokers refused a {len(record.value or b'')}-byte state record ({describe(error)}): "
                        f"let topic {record.topic} take records of EQLSTREAM_MAX_RECORD_BYTES plus 64 KiB"
                    )
                elif record.topic != self.settings.dead_letter_topic:
                    pending.append(self._refused(record, error))
                else:
                    log.error("a dead letter was refused too, dropped error=%s", describe(error))
            if pending and attempt < DELIVERY_ATTEMPTS:
                log.warning("delivery failed, sending again records=%d attempt=%d", len(pending), attempt)
        if pending:
            raise StageFailure(f"could not deliver {len(pending)} records in {DELIVERY_ATTEMPTS} attempts")

    def _refused(self, record: _Out, error: KafkaError) -> _Out:
        self.observer.rejected(STAGE, RejectReason.PRODUCE_REFUSED)
        self.observer.dead_letters(STAGE, 1)
        log.warning(
            "record refused by the brokers, written as a dead letter topic=%s error=%s", record.topic, describe(error)
        )
        rejection = Rejection(
            RejectReason.PRODUCE_REFUSED,
            f"the brokers refused a {len(record.value or b'')}-byte record for {record.topic}: {describe(error)}",
            (record.value or b"")[:REFUSED_SAMPLE_BYTES],
        )
        key, value, headers = dead_letter(rejection, record.topic, record.partition, -1, record.key)
        return _Out(self.settings.dead_letter_topic, key, value, headers=list(headers))

    async def _produce(self, records: list[_Out]) -> None:
        """One attempt: produce every record and wait, off the event loop, for every delivery report."""
        for record in records:
            self._send(record)
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._producer.flush, FLUSH_TIMEOUT_S)
        if left:
            for record in records:
                if record.offset is None and record.error is None:
                    record.error = KafkaError(KafkaError._MSG_TIMED_OUT)

    def _send(self, record: _Out) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=record.partition,
                    timestamp=record.timestamp_ms,
                    headers=record.headers,
                    on_delivery=record.delivered,
                )
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused locally, e.g. over message.max.bytes
                record.error = exc.args[0]
                return
