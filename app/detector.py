"""From raw record bytes to candidates, and from candidates to alerts.

The streaming service runs these two halves in different processes (ingest stage, sequence stage);
the replay CLI runs them back to back. Both use exactly this code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.alerts.builder import build_alert_group
from app.alerts.ids import event_id
from app.engine.sequence import Candidate, SequenceEngine, SequenceMatch
from app.engine.state import MemoryStore, StateStore
from app.engine.watermark import Watermark
from app.fields import compile_getter, keyword_value
from app.rule.compiler import CompiledRule, combined_requirement
from app.rule.prefilter import build_prefilter
from app.settings import Settings
from app.timeparse import parse_timestamp

_host_id = compile_getter("host.id")
_OBJECT_ENDS = (b"}", b"}\n", b"}\r\n")


class RecordRejected(Exception):
    """A record that cannot be evaluated; ``reason`` is a short stable label (a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ExtractStats:
    """What the extractor saw."""

    records: int = 0
    parsed: int = 0
    candidates: int = 0
    no_join_key: int = 0
    rejected: Counter = field(default_factory=Counter)


class CandidateExtractor:
    """Prefilter, parse and evaluate each record against every rule's stages."""

    def __init__(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        self.prefilter = build_prefilter(combined_requirement(rules))
        self.stats = ExtractStats()

    def extract(self, raw: bytes, origin: str = "") -> list[Candidate]:
        """Candidates in one raw record (usually none); raises ``RecordRejected`` for bad input."""
        self.stats.records += 1
        # Two byte checks catch most malformed records (truncated, plain text, arrays) without a parse.
        if raw[:1] != b"{" or not raw.endswith(_OBJECT_ENDS):
            return self.candidates(self._parse(raw), origin)
        if not self.prefilter(raw):
            return []
        return self.candidates(self._parse(raw), origin)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._reject("invalid_json", str(exc))
        if type(doc) is not dict:
            self._reject("not_an_object", f"a JSON {type(doc).__name__}, not an object")
        self.stats.parsed += 1
        return doc

    def candidates(self, doc: dict[str, Any], origin: str = "") -> list[Candidate]:
        """Candidates of one parsed event."""
        found: list[Candidate] = []
        identity = None
        for rule in self.rules:
            by_key: dict[tuple, list[int]] = {}
            for stage in rule.stages:
                if not stage.predicate(doc):
                    continue
                keys = stage.join_keys(doc)
                if not keys:
                    self.stats.no_join_key += 1
                for key in keys:
                    by_key.setdefault(key, []).append(stage.index)
            if not by_key:
                continue
            if identity is None:
                timestamp = parse_timestamp(_single(doc.get("@timestamp")))
                if timestamp is None:
                    self._reject("invalid_timestamp", f"@timestamp {str(doc.get('@timestamp'))[:80]!r} is not a date")
                hosts = [keyword_value(v) for v in _host_id(doc)]
                identity = (timestamp, event_id(doc), next((h for h in hosts if h), ""))
            timestamp, eid, host = identity
            for key, stages in by_key.items():
                found.append(Candidate(rule.meta.rule_id, key, tuple(stages), timestamp, eid, doc, host, origin))
        self.stats.candidates += len(found)
        return found

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        raise RecordRejected(reason, detail)


def _single(value: Any) -> Any:
    """``@timestamp`` may arrive as a one-element array; more values than one is not a date."""
    if type(value) is list and len(value) == 1:
        return value[0]
    return value


@dataclass
class Alert:
    """A completed sequence and its Kibana documents (building blocks, then the shell)."""

    rule: CompiledRule
    match: SequenceMatch
    documents: list[dict[str, Any]]

    @property
    def id(self) -> str:
        """The shell alert id."""
        return self.documents[-1]["kibana.alert.uuid"]


class SequenceStage:
    """One engine per rule over a shared store; turns candidates into alerts."""

    def __init__(self, rules: list[CompiledRule], settings: Settings, store: StateStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.rules = {rule.meta.rule_id: rule for rule in rules}
        self.engines = {
            rule.meta.rule_id: SequenceEngine(
                rule_id=rule.meta.rule_id,
                stage_count=len(rule.stages),
                maxspan_ns=rule.maxspan_ns,
                store=self.store,
                allowed_lateness_ns=settings.allowed_lateness_ns,
                order_tolerance_ns=settings.order_tolerance_ns,
                watermark=Watermark(settings.watermark_quorum),
                max_entries_per_stage=settings.max_entries_per_stage,
            )
            for rule in rules
        }

    def process(self, candidate: Candidate, now_ns: int) -> list[Alert]:
        """Feed one candidate; returns the alerts it completes."""
        rule = self.rules[candidate.rule_id]
        return [
            Alert(rule, match, build_alert_group(rule.meta, match, now_ns))
            for match in self.engines[candidate.rule_id].process(candidate)
        ]
