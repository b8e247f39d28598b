"""Deterministic identities for events and alerts.

Kibana derives alert ids from the ids of the source documents and skips ids that exist, so
overlapping rule runs never duplicate. Kafka has no document ids, and its coordinates change when
Beats re-sends an event, so an event's id is its ``event.id`` when it has one, else a hash of its
canonical content. Every first-stage event completes at most one sequence, so the rule, the join
key and the first event's id name an alert: replays, restarts and re-deliveries give the same id.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from app.fields import compile_getter, keyword_value

_event_id_values = compile_getter("event.id")


def event_id(event: dict[str, Any]) -> str:
    """``event.id`` if present, else sha256 of the event's canonical JSON."""
    for value in _event_id_values(event):
        text = keyword_value(value)
        if text:
            return text
    return hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sequence_alert_id(rule_uuid: str, key: tuple, first_event_id: str) -> str:
    """The shell alert's id (``kibana.alert.uuid`` and ``kibana.alert.group.id``)."""
    material = orjson.dumps([rule_uuid, list(key), first_event_id], option=orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(material).hexdigest()


def building_block_id(shell_id: str, index: int) -> str:
    """A building-block alert's id, derived from its shell and its position in the sequence."""
    return hashlib.sha256(f"{shell_id}:{index}".encode()).hexdigest()
