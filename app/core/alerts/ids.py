"""Deterministic identities for events and alerts.

Kibana derives alert ids from the ids of the source documents and skips ids that exist, so
overlapping rule runs never duplicate. Kafka has no document ids, so an event's identity is a hash
of its content, leaving out only what a shipper changes when it sends the same event again:

* ``@metadata`` (Beats' envelope: it differs between sends and Logstash drops it);
* ``agent.ephemeral_id`` (a Beat's id for its current run: new after a restart);
* ``event.created`` and ``event.ingested`` (when the shipper read it, when a pipeline wrote it).

So a re-delivery and a Beat's re-send after its restart are one event, while two documents that
differ anywhere else, even if they share ``event.id``, are two events, as in Elasticsearch
(``event.id`` is an ordinary keyword there; treating it as an identity would let anyone who can
write events hide a sequence stage behind a reused id). Every first-stage event completes at
most one sequence, so the rule, the join key and the first event's identity name an alert:
replays, restarts and re-deliveries give the same alert id.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from app.core.model import Event, JoinKey

# Nested paths of the fields a re-send changes, and their dotted spellings.
_VOLATILE_NESTED = {"agent": ("ephemeral_id",), "event": ("created", "ingested")}
_VOLATILE_TOP = frozenset({"@metadata", "agent.ephemeral_id", "event.created", "event.ingested"})


def event_id(event: Event) -> str:
    """The identity of an event: sha256 of its canonical JSON without the fields a re-send changes."""
    return hashlib.sha256(orjson.dumps(_stable_content(event), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _stable_content(event: Event) -> dict[str, Any]:
    content = {key: value for key, value in event.items() if key not in _VOLATILE_TOP}
    for parent, children in _VOLATILE_NESTED.items():
        nested = content.get(parent)
        if type(nested) is dict and any(child in nested for child in children):
            content[parent] = {key: value for key, value in nested.items() if key not in children}
    return content


def sequence_alert_id(rule_uuid: str, key: JoinKey, first_event_id: str) -> str:
    """The shell alert's id (``kibana.alert.uuid`` and ``kibana.alert.group.id``)."""
    material = orjson.dumps([rule_uuid, list(key), first_event_id])
    return hashlib.sha256(material).hexdigest()


def building_block_id(shell_id: str, index: int) -> str:
    """A building-block alert's id, derived from its shell and its position in the sequence."""
    return hashlib.sha256(f"{shell_id}:{index}".encode()).hexdigest()
