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

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import faust
import orjson
from aiokafka.helpers import create_ssl_context

from app.detector import Alert, SequenceStage
from app.engine.state import KeyState
from app.kafka.records import alert_records, alert_timestamp_ms, decode_candidate
from app.rule.compiler import CompiledRule
from app.settings import Settings
from app.timeparse import NS_PER_S, parse_duration

log = logging.getLogger("eqlstream.sequence")

STATE_TABLE = "sequence-state"


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

    def __init__(self, settings: Settings, rules: list[CompiledRule]) -> None:
        self.settings = settings
        self.rules = rules
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
        self.app = faust.App(f"{settings.consumer_group}-sequence", **options)
        self.candidates = self.app.topic(
            settings.candidates_topic, key_type=bytes, value_type=bytes, partitions=settings.candidates_partitions
        )
        self.alerts = self.app.topic(settings.alerts_topic, key_type=bytes, value_type=bytes)
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
        self.bad_candidates = 0
        self.app.agent(self.candidates, name="sequences")(self._process)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_revoked(self, sender: Any, revoked: set, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == self.settings.candidates_topic:
                self.stages.pop(tp.partition, None)

    def _stage(self, partition: int) -> SequenceStage:
        stage = self.stages.get(partition)
        if stage is None:
            store = TableStore(self.table, partition)
            stage = SequenceStage(self.rules, self.settings, store)
            restored = sum(engine.rebuild_expiry_index(store.items()) for engine in stage.engines.values())
            log.info("partition ready partition=%d restored_keys=%d", partition, restored)
            self.stages[partition] = stage
        return stage

    async def _process(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                candidate, received_ns = decode_candidate(event.value)
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                self.bad_candidates += 1
                log.warning(
                    "undecodable candidate partition=%d offset=%d error=%s",
                    event.message.partition,
                    event.message.offset,
                    exc,
                )
                continue
            now = time.time_ns()
            for alert in self._stage(event.message.partition).process(candidate, now):
                await self._emit(alert, now, received_ns)

    async def _emit(self, alert: Alert, now_ns: int, received_ns: int) -> None:
        if not self.caps[alert.rule.meta.rule_id].allow(now_ns):
            log.warning("alert suppressed by the alert cap rule_id=%s alert_id=%s", alert.rule.meta.rule_id, alert.id)
            return
        timestamp = alert_timestamp_ms(alert) / 1000
        for key, value in alert_records(alert):
            await self.alerts.send(key=key, value=value, timestamp=timestamp)
        log.info(
            "alert rule_id=%s alert_id=%s latency_ms=%.0f",
            alert.rule.meta.rule_id,
            alert.id,
            (time.time_ns() - received_ns) / 1e6,
        )
