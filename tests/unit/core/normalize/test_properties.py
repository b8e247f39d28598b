"""Properties of ``normalize`` on arbitrary input, checked with hypothesis.

* It never raises, whatever JSON object it gets, and never modifies its input.
* An event without the raw-Sysmon, raw-Security or Winlogbeat 6 markers comes back as the very
  same object.
* A mapped event keeps every original top-level field; fields outside the ECS objects the mapping
  writes are the very same objects.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.normalize import (
    DERIVED_FIELDS,
    MAPPED_EVENT_IDS,
    SECURITY_CHANNEL,
    SECURITY_PROVIDER,
    SYSMON_CHANNEL,
    SYSMON_PROVIDER,
    normalize,
)

# Keys the mapping looks at, mixed with arbitrary ones so that generated objects hit its branches.
INTERESTING_KEYS = [
    "winlog", "event_data", "event", "process", "source", "destination", "network", "user", "related",
    "@timestamp", "data_stream", "event.category", "provider_name", "channel", "event_id", "code",
    "category", "type", "source_name", "log_name", "identifier", "keywords", "outcome", "service", "file",
    "registry", "dns", "sysmon",
]  # fmt: skip
# Sysmon event_data names with values near the ones the mapping parses (valid or almost).
_GUIDS = ["{5b8e21c4-1a36-6632-b402-000000002c00}", "{00000000-0000-0000-0000-000000000000}"]
_NUMBERS = ["6212", "0049168", "-1", "9" * 30, "abc"]
_IMAGES = ["C:\\Windows\\System32\\mshta.exe", "mshta.exe", "C:\\x\\"]
_COMMAND_LINES = ["C:\\Windows\\System32\\mshta.exe -Embedding", '"C:\\a b\\x.exe" "a""b" c\\\\"d', " "]
_IPS = ["10.20.30.42", "fe80::1", "fe80::1%3", "999.1.1.1"]
_PORTS = ["49168", "+1", "65536", "4 9"]
_FREE_TEXT = ["x", "-", ""]
PLAUSIBLE: dict[str, list[str]] = {
    "UtcTime": ["2024-05-01 10:15:02.138", "2024-02-30 10:15:02.138", "2024-05-01 10:15:02"],
    "ProcessGuid": _GUIDS,
    "ParentProcessGuid": _GUIDS,
    "ProcessId": _NUMBERS,
    "ParentProcessId": _NUMBERS,
    "Image": _IMAGES,
    "ParentImage": _IMAGES,
    "CommandLine": _COMMAND_LINES,
    "ParentCommandLine": _COMMAND_LINES,
    "User": ["CORP\\j.doe", "j.doe", "\\x", "a\\b\\c"],
    "Protocol": ["tcp", "udp"],
    "Initiated": ["true", "false", "True"],
    "SourceIsIpv6": ["true", "false"],
    "SourceIp": _IPS,
    "DestinationIp": _IPS,
    "SourcePort": _PORTS,
    "DestinationPort": _PORTS,
    # Sysmon 7, 10, 11, 12-14 and 22.
    "SourceProcessGUID": _GUIDS,
    "SourceProcessGuid": _GUIDS,
    "SourceProcessId": _NUMBERS,
    "SourceThreadId": _NUMBERS,
    "SourceImage": _IMAGES,
    "ImageLoaded": ["C:\\Windows\\System32\\amsi.dll", "C:\\pkg.v2\\LICENSE", "C:\\Temp\\", "x.dll", "\\"],
    "TargetFilename": ["C:\\Users\\j.doe\\AppData\\Local\\Temp\\a.ps1", "a"],
    "Signed": ["true", "false"],
    "Signature": ["Microsoft Windows", "-"],
    "SignatureStatus": ["Valid", "Expired", "valid"],
    "TargetObject": [
        "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\x",
        "HKEY_USERS\\S-1-5-18\\",
        "HKU",
        "\\REGISTRY\\MACHINE\\x",
        "\\\\",
        "hklm\\\\x",
    ],
    "Details": ["DWORD (0x0000002a)", "QWORD (0x00000001-0xFFFFFFFF)", "Binary Data", "C:\\x.exe /s", "DWORD (0x1)"],
    "QueryName": ["dl.contoso-updates.example", "-"],
    "QueryStatus": ["0", "9003", "12345"],
    "QueryResults": [
        "type:  5 a.cdn.example;::ffff:198.51.100.7;",
        "type:;",
        "bad;[::ffff:10.0.0.1]:53;x;y;::1;2001:db8::7;",
        "type:  99999 b.example;type:  28 ;999.1.1.1;",
    ],
    **dict.fromkeys(
        [
            "CurrentDirectory",
            "OriginalFileName",
            "Company",
            "Description",
            "FileVersion",
            "Product",
            "RuleName",
            "SourceHostname",
            "DestinationHostname",
            "SourcePortName",
            "DestinationPortName",
        ],
        _FREE_TEXT,
    ),  # fmt: skip
}
# Security event_data names with values near the ones the mapping parses (valid or almost).
_HEX = ["0x1f4", "0X1F4", "#1f4", "0764", "09", "0x", "-0x8000000000000000", "0x8000000000000000", "500", "abc"]
_ACCOUNTS = ["helpdesk.op", "helpdesk.op@CORP.EXAMPLE", "@", " ", "-", ""]
_SECURITY_IPS = ["10.20.30.41", "::ffff:10.20.30.41", "[::ffff:10.0.0.1]:445", "::1", "fe80::1%3", "x", "-"]
SECURITY_PLAUSIBLE: dict[str, list[str]] = {
    "LogonType": ["2", "3", "10", "03", "0", "Network"],
    "ProcessId": _HEX,
    "NewProcessId": _HEX,
    "IpPort": _HEX,
    "TicketOptions": ["0x40810010", "0x0", "0xffffffffffffffff", "forwardable"],
    "TicketEncryptionType": ["0x12", "0X17", "0x99"],
    "Status": ["0x0", "0x1A", "0x1a"],
    "ServiceType": ["0x10", "0x120", "0x50"],
    "IpAddress": _SECURITY_IPS,
    "TargetUserName": _ACCOUNTS,
    "SubjectUserName": _ACCOUNTS,
    "CommandLine": _COMMAND_LINES + ["a  b ", '"C:\\a b\\x.exe" /c', "\u3000"],
    "NewProcessName": _IMAGES,
    "ProcessName": _IMAGES,
    "ParentProcessName": _IMAGES,
    "PrivilegeList": ["SeDebugPrivilege\n\t\t\tSeBackupPrivilege", " ", "\n"],
    "RelativeTargetName": ["Temp\\x.exe", "svcctl", "x.", ""],
    **dict.fromkeys(
        [
            "TargetUserSid",
            "TargetSid",
            "TargetDomainName",
            "SubjectUserSid",
            "SubjectDomainName",
            "SubjectLogonId",
            "TargetLogonId",
            "WorkstationName",
            "ServiceName",
            "TaskName",
            "ShareName",
            "ShareLocalPath",
        ],
        _FREE_TEXT,
    ),  # fmt: skip
}
SECURITY_EVENT_IDS = ["4624", "4672", "4688", "4697", "4698", "4699", "4724", "4768", "4769", "5145", "4625", 4624]
# Top-level fields the mapping may replace (with a copy holding more fields).
WRITTEN = {
    "@timestamp", "event", "process", "network", "source", "destination", "user", "related", "rule", "winlog",
    "service", "file", "registry", "dns", "sysmon",
}  # fmt: skip

keys = st.sampled_from(INTERESTING_KEYS) | st.text(max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["1", "3", "-", "", "true", "false", "49168", "10.0.0.1", "C:\\x\\mshta.exe"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(keys, json_values, max_size=8)

# Strings that stress the parsers: quotes and backslashes, near-valid dates, huge values.
tricky_strings = (
    st.text(alphabet=' \t"\\aZ9-:.', max_size=60)
    | st.sampled_from(["2024-05-01 10:15:02.138", "2024-02-30 10:15:02.138", "9" * 5000, "0" * 5000 + "1"])
    | st.builds(lambda n: "\\" * n + '"' * n + " x" * n, st.integers(0, 3000))
)


@st.composite
def event_data_value(draw: st.DrawFn, plausible: list[str]) -> Any:
    """Mostly a plausible value (so the parsers run), sometimes garbage of any type."""
    if draw(st.integers(0, 3)):
        return draw(st.sampled_from(plausible))
    return draw(tricky_strings | json_values)


event_data_objects = st.fixed_dictionaries(
    {}, optional={name: event_data_value(values) for name, values in PLAUSIBLE.items()}
)
security_event_data = st.fixed_dictionaries(
    {}, optional={name: event_data_value(values) for name, values in SECURITY_PLAUSIBLE.items()}
)


@st.composite
def sysmon_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Raw Sysmon (or Winlogbeat 6) layouts with random, often ill-typed, values."""
    event_data = draw(event_data_objects)
    event_data.update(draw(st.dictionaries(keys, json_values, max_size=2)))
    provider = draw(st.sampled_from([SYSMON_PROVIDER, "Microsoft-Windows-Security-Auditing"]) | json_values)
    channel = draw(st.sampled_from([SYSMON_CHANNEL, "ForwardedEvents"]) | json_values)
    event_id = draw(st.sampled_from(["1", "3", 1, 3, "7", "10", "11", "12", "13", 13, "14", "22"]) | json_values)
    doc = draw(json_objects)
    if draw(st.booleans()):
        winlog = {"provider_name": provider, "channel": channel, "event_id": event_id, "event_data": event_data}
        winlog.update(draw(st.dictionaries(st.sampled_from(["user", "computer_name"]), json_values, max_size=2)))
        doc["winlog"] = winlog
    else:
        doc.pop("winlog", None)
        doc.update({"source_name": provider, "log_name": channel, "event_id": event_id, "event_data": event_data})
    if draw(st.booleans()):  # like real raw events: none of the objects the mapping writes
        for key in WRITTEN - {"winlog", "@timestamp"} | {"event.category"}:
            doc.pop(key, None)
        doc["event"] = draw(st.fixed_dictionaries({}, optional={"code": json_values, "kind": st.just("event")}))
    return doc


@st.composite
def security_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Raw Security layouts (Winlogbeat 8, Elastic Agent, forwarded) with random, often ill-typed, values."""
    event_data = draw(security_event_data | json_values)
    if isinstance(event_data, dict):
        event_data.update(draw(st.dictionaries(keys, json_values, max_size=2)))
    winlog: dict[str, Any] = {
        "provider_name": draw(st.sampled_from([SECURITY_PROVIDER, None]) | json_values),
        "channel": draw(st.sampled_from([SECURITY_CHANNEL, "ForwardedEvents"]) | json_values),
        "event_id": draw(st.sampled_from(SECURITY_EVENT_IDS) | json_values),
        "event_data": event_data,
    }
    if winlog["provider_name"] is None and draw(st.booleans()):
        del winlog["provider_name"]
    keywords = st.sampled_from([["Audit Success"], ["Audit Failure"], "Audit Success"]) | json_values
    winlog.update(draw(st.dictionaries(st.sampled_from(["keywords", "computer_name", "user"]), keywords, max_size=2)))
    doc = draw(json_objects)
    doc["winlog"] = winlog
    if draw(st.booleans()):  # like real raw events: none of the objects the mapping writes
        for key in WRITTEN - {"winlog", "@timestamp"} | {"event.category", "event.outcome"}:
            doc.pop(key, None)
        optional = {
            "code": st.sampled_from(SECURITY_EVENT_IDS) | json_values,
            "kind": st.just("event"),
            "outcome": st.sampled_from(["success", "failure"]),
        }
        doc["event"] = draw(st.fixed_dictionaries({}, optional=optional))
    return doc


def from_security(winlog: Any) -> bool:
    """Whether a ``winlog`` object names the Security-Auditing provider, or only the Security channel."""
    if not isinstance(winlog, dict):
        return False
    provider = winlog.get("provider_name")
    return provider == SECURITY_PROVIDER or (provider is None and winlog.get("channel") == SECURITY_CHANNEL)


def has_markers(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` looks like raw Sysmon, raw Security or Winlogbeat 6 Sysmon (the only shapes ever mapped)."""
    winlog = doc.get("winlog")
    if from_security(winlog):
        return True
    if isinstance(winlog, dict) and isinstance(winlog.get("event_data"), dict):
        return winlog.get("provider_name") == SYSMON_PROVIDER or winlog.get("channel") == SYSMON_CHANNEL
    return (
        "winlog" not in doc
        and isinstance(doc.get("event_data"), dict)
        and (doc.get("source_name") == SYSMON_PROVIDER or doc.get("log_name") == SYSMON_CHANNEL)
    )


def check(doc: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(doc)
    out = normalize(doc)
    assert doc == before, "the input was modified"
    assert isinstance(out, dict)
    return out


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(json_objects)
def test_arbitrary_objects_never_raise(doc: dict[str, Any]) -> None:
    out = check(doc)
    if not has_markers(doc):
        assert out is doc


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sysmon_shaped())
def test_sysmon_shaped_garbage_never_raises_and_keeps_originals(doc: dict[str, Any]) -> None:
    out = check(doc)
    if out is doc:
        return
    assert has_markers(doc)
    assert doc.keys() <= out.keys()
    for key, value in doc.items():
        if key not in WRITTEN:
            assert out[key] is value


def new_leaves(doc: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """The leaf values (lists are leaves) of ``out`` that ``doc`` does not have at the same path."""

    def leaves(node: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(node, dict) or not node:
            return {prefix: node}
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(leaves(value, f"{prefix}.{key}" if prefix else key))
        return flat

    before = leaves(doc, "")
    return {path: value for path, value in leaves(out, "").items() if path not in before or before[path] != value}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(security_shaped())
def test_security_shaped_garbage_never_raises_and_keeps_originals(doc: dict[str, Any]) -> None:
    out = check(doc)
    if out is doc:
        return
    assert from_security(doc["winlog"])
    assert doc.keys() <= out.keys()
    for key, value in doc.items():
        if key not in WRITTEN:
            assert out[key] is value
    added = new_leaves(doc, out)
    # What the mapping writes is JSON (64-bit integers, no blank strings: the pipeline deletes those).
    orjson.dumps(added)
    for value in added.values():
        for item in value if isinstance(value, list) else [value]:
            assert not (isinstance(item, str) and all(char <= " " for char in item))


@st.composite
def sysmon_of_mapped_ids(draw: st.DrawFn) -> dict[str, Any]:
    """Raw Sysmon events of the mapped IDs with every event_data name the mapping reads, mostly plausible."""
    data = draw(st.fixed_dictionaries({name: event_data_value(values) for name, values in PLAUSIBLE.items()}))
    event_id = draw(st.sampled_from(sorted(MAPPED_EVENT_IDS)))
    winlog = {"provider_name": SYSMON_PROVIDER, "channel": SYSMON_CHANNEL, "event_id": event_id, "event_data": data}
    return {"@timestamp": "2024-05-01T10:16:41.003Z", "event": {"code": event_id}, "winlog": winlog}


def mapped_scalars(path: str, value: Any) -> list[tuple[str, Any]]:
    """(field, scalar) pairs of a written value: list elements and the objects in lists unfolded."""
    if isinstance(value, list):
        return [pair for item in value for pair in mapped_scalars(path, item)]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in mapped_scalars(f"{path}.{key}", item)]
    return [(path, value)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sysmon_shaped() | sysmon_of_mapped_ids())
def test_sysmon_values_missing_from_the_raw_bytes_are_derived_fields(doc: dict[str, Any]) -> None:
    """The prefilter requires a rule's literal in a record's bytes unless its field is derived: so
    every value the Sysmon mappings write is a copy of (part of) a raw value, or its field is in
    ``DERIVED_FIELDS``. JSON escapes character by character, so the escaped copy of a substring is
    a substring of the escaped record; numbers never make literals."""
    out = check(doc)
    if out is doc or from_security(doc.get("winlog")):
        return
    raw = json.dumps(doc, ensure_ascii=False)
    for path, value in new_leaves(doc, out).items():
        for field, scalar in mapped_scalars(path, value):
            if field in DERIVED_FIELDS or scalar is None or type(scalar) in (int, float):
                continue
            text = json.dumps(scalar, ensure_ascii=False)
            assert (text[1:-1] if type(scalar) is str else text) in raw, (field, scalar)


ecs_events = st.fixed_dictionaries(
    {
        "@timestamp": st.text(max_size=30),
        "event": st.fixed_dictionaries(
            {"category": st.sampled_from([["process"], ["network"], "process"]), "type": json_values},
            optional={"code": st.sampled_from(["1", "3", 1])},
        ),
        "host": st.dictionaries(keys, json_values, max_size=3),
    },
    optional={
        "process": json_values,
        "winlog": st.fixed_dictionaries(
            {
                "provider_name": st.just(SYSMON_PROVIDER),
                "event_id": st.sampled_from(["1", "3", "13", "22"]),
                "event_data": event_data_objects,
            }
        )
        | st.fixed_dictionaries(
            {
                "provider_name": st.just(SECURITY_PROVIDER),
                "event_id": st.sampled_from(SECURITY_EVENT_IDS),
                "event_data": security_event_data,
            }
        ),
        "event_data": event_data_objects,
        "source_name": st.just(SYSMON_PROVIDER),
        "event_id": st.sampled_from([1, 3]),
    },
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(ecs_events)
def test_ecs_events_are_never_changed(doc: dict[str, Any]) -> None:
    # Already categorized (Elastic Defend, Winlogbeat 7's module, a pipeline's output), even when
    # the raw Sysmon data is still attached.
    assert check(doc) is doc
