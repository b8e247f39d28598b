"""Bring every input shape to the ECS fields the rules read, before rule evaluation.

Elastic Defend and Winlogbeat 7 (with its Sysmon module) already send ECS. Winlogbeat 8/9 and
Elastic Agent send Sysmon records raw, because their mapping runs only in the Elasticsearch ingest
pipeline, which Kafka traffic never went through; Winlogbeat 6 and NXLog send layouts of their
own. Those are mapped here exactly as the pipeline would have mapped them (``sysmon``). Raw
Windows Security records from the same shippers are mapped as Elastic's Security pipeline maps
them (``security``).

``normalize`` is on the hot path of every parsed event, so an event that needs nothing costs a few
dict lookups and comes back as the very same object; callers can tell a mapped event by
``normalize(doc) is not doc``.
"""

from __future__ import annotations

from typing import Any

from app.core.normalize.legacy import normalize_legacy
from app.core.normalize.nxlog import is_nxlog, normalize_nxlog
from app.core.normalize.security import (
    SECURITY_CHANNEL,
    SECURITY_EVENT_IDS,
    SECURITY_PROVIDER,
    from_security_log,
    normalize_security,
)
from app.core.normalize.sysmon import MAPPED_EVENT_IDS, SYSMON_CHANNEL, SYSMON_PROVIDER, normalize_sysmon
from app.core.normalize.winargv import split_command_line

__all__ = [
    "DERIVED_FIELDS",
    "MAPPED_EVENT_IDS",
    "SECURITY_CHANNEL",
    "SECURITY_EVENT_IDS",
    "SECURITY_PROVIDER",
    "SYSMON_CHANNEL",
    "SYSMON_PROVIDER",
    "normalize",
    "split_command_line",
    "unmapped_windows_layout",
]

# Fields whose values the mappings compute instead of copying from the record: a rule's literal
# for one of these need not appear in the raw bytes, so the prefilter must not require it.
DERIVED_FIELDS = frozenset(
    {
        "@timestamp",
        "event.category",
        "event.type",
        "event.kind",
        "event.action",
        "event.code",
        "event.module",
        "event.dataset",
        "network.direction",
        "network.type",
        "process.args",
        "process.args_count",
        "process.parent.args",
        "process.parent.args_count",
        # Raw Sysmon 7, 12-14 and 22 (sysmon.py): signature flags, abbreviated hives, registry
        # numbers in decimal and data types, "dns", DNS record types and status names.
        "file.code_signature.signed",
        "file.code_signature.valid",
        "registry.hive",
        "registry.data.strings",
        "registry.data.type",
        "network.protocol",
        "dns.answers.type",
        "sysmon.dns.status",
        # Raw Security events (security.py): code tables, hexadecimal numbers, audit keywords.
        "event.outcome",
        "winlog.logon.type",
        "service.type",
        "winlog.event_data.TicketOptionsDescription",
        "winlog.event_data.TicketEncryptionTypeDescription",
        "winlog.event_data.StatusDescription",
        "process.pid",
        "process.parent.pid",
        "source.port",
    }
)

# Top-level keys by which other Windows shippers (Splunk's, Fluent Bit's, Snare, event XML turned
# into JSON, ...) name the event ID or the event itself.
_WINDOWS_EVENT_KEYS = frozenset({"EventID", "EventId", "EventCode", "EventIdentifier", "Event", "EventData"})
_PROVIDER_KEYS = ("SourceName", "ProviderName", "Provider_Name", "Provider", "source_name")


def normalize(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the ECS fields Elastic would have computed, or ``doc`` itself if there are none.

    A mapped event is a new dict (``doc`` is never modified; nested objects off the written paths
    are shared with it, so treat both as read-only). Never raises, whatever JSON object it gets:
    a value of the wrong type is left out of the mapping instead.
    """
    if "winlog" in doc:
        if from_security_log(doc["winlog"]):
            return normalize_security(doc)
        return normalize_sysmon(doc)
    if "event_data" in doc:
        return normalize_legacy(doc)
    if "EventID" in doc and is_nxlog(doc):
        return normalize_nxlog(doc)
    return doc


def unmapped_windows_layout(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` looks like a Windows event in a layout no mapping here knows.

    Winlogbeat (``winlog``, ``event_data``) and NXLog layouts are known, mapped or not (most of
    their event IDs are simply not ones the rules read); an ECS event is categorized already.
    Anything else that names a Windows event ID or a ``Microsoft-Windows-*`` provider is counted
    by the caller, so that a shipper in an unknown format shows up instead of silently matching
    nothing.
    """
    if "winlog" in doc or "event_data" in doc or is_nxlog(doc):
        return False
    event = doc.get("event")
    if (type(event) is dict and event.get("category") is not None) or doc.get("event.category") is not None:
        return False
    if not _WINDOWS_EVENT_KEYS.isdisjoint(doc):
        return True
    return any(type(doc.get(key)) is str and doc[key].startswith("Microsoft-Windows-") for key in _PROVIDER_KEYS)
