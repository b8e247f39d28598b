"""Raw Sysmon events mapped to ECS the way Elastic's Sysmon ingest pipeline maps them.

Winlogbeat 8/9 and the Elastic Agent Windows integration ship Sysmon records raw: the values are
strings under ``winlog.event_data``, and the ECS fields the rules read (``event.category``,
``process.name``, ``network.direction``, ...) are computed only later, by the Elasticsearch ingest
pipeline (elastic/integrations ``packages/windows/data_stream/sysmon_operational``, and the same
processors in Winlogbeat's ``x-pack/winlogbeat/module/sysmon/ingest/sysmon.yml``). Kafka carries the
events before any pipeline ran, so without this mapping no rule could ever fire on such data.

Mapped are the Sysmon events that Elastic's Windows detection rules read:

* 1, process creation: ``process``/``start``, ``process.*`` and ``process.parent.*``, ``process.pe.*``;
* 3, network connection: ``network``/``start``, ``connection``, ``protocol``; ``source.*``,
  ``destination.*``, ``network.*``;
* 7, image loaded: ``process``/``change`` (no ``library`` category, no ``dll.*``): the loaded image in
  ``file.*`` (``file.path``, ``.name``, ``.directory``, ``.extension``, ``.code_signature.*``,
  ``.pe.*``), the loading process in ``process.*``;
* 10, process access: ``process``/``access``; the *source* process in ``process.*`` (with
  ``process.thread.id``); the target, ``GrantedAccess`` and ``CallTrace`` stay in
  ``winlog.event_data`` only, as the pipeline leaves them;
* 11, file created: ``file``/``creation``, ``file.*`` from ``TargetFilename``;
* 12, 13, 14, registry key or value created or deleted, value set, key or value renamed:
  ``configuration`` and ``registry``/``change``; ``registry.path``, ``.hive`` (abbreviated:
  ``HKEY_LOCAL_MACHINE`` becomes ``HKLM``), ``.key``, ``.value``, and for 13 ``registry.data.type``
  and ``.strings`` (a ``DWORD`` or ``QWORD`` as a decimal number);
* 22, DNS query: ``network``/``connection``, ``protocol``, ``info`` (no ``start``) with
  ``network.protocol`` "dns"; ``dns.question.name``, ``dns.answers`` (``type`` named from its number),
  ``dns.resolved_ip`` (IPv4-mapped IPv6 answers as IPv4), ``related.hosts``, ``related.ip`` and
  ``sysmon.dns.status`` (the status code's Windows name).

Every other Sysmon event (driver loads, pipes, WMI, ...) is returned unchanged, as cheaply as
possible. The event ID picks the categorization and the few ID-specific steps; every other
processor applies, as in the pipeline, to whatever event_data field is there.

Where this mapping deliberately differs from the pipeline:

* Nothing is removed. The pipeline *renames* ``winlog.event_data.*`` values into ECS fields and
  deletes a few; here they are copied, so every original field stays where it was.
* ``event.created`` is the shipper's own when it sent one (Winlogbeat 8 sends its read time);
  otherwise the raw ``@timestamp`` (when the record was written) goes there, which the pipeline
  would lose.
* Left out as useless to detection: hashes (``process.hash.*``, ``file.hash.*``, ``*.pe.imphash``,
  ``related.hash``), ``network.community_id``, ``log.level``, ``ecs.version``, ``winlog.record_id``
  as a string; and ``dns.question.registered_domain``, ``.subdomain`` and ``.top_level_domain``,
  which need the Public Suffix List.
* The processors for event_data fields that none of the mapped events has (``Device``,
  ``PipeName``, ``Destination``, ``Archived``, ``IsExecutable``, ``Type``, ``ID``, and the rename of
  event 8's ``TargetProcessGuid``) are not reproduced.
* A value of the wrong JSON type (a number where Sysmon writes a string, ...) is left out rather
  than guessed at; the pipeline would move it or fail on it. Likewise where the pipeline fails
  (a DNS answer ``type:`` with no number, answers without a ``QueryName``, a registry path of
  backslashes only), Elasticsearch keeps what ran before and sets ``event.kind``
  "pipeline_error"; here the failing step is left out and the rest is mapped.
* The empty lists and nulls the pipeline can leave in ``dns.answers``, ``dns.resolved_ip`` and
  ``related.ip`` are not written: Elasticsearch indexes neither.

The pipeline's own quirks are kept wherever they change what is indexed: a ``QWORD`` is computed
as ``(high << 8) + low``; ``file.code_signature.signed`` is set only for a JSON ``true``, never for
the string "true" the shippers send; ``file.extension`` is what follows the path's last dot, even
in a directory name; an address following one the pipeline drops gets no ``dns.answers`` entry.

The newest Windows integration (its pipeline moved to ``packages/windows/_dev/shared``) also files
event 7 under ``library`` with ``dll.*`` fields; Winlogbeat's pipeline does not, and neither does
this mapping, which Elastic's Sysmon image load rules (``process`` category, ``file.*``) match.
"""

from __future__ import annotations

import re
from datetime import datetime
from ipaddress import ip_address
from typing import Any

from app.core.normalize.sysmon_codes import DNS_QUERY_STATUSES, DNS_RECORD_TYPES
from app.core.normalize.winargv import split_command_line

SYSMON_PROVIDER = "Microsoft-Windows-Sysmon"
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"

_REGISTRY = (("configuration", "registry"), ("change",))
# event ID -> (event.category, event.type, event.action), as the pipeline's categorization script.
_CATEGORIZATION: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "1": (("process",), ("start",), "Process creation"),
    "3": (("network",), ("start", "connection", "protocol"), "Network connection"),
    "7": (("process",), ("change",), "Image loaded"),
    "10": (("process",), ("access",), "ProcessAccess"),
    "11": (("file",), ("creation",), "FileCreate"),
    "12": (*_REGISTRY, "RegistryEvent (Object create and delete)"),
    "13": (*_REGISTRY, "RegistryEvent (Value Set)"),
    "14": (*_REGISTRY, "RegistryEvent (Key and Value Rename)"),
    "22": (("network",), ("connection", "protocol", "info"), "DNSEvent (DNS query)"),
}
MAPPED_EVENT_IDS = frozenset(_CATEGORIZATION)
_IMAGE_LOADED = "7"
_DNS_QUERY = "22"
_REGISTRY_EVENTS = frozenset({"12", "13", "14"})

# The pipeline first deletes event_data entries with these values: they mean "no value".
_NO_VALUE = frozenset({"", "-", "{00000000-0000-0000-0000-000000000000}"})

# event_data strings copied as they are (the pipeline's rename/set processors), in its order. A
# rename never overwrites, so where two name one target (event 10 names the process Source*) the
# first one present wins.
_STRING_FIELDS = (
    ("ProcessGuid", "process.entity_id"),
    ("Image", "process.executable"),
    ("SourceProcessGuid", "process.entity_id"),
    ("SourceProcessGUID", "process.entity_id"),
    ("SourceImage", "process.executable"),
    ("CommandLine", "process.command_line"),
    ("CurrentDirectory", "process.working_directory"),
    ("ParentProcessGuid", "process.parent.entity_id"),
    ("ParentImage", "process.parent.executable"),
    ("ParentCommandLine", "process.parent.command_line"),
    ("TargetFilename", "file.path"),
    ("ImageLoaded", "file.path"),
    ("Signature", "file.code_signature.subject_name"),
    ("SignatureStatus", "file.code_signature.status"),
    ("RuleName", "rule.name"),
    ("Protocol", "network.transport"),
    ("SourceHostname", "source.domain"),
    ("DestinationHostname", "destination.domain"),
    ("QueryName", "dns.question.name"),
)
# The PE metadata Sysmon writes of an image: the process's, but the loaded image's in event 7.
_PE_SOURCES = ("OriginalFileName", "Company", "Description", "FileVersion", "Product")
_PE_LEAVES = ("original_file_name", "company", "description", "file_version", "product")
_PROCESS_PE_FIELDS = tuple(zip(_PE_SOURCES, [f"process.pe.{leaf}" for leaf in _PE_LEAVES], strict=True))
_FILE_PE_FIELDS = tuple(zip(_PE_SOURCES, [f"file.pe.{leaf}" for leaf in _PE_LEAVES], strict=True))
# event_data strings converted to ``long`` (the pipeline's convert processors), in its order: a
# convert overwrites, so for event 10 a valid SourceProcessId would win over a ProcessId.
_LONG_FIELDS = (
    ("ProcessId", "process.pid"),
    ("SourceProcessId", "process.pid"),
    ("SourceThreadId", "process.thread.id"),
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

# Registry hive names as Sysmon may write them in TargetObject, and their abbreviations.
_HIVES = {
    **{short: short for short in ("HKCR", "HKCC", "HKCU", "HKDD", "HKLM", "HKPD", "HKU")},
    "HKEY_CLASSES_ROOT": "HKCR",
    "HKEY_CURRENT_CONFIG": "HKCC",
    "HKEY_CURRENT_USER": "HKCU",
    "HKEY_DYN_DATA": "HKDD",
    "HKEY_LOCAL_MACHINE": "HKLM",
    "HKEY_PERFORMANCE_DATA": "HKPD",
    "HKEY_USERS": "HKU",
}
# Registry value data as Sysmon writes it in Details. Java's (?i) folds ASCII letters only.
_QWORD = re.compile(r"QWORD \(0x([0-9A-F]{8})-0x([0-9A-F]{8})\)", re.IGNORECASE | re.ASCII)
_DWORD = re.compile(r"DWORD \(0x([0-9A-F]{8})\)", re.IGNORECASE | re.ASCII)
_BINARY_DATA = "Binary Data"

# QueryResults: answers separated by ";", each "type:  <number> <data>" or an address; Java's \s.
_DNS_TYPE_PREFIX = "type:"
_JAVA_BLANKS = re.compile(r"[ \t\n\x0b\f\r]+")
# An IPv4-mapped IPv6 answer, bracketed or not, with or without a port: the IPv4 address is kept.
_V4_MAPPED = re.compile(r"\[?::ffff:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)(?:\](?::[0-9]+)?)?")

_UTC_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})\.[0-9]{3}")
# Leading zeros are skipped so that int() never meets more than 19 digits (CPython refuses
# thousands of them, and a forged value must not raise).
_DECIMAL_LONG = re.compile(r"([+-]?)0*([0-9]{1,19})")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A dotted quad without leading zeros, as Elasticsearch (and ipaddress) accept IPv4.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def normalize_sysmon(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` mapped to ECS if it is a raw Sysmon event of ``MAPPED_EVENT_IDS``, otherwise ``doc`` itself."""
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
    """A new dict: ``doc`` plus the ECS fields the pipeline derives from Sysmon event ``event_id``.

    ``event_id`` is one of ``MAPPED_EVENT_IDS``; ``winlog`` and ``data`` are ``doc``'s ``winlog`` and
    ``winlog.event_data`` objects.
    """
    fields = categorized(doc, event_id, "sysmon", _CATEGORIZATION[event_id])
    timestamp = utc_time_to_timestamp(data.get("UtcTime"))
    if timestamp is not None:
        fields["@timestamp"] = timestamp
        if type(doc.get("@timestamp")) is str and not _has_event_created(doc):
            fields["event.created"] = doc["@timestamp"]

    for source, target in _STRING_FIELDS:
        value = _value(data, source)
        if value is not None and target not in fields:
            fields[target] = value
    for source, target in _FILE_PE_FIELDS if event_id == _IMAGE_LOADED else _PROCESS_PE_FIELDS:
        value = _value(data, source)
        if value is not None:
            fields[target] = value
    for source, target in _LONG_FIELDS:
        number = long_value(_value(data, source))
        if number is not None:
            fields[target] = number
    for source, target in _IP_FIELDS:
        address = _value(data, source)
        if address is not None and is_ip(address):
            fields[target] = address
    for source, target, meanings in _FLAG_FIELDS:
        flag = _value(data, source)
        meaning = meanings.get(flag) if flag is not None else None
        if meaning is not None:
            fields[target] = meaning
    if event_id == _DNS_QUERY:
        fields["network.protocol"] = "dns"
    else:
        # Both renames target network.protocol; a rename never overwrites, so the first one wins.
        port_name = _value(data, "DestinationPortName") or _value(data, "SourcePortName")
        if port_name is not None:
            fields["network.protocol"] = port_name

    for prefix in ("process", "process.parent"):
        _derive_process_fields(fields, prefix)
    _file_fields(fields, data)
    resolved = _dns_fields(fields, data) if event_id == _DNS_QUERY else []
    _user_fields(fields, winlog, _value(data, "User"))
    _related_fields(fields, resolved)
    if event_id in _REGISTRY_EVENTS:
        path = _value(data, "TargetObject")
        if path is not None:
            _registry_fields(fields, path, _value(data, "Details"))
    return with_fields(doc, fields)


def categorized(
    doc: dict[str, Any], event_id: str, module: str, categorization: tuple[tuple[str, ...], tuple[str, ...], str]
) -> dict[str, Any]:
    """The fields every mapped Windows event starts with: kind, code, the pipeline's (category,
    type, action) and, for Winlogbeat, ``event.module``; Elastic Agent, whose events carry
    ``data_stream``, takes ``event.module`` and ``event.dataset`` from the integration instead."""
    category, types, action = categorization
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.code": event_id,
        "event.category": list(category),
        "event.type": list(types),
        "event.action": action,
    }
    if "data_stream" not in doc:
        fields["event.module"] = module
    return fields


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


def is_ip(text: str) -> bool:
    """Whether Elasticsearch's ``ip`` type (``convert``, ``ip`` fields) accepts ``text``: IPv4 or IPv6.

    Dotted quads are checked with a regex, ten times faster than ``ipaddress``. A scope ID
    (``fe80::1%12``) is ignored, as Elasticsearch's ``InetAddresses`` ignores it; an empty one
    (a trailing ``%``) makes the text no address.
    """
    address, percent, scope = text.partition("%")
    if percent and not scope:
        return False
    if _IPV4.fullmatch(address):
        return True
    if len(address) > 45 or ":" not in address:
        return False
    try:
        ip_address(address)
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


def _related_fields(fields: dict[str, Any], resolved: list[str]) -> None:
    """``related.user`` and ``related.ip`` (resolved addresses, then source, then destination; no
    duplicates), as the pipeline appends them."""
    name = fields.get("user.name")
    if name is not None:
        fields["related.user"] = [name]
    addresses = [*resolved, *(fields[key] for key in ("source.ip", "destination.ip") if key in fields)]
    if addresses:
        fields["related.ip"] = list(dict.fromkeys(addresses))


def _file_fields(fields: dict[str, Any], data: dict[str, Any]) -> None:
    """The signature flags, and ``file.name``, ``.directory`` and ``.extension`` from ``file.path``."""
    # The pipeline compares Signed with the boolean true: the string "true" the shippers send is not it.
    if data.get("Signed") is True:
        fields["file.code_signature.signed"] = True
    if fields.get("file.code_signature.status") == "Valid":
        fields["file.code_signature.valid"] = True
    path = fields.get("file.path")
    if path is None or len(path) < 2:
        return
    slash = path.rfind("\\")
    if slash < 0:
        return
    # Unlike process.name, an empty name (a path ending in a backslash) is set, and the extension is
    # what follows the path's last dot, wherever that is.
    fields["file.name"] = path[slash + 1 :]
    fields["file.directory"] = path[:slash]
    dot = path.rfind(".")
    if dot >= 0:
        fields["file.extension"] = path[dot + 1 :]


def _dns_fields(fields: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """``dns.answers``, ``dns.resolved_ip``, ``related.hosts`` and ``sysmon.dns.status`` of a DNS query.

    Returns the resolved addresses ``related.ip`` starts with.
    """
    status = _value(data, "QueryStatus")
    if status is not None:
        fields["sysmon.dns.status"] = DNS_QUERY_STATUSES.get(status, status)
    name = fields.get("dns.question.name")
    results = _value(data, "QueryResults")
    parsed = _query_results(results) if results is not None and name is not None else None
    hosts: list[str] = []
    resolved: list[str] = []
    if parsed is not None:
        answers, hosts, addresses = parsed
        resolved = _synthesize_address_answers(addresses, answers)
        if answers:
            fields["dns.answers"] = answers
        if resolved:
            fields["dns.resolved_ip"] = resolved
    if name is not None and name not in hosts:
        hosts.append(name)
    if hosts:
        fields["related.hosts"] = hosts
    return resolved


def _query_results(results: str) -> tuple[list[dict[str, Any]], list[str], list[str]] | None:
    """Sysmon's ``QueryResults`` split as the pipeline's script splits it: (answers, hosts, addresses).

    An entry ``type:  5 name`` is an answer of that type (a number the table lacks gives a null type)
    and ``name`` a related host; ``type:`` with anything but exactly two more words gives an answer
    with a type only; every other entry is an address. None where the script fails (``type:``
    alone): nothing of the results is mapped then.
    """
    answers: list[dict[str, Any]] = []
    hosts: list[str] = []
    addresses: list[str] = []
    for entry in results.split(";"):
        if not entry:
            continue
        if not entry.startswith(_DNS_TYPE_PREFIX):
            addresses.append(entry)
            continue
        parts = _JAVA_BLANKS.split(entry)
        while parts and not parts[-1]:  # Java's split drops trailing empty strings
            parts.pop()
        if len(parts) < 2:
            return None
        answer_type = DNS_RECORD_TYPES.get(parts[1])
        if len(parts) == 3:
            answers.append({"type": answer_type, "data": parts[2]})
            hosts.append(parts[2])
        else:
            answers.append({"type": answer_type})
    return answers, hosts, addresses


def _synthesize_address_answers(addresses: list[str], answers: list[dict[str, Any]]) -> list[str]:
    """The addresses the pipeline keeps in ``dns.resolved_ip``; an ``A``/``AAAA`` answer appended per address.

    An IPv4-mapped address becomes IPv4; one that is not an IP address is dropped. The pipeline
    drops those with a loop that skips the element after each one it removes: the skipped address
    stays in ``dns.resolved_ip`` but gets no answer (a dropped one it skips stays as a null, which
    Elasticsearch does not index and is left out here).
    """
    kept: list[str | None] = []
    for address in addresses:
        mapped = _V4_MAPPED.fullmatch(address)
        text = mapped.group(1) if mapped is not None else address
        kept.append(text if is_ip(text) else None)
    index = 0
    while index < len(kept):
        text = kept[index]
        if text is None:
            del kept[index]
        else:
            answers.append({"type": "AAAA" if ":" in text else "A", "data": text})
        index += 1
    return [text for text in kept if text is not None]


def _registry_fields(fields: dict[str, Any], path: str, details: str | None) -> None:
    """``registry.*`` of a registry event from ``TargetObject`` (``path``) and ``Details``, as the pipeline's script."""
    fields["registry.path"] = path
    tokens = path.split("\\")
    while tokens and not tokens[-1]:  # Java's split drops trailing empty strings
        tokens.pop()
    if not tokens:  # the script fails on a path of backslashes only
        return
    hive = _HIVES.get(tokens[0])
    if hive is not None:
        fields["registry.hive"] = hive
        if len(tokens) > 1:
            fields["registry.key"] = "\\".join(tokens[1:])
    fields["registry.value"] = tokens[-1]
    if details is None:
        return
    qword = _QWORD.fullmatch(details)
    dword = _DWORD.fullmatch(details) if qword is None else None
    if qword is not None:
        # The pipeline shifts the high half by 8 bits, not 32; Elasticsearch indexes what it computes.
        strings, data_type = str((int(qword.group(1), 16) << 8) + int(qword.group(2), 16)), "SZ_QWORD"
    elif dword is not None:
        strings, data_type = str(int(dword.group(1), 16)), "SZ_DWORD"
    elif details == _BINARY_DATA:
        strings, data_type = details, "REG_BINARY"
    else:
        strings, data_type = details, "REG_SZ"
    fields["registry.data.strings"] = [strings]
    fields["registry.data.type"] = data_type


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
