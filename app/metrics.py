"""The service's Prometheus metrics (names, types and meanings: docs/metrics.md).

The stages update these objects directly. Totals that live inside the sequence engines (which come
and go with partition assignments) and RocksDB's own figures are read at scrape time by the
collectors the sequence stage registers, so nothing runs between scrapes to keep them current.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.engine.sequence import EngineStats

# `_created` series double the exposition for no use on these long-lived counters.
disable_created_metrics()

PREFIX = "eqlstream"

# Seconds; one bucket set per kind of duration, wide enough that p99 stays inside the buckets.
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_EVENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


def _version() -> str:
    try:
        return version("eqlstream")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


BUILD_INFO = Gauge(f"{PREFIX}_build_info", "Always 1; the version as a label.", ["version"])
BUILD_INFO.labels(_version()).set(1)
READY = Gauge(f"{PREFIX}_ready", "1 when the stage is ready (as /readyz), else 0.", ["stage"])

EVENTS_CONSUMED = Counter(f"{PREFIX}_events_consumed", "Input records read by the ingest stage.", ["topic"])
EVENTS_REJECTED = Counter(
    f"{PREFIX}_events_rejected", "Records that could not be evaluated, each also a dead letter.", ["stage", "reason"]
)
DEAD_LETTERS = Counter(f"{PREFIX}_dead_letter_records", "Records written to the dead-letter topic.", ["stage"])
WITHOUT_JOIN_KEY = Counter(
    f"{PREFIX}_events_without_join_key", "Events that matched a stage but lack a join field (never joinable)."
)
CANDIDATES = Counter(f"{PREFIX}_candidates", "Candidates the ingest stage produced.", ["rule"])
ALERTS_EMITTED = Counter(f"{PREFIX}_alerts_emitted", "Alerts written (one per sequence).", ["rule"])
ALERTS_SUPPRESSED = Counter(f"{PREFIX}_alerts_suppressed", "Alerts held back by the alert cap.", ["rule"])

INGEST_BATCH_DURATION = Histogram(
    f"{PREFIX}_ingest_batch_duration_seconds",
    "Processing time of one ingest batch (prefilter, parse, produce, commit; not the wait for records).",
    buckets=_BATCH_BUCKETS,
)
SEQUENCE_EVENT_DURATION = Histogram(
    f"{PREFIX}_sequence_event_duration_seconds",
    "Processing time of one candidate in the sequence stage.",
    buckets=_EVENT_BUCKETS,
)
EVENT_TIME_LAG = Histogram(
    f"{PREFIX}_event_time_lag_seconds",
    "Now minus @timestamp of candidates when a stage handles them.",
    ["stage"],
    buckets=_LAG_BUCKETS,
)
DETECTION_LATENCY = Histogram(
    f"{PREFIX}_detection_latency_seconds",
    "From the ingest stage receiving the completing event to its alert being sent.",
    ["rule"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    f"{PREFIX}_consumer_lag_records",
    "Records not yet consumed on the partitions this process owns.",
    ["stage", "topic"],
)
LAST_PROCESSED = Gauge(
    f"{PREFIX}_last_processed_timestamp_seconds", "Unix time the stage last finished a batch or candidate.", ["stage"]
)
REBALANCES = Counter(f"{PREFIX}_rebalances", "Partition assignments received.", ["stage"])
PRODUCE_ERRORS = Counter(f"{PREFIX}_produce_errors", "Records the brokers did not acknowledge.", ["stage"])
CONSUMER_ERRORS = Counter(f"{PREFIX}_consumer_errors", "Non-fatal consumer and commit errors.", ["stage"])


class EngineTotals(Protocol):
    """What the sequence stage reports at scrape time (``SequenceService`` implements it)."""

    def engine_stats(self) -> dict[str, EngineStats]:
        """Per rule name, the engine counters since the process started."""

    def state_figures(self) -> tuple[int, int]:
        """RocksDB's estimates of (keys, live bytes) of the state partitions on this worker."""


class _SequenceCollector(Collector):
    """Reads the sequence stages' totals when Prometheus scrapes.

    The engines keep their own counters (the replay CLI uses them too) and are replaced when
    partitions move, so the stage folds a retired engine's counts into its totals and this
    collector only sums; the counters stay monotonic.
    """

    def __init__(self) -> None:
        self.sources: weakref.WeakSet = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        candidates = CounterMetricFamily(
            f"{PREFIX}_sequence_candidates", "Candidates the sequence stage handled.", labels=["rule", "outcome"]
        )
        sequences = CounterMetricFamily(f"{PREFIX}_sequences", "Sequences found.", labels=["rule", "outcome"])
        expired = CounterMetricFamily(
            f"{PREFIX}_state_expired_keys", "Join keys whose state expired.", labels=["rule"]
        )
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
                accepted = stats.candidates - stats.duplicates - stats.too_late
                candidates.add_metric([rule, "accepted"], accepted)
                candidates.add_metric([rule, "duplicate"], stats.duplicates)
                candidates.add_metric([rule, "too_late"], stats.too_late)
                sequences.add_metric([rule, "new"], stats.sequences)
                sequences.add_metric([rule, "revised"], stats.revised)
                sequences.add_metric([rule, "superseded"], stats.superseded)
                sequences.add_metric([rule, "repeated"], stats.repeated)
                expired.add_metric([rule], stats.expired_keys)
                evicted.add_metric([rule], stats.evicted)
            state_keys, state_bytes = source.state_figures()
            total_keys += state_keys
            total_bytes += state_bytes
        yield from (candidates, sequences, expired, evicted)
        if sources:
            keys.add_metric([], total_keys)
            size.add_metric([], total_bytes)
            yield from (keys, size)


SEQUENCE_COLLECTOR = _SequenceCollector()
REGISTRY.register(SEQUENCE_COLLECTOR)
