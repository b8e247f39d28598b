"""The one module that knows Faust and aiokafka: the sequence stage's app, table, store and agent.

Everything Faust does for the stage goes through its supported extension points:

* **the store registry** (entry point ``faust.stores: eqlstream``): ``Store`` is Faust's RocksDB
  store plus per-partition reads and atomic per-partition writes. Faust keeps doing what it does
  well (partition assignment co-partitioned with the changelog, recovery from the changelog on a
  new disk, standby replicas, opening and closing the partition databases); the stage reads and
  writes through ``read``/``write`` with explicit partitions instead of ``table[key] = value``,
  which Faust allows only per event and backs with an unbounded in-memory key index;
* **the transport registry** (entry point ``faust.transports: eqlstream``): ``Transport`` is Faust's
  aiokafka transport with the consumer's fetch max wait set (Faust hard-codes 1.5 s; the
  development broker holds a fetch on a quiet topic for all of it);
* public app hooks: the agent, a timer, the partition signals.

The agent takes batches of candidate records (``take_events``) and hands them to
``app.service.sequence.SequenceStage``; Faust acks a batch's events, and later commits them, only
after the stage has returned, i.e. after its alerts and state were acknowledged and written.
State changelog records are produced by the stage's confluent-kafka producer: per record it costs
a few microseconds, against about 200 through Faust's producer (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import faust
import rocksdict
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.service.kafka import KafkaConnection
from app.service.sequence import InRecord, SequenceStage, StageFailure
from app.service.topics import STATE_TABLE, changelog_topic, sequence_app_id
from app.service.web import Health
from app.settings import ServiceSettings

log = logging.getLogger("eqlstream.sequence")

STAGE = "sequence"
STORE_URL = "eqlstream://"
TRANSPORT_SCHEME = "eqlstream"
EXIT_CANNOT_PROCESS = 74  # EX_IOERR: the usual cause is the state disk
EXIT_SHUTDOWN_TIMEOUT = 75  # EX_TEMPFAIL
SHUTDOWN_GRACE_S = 25.0  # under the chart's terminationGracePeriodSeconds
HEALTH_INTERVAL_S = 1.0  # the health timer's period: heartbeat, readiness, consumer lag
STATE_DIR_CHECK_S = 10.0  # how often the state directory is checked for writes (a probe file)
# A packed candidates record holds up to 512 KiB (about 130-1,000 candidates), so an agent batch of
# 16 is at most 8 MiB, a few hundred ms of work under a flood (the event loop is not starved), and
# Faust buffers at most 64 records (32 MiB) ahead of the agent instead of its default 4,096 (2 GiB).
BATCH_RECORDS = 16
STREAM_BUFFER_RECORDS = 64
BATCH_WAIT_S = 0.01  # longest the agent waits to fill a batch: the latency it may add


# mode names a service's logger after the module of its class: keep these among Faust's loggers.
_FAUST_LOGGER = logging.getLogger("faust.eqlstream")


# The changelog is what makes state durable (a new disk recovers from it), so RocksDB's own
# write-ahead log only doubles the writes, as Kafka Streams found: a crash loses at most the last
# writes and the offset written with them, and Faust replays the changelog from the older offset.
_WITHOUT_WAL = rocksdict.WriteOptions()
_WITHOUT_WAL.disable_wal = True  # type: ignore[method-assign, assignment]  # a property; its stub says method


class Store(RocksDBStore):
    """Faust's RocksDB store, with explicit-partition reads and writes for the sequence stage."""

    logger = _FAUST_LOGGER

    def read(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in ``partition``'s database."""
        value: bytes | None = self._db_for_partition(partition).get(key)
        return value

    def write(self, partition: int, changes: Mapping[bytes, bytes | None], changelog_offset: int | None) -> None:
        """Apply ``changes`` (None deletes) and the changelog offset they reach, in one atomic write.

        The offset is what Faust reads back on restart to replay only the changelog after it; the
        changes and the offset are lost or kept together.
        """
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            batch.put(self.offset_key, str(changelog_offset).encode())
        self._db_for_partition(partition).write(batch, _WITHOUT_WAL)

    def items_of(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value of ``partition`` (Faust's own offset record left out)."""
        yield from self._visible_items(self._db_for_partition(partition))

    def figures(self) -> tuple[int, int]:
        """RocksDB's estimates of (keys, live bytes including memtables) over the open partitions."""
        keys = size = 0
        for db in list(self._dbs.values()):
            keys += db.property_int_value("rocksdb.estimate-num-keys") or 0
            size += db.property_int_value("rocksdb.estimate-live-data-size") or 0
            size += db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return keys, size


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    logger = _FAUST_LOGGER

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka takes the wait only as a constructor argument, which Faust fixes at 1,500 ms; it
        # reads the attribute when the consumer starts. The one private attribute eqlstream sets.
        consumer._fetch_max_wait_ms = Transport.fetch_max_wait_ms  # noqa: SLF001
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    logger = _FAUST_LOGGER

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with ``fetch_max_wait_ms`` (one app per process: a class setting)."""

    Consumer: ClassVar[type[faust_aiokafka.Consumer]] = _Consumer
    fetch_max_wait_ms: ClassVar[int] = 500


class _Worker(faust.Worker):
    """Faust's worker, which must not hang on shutdown: a clean stop that waits on an unreachable
    broker forever would ignore every further SIGTERM."""

    def _schedule_shutdown(self, signal: Any) -> None:
        if not self._signal_stop_time:
            watchdog = threading.Timer(SHUTDOWN_GRACE_S, _shutdown_timed_out)
            watchdog.daemon = True
            watchdog.start()
        super()._schedule_shutdown(signal)


def _shutdown_timed_out() -> None:
    log.error("shutdown did not finish within %.0f s (are the brokers reachable?); exiting now", SHUTDOWN_GRACE_S)
    logging.shutdown()
    os._exit(EXIT_SHUTDOWN_TIMEOUT)


class _StoreView:
    """``app.service.sequence.PartitionStore`` over the table's store (which Faust creates lazily)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    @property
    def _store(self) -> Store:
        store: Store = self._table.data
        return store

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self._store.read(partition, key)

    def write(self, partition: int, changes: Mapping[bytes, bytes | None], changelog_offset: int | None) -> None:
        self._store.write(partition, changes, changelog_offset)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        return self._store.items_of(partition)

    def figures(self) -> tuple[int, int]:
        # Not ``.data``, which creates the store on first use: called from the metrics thread, that
        # bound the table to a loop that never runs, and its task then blocked every clean shutdown.
        store: Store | None = self._table._data  # noqa: SLF001
        return store.figures() if store is not None else (0, 0)


def state_dir_problem(path: Path) -> str | None:
    """Why RocksDB could not write under ``path`` (unwritable, full, not a directory), or None.

    RocksDB's own write errors surface late and deep inside Faust; a probe write with fsync finds
    the same conditions early and names them, so readiness can say what is wrong.
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


class SequenceApp:
    """The Faust app of the sequence stage, wired to a ``SequenceStage``."""

    def __init__(
        self,
        settings: ServiceSettings,
        connection: KafkaConnection,
        health: Health,
        stage_factory: Any,
        single_record_batches: bool,
    ) -> None:
        self.settings = settings
        self.health = health
        Transport.fetch_max_wait_ms = settings.fetch_max_wait
        session_s = settings.session_timeout / 1000
        options: dict[str, Any] = {
            "broker": [f"{TRANSPORT_SCHEME}://{server}" for server in connection.aiokafka()["bootstrap_servers"]],
            "broker_credentials": _credentials(connection),
            "store": STORE_URL,
            "datadir": str(settings.data_dir),
            "topic_partitions": settings.candidates_partitions,
            "topic_allow_declare": False,  # the topics are created with their settings beforehand
            "table_standby_replicas": settings.standby_replicas,
            "broker_session_timeout": session_s,
            "broker_heartbeat_interval": max(session_s / 10, 0.5),
            "consumer_auto_offset_reset": "earliest",
            "web_enabled": False,  # Faust's web views would expose table contents
            "stream_buffer_maxsize": STREAM_BUFFER_RECORDS,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        if settings.instance_id:
            options["consumer_group_instance_id"] = settings.instance_id
        if single_record_batches:
            # The development broker reports wrong end offsets after multi-record batches; Faust's
            # own producer writes only its leader topic here, but keep its records single too.
            options["producer_max_batch_size"] = 1
        self.app = faust.App(sequence_app_id(settings), **options)
        self.candidates = self.app.topic(
            settings.candidates_topic, key_type=bytes, value_type=bytes, partitions=settings.candidates_partitions
        )
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
        faust_changelog = self.table.changelog_topic.get_topic_name()
        if faust_changelog != changelog_topic(settings):
            raise RuntimeError(f"Faust names the changelog {faust_changelog}, not {changelog_topic(settings)}")
        self.stage: SequenceStage = stage_factory(_StoreView(self.table))
        self._state_dir_checked = 0.0
        self._state_dir_problem: str | None = None
        self.app.agent(self.candidates, name="sequences")(self._process)
        self.app.timer(HEALTH_INTERVAL_S, name="health")(self._check_health)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    def run(self, loglevel: str) -> None:
        """Run the Faust worker in this thread until SIGTERM/SIGINT."""
        worker = _Worker(
            self.app, loglevel=_faust_level(loglevel), quiet=True, override_logging=False, redirect_stdouts=False
        )
        worker.spinner = None  # a terminal progress spinner: escape codes in every log
        worker.execute_from_commandline()

    async def _process(self, stream: Any) -> None:
        async for events in stream.take_events(BATCH_RECORDS, within=BATCH_WAIT_S):
            records = [
                InRecord(event.message.partition, event.message.offset, event.message.key, event.message.value)
                for event in events
            ]
            try:
                await self.stage.process(records)
            except StageFailure as exc:
                await _exit_uncommitted(exc, records)

    async def _on_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        self.stage.observer.rebalance(STAGE)

    async def _on_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self.stage.revoke({tp.partition for tp in revoked if tp.topic == self.settings.candidates_topic})

    async def _check_health(self) -> None:
        """Heartbeat, readiness, consumer lag and idle expiry, once a second on the worker's event loop."""
        self.health.beat(STAGE)
        if time.monotonic() - self._state_dir_checked >= STATE_DIR_CHECK_S:
            self._state_dir_checked = time.monotonic()
            problem = state_dir_problem(self.settings.data_dir)
            if problem and problem != self._state_dir_problem:
                log.error("state directory problem: %s", problem)
            self._state_dir_problem = problem
        if self._state_dir_problem:
            self.health.set_ready(STAGE, False, self._state_dir_problem)
        elif not self.app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            self.health.set_ready(STAGE, False, "waiting for partitions and state recovery")
        elif self.app.in_recovery:
            self.health.set_ready(STAGE, False, "recovering state from the changelog")
        else:
            self.health.set_ready(STAGE, True)
        if self.app.rebalancing:
            return
        await self._report_lag()
        try:
            await self.stage.expire_idle()
        except StageFailure as exc:
            await _exit_uncommitted(exc, [])

    async def _report_lag(self) -> None:
        """The candidates topic's lag; kept as it was when a partition moves away while it is read.

        A rebalance can revoke a partition between ``assignment()`` and ``position()``; the error
        escaped this timer once and Faust ended the whole worker for it (alerts were delayed until
        a restart), so a tick that meets it leaves the lag for the next one.
        """
        consumer = self.app.consumer
        lag = 0
        try:
            for tp in consumer.assignment():
                if tp.topic != self.settings.candidates_topic:
                    continue
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)
                if position is not None and highwater is not None and highwater > position:
                    lag += highwater - position
        except KafkaError as exc:
            log.debug("consumer lag not read this time: %s", exc)
            return
        self.stage.observer.consumer_lag(STAGE, self.settings.candidates_topic, lag)


async def _exit_uncommitted(exc: StageFailure, records: list[InRecord]) -> NoReturn:
    """End the process at once, leaving the batch that failed uncommitted.

    Faust's supervisor would restart a crashed agent and commit the offsets of the events that
    crashed it: with a full state disk that silently lost sequences. Exiting like ``kill -9``
    commits nothing more; after the restart the state directory is checked before RocksDB opens
    (not ready until it takes writes) and the batch is read again.
    """
    first = records[0] if records else None
    log.critical(
        "cannot finish a batch of candidates (partition=%s offset=%s): %s; exiting without committing it, it "
        "will be read again after the restart",
        first.partition if first else "-",
        first.offset if first else "-",
        exc,
    )
    await asyncio.sleep(0)
    logging.shutdown()
    os._exit(EXIT_CANNOT_PROCESS)


def _credentials(connection: KafkaConnection) -> Any:
    """Faust's credentials for the connection's security protocol (None for PLAINTEXT)."""
    options = connection.aiokafka()
    protocol = options["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options.get("ssl_context"),
        mechanism=options["sasl_mechanism"],
    )


def _faust_level(level: str) -> str:
    """Faust's worker spells the levels crit/error/warn/info/debug."""
    return {"CRITICAL": "crit", "WARNING": "warn"}.get(level.upper(), level.lower())
