"""Parts 1-3: reading the corpus from a topic of the embedded broker, three ways.

Each reader starts from the beginning of the same topic in its own consumer group, with batches of
the ingest stage's size. The clock starts when the first batch arrives (forming a consumer group
takes seconds on the embedded broker and is not throughput) and stops at the last event; the
events of that first batch are not counted. CPU is the reading process' user + system time over
the same span, all threads (librdkafka's included): events per CPU second is the rate per core.

1. ceiling: a bare confluent-kafka consumer that touches each message's value and nothing else;
2. ingest: the service's ``IngestStage`` (prefilter, parse, normalize, predicates, produce the
   candidates and commit each batch's offsets);
3. the design card's baseline, a plain Faust agent (``bench.faust_baseline``, a subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from app.kafka.admin import ensure_topics
from app.kafka.config import client_config
from app.kafka.ingest import BATCH_SIZE, IngestStage
from app.rule import CompiledRule
from app.settings import Settings
from bench.common import INPUT_PARTITIONS, ROOT, Part, Usage, log

GROUP_TIMEOUT_S = 120.0  # the first batch must come within this (group join on a busy machine)


def bench_settings(bootstrap: str, topic: str, name: str) -> Settings:
    """Service settings for one measurement: its own group and output topics, a short session timeout."""
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        input_topics=topic,
        consumer_group=f"bench-{name}",
        candidates_topic=f"bench-{name}-candidates",
        alerts_topic=f"bench-{name}-alerts",
        dead_letter_topic=f"bench-{name}-dead-letter",
        session_timeout="6s",
        single_record_batches=True,
    )


def measure_ceiling(bootstrap: str, topic: str, events: int) -> Part:
    """A bare consumer: consume batches, touch each value."""
    part = Part("ceiling", "Ceiling: bare confluent-kafka consumer")
    settings = bench_settings(bootstrap, topic, f"ceiling-{uuid.uuid4().hex[:8]}")
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 600,
        }
    )
    consumer.subscribe([topic])
    try:
        seen, first, used = _timed(lambda: _touch(consumer.consume(BATCH_SIZE, 0.1)), events)
    finally:
        consumer.close()
    _fill(part, events - first, used, "consume(5,000) batches, `len(message.value())` per message")
    return part


def _touch(messages: list) -> int:
    count = 0
    for message in messages:
        if message.error() is None:
            len(message.value())
            count += 1
    return count


def measure_ingest(bootstrap: str, topic: str, events: int, rules: list[CompiledRule]) -> Part:
    """The real ``IngestStage`` on the topic: batches, candidates produced, offsets committed."""
    part = Part("ingest", "Service ingest stage (`app.kafka.ingest.IngestStage`, in-process)")
    settings = bench_settings(bootstrap, topic, f"ingest-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.candidates_topic: 8, settings.dead_letter_topic: 8})
    with IngestStage(settings, rules) as stage:
        seen, first, used = _timed(lambda: stage.poll_once(0.1), events)
        candidates = stage.stats.candidates
    _fill(part, events - first, used, "`poll_once` loop: prefilter per batch, parse the hits, produce, commit")
    part.row("candidates produced", f"{candidates:,} ({candidates / seen:.3%} of the events)")
    return part


def _timed(step, events: int) -> tuple[int, int, Usage]:  # noqa: ANN001 - a callable returning a count
    """Call ``step`` (returns events handled) until ``events``; returns (seen, events in the first batch, usage)."""
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    first = 0
    while not first:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no records within {GROUP_TIMEOUT_S:.0f} s")
        first = step()
    started = Usage.now()
    seen = first
    idle_since = time.monotonic()
    while seen < events:
        got = step()
        seen += got
        if got:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 30:
            raise RuntimeError(f"stalled at {seen:,} of {events:,} records")
    return seen, first, Usage.now().since(started)


def _fill(part: Part, counted: int, used: Usage, how: str) -> None:
    part.figures.update(rate=counted / used.wall, per_core=counted / used.cpu, cpu=used.cpu / used.wall)
    part.row("what it does", how)
    part.row("throughput", f"**{counted / used.wall:,.0f} events/s** ({counted:,} events in {used.wall:.2f} s)")
    part.row("per core", f"{counted / used.cpu:,.0f} events per CPU second ({used.cpu / used.wall:.2f} cores busy)")
    log(f"{part.key}: {counted / used.wall:,.0f} events/s, {counted / used.cpu:,.0f}/CPU s")


def measure_faust(bootstrap: str, topic: str, events: int, prefilter: bool) -> Part:
    """The plain Faust agent of ``bench.faust_baseline``, in a subprocess, over the first ``events`` events."""
    name = "faust_prefilter" if prefilter else "faust"
    title = "Faust agent with the prefilter per record" if prefilter else "Design-card baseline: plain Faust agent"
    part = Part(name, title)
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as datadir:
        command = [
            sys.executable, "-m", "bench.faust_baseline", "--bootstrap", bootstrap, "--topic", topic,
            "--events", str(events), "--partitions", str(INPUT_PARTITIONS), "--datadir", datadir,
            "--result", str(Path(datadir) / "result.json"),
        ]
        if prefilter:
            command.append("--prefilter")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        result_path = Path(datadir) / "result.json"
        if not result_path.exists():
            raise RuntimeError(f"the Faust baseline gave no result (status {done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(result_path.read_text())
    counted, used = result["counted"], Usage(result["wall"], result["cpu"])
    how = (
        "`async for event in stream.events()`, `CandidateExtractor.extract(raw)` (prefilter, then parse) per event"
        if prefilter
        else "`async for event in stream.events()`, `orjson.loads` + ECS mapping + stage predicates per event, "
        "candidates through the sequence engine over a RocksDB Table"
    )
    _fill(part, counted, used, how)
    part.row("candidates / alerts", f"{result['candidates']:,} / {result['alerts']}")
    return part
