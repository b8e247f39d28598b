"""What the stages report as they work: a small interface, registered once at start.

The stages call an ``Observer``; the Prometheus implementation (``app.service.metrics``) turns the
calls into metrics, and tests can pass their own. Nothing here knows Prometheus, and no stage
changes a global. Totals that live inside the sequence engines are not pushed: the sequence stage
registers an ``EngineSource`` that the observer reads when it is scraped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from app.core.engine.sequence import EngineStats


class EngineSource(Protocol):
    """What the sequence stage exposes at scrape time."""

    def engine_stats(self) -> Mapping[str, EngineStats]:
        """Per rule name, the engines' counters since the process started."""

    def state_figures(self) -> tuple[int, int]:
        """Estimates of (keys, bytes) of the state partitions on this worker."""


class Observer(Protocol):
    """Events of the stages' work; ``stage`` is ``ingest`` or ``sequence``, ``rule`` a rule name."""

    def prepare(self, stage: str, rules: list[str], topics: list[str]) -> None:
        """The stage runs in this process: create its series (dashboards then show 0, not "no data")."""

    def ready(self, stage: str, ready: bool) -> None:
        """The stage's readiness changed (as ``/readyz`` reports it)."""

    def consumed(self, topic: str, records: int) -> None:
        """The ingest stage read ``records`` records of ``topic``."""

    def rejected(self, stage: str, reason: str, records: int = 1) -> None:
        """Records that could not be evaluated, each also a dead letter."""

    def dead_letters(self, stage: str, records: int) -> None:
        """Records written to the dead-letter topic."""

    def without_join_key(self, events: int) -> None:
        """Events that met a stage but have no join key."""

    def candidates(self, rule: str, count: int) -> None:
        """Candidates the ingest stage produced."""

    def event_lag(self, stage: str, seconds: float) -> None:
        """Now minus ``@timestamp`` of a candidate the stage handles."""

    def batch_done(self, stage: str, seconds: float) -> None:
        """A batch's processing time (not the wait for records); the stage is alive and working."""

    def alert(self, rule: str, latency_seconds: float) -> None:
        """An alert written; ``latency_seconds`` from ingest reading its last event."""

    def suppressed(self, rule: str) -> None:
        """An alert held back by the alert cap."""

    def consumer_lag(self, stage: str, topic: str, records: int) -> None:
        """Records not yet consumed on the partitions of ``topic`` this process owns."""

    def rebalance(self, stage: str) -> None:
        """Partitions were assigned to the stage."""

    def produce_errors(self, stage: str, records: int) -> None:
        """Records the brokers did not acknowledge."""

    def consumer_errors(self, stage: str, errors: int) -> None:
        """Non-fatal consumer and commit errors."""

    def log_lines_dropped(self, lines: int) -> None:
        """Repetitive log lines left out by rate limiting."""

    def register(self, source: EngineSource) -> None:
        """Read ``source`` at every scrape (the sequence stage's engines and state)."""


class NullObserver:
    """An observer that records nothing (for tools and tests that do not look at metrics)."""

    def prepare(self, stage: str, rules: list[str], topics: list[str]) -> None:
        pass

    def ready(self, stage: str, ready: bool) -> None:
        pass

    def consumed(self, topic: str, records: int) -> None:
        pass

    def rejected(self, stage: str, reason: str, records: int = 1) -> None:
        pass

    def dead_letters(self, stage: str, records: int) -> None:
        pass

    def without_join_key(self, events: int) -> None:
        pass

    def candidates(self, rule: str, count: int) -> None:
        pass

    def event_lag(self, stage: str, seconds: float) -> None:
        pass

    def batch_done(self, stage: str, seconds: float) -> None:
        pass

    def alert(self, rule: str, latency_seconds: float) -> None:
        pass

    def suppressed(self, rule: str) -> None:
        pass

    def consumer_lag(self, stage: str, topic: str, records: int) -> None:
        pass

    def rebalance(self, stage: str) -> None:
        pass

    def produce_errors(self, stage: str, records: int) -> None:
        pass

    def consumer_errors(self, stage: str, errors: int) -> None:
        pass

    def log_lines_dropped(self, lines: int) -> None:
        pass

    def register(self, source: EngineSource) -> None:
        pass
