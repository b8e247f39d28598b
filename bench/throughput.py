"""Reading one topic of the embedded broker, five ways, each from its first record to its last.

Every reader starts from the beginning of the same topic in a consumer group of its own. The clock
starts at the first record (forming a consumer group takes seconds on the embedded broker and is
not throughput) and stops at the last; the records before the clock starts are not counted. CPU
is the reading process's user + system time over the same span, all threads (librdkafka's
included): records per CPU second is the rate per core.

1. ceiling: a bare confluent-kafka consumer, ``consume(5000)`` in a loop and nothing else, with the
   consumer settings the ingest stage uses by default;
2. ingest, the process: ``python -m app run --role ingest`` with default settings apart from the
   broker, the topic names and the web port, read from its own ``eqlstream_events_consumed_total``;
3. ingest, in-process: the same ``IngestStage`` driven by a ``poll_once`` loop in this process (what
   the process adds is its web endpoint, health and lag reporting, and a separate interpreter);
4. Quix Streams 3.28.1, a stateless filter (``bench/quix_reader.py``), in a virtualenv and process of its own;
5. the design card's baseline, a plain Faust agent (``bench.faust_baseline``), in a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import Consumer

from app.core import CompiledRule, Detector, load_rules
from app.service.ingest import BATCH_SIZE, IngestStage
from app.service.kafka import KafkaConnection
from app.service.metrics import PrometheusObserver
from app.service.topics import TopicAdmin, owned_topics
from app.service.web import Health
from app.settings import ServiceSettings
from bench.common import INPUT_PARTITIONS, OUT, ROOT, Part, Usage, log
from bench.service import bench_settings, follow, start

GROUP_TIMEOUT_S = 180.0  # the first batch must come within this (group join on a busy machine)
STALL_S = 60.0
CONSUMED = "eqlstream_events_consumed_total"
QUIX_VERSION = "3.28.1"
QUIX_VENV = OUT / f"quix-venv-{QUIX_VERSION}"


def reader_settings(bootstrap: str, topic: str, name: str, **changes: object) -> ServiceSettings:
    """Default service settings reading ``topic``, with outputs and a group of this measurement's own."""
    return bench_settings(bootstrap, f"bench-{name}-{uuid.uuid4().hex[:8]}", input_topics=[topic], **changes)


def consumer_config(settings: ServiceSettings) -> dict[str, object]:
    """The ingest stage's consumer settings (``app.service.ingest``), without its callbacks."""
    return {
        **KafkaConnection.from_settings(settings).librdkafka(),
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout,
        "heartbeat.interval.ms": max(settings.session_timeout // 10, 500),
        "fetch.wait.max.ms": settings.fetch_max_wait,
    }


def measure_ceiling(bootstrap: str, topic: str, records: int) -> Part:
    """A bare consumer: ``consume(5000)`` until every record is in."""
    part = Part("ceiling", "Ceiling: bare confluent-kafka consumer")
    consumer = Consumer(consumer_config(reader_settings(bootstrap, topic, "ceiling")))
    consumer.subscribe([topic])
    try:
        counted, used = timed(lambda: len(consumer.consume(BATCH_SIZE, 0.1)), records)
    finally:
        consumer.close()
    _fill(part, counted, used.wall, used.cpu, "`consume(5000)` in a loop, the ingest stage's consumer settings")
    return part


def measure_ingest_inprocess(bootstrap: str, topic: str, records: int, rules: list[CompiledRule], key: str) -> Part:
    """The real ``IngestStage`` driven by a ``poll_once`` loop: batches, candidates produced, offsets committed."""
    part = Part(key, f"Service ingest stage, in-process (`IngestStage.poll_once` loop){_topic_note(key)}")
    stage = ingest_stage(bootstrap, topic, rules, key)
    with stage:
        counted, used = timed(lambda: stage.poll_once(0.1), records)
        candidates = stage.stats.candidates
    _fill(
        part,
        counted,
        used.wall,
        used.cpu,
        "`poll_once` loop: one prefilter scan per batch, parse the hits, produce the candidates, commit",
    )
    part.row("candidates produced", f"{candidates:,}")
    return part


def ingest_stage(bootstrap: str, topic: str, rules: list[CompiledRule], name: str) -> IngestStage:
    """An ``IngestStage`` as the service builds it (Prometheus observer, health), its topics created."""
    settings = reader_settings(bootstrap, topic, name)
    connection = KafkaConnection.from_settings(settings)
    TopicAdmin(connection).ensure(settings, owned_topics(settings))
    observer = PrometheusObserver()
    health = Health(settings.stall_timeout / 1000, observer)
    return IngestStage(settings, Detector(rules, settings.detection_options()), connection, observer, health)


def measure_ingest_process(bootstrap: str, topic: str, records: int, key: str, rules: Path | None = None) -> Part:
    """``python -m app run --role ingest``, its rate read from its own consumed-records counter;
    with ``rules``, running that file or folder instead of the bundled rule."""
    running = "" if rules is None else f", running `{rules}` ({len(load_rules(rules, warn=lambda _: None))} rules)"
    part = Part(
        key, f"Service ingest stage as a process (`python -m app run --role ingest`){_topic_note(key)}{running}"
    )
    settings = reader_settings(bootstrap, topic, key, **({} if rules is None else {"rule_path": rules}))
    service = start("ingest", settings, settings.consumer_group)
    try:
        window = follow(service, lambda s: s.total(CONSUMED), records)
        candidates = service.total("eqlstream_candidates_total")
    finally:
        service.stop()
    _fill(
        part,
        int(window.counted),
        window.wall,
        window.cpu,
        "default settings apart from the broker, the topic "
        f"names and the web port; `{CONSUMED}` scraped from its /metrics",
    )
    part.row("candidates produced", f"{candidates:,.0f}")
    return part


def _topic_note(key: str) -> str:
    return ", adversarial topic" if key.startswith("adversarial") else ""


def quix_python() -> Path:
    """The interpreter of a virtualenv with Quix Streams, made on first use under bench/out/.

    Quix Streams pins older confluent-kafka and pydantic than eqlstream, so it cannot share the
    project's environment. A stamp file marks a finished install: an interrupted one is redone.
    """
    python = QUIX_VENV / "bin" / "python"
    stamp = QUIX_VENV / ".installed"
    if not stamp.exists():
        log(f"creating {QUIX_VENV.relative_to(ROOT)} with quixstreams=={QUIX_VERSION} (once) ...")
        for command in (
            [sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"quixstreams=={QUIX_VERSION}",
            ],
        ):
            done = subprocess.run(command, env=_outside_env(), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command[-3:])} failed: {done.stderr[-2000:]}")
        stamp.touch()
    return python


def measure_quix(python: Path, bootstrap: str, topic: str, records: int) -> Part:
    """``bench/quix_reader.py`` in the Quix Streams virtualenv, over every record of ``topic``."""
    part = Part("quix", f"Quix Streams {QUIX_VERSION}: stateless filter")
    name = f"bench-quix-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-quix-") as work:
        result_path = Path(work) / "result.json"
        command = [
            str(python),
            str(ROOT / "bench" / "quix_reader.py"),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--output",
            f"{name}-hits",
            "--group",
            name,
            "--events",
            str(records),
            "--result",
            str(result_path),
        ]
        done = subprocess.run(command, cwd=work, env=_outside_env(), capture_output=True, text=True, timeout=1800)
        if not result_path.exists():
            raise RuntimeError(f"the Quix reader gave no result (status {done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(result_path.read_text())
    _fill(
        part,
        result["counted"],
        result["wall"],
        result["cpu"],
        "`app.dataframe(topic).filter(lambda value: "
        'b"mshta" in value.lower()).to_topic(hits)`, default settings, in its own virtualenv',
    )
    part.row("hits written", f"{result['hits']:,}")
    return part


def _outside_env() -> dict[str, str]:
    """This environment without PYTHONPATH, which could show the Quix virtualenv the project's packages."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def measure_faust(bootstrap: str, topic: str, events: int, prefilter: bool) -> Part:
    """The plain Faust agent of ``bench.faust_baseline``, in a subprocess, over the first ``events`` events."""
    name = "faust_prefilter" if prefilter else "faust"
    title = "Faust agent with the prefilter per record" if prefilter else "Design-card baseline: plain Faust agent"
    part = Part(name, title)
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as datadir:
        result_path = Path(datadir) / "result.json"
        command = [
            sys.executable,
            "-m",
            "bench.faust_baseline",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--events",
            str(events),
            "--partitions",
            str(INPUT_PARTITIONS),
            "--datadir",
            datadir,
            "--result",
            str(result_path),
        ]
        if prefilter:
            command.append("--prefilter")
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if not result_path.exists():
            raise RuntimeError(f"the Faust baseline gave no result (status {done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(result_path.read_text())
    how = (
        "`async for event in stream.events()`, `CandidateExtractor.extract(raw)` (prefilter, then parse) per event"
        if prefilter
        else "`async for event in stream.events()`, `orjson.loads` + ECS mapping + stage predicates per event, "
        "candidates through the sequence engine over a RocksDB Table"
    )
    _fill(part, result["counted"], result["wall"], result["cpu"], how)
    part.row("candidates / alerts", f"{result['candidates']:,} / {result['alerts']}")
    return part


def best_of(runs: int, measures: Sequence[tuple[str, Callable[[], Part]]], attempt: Callable[..., Part]) -> list[Part]:
    """Each measurement ``runs`` times, alternating with the others; the fastest run of each is kept
    (a slow spell of a shared machine then weighs on all readers alike)."""
    best: dict[str, Part] = {}
    for _ in range(runs):
        for key, measure in measures:
            part = attempt(key, key, measure)
            if key not in best or part.figures.get("rate", 0) > best[key].figures.get("rate", 0):
                best[key] = part
    for part in best.values():
        if not part.error:
            part.notes.append(f"best of {runs} runs, alternating with the other readers")
    return list(best.values())


def timed(step: Callable[[], int], records: int) -> tuple[int, Usage]:
    """Call ``step`` (returns records handled) until ``records`` are in; returns (records counted, usage).

    The clock starts after the first call that returns records; those are not counted.
    """
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    first = 0
    while not first:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no records within {GROUP_TIMEOUT_S:.0f} s")
        first = step()
    started = Usage.now()
    seen = first
    idle_since = time.monotonic()
    while seen < records:
        got = step()
        seen += got
        if got:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > STALL_S:
            raise RuntimeError(f"stalled at {seen:,} of {records:,} records")
    return seen - first, Usage.now().since(started)


def _fill(part: Part, counted: int, wall: float, cpu: float, how: str) -> None:
    part.figures.update(rate=counted / wall, per_core=counted / cpu if cpu else 0.0, cpu=cpu / wall)
    part.row("what it does", how)
    part.row("throughput", f"**{counted / wall:,.0f} events/s** ({counted:,} events in {wall:.2f} s)")
    part.row("per core", f"{part.figures['per_core']:,.0f} events per CPU second ({cpu / wall:.2f} cores busy)")
    log(f"{part.key}: {counted / wall:,.0f} events/s, {part.figures['per_core']:,.0f}/CPU s")
