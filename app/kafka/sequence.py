"""The sequence stage: a Faust agent over the candidates topic, sequence state in a RocksDB-backed Table.

The engine (``app.engine``) is framework-free; this module only moves records. Faust facts that
shape it (faust-streaming 0.15):

* A Table write sends its changelog record to the partition of the event being processed. So each
  candidates partition gets its own engines (own watermark and expiry index), and expiry only ever
  touches keys of the partition whose event is being processed.
* Faust's windowed tables expire by wall clock and never expire keys restored from the changelog;
  expiry here is the engine's own event-time expiry on a plain Table. When a worker starts
  processing a partition, the engine's expiry index is rebuilt from that partition's restored
  state, so restored keys expire like fresh ones.
* Table writes are only allowed inside stream iteration, which is where the engine runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import faust
import orjson
from aiokafka.helpers import create_ssl_context
from faust.transport.drivers import aiokafka as faust_aiokafka

from app import metrics
from app.detector import Alert, Rejection, SequenceStage
from app.engine.sequence import Candidate, EngineStats
from app.engine.state import KeyState
from app.kafka.records import InvalidCandidate, alert_records, alert_timestamp_ms, dead_letter, decode_candidate
from app.rule.compiler import CompiledRule
from app.settings import Settings
from app.timeparse import NS_PER_MS, NS_PER_S, parse_duration
from app.web import Health

log = logging.getLogger("eqlstream.sequence")

STATE_TABLE = "sequence-state"
EXIT_CANNOT_PROCESS = 74  # EX_IOERR: the usual cause is the state disk
FLUSH_BEFORE_EXIT_S = 10.0
STAGE = "sequence"
HEALTH_INTERVAL_S = 1.0  # the health timer's period: heartbeat, readiness, consumer lag
STATE_DIR_CHECK_S = 10.0  # how often the state directory is checked for writes (a probe file)


def state_dir_problem(path: Path) -> str | None:
    """Why RocksDB could not write under ``path`` (unwritable, full, not a directory), or None.

    RocksDB's own write errors surface late and deep inside Faust; a probe write with fsync
    finds the same conditions early and names them, so readiness can say what is wrong.
    """
    probe = path / ".eqlstream-write-probe"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as file:
            file.write(b"\0" * 4096)
            file.flush()
            os.fsync(file.fileno())
        probe.unlink()
    except OSError as exc:
        return f"state directory {str(path)!r} is not writable: {exc.strerror or exc}"
    return None


class TableStore:
    """The engine's ``StateStore`` over one partition of a Faust Table of raw bytes."""

    def __init__(self, table: Any, partition: int) -> None:
        self._table = table
        self._partition = partition

    def get(self, key: str) -> KeyState | None:
        raw = self._table.get(key.encode())
        return KeyState.from_json(orjson.loads(raw)) if raw is not None else None

    def set(self, key: str, state: KeyState) -> None:
        self._table[key.encode()] = orjson.dumps(state.to_json())

    def delete(self, key: str) -> None:
        self._table.pop(key.encode(), None)

    def items(self) -> Iterator[tuple[str, KeyState]]:
        """This partition's restored state. Faust has no public per-partition view of a RocksDB
        table, so this reads the store's partition database (faust-streaming 0.15 internals)."""
        store = self._table.data
        for key, value in store._visible_items(store._db_for_partition(self._partition)):
            yield key.decode(), KeyState.from_json(orjson.loads(value))


class AlertCap:
    """Kibana's max_signals: at most ``cap`` alerts per rule per interval; the rest counted and logged."""

    def __init__(self, cap: int, interval_ns: int) -> None:
        self.cap = cap
        self.interval_ns = interval_ns
        self._sent: deque[int] = deque()
        self.suppressed = 0

    def allow(self, now_ns: int) -> bool:
        if self.cap == 0:
            return True
        while self._sent and self._sent[0] <= now_ns - self.interval_ns:
            self._sent.popleft()
        if len(self._sent) >= self.cap:
            self.suppressed += 1
            return False
        self._sent.append(now_ns)
        return True


def broker_credentials(settings: Settings) -> Any:
    """Faust (aiokafka) credentials for the configured security protocol, or None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=settings.kafka_ssl_ca_location or None,
            certfile=settings.kafka_ssl_certificate_location or None,
            keyfile=settings.kafka_ssl_key_location or None,
            password=settings.kafka_ssl_key_password.get_secret_value() or None,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


class SequenceService:
    """Builds the Faust app, its topics, table and agent for a set of rules."""

    def __init__(self, settings: Settings, rules: list[CompiledRule], health: Health | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.health = health if health is not None else Health(parse_duration(settings.stall_timeout) / NS_PER_S)
        self._rule_names = {rule.meta.rule_id: rule.meta.name for rule in rules}
        self._stage_counts = {rule.meta.rule_id: len(rule.stages) for rule in rules}
        session_s = parse_duration(settings.session_timeout) / NS_PER_S
        options: dict[str, Any] = {
            "broker": [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
            "broker_credentials": broker_credentials(settings),
            "store": "rocksdb://",
            "datadir": str(settings.data_dir),
            "topic_partitions": settings.candidates_partitions,
            "topic_allow_declare": False,  # the topics are created with their partition counts beforehand
            "table_standby_replicas": settings.standby_replicas,
            "broker_session_timeout": session_s,
            "broker_heartbeat_interval": max(session_s / 10, 0.5),
            "consumer_auto_offset_reset": "earliest",
            "web_enabled": False,  # Faust's web views would expose table contents
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        if settings.instance_id:
            options["consumer_group_instance_id"] = settings.instance_id
        if settings.single_record_batches:
            options["producer_max_batch_size"] = 1
        _use_fetch_max_wait(parse_duration(settings.fetch_max_wait) // NS_PER_MS)
        self.app = faust.App(f"{settings.consumer_group}-sequence", **options)
        self.candidates = self.app.topic(
            settings.candidates_topic, key_type=bytes, value_type=bytes, partitions=settings.candidates_partitions
        )
        self.alerts = self.app.topic(settings.alerts_topic, key_type=bytes, value_type=bytes)
        self.dead_letters = self.app.topic(settings.dead_letter_topic, key_type=bytes, value_type=bytes)
        self.table = self.app.Table(
            STATE_TABLE,
            partitions=settings.candidates_partitions,
            key_type=bytes,
            value_type=bytes,
            options={
                "block_cache_size": settings.rocksdb_block_cache,
                "block_cache_compressed_size": 0,
                "write_buffer_size": settings.rocksdb_write_buffer,
                "max_write_buffer_number": 2,
            },
        )
        self.changelog_topic: str = self.table.changelog_topic.get_topic_name()
        # Faust's partition assignor elects a leader through this one-partition topic.
        self.leader_topic = f"{self.app.conf.id}-__assignor-__leader"
        self.stages: dict[int, SequenceStage] = {}
        self.caps = {
            rule.meta.rule_id: AlertCap(
                rule.meta.max_signals if settings.alert_cap < 0 else settings.alert_cap,
                parse_duration(rule.meta.interval),
            )
            for rule in rules
        }
        # Counters of engines dropped with their partitions, so the exported totals never go down.
        self._retired = {rule.meta.name: EngineStats() for rule in rules}
        self._state_dir_checked = 0.0
        self._state_dir_problem: str | None = None
        self.app.agent(self.candidates, name="sequences")(self._process)
        self.app.timer(HEALTH_INTERVAL_S, name="health")(self._check_health)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    def report(self) -> None:
        """Register the stage's health and metrics; only in a process that runs the stage."""
        self.health.register(STAGE)
        metrics.SEQUENCE_COLLECTOR.sources.add(self)
        for name in self._rule_names.values():  # series exist from the start: dashboards show 0, not "no data"
            metrics.ALERTS_EMITTED.labels(name)
            metrics.ALERTS_SUPPRESSED.labels(name)
        metrics.DEAD_LETTERS.labels(STAGE)

    async def _on_assigned(self, sender: Any, assigned: set, **kwargs: Any) -> None:
        metrics.REBALANCES.labels(STAGE).inc()

    async def _on_revoked(self, sender: Any, revoked: set, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == self.settings.candidates_topic:
                stage = self.stages.pop(tp.partition, None)
                if stage is not None:
                    for rule_id, engine in stage.engines.items():
                        _add(self._retired[self._rule_names[rule_id]], engine.stats)

    async def _check_health(self) -> None:
        """Heartbeat, readiness and consumer lag, once a second on the worker's event loop."""
        self.health.beat(STAGE)
        if time.monotonic() - self._state_dir_checked >= STATE_DIR_CHECK_S:
            self._state_dir_checked = time.monotonic()
            problem = state_dir_problem(self.settings.data_dir)
            if problem and problem != self._state_dir_problem:
                log.error("state directory problem: %s", problem)
            self._state_dir_problem = problem
        if self._state_dir_problem:
            self.health.set_ready(STAGE, False, self._state_dir_problem)
        elif not self.app.tables.recovery.completed.is_set():
            self.health.set_ready(STAGE, False, "waiting for partitions and state recovery")
        elif self.app.in_recovery:
            self.health.set_ready(STAGE, False, "recovering state from the changelog")
        else:
            self.health.set_ready(STAGE, True)
        await self._report_lag()

    async def _report_lag(self) -> None:
        consumer = self.app.consumer
        lag = 0
        for tp in consumer.assignment():
            if tp.topic != self.settings.candidates_topic:
                continue
            position = await consumer.position(tp)
            highwater = consumer.highwater(tp)
            if position is not None and highwater is not None and highwater > position:
                lag += highwater - position
        metrics.CONSUMER_LAG.labels(STAGE, self.settings.candidates_topic).set(lag)

    def engine_stats(self) -> dict[str, EngineStats]:
        """Per rule name, the engines' counters since start (live engines plus retired ones)."""
        totals = {name: dataclasses.replace(stats) for name, stats in self._retired.items()}
        for stage in list(self.stages.values()):
            for rule_id, engine in stage.engines.items():
                _add(totals[self._rule_names[rule_id]], engine.stats)
        return totals

    def state_figures(self) -> tuple[int, int]:
        """RocksDB's estimates of (keys, live bytes incl. memtables) over this worker's state partitions."""
        keys = size = 0
        for db in list(getattr(self.table.data, "_dbs", {}).values()):  # Faust internals: partition -> Rdict
            keys += db.property_int_value("rocksdb.estimate-num-keys") or 0
            size += db.property_int_value("rocksdb.estimate-live-data-size") or 0
            size += db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return keys, size

    def _stage(self, partition: int) -> SequenceStage:
        stage = self.stages.get(partition)
        if stage is None:
            store = TableStore(self.table, partition)
            # State is stored before the alerts are acknowledged: re-delivered events repeat their alerts.
            stage = SequenceStage(self.rules, self.settings, store, repeat_alerts=True)
            restored = sum(engine.rebuild_expiry_index(store.items()) for engine in stage.engines.values())
            log.info("partition ready partition=%d restored_keys=%d", partition, restored)
            self.stages[partition] = stage
        return stage

    async def _process(self, stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            message = event.message
            try:
                candidate, received_ns = decode_candidate(event.value)
                self._check_rule(candidate)
            except InvalidCandidate as exc:
                await self._reject(exc, event.key, message)
                continue
            now = time.time_ns()
            metrics.EVENT_TIME_LAG.labels(STAGE).observe((now - candidate.timestamp_ns) / NS_PER_S)
            try:
                for alert in self._stage(message.partition).process(candidate, now):
                    await self._emit(alert, now, received_ns)
            except Exception as exc:  # noqa: BLE001 - RocksDB reports a full or failing disk as a bare Exception
                await self._exit_uncommitted(exc, message)
            metrics.SEQUENCE_EVENT_DURATION.observe(time.perf_counter() - started)
            metrics.LAST_PROCESSED.labels(STAGE).set(time.time())

    async def _exit_uncommitted(self, exc: Exception, message: Any) -> NoReturn:
        """End the process at once, leaving the candidate that failed uncommitted.

        Faust's supervisor restarts a crashed agent and commits the offset of the event that crashed
        it: with a full state disk (RocksDB: "IO error: No space left on device") that silently lost
        sequences. Exiting like ``kill -9`` commits nothing more; after the restart the state
        directory is checked before RocksDB opens (not ready until it takes writes) and the
        candidate is read again (the engine ignores the repeats among those before it). The records
        already sent (alerts, changelog) are flushed first: the state on disk may already say that
        an alert was emitted, and the engine does not emit it again for a repeated candidate.
        """
        log.critical(
            "cannot process candidate partition=%d offset=%d error=%s: exiting without committing it, "
            "it will be read again after the restart",
            message.partition,
            message.offset,
            exc,
        )
        try:
            await asyncio.wait_for(self.app.producer.flush(), FLUSH_BEFORE_EXIT_S)
        finally:
            logging.shutdown()
            os._exit(EXIT_CANNOT_PROCESS)

    def _check_rule(self, candidate: Candidate) -> None:
        """A candidate of a rule this worker runs, for stages the rule has (else ``InvalidCandidate``)."""
        stages = self._stage_counts.get(candidate.rule_id)
        if stages is None:
            raise InvalidCandidate(f"rule_id {candidate.rule_id[:80]!r} is not a rule this worker runs")
        if max(candidate.stages) >= stages:
            raise InvalidCandidate(f"stages {list(candidate.stages)[:10]} beyond the rule's {stages} stages")

    async def _reject(self, exc: InvalidCandidate, key: bytes | None, message: Any) -> None:
        """A record on the candidates topic that this service did not write: a dead letter, and on."""
        value, headers = dead_letter(
            Rejection("invalid_candidate", str(exc), message.value), message.topic, message.partition, message.offset
        )
        await self.dead_letters.send(key=key, value=value, headers=headers)
        metrics.EVENTS_REJECTED.labels(STAGE, "invalid_candidate").inc()
        metrics.DEAD_LETTERS.labels(STAGE).inc()
        log.warning(
            "dead letter reason=invalid_candidate topic=%s partition=%d offset=%d detail=%s",
            message.topic,
            message.partition,
            message.offset,
            exc,
        )

    async def _emit(self, alert: Alert, now_ns: int, received_ns: int) -> None:
        rule = alert.rule.meta
        if not self.caps[rule.rule_id].allow(now_ns):
            metrics.ALERTS_SUPPRESSED.labels(rule.name).inc()
            log.warning("alert suppressed by the alert cap rule_id=%s alert_id=%s", rule.rule_id, alert.id)
            return
        timestamp = alert_timestamp_ms(alert) / 1000
        for key, value in alert_records(alert):
            await self.alerts.send(key=key, value=value, timestamp=timestamp)
        latency_s = (time.time_ns() - received_ns) / NS_PER_S
        metrics.ALERTS_EMITTED.labels(rule.name).inc()
        metrics.DETECTION_LATENCY.labels(rule.name).observe(latency_s)
        log.info("alert rule_id=%s alert_id=%s latency_ms=%.0f", rule.rule_id, alert.id, latency_s * 1000)


def _add(total: EngineStats, more: EngineStats) -> None:
    """Add ``more``'s counters into ``total``."""
    for name in EngineStats.__dataclass_fields__:
        setattr(total, name, getattr(total, name) + getattr(more, name))


def _use_fetch_max_wait(wait_ms: int) -> None:
    """Make Faust's aiokafka consumer ask the broker for ``wait_ms`` as its fetch max wait.

    faust-streaming 0.15 creates that consumer with ``fetch_max_wait_ms=1500`` and has no setting for
    it. Apache Kafka answers a fetch as soon as records arrive, so the value costs nothing there; the
    development broker (Tansu) holds a fetch on a quiet topic for the whole wait, which added up to
    1.5 s to every candidate (bench/RESULTS.md, latency). aiokafka reads the attribute when the
    consumer starts. Process-wide, which is fine: a process runs one Faust app.
    """
    driver = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(driver, "_eqlstream_create_worker_consumer", driver._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    driver._eqlstream_create_worker_consumer = create
    driver._create_worker_consumer = create_worker_consumer
