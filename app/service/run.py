"""``python -m app run``: the streaming service, wired from its settings.

Both stages run in one process by default (the ingest loop in a thread, the Faust worker in the
main thread). For more throughput run them as separate deployments (``--role ingest`` and
``--role sequence``): the ingest stage is CPU-bound Python and scales with processes, not threads.

Start-up says what is wrong in one line and waits where waiting helps: while the brokers cannot
be reached it says so every ``BROKER_RETRY_S`` (and ``/readyz`` says the same) until they answer;
an owned topic that cannot be created or has settings that would break the service ends the start
with the reason and exit status 2.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from app.core import CompiledRule, Detector
from app.logs import kafka_logger
from app.service.faust_app import SequenceApp, state_dir_problem
from app.service.ingest import IngestError, IngestStage
from app.service.kafka import KafkaConnection
from app.service.metrics import PrometheusObserver
from app.service.observer import Observer
from app.service.sequence import SequenceStage
from app.service.topics import (
    RECORD_OVERHEAD_BYTES,
    TopicAdmin,
    TopicError,
    changelog_topic,
    owned_topics,
    wait_for_brokers,
)
from app.service.web import Health, serve
from app.settings import ServiceSettings

log = logging.getLogger("eqlstream")

BROKER_RETRY_S = 10.0
GC_THRESHOLD = 50_000
STATE_DIR_CHECK_S = 10.0
EXIT_CANNOT_START = 2
EXIT_STAGE_FAILED = 1
# The development broker (Tansu) reports wrong end offsets after multi-record batches, which would
# make Faust's recovery stop short of a changelog's end: with it, state records go one per batch.
# It is recognised by the cluster id it reports unless told otherwise.
DEVELOPMENT_CLUSTER_PREFIX = "tansu"


def run(settings: ServiceSettings, rules: list[CompiledRule]) -> int:
    """Run the stages of ``settings.role`` until SIGTERM/SIGINT; returns the exit status."""
    _tune_garbage_collector()
    threading.excepthook = _log_thread_failure
    observer = PrometheusObserver()
    health = Health(settings.stall_timeout / 1000, observer)
    connection = KafkaConnection.from_settings(settings)
    detector = Detector(rules, settings.detection_options())
    stages = ["ingest", "sequence"] if settings.role == "all" else [settings.role]
    for stage in stages:
        health.register(stage)
    serve(health, observer.registry, settings.web_host, settings.web_port)
    stop = threading.Event()
    if settings.role == "ingest":
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    admin = TopicAdmin(connection)

    def report(problem: str) -> None:
        log.warning("%s; retrying every %.0f s", problem, BROKER_RETRY_S)
        for stage in stages:
            health.set_ready(stage, False, problem)
            health.beat(stage)

    cluster: list[str] = []

    def start() -> None:
        admin.ensure(settings, owned_topics(settings))
        cluster.append(admin.cluster_id())

    try:
        if not wait_for_brokers(start, report, stop.is_set, BROKER_RETRY_S):
            return 0
    except TopicError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    development = cluster[0].startswith(DEVELOPMENT_CLUSTER_PREFIX)
    if development:
        log.info("development broker recognised (cluster id %s): state records are written one per batch", cluster[0])
    if settings.role == "ingest":
        return _run_ingest(settings, detector, connection, observer, health, stop)
    ingest_thread = None
    failures: list[IngestError] = []
    if settings.role == "all":
        ingest = IngestStage(settings, detector, connection, observer, health)
        ingest_thread = threading.Thread(
            target=_ingest_in_thread, args=(ingest, stop, failures), name="ingest", daemon=True
        )
        ingest_thread.start()
    try:
        _wait_for_state_dir(settings, health)
        producer = Producer(_sequence_producer_config(settings, connection, development))

        def stage_factory(store: Any) -> SequenceStage:
            stage = SequenceStage(settings, detector, store, producer, observer, changelog_topic(settings))
            observer.register(stage)
            return stage

        SequenceApp(settings, connection, health, stage_factory, development).run(settings.log_level)
    finally:
        stop.set()
        if ingest_thread is not None:
            ingest_thread.join(timeout=30)
    return EXIT_STAGE_FAILED if failures else 0


def _tune_garbage_collector() -> None:
    """Collect cycles rarely: the stages make and drop many small objects (parsed events), none cyclic.

    With CPython's default (a collection every 700 net allocations) a flood of candidates spent a
    third of its time in collections that found nothing; reference counting frees these objects
    anyway. What exists at start (modules, rules, compiled patterns) is frozen out of collections.
    """
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    gc.freeze()


def _log_thread_failure(args: threading.ExceptHookArgs) -> None:
    """One line for a library thread that ends with an exception (aiokafka's consumer thread, stopped
    while the brokers are down, ends with ``CancelledError``); the traceback only at DEBUG."""
    name = args.thread.name if args.thread is not None else "?"
    log.error("thread %s ended with %s: %s", name, args.exc_type.__name__, args.exc_value)
    if args.exc_value is not None:
        log.debug("thread %s traceback", name, exc_info=args.exc_value)


def _run_ingest(
    settings: ServiceSettings,
    detector: Detector,
    connection: KafkaConnection,
    observer: Observer,
    health: Health,
    stop: threading.Event,
) -> int:
    try:
        IngestStage(settings, detector, connection, observer, health).run(stop)
    except IngestError as exc:
        log.critical("the ingest stage stopped: %s", exc)
        return EXIT_STAGE_FAILED
    return 0


def _ingest_in_thread(stage: IngestStage, stop: threading.Event, failures: list[IngestError]) -> None:
    """The ingest loop beside the Faust worker: if it stops, the whole process ends (and is restarted)."""
    try:
        stage.run(stop)
    except IngestError as exc:
        log.critical("the ingest stage stopped: %s; ending the process", exc)
        failures.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)


def _sequence_producer_config(
    settings: ServiceSettings, connection: KafkaConnection, development: bool
) -> dict[str, Any]:
    """The sequence stage's producer (alerts, dead letters, state changelog): acknowledged by all replicas."""
    config: dict[str, Any] = {
        **connection.librdkafka(),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
        "message.max.bytes": settings.max_record_bytes + RECORD_OVERHEAD_BYTES,
        "logger": kafka_logger("sequence-producer"),
        "error_cb": _log_client_error,
    }
    if development:
        config["batch.num.messages"] = 1
    return config


def _log_client_error(error: KafkaError) -> None:
    log.debug("kafka client error=%s (%s)", error.str(), error.name())


def _wait_for_state_dir(settings: ServiceSettings, health: Health) -> None:
    """Start the sequence stage only once its state directory takes writes; not ready until then.

    RocksDB cannot open on an unwritable or full disk; waiting (and saying why) keeps the
    candidates in their topic for when it can, instead of a crash loop that hides the cause.
    """
    reported = None
    while (problem := state_dir_problem(settings.data_dir)) is not None:
        if problem != reported:
            log.error("the sequence stage waits for its state directory: %s", problem)
            reported = problem
        health.set_ready("sequence", False, problem)
        health.beat("sequence")
        time.sleep(STATE_DIR_CHECK_S)
