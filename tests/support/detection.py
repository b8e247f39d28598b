"""Detection in process: records in, alerts out, through ``app.core.Detector`` exactly as replay runs it.

``detect`` is the one "extract, then sequence" loop of the tests: every test that wants alerts from
events calls it (or ``replay_ids``), so none of them re-implements the driver. It also says which
record each candidate came from and which join key each alert was completed under, which the
comparisons with the oracle (``tests.support.oracle``) need. The event builders write the two
events of the default rule: an mshta.exe COM server start (``-Embedding``) and an inbound TCP
connection to it between dynamic ports.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core import DEFAULT_RULE_PATH, Alert, CompiledRule, DetectionOptions, Detector, Rejection, load_rules
from app.core.engine.sequence import EngineStats
from app.core.extract import ExtractStats
from app.core.normalize import DERIVED_FIELDS
from app.core.rule import RuleMeta, compile_rule
from app.core.timeparse import format_timestamp

RULES = load_rules()
RULE = RULES[0]
RULE_ID = RULE.meta.rule_id
# The later upstream query: tests host.os.type (from add_host_metadata on raw records) and source.ip.
CURRENT_RULE = load_rules(DEFAULT_RULE_PATH.with_name("incoming_dcom_lateral_movement_via_mshta_current.toml"))[0]

S = 1000  # milliseconds per second: every time below is in epoch milliseconds, as Elasticsearch's
T0 = 1_714_557_600 * S  # 2024-05-01T10:00:00Z
NOW = 1_715_700_000 * S  # an alert creation time; alert ids never depend on it

Record = bytes | dict[str, Any]
Found = tuple[tuple[Any, ...], tuple[str, ...]]  # (join key, event ids in stage order)


@dataclass
class Detection:
    """What ``detect`` saw: the alerts written (in order) and held back, rejections, and bookkeeping."""

    alerts: list[Alert] = field(default_factory=list)
    suppressed: list[Alert] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # alert id -> the join key it was completed under (a candidate completes sequences of its own key)
    keys: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # product event id -> index of the first record that yielded a candidate for it
    records: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    extract: ExtractStats = field(default_factory=ExtractStats)
    engine: EngineStats = field(default_factory=EngineStats)

    def ids(self) -> list[str]:
        """Shell ids of the alerts written, in order (a revision repeats its id)."""
        return [alert.id for alert in self.alerts]

    def latest(self) -> dict[str, Alert]:
        """The latest record per alert id: a revised alert replaces the one written before."""
        return {alert.id: alert for alert in self.alerts}

    def sequences(self) -> set[Found]:
        """(join key, event ids) of the latest record per alert id."""
        return {(self.keys[alert.id], alert.event_ids) for alert in self.latest().values()}

    def labels(self) -> list[tuple[str | None, ...]]:
        """The ``event.id`` of each alert's events (as its building blocks keep them), in order."""
        return [event_labels(alert) for alert in self.alerts]

    def reasons(self) -> list[str]:
        return [str(rejection.reason) for rejection in self.rejections]


def detect(
    records: Iterable[Record],
    rules: Sequence[CompiledRule] = RULES,
    options: DetectionOptions | None = None,
    now_ms: int = NOW,
) -> Detection:
    """Every alert of ``records`` (raw bytes, or events written as JSON), read in this order as arrivals."""
    detector = Detector(rules, options)
    sequencer = detector.sequencer()
    found = Detection(extract=detector.extractor.stats)
    for index, record in enumerate(records):
        raw = record if isinstance(record, bytes) else orjson.dumps(record)
        candidates, rejections = detector.extractor.extract(raw)
        found.rejections += rejections
        found.candidates += len(candidates)
        for candidate in candidates:
            found.records.setdefault(candidate.event_id, index)
            outcome = sequencer.process(candidate, now_ms)
            for alert in (*outcome.alerts, *outcome.suppressed):
                found.keys[alert.id] = candidate.key
            found.alerts += outcome.alerts
            found.suppressed += outcome.suppressed
    for stats in sequencer.stats().values():
        found.engine.add(stats)
    return found


def replay_ids(
    records: Iterable[Record], rules: Sequence[CompiledRule] = RULES, options: DetectionOptions | None = None
) -> set[str]:
    """The shell alert ids replay gives on ``records`` in this order: what the service must write."""
    return set(detect(records, rules, options).ids())


def event_labels(alert: Alert) -> tuple[str | None, ...]:
    """The ``event.id`` of each event of ``alert``, read from its building blocks."""
    return tuple(block.get("kibana.alert.original_event.id") for block in alert.documents[:-1])


def options(**overrides: Any) -> DetectionOptions:
    """Default detection options with ``overrides``."""
    return DetectionOptions(**overrides)


# -- one-off rules ---------------------------------------------------------------------------


def rule_meta(query: str, **fields: Any) -> RuleMeta:
    """Minimal valid metadata around ``query``."""
    values: dict[str, Any] = {
        "name": "test rule",
        "rule_id": "test-rule",
        "description": "test",
        "severity": "low",
        "risk_score": 1,
        "query": query,
    }
    return RuleMeta(**(values | fields))


def compile_query(query: str, **fields: Any) -> CompiledRule:
    """Compile ``query`` as if it came from ``rules/test.toml`` (errors name that path)."""
    return compile_rule(rule_meta(query, **fields), DERIVED_FIELDS, "rules/test.toml")


# -- events of the default rule ---------------------------------------------------------------


def mshta_start(event_id: str, at_ms: int = T0, host: str = "h1", entity: str = "e1", **fields: Any) -> dict[str, Any]:
    """An mshta.exe COM server start (``-Embedding``), Elastic Defend's shape; ``fields`` as in ``with_fields``."""
    event = {
        "@timestamp": format_timestamp(at_ms),
        "event": {"id": event_id, "kind": "event", "category": ["process"], "type": ["start"]},
        "host": {"id": host, "name": host},
        "process": {"name": "mshta.exe", "entity_id": entity, "args": ["mshta.exe", "-Embedding"]},
    }
    return with_fields(event, fields)


def mshta_inbound(
    event_id: str, at_ms: int = T0 + 10 * S, host: str = "h1", entity: str = "e1", **fields: Any
) -> dict[str, Any]:
    """An inbound TCP connection of mshta.exe between dynamic ports, from another host."""
    event = {
        "@timestamp": format_timestamp(at_ms),
        "event": {"id": event_id, "kind": "event", "category": ["network"], "type": ["start"]},
        "host": {"id": host, "name": host},
        "process": {"name": "mshta.exe", "entity_id": entity},
        "network": {"direction": "ingress", "transport": "tcp"},
        "source": {"ip": "10.0.0.5", "port": 50000},
        "destination": {"ip": "10.0.0.9", "port": 55000},
    }
    return with_fields(event, fields)


def attack(index: int, host: str = "h1") -> tuple[dict[str, Any], dict[str, Any]]:
    """Attack ``index``: a start ``index`` seconds after T0 on entity ``e<index>``, its inbound connection 10 s later."""
    start = mshta_start(f"start-{index}", T0 + index * S, host, f"e{index}")
    inbound = mshta_inbound(f"inbound-{index}", T0 + (index + 10) * S, host, f"e{index}")
    inbound["source"]["port"] = 50000 + index
    return start, inbound


def with_fields(event: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` with ``fields`` set; ``process__name`` names process.name, a None value removes it."""
    out = copy.deepcopy(event)
    for path, value in fields.items():
        node = out
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out
