"""The ``Observer`` as Prometheus metrics (names, types and meanings: docs/metrics.md).

One registry per process, created at start and served by ``/metrics``. Totals that live inside the
sequence engines (which come and go with partition assignments) and RocksDB's own figures are
read at scrape time from the registered sources, so nothing runs between scrapes to keep them
current.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.core.engine.sequence import EngineStats
from app.service.observer import EngineSource

# `_created` series double the exposition for no use on these long-lived counters.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "eqlstream"

# Seconds; one bucket set per kind of duration, wide enough that p99 stays inside the buckets.
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


def _version() -> str:
    try:
        return version("eqlstream")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class PrometheusObserver:
    """Implements ``app.service.observer.Observer`` over a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            # A registry of its own lacks what prometheus_client's global one has: process memory and
            # CPU, GC and platform figures, which dashboards (examples/grafana) and operators read.
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        r = self.registry
        Gauge(f"{PREFIX}_build_info", "Always 1; the version as a label.", ["version"], registry=r).labels(
            _version()
        ).set(1)
        self._ready = Gauge(f"{PREFIX}_ready", "1 when the stage is ready (as /readyz), else 0.", ["stage"], registry=r)
        self._consumed = Counter(
            f"{PREFIX}_events_consumed", "Input records read by the ingest stage.", ["topic"], registry=r
        )
        self._rejected = Counter(
            f"{PREFIX}_events_rejected",
            "Records that could not be evaluated, each also a dead letter.",
            ["stage", "reason"],
            registry=r,
        )
        self._dead_letters = Counter(
            f"{PREFIX}_dead_letter_records", "Records written to the dead-letter topic.", ["stage"], registry=r
        )
        self._without_key = Counter(
            f"{PREFIX}_events_without_join_key",
            "Events that matched a stage but lack a join field (never joinable).",
            registry=r,
        )
        self._candidates = Counter(
            f"{PREFIX}_candidates", "Candidates the ingest stage produced.", ["rule"], registry=r
        )
        self._alerts = Counter(f"{PREFIX}_alerts_emitted", "Alerts written (one per sequence).", ["rule"], registry=r)
        self._suppressed = Counter(
            f"{PREFIX}_alerts_suppressed", "Alerts held back by the alert cap.", ["rule"], registry=r
        )
        self._batch = Histogram(
            f"{PREFIX}_batch_duration_seconds",
            "Processing time of one batch (not the wait for records).",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self._lag = Histogram(
            f"{PREFIX}_event_time_lag_seconds",
            "Now minus @timestamp of candidates when a stage handles them.",
            ["stage"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self._latency = Histogram(
            f"{PREFIX}_detection_latency_seconds",
            "From the ingest stage reading the completing event to its alert being acknowledged.",
            ["rule"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag_records",
            "Records not yet consumed on the partitions this process owns.",
            ["stage", "topic"],
            registry=r,
        )
        self._last = Gauge(
            f"{PREFIX}_last_processed_timestamp_seconds",
            "Unix time the stage last finished a batch.",
            ["stage"],
            registry=r,
        )
        self._rebalances = Counter(f"{PREFIX}_rebalances", "Partition assignments received.", ["stage"], registry=r)
        self._produce_errors = Counter(
            f"{PREFIX}_produce_errors", "Records the brokers did not acknowledge.", ["stage"], registry=r
        )
        self._consumer_errors = Counter(
            f"{PREFIX}_consumer_errors", "Non-fatal consumer and commit errors.", ["stage"], registry=r
        )
        self._log_dropped = Counter(
            f"{PREFIX}_log_lines_dropped", "Repetitive log lines left out by rate limiting.", registry=r
        )
        self._lag_children: dict[str, Any] = {}
        self._sources = _EngineCollector()
        r.register(self._sources)

    def prepare(self, stage: str, rules: list[str], topics: list[str]) -> None:
        self._ready.labels(stage).set(0)
        for counter in (self._dead_letters, self._produce_errors, self._consumer_errors, self._rebalances):
            counter.labels(stage)
        self._batch.labels(stage)
        for rule in rules:
            (self._candidates if stage == "ingest" else self._alerts).labels(rule)
            if stage == "sequence":
                self._suppressed.labels(rule)
        for topic in topics:
            if stage == "ingest":
                self._consumed.labels(topic)
            self._consumer_lag.labels(stage, topic)

    def ready(self, stage: str, ready: bool) -> None:
        self._ready.labels(stage).set(1 if ready else 0)

    def consumed(self, topic: str, records: int) -> None:
        self._consumed.labels(topic).inc(records)

    def rejected(self, stage: str, reason: str, records: int = 1) -> None:
        self._rejected.labels(stage, reason).inc(records)

    def dead_letters(self, stage: str, records: int) -> None:
        self._dead_letters.labels(stage).inc(records)

    def without_join_key(self, events: int) -> None:
        self._without_key.inc(events)

    def candidates(self, rule: str, count: int) -> None:
        self._candidates.labels(rule).inc(count)

    def event_lag(self, stage: str, seconds: float) -> None:
        # Once per candidate: the labelled child is looked up once per stage, not per call.
        child = self._lag_children.get(stage)
        if child is None:
            child = self._lag_children[stage] = self._lag.labels(stage)
        child.observe(seconds)

    def batch_done(self, stage: str, seconds: float) -> None:
        self._batch.labels(stage).observe(seconds)
        self._last.labels(stage).set(time.time())

    def alert(self, rule: str, latency_seconds: float) -> None:
        self._alerts.labels(rule).inc()
        self._latency.labels(rule).observe(latency_seconds)

    def suppressed(self, rule: str) -> None:
        self._suppressed.labels(rule).inc()

    def consumer_lag(self, stage: str, topic: str, records: int) -> None:
        self._consumer_lag.labels(stage, topic).set(records)

    def rebalance(self, stage: str) -> None:
        self._rebalances.labels(stage).inc()

    def produce_errors(self, stage: str, records: int) -> None:
        self._produce_errors.labels(stage).inc(records)

    def consumer_errors(self, stage: str, errors: int) -> None:
        self._consumer_errors.labels(stage).inc(errors)

    def log_lines_dropped(self, lines: int) -> None:
        self._log_dropped.inc(lines)

    def register(self, source: EngineSource) -> None:
        self._sources.sources.add(source)


class _EngineCollector(Collector):
    """Reads the sequence stages' totals when Prometheus scrapes.

    The engines keep their own counters (the replay CLI uses them too) and are replaced when
    partitions move, so the stage folds a retired engine's counts into its totals and this
    collector only sums; the counters stay monotonic.
    """

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[EngineSource] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        candidates = CounterMetricFamily(
            f"{PREFIX}_sequence_candidates", "Candidates the sequence stage handled.", labels=["rule", "outcome"]
        )
        sequences = CounterMetricFamily(f"{PREFIX}_sequences", "Sequences found.", labels=["rule", "outcome"])
        expired = CounterMetricFamily(f"{PREFIX}_state_expired_keys", "Join keys whose state expired.", labels=["rule"])
        evicted = CounterMetricFamily(
            f"{PREFIX}_state_evicted_entries", "Events evicted from a flooded key.", labels=["rule"]
        )
        keys = GaugeMetricFamily(f"{PREFIX}_state_keys", "RocksDB's estimate of the state keys on this worker.")
        size = GaugeMetricFamily(
            f"{PREFIX}_state_size_bytes", "RocksDB's estimate of the live state data on this worker (disk + memtables)."
        )
        total_keys = total_bytes = 0
        sources = list(self.sources)
        for source in sources:
            for rule, stats in source.engine_stats().items():
                _add_engine(candidates, sequences, expired, evicted, rule, stats)
            state_keys, state_bytes = source.state_figures()
            total_keys += state_keys
            total_bytes += state_bytes
        yield from (candidates, sequences, expired, evicted)
        if sources:
            keys.add_metric([], total_keys)
            size.add_metric([], total_bytes)
            yield from (keys, size)


def _add_engine(
    candidates: CounterMetricFamily,
    sequences: CounterMetricFamily,
    expired: CounterMetricFamily,
    evicted: CounterMetricFamily,
    rule: str,
    stats: EngineStats,
) -> None:
    candidates.add_metric([rule, "accepted"], stats.candidates - stats.duplicates - stats.too_late)
    candidates.add_metric([rule, "duplicate"], stats.duplicates)
    candidates.add_metric([rule, "too_late"], stats.too_late)
    sequences.add_metric([rule, "new"], stats.sequences)
    sequences.add_metric([rule, "revised"], stats.revised)
    sequences.add_metric([rule, "superseded"], stats.superseded)
    expired.add_metric([rule], stats.expired_keys)
    evicted.add_metric([rule], stats.evicted)
