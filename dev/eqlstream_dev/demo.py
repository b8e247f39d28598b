"""``python -m app demo``: the whole service end to end on an embedded broker.

Starts the development broker, creates the topics, starts ``python -m app run`` as a child
process, produces a scenario (one DCOM/MSHTA attack written as raw Winlogbeat 8 Sysmon records and
one as Elastic Defend events, hidden in noise and near misses) to random partitions the way Beats
does, prints each alert as it arrives with its detection latency, then shuts everything down.

The alerts are read the way any reader should: documents are joined by their ids (a shell names
its building blocks in ``kibana.alert.ancestors``), never by the order they arrive in.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.core.alerts.ids import event_id
from app.core.alerts.summary import summary_line
from app.core.normalize import normalize
from app.service.kafka import KafkaConnection
from app.service.topics import TopicAdmin, owned_topics
from app.settings import ServiceSettings
from eqlstream_dev import synthetic
from eqlstream_dev.broker import EmbeddedBroker

INPUT_TOPICS = {synthetic.DEFEND: "logs-endpoint.events", synthetic.WINLOGBEAT8: "winlogbeat"}
PARTITIONS = 4
SEED = 7
EVENTS = 400
TIMEOUT_S = 120.0


def scenario() -> tuple[list[dict[str, Any]], set[str]]:
    """The demo's events and the case ids of the attacks among them."""
    # Near misses of every kind that must not alert, plus the attacks.
    kinds = [kind for kind, matches in synthetic.NEAR_MISSES.items() if not matches]
    events = synthetic.generate_corpus(
        SEED,
        EVENTS,
        attack_rate=0.005,
        near_miss_rate=0.01,
        source_mix=0.5,
        raw_share=0.5,
        rate=40.0,
        near_miss_kinds=kinds,
    )
    attacks = {
        labels[synthetic.CASE_ID_LABEL]
        for labels in (event.get("labels") or {} for event in events)
        if labels.get(synthetic.CASE_LABEL) == synthetic.ATTACK
    }
    return events, attacks


def main() -> int:
    """Run the demo; 0 when every attack was detected."""
    events, attacks = scenario()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="eqlstream-demo-") as work:
        settings = ServiceSettings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            input_topics=",".join(INPUT_TOPICS.values()),
            consumer_group="eqlstream-demo",
            candidates_partitions=PARTITIONS,
            topic_replication_factor=1,
            topic_min_insync_replicas=1,
            data_dir=Path(work) / "state",
            session_timeout="6s",
            fetch_max_wait="20ms",  # the embedded broker waits out the whole fetch wait on quiet topics
        )
        _create_topics(settings)
        print(f"broker {broker.bootstrap_servers}: starting the service (python -m app run)", flush=True)
        environment = {**os.environ, **settings.to_environment(), "EQLSTREAM_LOG_LEVEL": "WARNING"}
        service_log = Path(work) / "service.log"
        with service_log.open("wb") as output:
            service = subprocess.Popen(
                [sys.executable, "-m", "app", "run"], env=environment, stdout=subprocess.DEVNULL, stderr=output
            )
        try:
            found = _stream(settings, events)
        finally:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
            print("service stopped", flush=True)
        detected = len(found & attacks)
        print(f"{detected} of {len(attacks)} attacks detected", flush=True)
        if detected != len(attacks):
            print(f"the service's log:\n{service_log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
        return 0 if detected == len(attacks) else 1


def _create_topics(settings: ServiceSettings) -> None:
    connection = KafkaConnection.from_settings(settings)
    TopicAdmin(connection).ensure(settings, owned_topics(settings))
    admin = AdminClient(connection.librdkafka())
    for future in admin.create_topics([NewTopic(name, PARTITIONS) for name in INPUT_TOPICS.values()]).values():
        future.result()


def _stream(settings: ServiceSettings, events: list[dict[str, Any]]) -> set[str]:
    """Produce the scenario while reading alerts; returns the case ids of the attacks alerted on."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "eqlstream-demo-reader",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([settings.alerts_topic])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    _wait(consumer, seconds=15)  # the service's consumer groups form meanwhile
    print(f"producing {len(events)} events over a few seconds (noise, near misses, two attacks)", flush=True)
    rng = random.Random(SEED)
    produced_at: dict[str, int] = {}
    reader = _AlertReader(produced_at)
    deadline = time.monotonic() + TIMEOUT_S
    pending = list(events)
    quiet_until = None
    while time.monotonic() < deadline:
        for event in pending[:40]:
            topic = INPUT_TOPICS.get(synthetic.source_of(event), INPUT_TOPICS[synthetic.WINLOGBEAT8])
            producer.produce(topic, orjson.dumps(event), partition=rng.randrange(PARTITIONS))
            produced_at[event_id(normalize(event))] = time.time_ns()  # alerts name events as normalized
        pending = pending[40:]
        producer.flush(10)
        until = time.monotonic() + 0.25
        while time.monotonic() < until:
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                reader.add(orjson.loads(message.value()))
        if not pending:
            # Everything is sent: read on until the last completing event has surely been processed.
            quiet_until = quiet_until or time.monotonic() + 10
            if time.monotonic() > quiet_until:
                break
    consumer.close()
    return reader.cases


class _AlertReader:
    """Joins alert documents by id and prints each match once its shell and blocks are all read."""

    def __init__(self, produced_at: dict[str, int]) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.shells: dict[str, dict[str, Any]] = {}
        self.printed: set[str] = set()
        self.cases: set[str] = set()
        self._produced_at = produced_at

    def add(self, document: dict[str, Any]) -> None:
        self.documents[document["kibana.alert.uuid"]] = document
        if document["kibana.alert.depth"] == 2:
            self.shells[document["kibana.alert.uuid"]] = document
        for shell_id, shell in list(self.shells.items()):
            if shell_id not in self.printed:
                self._print_if_complete(shell_id, shell)

    def _print_if_complete(self, shell_id: str, shell: dict[str, Any]) -> None:
        ancestors = shell["kibana.alert.ancestors"]
        block_ids = [a["id"] for a in ancestors if a["type"] == "signal"]
        if not all(block_id in self.documents for block_id in block_ids):
            return
        blocks = [self.documents[block_id] for block_id in block_ids]
        completing = [a["id"] for a in ancestors if a["type"] == "event"][-1]
        produced = self._produced_at.get(completing)
        latency = (time.time_ns() - produced) / 1e9 if produced is not None else None
        print("ALERT " + summary_line([*blocks, shell], latency), flush=True)
        self.printed.add(shell_id)
        for block in blocks:
            case = (block.get("labels") or {}).get(synthetic.CASE_ID_LABEL)
            if case:
                self.cases.add(case)


def _wait(consumer: Consumer, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        consumer.consume(10, 0.5)
