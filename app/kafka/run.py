"""``python -m app run``: the streaming service.

Both stages run in one process by default (the ingest loop in a thread, the Faust worker in the
main thread). For more throughput run them as separate deployments (``--role ingest`` and
``--role sequence``): the ingest stage is CPU-bound Python and scales with processes, not threads.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import faust

from app.kafka.admin import ensure_topics
from app.kafka.ingest import IngestStage
from app.kafka.sequence import STAGE, STATE_DIR_CHECK_S, SequenceService, state_dir_problem
from app.rule.compiler import CompiledRule
from app.settings import Settings
from app.timeparse import NS_PER_S, parse_duration
from app.web import Health, serve

log = logging.getLogger("eqlstream")

def owned_topics(settings: Settings, service: SequenceService) -> dict[str, int]:
    """The topics the service owns and their partition counts.

    The state changelog must have as many partitions as the candidates topic (Faust stops with
    PartitionsMismatch otherwise); alerts and dead letters get the same count for parallel readers.
    """
    partitions = settings.candidates_partitions
    return {
        settings.candidates_topic: partitions,
        service.changelog_topic: partitions,
        service.leader_topic: 1,
        settings.alerts_topic: partitions,
        settings.dead_letter_topic: partitions,
    }


def run(settings: Settings, rules: list[CompiledRule]) -> None:
    """Run the stages of ``settings.role`` until SIGTERM/SIGINT, with the health and metrics endpoints."""
    role = settings.role
    health = Health(parse_duration(settings.stall_timeout) / NS_PER_S)
    serve(health, settings.web_host, settings.web_port)
    service = SequenceService(settings, rules, health)
    ensure_topics(settings, owned_topics(settings, service), exact={settings.candidates_topic, service.changelog_topic})
    stop = threading.Event()
    if role == "ingest":
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        IngestStage(settings, rules, health=health).run(stop)
        return
    ingest = None
    if role == "all":
        stage = IngestStage(settings, rules, health=health)
        ingest = threading.Thread(target=stage.run, args=(stop,), name="ingest", daemon=True)
        ingest.start()
    try:
        service.report()
        _wait_for_state_dir(settings, health)
        worker = faust.Worker(service.app, loglevel=_faust_level(settings.log_level), quiet=True)
        worker.execute_from_commandline()
    finally:
        stop.set()
        if ingest is not None:
            ingest.join(timeout=30)


def _wait_for_state_dir(settings: Settings, health: Health) -> None:
    """Start the sequence stage only once its state directory takes writes; not ready until then.

    RocksDB cannot open on an unwritable or full disk; waiting (and saying why) keeps the
    candidates in their topic for when it can, instead of a crash loop that hides the cause.
    """
    reported = None
    while (problem := state_dir_problem(settings.data_dir)) is not None:
        if problem != reported:
            log.error("the sequence stage waits for its state directory: %s", problem)
            reported = problem
        health.set_ready(STAGE, False, problem)
        health.beat(STAGE)
        time.sleep(STATE_DIR_CHECK_S)


def _faust_level(level: str) -> str:
    """Faust's worker spells the levels crit/error/warn/info/debug."""
    return {"CRITICAL": "crit", "WARNING": "warn"}.get(level.upper(), level.lower())
