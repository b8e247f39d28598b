"""``python -m app demo``: the whole service end to end on an embedded broker.

Starts the development broker, creates the input topics, starts ``python -m app run`` as a child
process, produces a scenario (one DCOM/MSHTA attack written as raw Winlogbeat 8 Sysmon records
and one as Elastic Defend events, hidden in noise and near misses) to random partitions the way
Beats does, prints each alert as it arrives with its detection latency, then shuts everything down.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time

import orjson
from confluent_kafka import Consumer, Producer

from app import synthetic
from app.alerts.ids import event_id
from app.alerts.summary import summary_line
from app.kafka.admin import ensure_topics
from app.kafka.broker import EmbeddedBroker
from app.normalize import normalize
from app.settings import Settings

INPUT_TOPICS = {synthetic.DEFEND: "logs-endpoint.events", synthetic.WINLOGBEAT8: "winlogbeat"}
PARTITIONS = 4
EXPECTED_ALERTS = 2
SEED = 7


def main() -> int:
    """Run the demo; 0 when both attacks were detected."""
    # Near misses of every kind but the one at exactly the 60 s maxspan (a real match: maxspan is inclusive).
    kinds = [kind for kind, matches in synthetic.NEAR_MISSES.items() if not matches]
    events = synthetic.generate_corpus(
        SEED,
        400,
        attack_rate=0.005,
        near_miss_rate=0.01,
        source_mix=0.5,
        raw_share=0.5,
        rate=40.0,
        near_miss_kinds=kinds,
    )
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="eqlstream-demo-") as data_dir:
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            input_topics=",".join(INPUT_TOPICS.values()),
            consumer_group="eqlstream-demo",
            candidates_partitions=PARTITIONS,
            data_dir=data_dir,
            session_timeout="6s",
            single_record_batches=True,
            fetch_max_wait="20ms",  # the embedded broker waits out the whole fetch wait on quiet topics
        )
        # The alerts topic too: the demo's reader subscribes to it before the service has started.
        ensure_topics(settings, dict.fromkeys([*INPUT_TOPICS.values(), settings.alerts_topic], PARTITIONS))
        print(f"broker {broker.bootstrap_servers}: starting the service (python -m app run)", flush=True)
        environment = {
            **os.environ,
            **settings.to_environment(),
            "EQLSTREAM_LOG_LEVEL": os.environ.get("EQLSTREAM_LOG_LEVEL", "WARNING"),
        }
        service = subprocess.Popen([sys.executable, "-m", "app", "run"], env=environment)
        try:
            return _stream(settings, events)
        finally:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
            print("service stopped", flush=True)


def _stream(settings: Settings, events: list[dict]) -> int:
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
    # Give the service's consumer groups time to form before the scenario starts.
    _wait(consumer, seconds=15)
    print(f"producing {len(events)} events over a few seconds (noise, near misses, two attacks)", flush=True)
    rng = random.Random(SEED)
    produced_at: dict[str, int] = {}
    documents: dict[str, dict] = {}
    found = 0
    deadline = time.monotonic() + 120
    pending = list(events)
    while time.monotonic() < deadline and found < EXPECTED_ALERTS:
        for event in pending[:40]:
            topic = INPUT_TOPICS.get(synthetic.source_of(event), INPUT_TOPICS[synthetic.WINLOGBEAT8])
            producer.produce(topic, orjson.dumps(event), partition=rng.randrange(PARTITIONS))
            produced_at[event_id(normalize(event))] = time.time_ns()  # alerts name events as normalized
        pending = pending[40:]
        producer.flush(10)
        until = time.monotonic() + 0.25
        while time.monotonic() < until:
            message = consumer.poll(0.05)
            if message is None or message.error():
                continue
            document = orjson.loads(message.value())
            documents[document["kibana.alert.uuid"]] = document
            if document["kibana.alert.depth"] == 2:
                found += 1
                print("ALERT " + _describe(document, documents, produced_at), flush=True)
    consumer.close()
    print(f"{found} of {EXPECTED_ALERTS} attacks detected", flush=True)
    return 0 if found == EXPECTED_ALERTS else 1


def _describe(shell: dict, documents: dict[str, dict], produced_at: dict[str, int]) -> str:
    ancestors = shell["kibana.alert.ancestors"]
    blocks = [documents[a["id"]] for a in ancestors if a["type"] == "signal" and a["id"] in documents]
    completing = [a["id"] for a in ancestors if a["type"] == "event"][-1]
    latency = (time.time_ns() - produced_at[completing]) / 1e9 if completing in produced_at else None
    return summary_line([*blocks, shell], latency)


def _wait(consumer: Consumer, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        consumer.consume(10, 0.5)


if __name__ == "__main__":
    raise SystemExit(main())
