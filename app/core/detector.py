"""The detection core's one entry point: rules and options in, candidates and alerts out.

The streaming service runs the two halves in different processes (``extractor`` in the ingest
stage, a ``SequenceDetector`` per state partition in the sequence stage); the replay CLI and the
tests run them back to back (``Detector.detect``). All of them use exactly this code, and none of
it does I/O or reads the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from app.core.alerts.builder import build_alert_group
from app.core.engine.cap import AlertCap
from app.core.engine.sequence import EngineStats, SequenceEngine
from app.core.engine.state import MemoryStore, StateStore
from app.core.engine.watermark import Watermark
from app.core.extract import CandidateExtractor
from app.core.model import Alert, AlertKind, Candidate, Event, Rejection
from app.core.normalize import DERIVED_FIELDS
from app.core.options import DetectionOptions
from app.core.rule import CompiledRule, SurveyEntry
from app.core.rule import load_rules as _load_rules
from app.core.rule import survey_rules as _survey_rules
from app.core.rule.model import read_version_lock


def load_rules(
    path: Path | str | None = None,
    warn: Callable[[str], None] | None = None,
    version_lock: Path | str | None = None,
) -> list[CompiledRule]:
    """Load one rule file or a directory of them (default: the bundled rule), compiled for this core;
    ``version_lock``: Elastic's version.lock.json, for the versions the files do not carry."""
    versions = read_version_lock(version_lock) if version_lock is not None else None
    return _load_rules(path, DERIVED_FIELDS, warn, versions)


def survey_rules(path: Path | str) -> list[SurveyEntry]:
    """Every rule file of ``path`` (a file or a directory), compiled for this core or refused with the reason."""
    return _survey_rules(path, DERIVED_FIELDS)


@dataclass
class Outcome:
    """What one candidate led to: alerts to write, and alerts the cap held back."""

    alerts: list[Alert] = field(default_factory=list)
    suppressed: list[Alert] = field(default_factory=list)


class SequenceDetector:
    """One engine per rule over one store: candidates in, capped alerts out.

    ``caps`` may be shared by several detectors (the partitions of one worker process), so that
    the cap counts alerts per rule per process, not per partition.
    """

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        options: DetectionOptions,
        store: StateStore,
        caps: Mapping[str, AlertCap],
    ) -> None:
        self.store = store
        self.options = options
        self.rules = {rule.meta.rule_id: rule for rule in rules}
        self.caps = caps
        self.engines = {
            rule.meta.rule_id: SequenceEngine(
                rule_id=rule.meta.rule_id,
                stage_count=len(rule.stages),
                maxspan_ms=rule.maxspan_ms,
                store=store,
                allowed_lateness_ms=options.allowed_lateness_ms,
                order_tolerance_ms=options.order_tolerance_ms,
                watermark=Watermark(options.watermark_quorum),
                max_entries_per_stage=options.max_entries_per_stage,
                max_state_bytes=options.max_state_bytes,
            )
            for rule in rules
        }

    def process(self, candidate: Candidate, now_ms: int) -> Outcome:
        """Feed one candidate (of a rule this detector runs); returns the alerts it completes."""
        rule = self.rules[candidate.rule_id]
        outcome = Outcome()
        for match in self.engines[candidate.rule_id].process(candidate):
            documents = build_alert_group(rule.meta, match, now_ms, self.options.alerts_index)
            alert = Alert(
                rule_id=rule.meta.rule_id,
                rule_name=rule.meta.name,
                kind=AlertKind.REVISED if match.revised else AlertKind.NEW,
                documents=tuple(documents),
                last_event_ms=match.events[-1].timestamp_ms,
                event_ids=tuple(entry.event_id for entry in match.events),
            )
            cap = self.caps[rule.meta.rule_id]
            admitted = cap.admit(alert.id, alert.kind, alert.last_event_ms)
            (outcome.alerts if admitted else outcome.suppressed).append(alert)
        return outcome

    def expire(self) -> int:
        """Expire state the watermarks left behind, a bounded number of keys per engine (see
        ``SequenceEngine.expire``); returns the keys deleted. For a driver's timer: candidates
        expire state as they come, this goes on when none come."""
        return sum(engine.expire() for engine in self.engines.values())

    def stats(self) -> dict[str, EngineStats]:
        """The engines' counters by rule id."""
        return {rule_id: engine.stats for rule_id, engine in self.engines.items()}


@dataclass
class DetectionReport:
    """What ``Detector.detect`` did, beyond the alerts (for the replay summary and the tests)."""

    alerts: list[Alert]
    suppressed: list[Alert]
    rejections: list[Rejection]
    engine: EngineStats


class Detector:
    """Rules and options, and the two halves of detection built from them."""

    def __init__(self, rules: Sequence[CompiledRule], options: DetectionOptions | None = None) -> None:
        self.rules = tuple(rules)
        self.options = options if options is not None else DetectionOptions()
        self.extractor = CandidateExtractor(self.rules, self.options)

    def alert_caps(self) -> dict[str, AlertCap]:
        """A fresh alert cap per rule (Kibana's ``max_signals`` per ``interval``, or the option's)."""
        cap = self.options.alert_cap
        return {
            rule.meta.rule_id: AlertCap(rule.meta.max_signals if cap < 0 else cap, rule.meta.interval_ms)
            for rule in self.rules
        }

    def sequencer(
        self, store: StateStore | None = None, caps: Mapping[str, AlertCap] | None = None
    ) -> SequenceDetector:
        """A sequence detector over ``store`` (default: in memory) with ``caps`` (default: its own)."""
        return SequenceDetector(
            self.rules,
            self.options,
            store if store is not None else MemoryStore(),
            caps if caps is not None else self.alert_caps(),
        )

    def detect(self, records: Iterable[bytes | Event], now_ms: int = 0) -> DetectionReport:
        """Every alert of ``records`` (raw bytes or parsed events), read in this order as arrivals."""
        sequencer = self.sequencer()
        report = DetectionReport([], [], [], EngineStats())
        for record in records:
            raw = record if isinstance(record, bytes) else orjson.dumps(record)
            candidates, rejections = self.extractor.extract(raw)
            report.rejections += rejections
            for candidate in candidates:
                outcome = sequencer.process(candidate, now_ms)
                report.alerts += outcome.alerts
                report.suppressed += outcome.suppressed
        for stats in sequencer.stats().values():
            report.engine.add(stats)
        return report
