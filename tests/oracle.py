"""A deliberately naive statement of Elasticsearch's sequence semantics, for checking the engine.

It sees all events at once, sorts them by ``@timestamp`` (ties by arrival), and walks them with the
textbook rule: a stage-n event takes the latest stage-(n-1) partial sequence of its key that is
before it, consuming it and every older one at that stage; ``maxspan`` is inclusive from the first
event. Re-delivered events (same event id) are one event. It shares only the compiled stage
predicates with the product (those are tested on their own).
"""

from __future__ import annotations

from typing import Any

from app.alerts.ids import event_id
from app.rule.compiler import CompiledRule
from app.timeparse import parse_timestamp


def es_sequences(rule: CompiledRule, events: list[dict[str, Any]]) -> list[tuple[tuple, tuple[str, ...]]]:
    """(join key, event ids in stage order) of every sequence Elasticsearch returns, in order."""
    seen: set[str] = set()
    hits = []  # (timestamp, arrival, -stage, stage, key, id)
    for arrival, doc in enumerate(events):
        eid = event_id(doc)
        if eid in seen:
            continue
        seen.add(eid)
        for stage in rule.stages:
            if stage.predicate(doc):
                for key in stage.join_keys(doc):
                    hits.append((parse_timestamp(doc["@timestamp"]), arrival, -stage.index, stage.index, key, eid))
    hits.sort(key=lambda h: h[:3])
    last = len(rule.stages) - 1
    pending: dict[tuple[tuple, int], list[tuple[int, tuple[str, ...]]]] = {}  # (key, stage) -> [(start ts, ids)]
    result = []
    for ts, _, _, stage, key, eid in hits:
        if stage == 0:
            pending.setdefault((key, 0), []).append((ts, (eid,)))
            continue
        waiting = pending.get((key, stage - 1))
        if not waiting:
            continue
        start, ids = waiting[-1]
        waiting.clear()
        if rule.maxspan_ns is not None and ts - start > rule.maxspan_ns:
            continue
        if stage == last:
            result.append((key, (*ids, eid)))
        else:
            pending.setdefault((key, stage), []).append((start, (*ids, eid)))
    return result
