"""NXLog's Windows events (``im_msvistalog`` read, ``to_json`` written) mapped like raw Sysmon.

NXLog is a common shipper in front of Kafka (``om_kafka``). Its JSON is flat: the event's system
fields under NXLog's own names (``EventID`` as a number or a string, ``Hostname``, ``SourceName``
for the provider, ``Channel``, ``RecordNumber``, ``UserID``/``AccountName``/``Domain`` for the
logging account, ``EventTime``, ``EventReceivedTime``, ``SourceModuleType: "im_msvistalog"``) and
every ``EventData`` field at the top level under its Sysmon name (``UtcTime``, ``ProcessGuid``,
``Image``, ``CommandLine``, ``SourceIp``, ...). NXLog's own ``ProcessID`` is the event's execution
process, distinct from Sysmon's ``ProcessId``.

Such an event is given a ``winlog`` object in Winlogbeat's layout (without ``event_data``: the top
level serves as that) and then the raw-Sysmon mapping, exactly as for Winlogbeat 8. ``host.name`` comes
from ``Hostname``. NXLog sends no ``host.id``, so these events join only with the opt-in
``host_id_fallback`` (``host.name``), a departure from Elasticsearch, where they would never join.
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

NXLOG_MODULE = "im_msvistalog"


def is_nxlog(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` has NXLog's Windows event layout (its module name, or its system field names)."""
    if doc.get("SourceModuleType") == NXLOG_MODULE:
        return True
    return "EventID" in doc and "Hostname" in doc and ("SourceName" in doc or "Channel" in doc)


def normalize_nxlog(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` mapped to ECS if it is an NXLog Sysmon event of ``MAPPED_EVENT_IDS``, otherwise ``doc`` itself."""
    if doc.get("SourceName") != SYSMON_PROVIDER and doc.get("Channel") != SYSMON_CHANNEL:
        return doc
    event_id = event_id_text(doc.get("EventID"))
    if event_id not in MAPPED_EVENT_IDS or already_categorized(doc) or "winlog" in doc:
        return doc
    winlog: dict[str, Any] = {"event_id": event_id}
    for source, target in (
        ("Hostname", "computer_name"),
        ("SourceName", "provider_name"),
        ("Channel", "channel"),
        ("RecordNumber", "record_id"),
    ):
        value = doc.get(source)
        if value is not None:
            winlog[target] = value
    if type(doc.get("UserID")) is str:
        winlog["user"] = {"identifier": doc["UserID"]}
    mapped = map_sysmon_event({**doc, "winlog": winlog}, event_id, winlog, doc)
    hostname = doc.get("Hostname")
    if type(hostname) is str and hostname:
        host = mapped.get("host")
        if host is None:
            mapped["host"] = {"name": hostname}
        elif type(host) is dict and "name" not in host:
            mapped["host"] = {**host, "name": hostname}
    return mapped
