"""Bring every input shape to the ECS fields the rules read, before rule evaluation.

Elastic Defend and Winlogbeat 7 (with its Sysmon module) already send ECS. Winlogbeat 8/9 and
Elastic Agent send Sysmon records raw, because their mapping runs only in the Elasticsearch ingest
pipeline, which Kafka traffic never went through; Winlogbeat 6 sends its own pre-ECS layout. Those
are mapped here exactly as the pipeline would have mapped them (``app.normalize.sysmon``).

``normalize`` is on the hot path of every parsed event, so an event that needs nothing costs two
dict lookups and comes back as the very same object; callers can tell a mapped event by
``normalize(doc) is not doc``.
"""

from __future__ import annotations

from typing import Any

from app.normalize.legacy import normalize_legacy
from app.normalize.sysmon import MAPPED_EVENT_IDS, SYSMON_CHANNEL, SYSMON_PROVIDER, normalize_sysmon
from app.normalize.winargv import split_command_line

__all__ = [
    "MAPPED_EVENT_IDS",
    "SYSMON_CHANNEL",
    "SYSMON_PROVIDER",
    "normalize",
    "split_command_line",
]


def normalize(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the ECS fields Elastic would have computed, or ``doc`` itself if there are none.

    A mapped event is a new dict (``doc`` is never modified; nested objects off the written paths
    are shared with it, so treat both as read-only). Never raises, whatever JSON object it gets:
    a value of the wrong type is left out of the mapping instead.
    """
    if "winlog" in doc:
        return normalize_sysmon(doc)
    if "event_data" in doc:
        return normalize_legacy(doc)
    return doc
