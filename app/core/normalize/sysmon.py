"""Raw Sysmon events mapped to ECS the way Elastic's Sysmon ingest pipeline maps them.

Winlogbeat 8/9 and the Elastic Agent Windows integration ship Sysmon records raw: the values are
strings under ``winlog.event_data``, and the ECS fields the rules read (``event.category``,
``process.name``, ``network.direction``, ...) are computed only later, by the Elasticsearch ingest
pipeline (elastic/integrations ``packages/windows/data_stream/sysmon_operational``, and the same
processors in Winlogbeat's ``x-pack/winlogbeat/module/sysmon/ingest/sysmon.yml``). Kafka carries the
events before any pipeline ran, so without this mapping the rule could never fire on such data.

Only event ID 1 (process creation) and 3 (network connection) are mapped: no other Sysmon event
gets ``event.category`` "process" with type "start", or "network" with type "start", so no other
one can meet a stage of the rule; they are returned unchanged, as cheaply as possible.

Where this mapping deliberately differs from the pipeline:

* Nothing is removed. The pipeline *renames* ``winlog.event_data.*`` values into ECS fields and
  deletes a few; here they are copied, so every original field stays where it was.
* ``event.created`` is the shipper's own when it sent one (Winlogbeat 8 sends its read time);
  otherwise the raw ``@timestamp`` (when the record was written) goes there, which the pipeline
  would lose.
* Left out as useless to detection: hashes (``process.hash.*``, ``related.hash``),
  ``network.community_id``, ``log.level``, ``ecs.version``, ``winlog.record_id`` as a string.
* A value of the wrong JSON type (a number where Sysmon writes a string, ...) is left out rather
  than guessed at; the pipeline would move it or fail on it.
"""

from __future__ import annotations

import re
from datetime import datetime
from ipaddress import ip_address
from typing import Any

from app.core.normalize.winargv import split_command_line

SYSMON_PROVIDER = "Microsoft-Windows-Sysmon"
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"

# event ID -> (event.category, event.type, event.action), as the pipeline's categorization script.
_CATEGORIZATION: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "1": (("process",), ("start",), "Process creation"),
    "3": (("network",), ("start", "connection", "protocol"), "Network connection"),
}
MAPPED_EVENT_IDS = frozenset(_CATEGORIZATION)

# The pipeline first deletes event_data entries with these values: they mean "no value".
_NO_VALUE = frozenset({"", "-", "{00000000-0000-0000-0000-000000000000}"})

# event_data strings copied as they are (the pipeline's rename/set processors).
_STRING_FIELDS = (
    ("ProcessGuid", "process.entity_id"),
    ("Image", "process.executable"),
    ("CommandLine", "process.command_line"),
    ("CurrentDirectory", "process.working_directory"),
    ("ParentProcessGuid", "process.parent.entity_id"),
    ("ParentImage", "process.parent.executable"),
    ("ParentCommandLine", "process.parent.command_line"),
    ("OriginalFileName", "process.pe.original_file_name"),
    ("Company", "process.pe.company"),
    ("Description", "process.pe.description"),
    ("FileVersion", "process.pe.file_version"),
    ("Product", "process.pe.product"),
    ("RuleName", "rule.name"),
    ("Protocol", "network.transport"),
    ("SourceHostname", "source.domain"),
    ("DestinationHostname", "destination.domain"),
)
# event_data strings converted to ``long`` (the pipeline's convert processors).
_LONG_FIELDS = (
    ("ProcessId", "process.pid"),
    ("ParentProcessId", "process.parent.pid"),
    ("SourcePort", "source.port"),
    ("DestinationPort", "destination.port"),
)
# event_data strings converted to ``ip``: kept as written when they are valid addresses.
_IP_FIELDS = (
    ("SourceIp", "source.ip"),
    ("DestinationIp", "destination.ip"),
)
# event_data flags turned into keywords; any other value sets nothing.
_FLAG_FIELDS = (
    ("Initiated", "network.direction", {"true": "egress", "false": "ingress"}),
    ("SourceIsIpv6", "network.type", {"true": "ipv6", "false": "ipv4"}),
)

_UTC_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})\.[0-9]{3}")
# Leading zeros are skipped so that int() never meets more than 19 digits (CPython refuses
# thousands of them, and a forged value must not raise).
_DECIMAL_LONG = re.compile(r"([+-]?)0*([0-9]{1,19})")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A dotted quad without leading zeros, as Elasticsearch (and ipaddress) accept IPv4.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def normalize_sysmon(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` mapped to ECS if it is a raw Sysmon event 1 or 3, otherwise ``doc`` itself."""
    winlog = doc.get("winlog")
    if type(winlog) is not dict:
        return doc
    data = winlog.get("event_data")
    if type(data) is not dict or not _from_sysmon(winlog.get("provider_name"), winlog.get("channel")):
        return doc
    if already_categorized(doc):
        return doc
    event_id = event_id_text(winlog.get("event_id"))
    if event_id is None:
        event = doc.get("event")
        event_id = event_id_text(event.get("code")) if type(event) is dict else None
    if event_id not in MAPPED_EVENT_IDS:
        return doc
    return map_sysmon_event(doc, event_id, winlog, data)


def _from_sysmon(provider: Any, channel: Any) -> bool:
    """Sysmon's provider name survives event forwarding (channel "ForwardedEvents"); either suffices."""
    return bool(provider == SYSMON_PROVIDER or channel == SYSMON_CHANNEL)


def already_categorized(doc: dict[str, Any]) -> bool:
    """Whether something already mapped ``doc`` to ECS (Winlogbeat 7's module, a pipeline, ...).

    Winlogbeat 7's Sysmon module keeps ``winlog.event_data`` next to the ECS fields it sets, so the
    raw-looking parts prove nothing; the ECS categorization or process fields do, and a raw event
    never has them.
    """
    event = doc.get("event")
    if type(event) is dict and (event.get("category") is not None or event.get("type") is not None):
        return True
    return doc.get("process") is not None or doc.get("event.category") is not None


def event_id_text(value: Any) -> str | None:
    """An event ID as the pipeline's ``'{{winlog.event_id}}'`` template renders it (None if unusable)."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return None


def map_sysmon_event(
    doc: dict[str, Any], event_id: str, winlog: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """A new dict: ``doc`` plus the ECS fields the pipeline derives from Sysmon event ``event_id`` (1 or 3).

    ``winlog`` and ``data`` are ``doc``'s ``winlog`` and ``winlog.event_data`` objects.
    """
    category, types, action = _CATEGORIZATION[event_id]
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.code": event_id,
        "event.category": list(category),
        "event.type": list(types),
        "event.action": action,
    }
    # Winlogbeat's module pipeline sets event.module; Elastic Agent (whose events carry data_stream)
    # takes event.module and event.dataset from the integration instead.
    if "data_stream" not in doc:
        fields["event.module"] = "sysmon"
    timestamp = utc_time_to_timestamp(data.get("UtcTime"))
    if timestamp is not None:
        fields["@timestamp"] = timestamp
        if type(doc.get("@timestamp")) is str and not _has_event_created(doc):
            fields["event.created"] = doc["@timestamp"]

    for source, target in _STRING_FIELDS:
        value = _value(data, source)
        if value is not None:
            fields[target] = value
    for source, target in _LONG_FIELDS:
        number = long_value(_value(data, source))
        if number is not None:
            fields[target] = number
    for source, target in _IP_FIELDS:
        address = _value(data, source)
        if address is not None and _is_ip(address):
            fields[target] = address
    for source, target, meanings in _FLAG_FIELDS:
        flag = _value(data, source)
        meaning = meanings.get(flag) if flag is not None else None
        if meaning is not None:
            fields[target] = meaning
    # Both renames target network.protocol; a rename never overwrites, so the first one wins.
    port_name = _value(data, "DestinationPortName") or _value(data, "SourcePortName")
    if port_name is not None:
        fields["network.protocol"] = port_name

    for prefix in ("process", "process.parent"):
        _derive_process_fields(fields, prefix)
    _user_fields(fields, winlog, _value(data, "User"))
    _related_fields(fields)
    return with_fields(doc, fields)


def _has_event_created(doc: dict[str, Any]) -> bool:
    event = doc.get("event")
    return (type(event) is dict and event.get("created") is not None) or doc.get("event.created") is not None


def _value(data: dict[str, Any], key: str) -> str | None:
    """An event_data string, or None where the pipeline would see no value."""
    value = data.get(key)
    if type(value) is not str or value in _NO_VALUE:
        return None
    return value


def utc_time_to_timestamp(value: Any) -> str | None:
    """Sysmon's ``UtcTime`` as the pipeline's date processor writes ``@timestamp`` (None if invalid).

    The processor parses ``yyyy-MM-dd HH:mm:ss.SSS`` (fixed widths, ASCII digits) in UTC and
    formats ``yyyy-MM-dd'T'HH:mm:ss.SSSXXX``, which for UTC ends in ``Z``.
    """
    if type(value) is not str:
        return None
    match = _UTC_TIME.fullmatch(value)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        datetime(year, month, day, hour, minute, second)
    except ValueError:  # month 13, 30 February, hour 24, year 0, ...
        return None
    return f"{value[:10]}T{value[11:]}Z"


def long_value(value: str | None) -> int | None:
    """A decimal string as the ``convert`` processor's ``long`` accepts it (no spaces, 64-bit)."""
    match = _DECIMAL_LONG.fullmatch(value) if value is not None else None
    if match is None:
        return None
    number = int(match.group(1) + match.group(2))
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _is_ip(text: str) -> bool:
    """Whether the ``convert`` processor's ``ip`` type accepts ``text`` (plain IPv4 or IPv6).

    Dotted quads are checked with a regex, ten times faster than ``ipaddress``. Scope IDs
    (``fe80::1%12``) are refused: whether Elasticsearch accepts them is unsure, and a field left
    out is safer than a wrong one.
    """
    if _IPV4.fullmatch(text):
        return True
    if len(text) > 45 or "%" in text or ":" not in text:
        return False
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _derive_process_fields(fields: dict[str, Any], prefix: str) -> None:
    """``<prefix>.name`` from the executable and ``<prefix>.args`` from the command line."""
    executable = fields.get(f"{prefix}.executable")
    if executable is not None:
        # The pipeline takes what follows the last backslash, and sets no name if that is empty.
        name = executable[executable.rfind("\\") + 1 :] if "\\" in executable else ""
        if name:
            fields[f"{prefix}.name"] = name
    command_line = fields.get(f"{prefix}.command_line")
    if command_line is not None:
        args = split_command_line(command_line)
        fields[f"{prefix}.args"] = args
        fields[f"{prefix}.args_count"] = len(args)


def _user_fields(fields: dict[str, Any], winlog: dict[str, Any], user: str | None) -> None:
    """``user.id`` from the logging account's SID; ``user.domain``/``user.name`` from ``DOMAIN\\name``."""
    account = winlog.get("user")
    identifier = account.get("identifier") if type(account) is dict else None
    if type(identifier) is str and identifier:
        fields["user.id"] = identifier
    if user is None:
        return
    parts = user.split("\\")
    while parts and not parts[-1]:  # Java's String.split, used by the split processor, drops these
        parts.pop()
    if len(parts) == 2:
        if parts[0]:
            fields["user.domain"] = parts[0]
        if parts[1]:
            fields["user.name"] = parts[1]


def _related_fields(fields: dict[str, Any]) -> None:
    """``related.user`` and ``related.ip`` (source first, no duplicates), as the pipeline appends them."""
    name = fields.get("user.name")
    if name is not None:
        fields["related.user"] = [name]
    addresses = [fields[key] for key in ("source.ip", "destination.ip") if key in fields]
    if addresses:
        fields["related.ip"] = list(dict.fromkeys(addresses))


def with_fields(doc: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with every dotted path in ``fields`` set as nested objects.

    Objects on the written paths are copied, never modified, so ``doc`` is left intact; everything
    else is shared with it. A path blocked by a value that is not an object (``"event": "x"``) is
    skipped: guessing how to merge into it could only produce wrong values.
    """
    out = dict(doc)
    containers: dict[str, dict[str, Any] | None] = {"": out}
    for path, value in fields.items():
        parent, _, leaf = path.rpartition(".")
        container = containers[parent] if parent in containers else _container(parent, containers)
        if container is not None:
            container[leaf] = value
    return out


def _container(path: str, containers: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """The (copied or new) object at ``path`` in the output, or None if a non-object is in the way."""
    if path in containers:
        return containers[path]
    parent_path, _, key = path.rpartition(".")
    parent = _container(parent_path, containers)
    node: dict[str, Any] | None = None
    if parent is not None:
        existing = parent.get(key)
        if type(existing) is dict:
            node = dict(existing)
        elif existing is None:
            node = {}
        if node is not None:
            parent[key] = node
    containers[path] = node
    return node
