"""Kibana-style alert documents for a completed sequence.

One match gives one building-block alert per event (the event's fields plus ``kibana.alert.*``)
and one shell alert that ties them together, as Kibana's EQL rule executor writes them, so users
can index them next to Elastic Security's alerts. ``kibana.*`` fields use dotted top-level keys
like Kibana's alerts-as-data documents; the source event keeps its own shape.

Like Kibana, the source's own alert fields (``kibana``, ``signal``, ``threshold_result``) are
dropped before building: an event must not be able to mark its alert closed or hidden. The shell
holds the fields every event of the sequence shares (from those cleaned events) and the rule's.
"""

from __future__ import annotations

import copy
from typing import Any

from app.core.alerts.ids import building_block_id, sequence_alert_id
from app.core.engine.sequence import SequenceMatch
from app.core.fields import compile_getter
from app.core.model import Event
from app.core.rule.model import RuleMeta
from app.core.timeparse import format_timestamp

KIBANA_VERSION = "8.15.0"  # the alerts-as-data schema version the documents follow
_RESERVED = frozenset({"kibana", "signal", "threshold_result"})


def build_alert_group(rule: RuleMeta, match: SequenceMatch, now_ms: int, alerts_index: str) -> list[Event]:
    """The building blocks (in stage order) followed by the shell alert.

    ``alerts_index`` is where the documents will be indexed: the building blocks' entries in the
    shell's ``kibana.alert.ancestors`` point there.
    """
    shell_id = sequence_alert_id(rule.uuid, match.key, match.events[0].event_id)
    common = _common_fields(rule, now_ms)
    sources = [_without_alert_fields(entry.event) for entry in match.events]
    blocks = []
    ancestors = []
    for index, (entry, source) in enumerate(zip(match.events, sources, strict=True)):
        block_id = building_block_id(shell_id, index)
        event_ancestor = {
            "id": entry.event_id,
            "index": event_index(entry.event, entry.origin),
            "type": "event",
            "depth": 0,
        }
        doc = _event_fields(source)
        doc.update(common)
        doc.update(
            {
                "kibana.alert.uuid": block_id,
                "kibana.alert.building_block_type": "default",
                "kibana.alert.group.id": shell_id,
                "kibana.alert.group.index": index,
                "kibana.alert.depth": 1,
                "kibana.alert.ancestors": [event_ancestor],
                "kibana.alert.original_time": format_timestamp(entry.timestamp_ms),
                "kibana.alert.reason": reason(rule, entry.event),
            }
        )
        blocks.append(doc)
        ancestors += [
            event_ancestor,
            {"id": block_id, "index": alerts_index, "type": "signal", "depth": 1, "rule": rule.uuid},
        ]
    shared = _intersection(sources) or {}
    shared.pop("event", None)
    shared.pop("@timestamp", None)
    shell = {**shared, "event": {"kind": "signal"}}
    shell.update(common)
    shell.update(
        {
            "kibana.alert.uuid": shell_id,
            "kibana.alert.group.id": shell_id,
            "kibana.alert.depth": 2,
            "kibana.alert.ancestors": ancestors,
            "kibana.alert.original_time": format_timestamp(match.events[0].timestamp_ms),
            "kibana.alert.reason": reason(rule, {**shared, "event": match.events[-1].event.get("event")}),
        }
    )
    if rule.building_block_type is not None:
        shell["kibana.alert.building_block_type"] = rule.building_block_type
    return [*blocks, shell]


def event_index(event: Event, origin: str) -> str:
    """Where Elasticsearch would hold the source event, as far as the event tells.

    Elastic Agent and Elastic Defend events name their data stream (``data_stream.type``,
    ``.dataset``, ``.namespace``); Beats events name their Beat and version in ``@metadata``
    (index ``<beat>-<version>``). Otherwise the Kafka topic and partition the event came from.
    """
    stream = event.get("data_stream")
    if type(stream) is dict:
        parts = [stream.get(name) for name in ("type", "dataset", "namespace")]
        if all(type(part) is str and part for part in parts):
            return "-".join(parts)  # type: ignore[arg-type]
    metadata = event.get("@metadata")
    if type(metadata) is dict:
        beat, version = metadata.get("beat"), metadata.get("version")
        if type(beat) is str and type(version) is str and beat and version:
            return f"{beat}-{version}"
    return origin


def _common_fields(rule: RuleMeta, now_ms: int) -> dict[str, Any]:
    fields = {
        "@timestamp": format_timestamp(now_ms),
        "kibana.alert.status": "active",
        "kibana.alert.workflow_status": "open",
        "kibana.alert.severity": rule.severity,
        "kibana.alert.risk_score": rule.risk_score,
        "kibana.alert.rule.name": rule.name,
        "kibana.alert.rule.rule_id": rule.rule_id,
        "kibana.alert.rule.uuid": rule.uuid,
        "kibana.alert.rule.version": rule.version,
        "kibana.alert.rule.type": "eql",
        "kibana.alert.rule.rule_type_id": "siem.eqlRule",
        "kibana.alert.rule.category": "Event Correlation Rule",
        "kibana.alert.rule.consumer": "siem",
        "kibana.alert.rule.producer": "siem",
        "kibana.alert.rule.description": rule.description,
        "kibana.alert.rule.author": rule.author,
        "kibana.alert.rule.license": rule.license,
        "kibana.alert.rule.references": rule.references,
        "kibana.alert.rule.false_positives": rule.false_positives,
        "kibana.alert.rule.tags": rule.tags,
        "kibana.alert.rule.from": rule.from_,
        "kibana.alert.rule.to": rule.to,
        "kibana.alert.rule.interval": rule.interval,
        "kibana.alert.rule.max_signals": rule.max_signals,
        "kibana.alert.rule.severity": rule.severity,
        "kibana.alert.rule.risk_score": rule.risk_score,
        "kibana.alert.rule.threat": [t.model_dump() for t in rule.threat],
        "kibana.alert.rule.parameters": rule.parameters(),
        "kibana.space_ids": ["default"],
        "kibana.version": KIBANA_VERSION,
        "tags": rule.tags,
    }
    if rule.note is not None:
        fields["kibana.alert.rule.note"] = rule.note
    if rule.timestamp_override is not None:
        fields["kibana.alert.rule.timestamp_override"] = rule.timestamp_override
    return fields


def _without_alert_fields(event: Event) -> Event:
    """The event without the fields only alerts may carry (nested or dotted)."""
    if _RESERVED.isdisjoint(event) and not any(key.startswith("kibana.") for key in event):
        return event
    return {key: value for key, value in event.items() if key not in _RESERVED and not key.startswith("kibana.")}


def _event_fields(event: Event) -> Event:
    """The source event's fields, with its ``event.*`` kept under ``kibana.alert.original_event``."""
    doc = copy.deepcopy(event)
    original: dict[str, Any] = {}
    nested = doc.get("event")
    if isinstance(nested, dict):
        original.update(nested)
    for name in [k for k in doc if k.startswith("event.")]:
        original[name[len("event.") :]] = doc.pop(name)
    doc["event"] = {**original, "kind": "signal"}
    for name, value in original.items():
        doc[f"kibana.alert.original_event.{name}"] = value
    return doc


def _intersection(docs: list[Any]) -> Any:
    """Fields with equal values in every document, recursing into objects (Kibana's shell fields)."""
    first = docs[0]
    if all(isinstance(d, dict) for d in docs):
        out = {}
        for name, value in first.items():
            if all(name in d for d in docs[1:]):
                common = _intersection([value, *(d[name] for d in docs[1:])])
                if common is not None:
                    out[name] = common
        return out or None
    return first if all(d == first for d in docs[1:]) else None


_getters: dict[str, Any] = {}


def first_value(doc: Event, name: str) -> str | int | float | None:
    """The first scalar value of a field, for human-readable text."""
    getter = _getters.get(name)
    if getter is None:
        getter = _getters[name] = compile_getter(name)
    for value in getter(doc):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return value
    return None


def reason(rule: RuleMeta, doc: Event) -> str:
    """Kibana's reason sentence: what happened, where, and which rule fired."""
    text = f"{first_value(doc, 'event.category') or 'event'} event"
    process = first_value(doc, "process.name")
    if process is not None:
        text += f" with process {process}"
    for side in ("source", "destination"):
        address, port = first_value(doc, f"{side}.ip"), first_value(doc, f"{side}.port")
        if address is not None:
            text += f", {side} {address}" + (f":{port}" if port is not None else "")
    user = first_value(doc, "user.name")
    if user is not None:
        text += f", by {user}"
    host = first_value(doc, "host.name") or first_value(doc, "host.id")
    if host is not None:
        text += f" on {host}"
    return f"{text} created {rule.severity} alert {rule.name}."
