"""The sequence stage as a process: its capacity under a candidate flood, and an attack's latency during one.

Capacity: ``keys`` candidates are packed into the candidates topic beforehand, as the ingest stage
packs them (``bench.candidates``), then ``python -m app run --role sequence`` starts with default
settings apart from the broker, the topic names, the state directory and a free web port. Its rate
is read from its own ``eqlstream_sequence_candidates_total`` (all outcomes), from its first
candidate to its last. Two floods: distinct keys (each candidate a new join key: a state read that
misses, a state record written) and one hot key (every candidate re-evaluates the same key, which
holds up to 100 events per stage). Each runs against two brokers:

* the development broker, which the service recognises by Tansu's cluster id: it then writes its
  state changelog one record per produce batch (``batch.num.messages=1``), which that broker needs
  to recover the state correctly, and which limits the stage;
* the same broker started with another cluster id: the service then batches its changelog as on
  Apache Kafka (recovery on this broker would be wrong; a benchmark never recovers).

The distinct-key flood on each broker and the hot-key flood on the Kafka-like one run a second time,
over the same packed topic in another consumer group, sampled by py-spy: what the profile shows is
what limits the stage (the timed runs are not sampled).

Latency during a flood: a sequence process on the Kafka-like broker absorbs a live flood of
distinct-key candidates offered at ``flood_rate`` per second (packed per 100 ms, as ingest polls
would send them) while an attack (its two candidates, 200 ms apart, in records of their own) is
sent every ``ATTACK_INTERVAL_S``; its latency runs from producing its second candidate to its first
alert document on the alerts topic.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from eqlstream_dev.broker import EmbeddedBroker

from app.core import Candidate, CompiledRule
from app.service.kafka import KafkaConnection
from app.service.records import encode_candidate, pack, partition_of
from app.service.topics import TopicAdmin, owned_topics
from app.settings import ServiceSettings
from bench.candidates import ATTACK_PREFIX, FloodWriter, Templates, attack, flood, templates
from bench.common import Part, bulk_producer, log, produce
from bench.latency import DEVELOPMENT_FETCH_WAIT, AlertWatcher, percentiles, wait_for_alerts
from bench.profiles import PySpy, SpySummary
from bench.service import Service, Window, bench_settings, follow, start

HANDLED = "eqlstream_sequence_candidates_total"
# A measured flood's process is killed soon after SIGTERM: its state is thrown away, and a worker that has
# written no alert waits out its 25 s shutdown watchdog on this broker.
QUICK_STOP_S = 3.0
KAFKA_LIKE_CLUSTER = "bench-as-kafka"
SPAN_MS = 60_000  # the floods' event-time span
FLOOD_TICK_S = 0.1  # the live flood is sent in packs this often, like ingest polls
ATTACK_INTERVAL_S = 0.5
SECOND_CANDIDATE_DELAY_S = 0.2
WARMUP_TIMEOUT_S = 180.0
DRAIN_S = 30.0
# The floods profiled: distinct keys on both brokers (the target), the hot key where batching does not limit.
PROFILED = {("development", "distinct"), ("kafka", "distinct"), ("kafka", "hot")}
PACKING = "per partition as 5,000-record ingest polls of nothing but candidates would pack them"
_ATTACK_ID = re.compile(rb'"(' + re.escape(ATTACK_PREFIX.encode()) + rb'\d+)"')
BROKERS = {
    "development": ("development broker (Tansu's cluster id: changelog written one record per batch)", None),
    "kafka": (f"as on Apache Kafka (cluster id `{KAFKA_LIKE_CLUSTER}`: changelog batched)", KAFKA_LIKE_CLUSTER),
}


def handled(service: Service) -> float:
    """Candidates the stage has handled, whatever their outcome (accepted, duplicate, too late)."""
    return service.total(HANDLED)


def prepare(bootstrap: str, name: str, data_dir: Path, **changes: object) -> ServiceSettings:
    """Settings for one sequence process, with its topics created (the candidates must go in first)."""
    settings = bench_settings(bootstrap, name, data_dir=data_dir, **changes)
    TopicAdmin(KafkaConnection.from_settings(settings)).ensure(settings, owned_topics(settings))
    return settings


def measure_capacity(rules: list[CompiledRule], keys: int, hot_keys: int, seed: int, profile_dir: Path) -> Part:
    """Distinct-key and hot-key floods on both brokers, each followed by a profiled run of ``PROFILED`` ones."""
    part = Part("sequence", "Sequence stage capacity: `python -m app run --role sequence` under a candidate flood")
    part.notes.append(
        f"Candidates packed into the candidates topic beforehand ({PACKING}); default settings apart "
        "from the broker, the topic names, the state directory and the web port; the rate is "
        f"`{HANDLED}` (all outcomes) scraped from the process's /metrics from its first candidate to its last."
    )
    pair = templates(rules, seed)
    for broker_key, (label, cluster_id) in BROKERS.items():
        with EmbeddedBroker(**({"cluster_id": cluster_id} if cluster_id else {})) as broker:
            for flood_kind, count in (("distinct", keys), ("hot", hot_keys)):
                key = f"{broker_key}_{flood_kind}"
                what = "distinct keys" if flood_kind == "distinct" else "one hot key"
                packed, window = _flood_run(broker.bootstrap_servers, pair, count, flood_kind == "hot")
                part.figures.update({f"{key}_rate": window.rate, f"{key}_per_core": window.per_core})
                part.row(
                    f"{label}, {what}",
                    f"**{window.rate:,.0f} candidates/s** ({window.counted:,.0f} in {window.wall:.1f} s; "
                    f"{window.per_core:,.0f} per CPU second, {window.cpu / window.wall:.2f} cores busy)",
                )
                log(f"sequence {key}: {window.rate:,.0f} candidates/s")
                if (broker_key, flood_kind) not in PROFILED:
                    continue
                path = profile_dir / f"sequence-{key}.raw"
                summary = _profiled_run(broker.bootstrap_servers, packed, count, path)
                if summary is None:
                    part.notes.append(f"No profile of the {what} flood, {label}: py-spy could not run.")
                    continue
                # How busy the worker's event loop (Faust's, in the main thread) was: what limits the stage.
                part.figures[f"{key}_loop_busy"] = summary.busy("MainThread")
                part.heaviest[key] = summary.heaviest()
                part.notes.append(
                    f"Profile of the {what} flood, {label} (py-spy at {summary.rate} Hz, from the first candidate "
                    f"to the last, in a run of its own; bench/out/profiles/{path.name}), shares of one core's wall "
                    f"time:\n\n```\n{summary.text()}\n```"
                )
    return part


def _flood_run(bootstrap: str, pair: Templates, count: int, hot: bool) -> tuple[ServiceSettings, Window]:
    """Pack ``count`` flood candidates, start a sequence process, follow it to the last; returns its window."""
    name = f"bench-sequence-{'hot' if hot else 'distinct'}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-sequence-") as data_dir:
        settings = prepare(bootstrap, name, Path(data_dir))
        _pack(bootstrap, settings, pair, count, hot)
        service = start("sequence", settings, name)
        try:
            window = follow(service, handled, count)
        finally:
            service.stop(QUICK_STOP_S)
    return settings, window


def _profiled_run(bootstrap: str, packed: ServiceSettings, count: int, path: Path) -> SpySummary | None:
    """A packed flood topic again, in a new consumer group, sampled by py-spy."""
    name = f"bench-sequence-profile-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-sequence-") as data_dir:
        settings = prepare(bootstrap, name, Path(data_dir), candidates_topic=packed.candidates_topic)
        service = start("sequence", settings, name)
        spy = PySpy(service.pid, path)
        try:
            follow(service, handled, count, on_start=spy.start)
        finally:
            summary = spy.stop()
            service.stop(QUICK_STOP_S)
    return summary


def _pack(bootstrap: str, settings: ServiceSettings, pair: Templates, count: int, hot: bool) -> None:
    """Produce a flood of ``count`` candidates into the candidates topic, packed as ingest packs them."""
    producer = bulk_producer(bootstrap, **{"compression.type": "lz4"})
    writer = FloodWriter(producer, settings.candidates_topic, settings.candidates_partitions)
    started = time.perf_counter()
    for candidate in flood(pair.first, count, pair.first.timestamp_ms, SPAN_MS, hot=hot):
        writer.add(candidate)
    writer.flush()
    if producer.flush(300):
        raise RuntimeError("the flood could not be produced")
    log(f"packed {count:,} candidates into {writer.records:,} records in {time.perf_counter() - started:.0f} s")


def measure_flood_latency(rules: list[CompiledRule], flood_rate: float, seconds: float, seed: int) -> Part:
    """Attacks sent while a sequence process absorbs a live flood (Kafka-like broker)."""
    part = Part(
        "flood_latency",
        f"Latency of an attack during a flood of {flood_rate:,.0f} candidates/s (`--role sequence`)",
    )
    pair = templates(rules, seed)
    name = f"bench-flood-latency-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker(cluster_id=KAFKA_LIKE_CLUSTER) as broker, tempfile.TemporaryDirectory() as data_dir:
        bootstrap = broker.bootstrap_servers
        settings = prepare(bootstrap, name, Path(data_dir), fetch_max_wait=DEVELOPMENT_FETCH_WAIT, alert_cap=0)
        service = start("sequence", settings, name)
        watcher = AlertWatcher(bootstrap, settings.alerts_topic, settings.candidates_partitions, _ATTACK_ID)
        clock = _EventClock(pair.first.timestamp_ms)
        sender = _AttackSender(bootstrap, settings, pair, clock)
        flood_thread = _LiveFlood(bootstrap, settings, pair, flood_rate, clock)
        try:
            sender.warm_up(watcher, service)
            before = handled(service)
            flood_thread.start()
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                service.check()
                sender.send_pair()
            flood_thread.stop()
            window = time.perf_counter() - started
            absorbed_in_window = handled(service) - before
            backlog = flood_thread.sent + 2 * len(sender.completed) - absorbed_in_window
            wait_for_alerts(watcher, sender.completed, DRAIN_S)
        finally:
            flood_thread.stop()
            service.stop()
            watcher.close()
    latencies = [watcher.seen[a] - t for a, t in sender.completed.items() if a in watcher.seen]
    if not latencies:
        raise RuntimeError("no attack was alerted during the flood")
    p50, p99, worst = percentiles(latencies)
    part.figures.update(p50_ms=p50, p99_ms=p99, max_ms=worst, offered=flood_thread.sent / window)
    part.row(
        "flood",
        f"{flood_thread.sent / window:,.0f} distinct-key candidates/s offered for {window:.0f} s "
        f"(target {flood_rate:,.0f}); the stage handled {absorbed_in_window / window:,.0f}/s in the window and "
        f"had {max(backlog, 0):,.0f} left at its end; as on Apache Kafka (cluster id "
        f"`{KAFKA_LIKE_CLUSTER}`), fetch max wait {DEVELOPMENT_FETCH_WAIT}",
    )
    part.row(
        "attacks",
        f"one every {ATTACK_INTERVAL_S * 1000:.0f} ms, two candidates {SECOND_CANDIDATE_DELAY_S * 1000:.0f} ms apart "
        "in records of their own; latency from producing the second to its alert on the alerts topic",
    )
    part.row("latency p50 / p99 / max", f"**{p50:,.0f} / {p99:,.0f} / {worst:,.0f} ms**")
    part.row("attacks alerted", f"{len(latencies)} of {len(sender.completed)} (within {DRAIN_S:.0f} s)")
    log(f"flood latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms ({len(latencies)} attacks)")
    return part


class _AttackSender:
    """Sends attacks straight to the candidates topic, each candidate in a record of its own."""

    def __init__(self, bootstrap: str, settings: ServiceSettings, pair: Templates, clock: _EventClock) -> None:
        self.settings = settings
        self.pair = pair
        self.clock = clock
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
        self.completed: dict[str, float] = {}  # attack id -> when its second candidate was produced
        self.number = 0

    def send_pair(self) -> None:
        """One attack: its first candidate, then its second after ``SECOND_CANDIDATE_DELAY_S``; paced to
        ``ATTACK_INTERVAL_S`` in all."""
        self.number += 1
        first, second = attack(self.pair, self.number, self.clock.now_ms())
        self._send(first)
        time.sleep(SECOND_CANDIDATE_DELAY_S)
        self._send(second)
        self.completed[str(second.key[1])] = time.perf_counter()
        time.sleep(ATTACK_INTERVAL_S - SECOND_CANDIDATE_DELAY_S)

    def warm_up(self, watcher: AlertWatcher, service: Service) -> None:
        """Attacks until one is alerted: the process has its partitions and its state open."""
        deadline = time.perf_counter() + WARMUP_TIMEOUT_S
        while not watcher.seen:
            service.check()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"no alert within {WARMUP_TIMEOUT_S:.0f} s of warm-up")
            self.send_pair()
        time.sleep(1.0)  # the warm-up's last alerts
        self.completed.clear()

    def _send(self, candidate: Candidate) -> None:
        settings = self.settings
        partition = partition_of(candidate.rule_id, candidate.key, settings.candidates_partitions)
        line = encode_candidate(candidate, time.time_ns() // 1_000_000)
        produce(self.producer, settings.candidates_topic, next(pack([line])), partition)
        self.producer.poll(0)


class _EventClock:
    """Event time that advances with the wall clock from ``base_ms``: shared by the flood and the attacks,
    so the watermark the flood drives never makes an attack late."""

    def __init__(self, base_ms: int) -> None:
        self.base_ms = base_ms
        self.started = time.perf_counter()

    def now_ms(self) -> int:
        return self.base_ms + int((time.perf_counter() - self.started) * 1000)


class _LiveFlood(threading.Thread):
    """Distinct-key candidates at ``rate`` per second, packed and sent every ``FLOOD_TICK_S``."""

    def __init__(
        self, bootstrap: str, settings: ServiceSettings, pair: Templates, rate: float, clock: _EventClock
    ) -> None:
        super().__init__(name="flood", daemon=True)
        self.rate = rate
        self.pair = pair
        self.clock = clock
        self.producer = bulk_producer(bootstrap, **{"compression.type": "lz4"})
        self.writer = FloodWriter(self.producer, settings.candidates_topic, settings.candidates_partitions)
        self._halt = threading.Event()

    @property
    def sent(self) -> int:
        return self.writer.candidates

    def run(self) -> None:
        started = time.perf_counter()
        index = 0
        while not self._halt.wait(FLOOD_TICK_S):
            due = int((time.perf_counter() - started) * self.rate)
            if due > index:
                for candidate in flood(self.pair.first, due - index, self.clock.now_ms(), 0, first=index):
                    self.writer.add(candidate)
                index = due
                self.writer.flush()
        self.producer.flush(60)

    def stop(self) -> None:
        """Stop sending (idempotent; a flood that never started just stops being due)."""
        self._halt.set()
        if self.is_alive():
            self.join(90)
