"""Properties of ``normalize`` on arbitrary input, checked with hypothesis.

* It never raises, whatever JSON object it gets, and never modifies its input.
* An event without the raw-Sysmon or Winlogbeat 6 markers comes back as the very same object.
* A mapped event keeps every original top-level field; fields outside the ECS objects the mapping
  writes are the very same objects.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.normalize import SYSMON_CHANNEL, SYSMON_PROVIDER, normalize

# Keys the mapping looks at, mixed with arbitrary ones so that generated objects hit its branches.
INTERESTING_KEYS = [
    "winlog", "event_data", "event", "process", "source", "destination", "network", "user", "related",
    "@timestamp", "data_stream", "event.category", "provider_name", "channel", "event_id", "code",
    "category", "type", "source_name", "log_name", "identifier",
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
# Top-level fields the mapping may replace (with a copy holding more fields).
WRITTEN = {"@timestamp", "event", "process", "network", "source", "destination", "user", "related", "rule", "winlog"}

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


@st.composite
def sysmon_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """Raw Sysmon (or Winlogbeat 6) layouts with random, often ill-typed, values."""
    event_data = draw(event_data_objects)
    event_data.update(draw(st.dictionaries(keys, json_values, max_size=2)))
    provider = draw(st.sampled_from([SYSMON_PROVIDER, "Microsoft-Windows-Security-Auditing"]) | json_values)
    channel = draw(st.sampled_from([SYSMON_CHANNEL, "ForwardedEvents"]) | json_values)
    event_id = draw(st.sampled_from(["1", "3", 1, 3, "22"]) | json_values)
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


def has_markers(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` looks like raw Sysmon or Winlogbeat 6 Sysmon (the only shapes ever mapped)."""
    winlog = doc.get("winlog")
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
                "event_id": st.sampled_from(["1", "3"]),
                "event_data": event_data_objects,
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
