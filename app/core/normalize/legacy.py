"""Winlogbeat 6.x Sysmon events (pre-ECS) mapped to the same ECS result as raw Sysmon.

Winlogbeat 6 put the Windows event fields at the top level: ``event_data``, an integer
``event_id``, ``computer_name``, ``source_name`` (the provider), ``log_name`` (the channel),
``record_number``, and the logging account in ``user``. Winlogbeat 7 moved them under ``winlog``.
Such an event is given a ``winlog`` object with the Winlogbeat 7+ names and then the raw-Sysmon
mapping; every original top-level field is kept as it was. Elasticsearch never mapped these events
(no Sysmon pipeline existed for them), so this is the only way old fleets can match the rule at all;
most of them lack ``host.id`` anyway and then cannot join (see the project docs).
"""

from __future__ import annotations

from typing import Any

from app.core.normalize.sysmon import (
    MAPPED_EVENT_IDS,
    SYSMON_CHANNEL,
    SYSMON_PROVIDER,
    already_categorized,
    event_id_text,
    map_sysmon_event,
)

# Winlogbeat 6 top-level name -> Winlogbeat 7+ name under winlog.
_WINLOG_NAMES = (
    ("computer_name", "computer_name"),
    ("source_name", "provider_name"),
    ("log_name", "channel"),
    ("record_number", "record_id"),
    ("provider_guid", "provider_guid"),
    ("task", "task"),
    ("opcode", "opcode"),
    ("version", "version"),
    ("user", "user"),
)


def normalize_legacy(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` mapped to ECS if it is a Winlogbeat 6 Sysmon event of ``MAPPED_EVENT_IDS``, otherwise ``doc`` itself."""
    data = doc.get("event_data")
    if type(data) is not dict or "winlog" in doc:
        return doc
    if doc.get("source_name") != SYSMON_PROVIDER and doc.get("log_name") != SYSMON_CHANNEL:
        return doc
    event_id = event_id_text(doc.get("event_id"))
    if event_id not in MAPPED_EVENT_IDS or already_categorized(doc):
        return doc
    winlog: dict[str, Any] = {"event_data": data, "event_id": event_id}
    for old, new in _WINLOG_NAMES:
        value = doc.get(old)
        if value is not None:
            winlog[new] = value
    shaped = dict(doc)
    shaped["winlog"] = winlog
    return map_sysmon_event(shaped, event_id, winlog, data)
