"""Golden tests of ``normalize`` per input shape, and the mapped events against the default rule.

Fixtures (tests/fixtures/inputs/) are hand-written from the documented shapes of what Winlogbeat
6/7/8, Elastic Agent and Elastic Defend put on Kafka; the expected fields follow Elastic's Sysmon
ingest pipeline (see app/normalize/sysmon.py). Each golden test asserts the exact set of fields the
mapping adds or changes, that no original field disappears, and that the input is not modified.
"""

from __future__ import annotations

import copy
import json
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import DEFAULT_RULE_PATH, load_rules
from app.core.normalize import normalize
from tests.support.detection import RULE
from tests.support.paths import INPUTS

START_STAGE, INBOUND_STAGE = RULE.stages

HOST_ID = "7c0e5d2a-91b4-4f36-a8e1-3b5f0d9c6e21"
MSHTA_GUID = "{5b8e21c4-1a36-6632-b402-000000002c00}"
SVCHOST_GUID = "{5b8e21c4-0c02-6632-0c00-000000002c00}"
_MISSING = object()


def load(name: str) -> dict[str, Any]:
    return json.loads((INPUTS / f"{name}.json").read_text(encoding="utf-8"))


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if type(value) is dict and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def mapped_changes(doc: dict[str, Any]) -> dict[str, Any]:
    """Normalize ``doc``; check it was left intact and lost nothing; return what changed."""
    before = copy.deepcopy(doc)
    out = normalize(doc)
    assert doc == before, "the input was modified"
    assert out is not doc
    flat_in, flat_out = flatten(before), flatten(out)
    assert flat_in.keys() <= flat_out.keys(), f"fields lost: {sorted(flat_in.keys() - flat_out.keys())}"
    return {path: value for path, value in flat_out.items() if flat_in.get(path, _MISSING) != value}


def meets(stage, doc: dict[str, Any]) -> bool:
    return stage.predicate(doc) and bool(stage.join_keys(doc, 64))


# -- expected mappings -------------------------------------------------------------------------

MSHTA_PROCESS = {
    "process.entity_id": MSHTA_GUID,
    "process.pid": 6212,
    "process.executable": "C:\\Windows\\System32\\mshta.exe",
    "process.name": "mshta.exe",
}
CORP_USER = {
    "user.id": "S-1-5-18",
    "user.domain": "CORP",
    "user.name": "j.doe",
    "related.user": ["j.doe"],
}
PROCESS_CREATION = {
    "@timestamp": "2024-05-01T10:15:02.138Z",
    "event.category": ["process"],
    "event.type": ["start"],
    "event.action": "Process creation",
    **MSHTA_PROCESS,
    "process.working_directory": "C:\\Windows\\system32\\",
    "process.parent.entity_id": SVCHOST_GUID,
    "process.parent.pid": 812,
    "process.parent.executable": "C:\\Windows\\System32\\svchost.exe",
    "process.parent.name": "svchost.exe",
    "process.parent.command_line": "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
    "process.parent.args": ["C:\\Windows\\system32\\svchost.exe", "-k", "DcomLaunch", "-p"],
    "process.parent.args_count": 4,
    "process.pe.original_file_name": "MSHTA.EXE",
    **CORP_USER,
}


def test_winlogbeat8_process_creation() -> None:
    assert mapped_changes(load("winlogbeat8_sysmon_1_mshta_embedding")) == {
        **PROCESS_CREATION,
        "event.created": "2024-05-01T10:15:02.1404221Z",
        "event.module": "sysmon",
        "process.command_line": "C:\\Windows\\System32\\mshta.exe -Embedding",
        "process.args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"],
        "process.args_count": 2,
        "process.pe.company": "Microsoft Corporation",
        "process.pe.description": "Microsoft (R) HTML Application host",
        "process.pe.file_version": "11.00.19041.4239 (WinBuild.160101.0800)",
        "process.pe.product": "Internet Explorer",
    }


def test_winlogbeat8_inbound_connection_keeps_sysmon_orientation() -> None:
    # Inbound: Sysmon reports the local socket as Source*, the remote peer as Destination*.
    assert mapped_changes(load("winlogbeat8_sysmon_3_mshta_inbound")) == {
        "@timestamp": "2024-05-01T10:15:03.407Z",
        "event.created": "2024-05-01T10:15:04.6122873Z",
        "event.category": ["network"],
        "event.type": ["start", "connection", "protocol"],
        "event.action": "Network connection",
        "event.module": "sysmon",
        **MSHTA_PROCESS,
        "network.transport": "tcp",
        "network.direction": "ingress",
        "network.type": "ipv4",
        "source.ip": "10.20.30.42",
        "source.domain": "ws-fin-042.corp.example",
        "source.port": 49168,
        "destination.ip": "10.20.30.7",
        "destination.port": 55683,
        **CORP_USER,
        "related.ip": ["10.20.30.42", "10.20.30.7"],
    }


def test_elastic_agent_process_creation() -> None:
    # Same mapping; event.module and event.dataset come from the integration, not the pipeline.
    assert mapped_changes(load("agent_sysmon_1_mshta_embedding")) == {
        **PROCESS_CREATION,
        "event.created": "2024-05-01T10:15:02.140Z",
        "process.command_line": '"C:\\Windows\\System32\\mshta.exe" -Embedding',
        "process.args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"],
        "process.args_count": 2,
    }


LEGACY_WINLOG = {
    "winlog.computer_name": "WKS-LEGACY-03.corp.example",
    "winlog.provider_name": "Microsoft-Windows-Sysmon",
    "winlog.channel": "Microsoft-Windows-Sysmon/Operational",
    "winlog.provider_guid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}",
    "winlog.opcode": "Info",
    "winlog.version": 5,
    "winlog.user.domain": "NT AUTHORITY",
    "winlog.user.identifier": "S-1-5-18",
    "winlog.user.name": "SYSTEM",
    "winlog.user.type": "User",
    "event.kind": "event",
    "event.module": "sysmon",
    "process.entity_id": "{e17a3b09-8229-5dc1-0000-0010f1a92c00}",
    "process.pid": 3320,
    "process.executable": "C:\\Windows\\System32\\mshta.exe",
    "process.name": "mshta.exe",
    # The Winlogbeat 6 top-level user is the logging account; ECS user is the process's user.
    "user.id": "S-1-5-18",
    "user.domain": "CORP",
    "user.name": "m.rossi",
    "related.user": ["m.rossi"],
}


def test_winlogbeat6_process_creation() -> None:
    doc = load("winlogbeat6_sysmon_1_mshta_embedding")
    changes = mapped_changes(doc)
    event_data = {f"winlog.event_data.{key}": value for key, value in doc["event_data"].items()}
    assert changes == {
        **event_data,
        **LEGACY_WINLOG,
        "winlog.event_id": "1",
        "winlog.record_id": "40417",
        "winlog.task": "Process Create (rule: ProcessCreate)",
        "@timestamp": "2019-11-05T14:02:33.509Z",
        "event.created": "2019-11-05T14:02:33.512Z",
        "event.code": "1",
        "event.category": ["process"],
        "event.type": ["start"],
        "event.action": "Process creation",
        "process.command_line": "C:\\Windows\\System32\\mshta.exe -Embedding",
        "process.args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"],
        "process.args_count": 2,
        "process.working_directory": "C:\\Windows\\system32\\",
        "process.parent.entity_id": "{e17a3b09-7ee0-5dc1-0000-0010cbd40000}",
        "process.parent.pid": 748,
        "process.parent.executable": "C:\\Windows\\System32\\svchost.exe",
        "process.parent.name": "svchost.exe",
        "process.parent.command_line": "C:\\Windows\\system32\\svchost.exe -k DcomLaunch",
        "process.parent.args": ["C:\\Windows\\system32\\svchost.exe", "-k", "DcomLaunch"],
        "process.parent.args_count": 3,
    }


def test_winlogbeat6_inbound_connection() -> None:
    doc = load("winlogbeat6_sysmon_3_mshta_inbound")
    changes = mapped_changes(doc)
    event_data = {f"winlog.event_data.{key}": value for key, value in doc["event_data"].items()}
    assert changes == {
        **event_data,
        **LEGACY_WINLOG,
        "winlog.event_id": "3",
        "winlog.record_id": "40422",
        "winlog.task": "Network connection detected (rule: NetworkConnect)",
        "@timestamp": "2019-11-05T14:02:34.871Z",
        "event.created": "2019-11-05T14:02:35.118Z",
        "event.code": "3",
        "event.category": ["network"],
        "event.type": ["start", "connection", "protocol"],
        "event.action": "Network connection",
        "network.transport": "tcp",
        "network.direction": "ingress",
        "network.type": "ipv6",
        "source.ip": "fe80:0:0:0:9c3d:51ff:fe2a:7b10",
        "source.domain": "WKS-LEGACY-03.corp.example",
        "source.port": 49671,
        "destination.ip": "fe80:0:0:0:4a1f:2bff:fe90:c3d2",
        "destination.port": 50113,
        "related.ip": ["fe80:0:0:0:9c3d:51ff:fe2a:7b10", "fe80:0:0:0:4a1f:2bff:fe90:c3d2"],
    }


@pytest.mark.parametrize("name", ["winlogbeat7_sysmon_1_mapped", "defend_process_start"])
def test_ecs_events_come_back_unchanged(name: str) -> None:
    doc = load(name)
    before = copy.deepcopy(doc)
    assert normalize(doc) is doc
    assert doc == before


# -- the default rule on mapped events ----------------------------------------------------------


def test_raw_winlogbeat8_events_match_the_rule_only_once_mapped() -> None:
    start_raw = load("winlogbeat8_sysmon_1_mshta_embedding")
    inbound_raw = load("winlogbeat8_sysmon_3_mshta_inbound")
    assert not START_STAGE.predicate(start_raw)
    assert not INBOUND_STAGE.predicate(inbound_raw)

    start, inbound = normalize(start_raw), normalize(inbound_raw)
    assert meets(START_STAGE, start) and not INBOUND_STAGE.predicate(start)
    assert meets(INBOUND_STAGE, inbound) and not START_STAGE.predicate(inbound)
    assert START_STAGE.join_keys(start, 64) == INBOUND_STAGE.join_keys(inbound, 64) == [(HOST_ID, MSHTA_GUID)]


@pytest.mark.parametrize("rule_file", sorted(DEFAULT_RULE_PATH.parent.glob("*.toml")), ids=lambda path: path.stem)
def test_every_shipped_rule_version_matches_the_mapped_pair(rule_file: Path) -> None:
    first, second = load_rules(rule_file)[0].stages
    start = normalize(load("winlogbeat8_sysmon_1_mshta_embedding"))
    inbound = normalize(load("winlogbeat8_sysmon_3_mshta_inbound"))
    assert meets(first, start) and meets(second, inbound)
    assert first.join_keys(start, 64) == second.join_keys(inbound, 64)


def test_elastic_agent_start_joins_the_winlogbeat_inbound_connection() -> None:
    start = normalize(load("agent_sysmon_1_mshta_embedding"))
    inbound = normalize(load("winlogbeat8_sysmon_3_mshta_inbound"))
    assert meets(START_STAGE, start)
    assert START_STAGE.join_keys(start, 64) == INBOUND_STAGE.join_keys(inbound, 64)


def test_winlogbeat6_events_meet_the_stages_but_cannot_join_without_host_id() -> None:
    start = normalize(load("winlogbeat6_sysmon_1_mshta_embedding"))
    inbound = normalize(load("winlogbeat6_sysmon_3_mshta_inbound"))
    assert START_STAGE.predicate(start) and INBOUND_STAGE.predicate(inbound)
    assert START_STAGE.join_keys(start, 64) == INBOUND_STAGE.join_keys(inbound, 64) == []
    with_host = {**start, "host": {"id": "h-legacy"}}
    assert START_STAGE.join_keys(with_host, 64) == [("h-legacy", "{e17a3b09-8229-5dc1-0000-0010f1a92c00}")]


def test_winlogbeat7_events_already_meet_the_rule() -> None:
    doc = load("winlogbeat7_sysmon_1_mapped")
    assert meets(START_STAGE, normalize(doc))


# -- detection ------------------------------------------------------------------------------------


def raw_event(event_id: Any = "3", **event_data: Any) -> dict[str, Any]:
    """A minimal raw Sysmon event (Winlogbeat 8 layout) with the given event_data overrides."""
    data = load("winlogbeat8_sysmon_3_mshta_inbound")["winlog"]["event_data"]
    data.update(event_data)
    return {
        "@timestamp": "2024-05-01T10:15:04.612Z",
        "event": {"code": str(event_id), "kind": "event"},
        "host": {"id": HOST_ID},
        "winlog": {
            "channel": "Microsoft-Windows-Sysmon/Operational",
            "provider_name": "Microsoft-Windows-Sysmon",
            "event_id": event_id,
            "event_data": {key: value for key, value in data.items() if value is not None},
        },
    }


def test_event_id_as_an_integer() -> None:
    assert normalize(raw_event(3))["event"]["category"] == ["network"]


def test_event_id_from_event_code_when_winlog_has_none() -> None:
    doc = raw_event("3")
    del doc["winlog"]["event_id"]
    assert normalize(doc)["event"]["category"] == ["network"]


def test_winlog_event_id_wins_over_event_code() -> None:
    # The pipeline rewrites event.code from winlog.event_id before categorizing.
    doc = raw_event("3")
    doc["event"]["code"] = "1"
    out = normalize(doc)
    assert out["event"]["category"] == ["network"]
    assert out["event"]["code"] == "3"


def test_forwarded_events_are_recognized_by_provider() -> None:
    doc = raw_event("3")
    doc["winlog"]["channel"] = "ForwardedEvents"
    assert normalize(doc)["event"]["category"] == ["network"]


def test_channel_alone_suffices() -> None:
    doc = raw_event("3")
    del doc["winlog"]["provider_name"]
    assert normalize(doc)["event"]["category"] == ["network"]


@pytest.mark.parametrize("event_id", ["5", "7", "10", "11", "22", "255", "01", " 3", 3.0, True, None, ["3"]])
def test_other_event_ids_are_left_alone(event_id: Any) -> None:
    doc = raw_event(event_id)
    doc["event"]["code"] = None
    assert normalize(doc) is doc


def test_other_providers_are_left_alone() -> None:
    doc = raw_event("3")
    doc["winlog"]["provider_name"] = "Microsoft-Windows-Security-Auditing"
    doc["winlog"]["channel"] = "Security"
    assert normalize(doc) is doc


@pytest.mark.parametrize(
    "marker",
    [
        {"event": {"code": "3", "category": ["network"]}},
        {"event": {"code": "3", "type": ["connection", "start", "protocol"]}},
        {"event.category": "network"},
        {"process": {"entity_id": MSHTA_GUID}},
    ],
)
def test_already_mapped_events_are_left_alone(marker: dict[str, Any]) -> None:
    doc = {**raw_event("3"), **marker}
    assert normalize(doc) is doc


@pytest.mark.parametrize(
    "winlog", [None, [], "Microsoft-Windows-Sysmon", {"provider_name": "Microsoft-Windows-Sysmon"}]
)
def test_winlog_without_event_data_object_is_left_alone(winlog: Any) -> None:
    doc = {"winlog": winlog, "event": {"code": "3"}}
    assert normalize(doc) is doc


def test_legacy_needs_the_sysmon_source() -> None:
    doc = load("winlogbeat6_sysmon_1_mshta_embedding")
    doc["source_name"] = "Microsoft-Windows-Security-Auditing"
    doc["log_name"] = "Security"
    assert normalize(doc) is doc


# -- field conversions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc_time", "expected"),
    [
        ("2024-02-29 23:59:59.999", "2024-02-29T23:59:59.999Z"),
        ("2024-01-01 00:00:00.000", "2024-01-01T00:00:00.000Z"),
        ("2023-02-29 10:00:00.000", None),
        ("2024-13-01 10:00:00.000", None),
        ("2024-05-01 24:00:00.000", None),
        ("0000-05-01 10:00:00.000", None),
        ("2024-05-01 10:15:02.13", None),
        ("2024-05-01 10:15:02.1380", None),
        ("2024-05-01 10:15:02", None),
        ("2024-05-01T10:15:02.138", None),
        ("2024-05-01 10:15:02.138Z", None),
        (" 2024-05-01 10:15:02.138", None),
        ("2024-5-01 10:15:02.138", None),
        ("２０２４-05-01 10:15:02.138", None),
        ("", None),
        ("-", None),
        (1714558502138, None),
        (None, None),
    ],
)
def test_utc_time(utc_time: Any, expected: str | None) -> None:
    out = normalize(raw_event(UtcTime=utc_time))
    if expected is None:
        assert out["@timestamp"] == "2024-05-01T10:15:04.612Z"
        assert "created" not in out["event"]
    else:
        assert out["@timestamp"] == expected
        assert out["event"]["created"] == "2024-05-01T10:15:04.612Z"


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("49168", 49168),
        ("0", 0),
        ("+49168", 49168),
        ("0049168", 49168),
        ("70000", 70000),
        ("-1", -1),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("0" * 5000 + "7", 7),
        ("9" * 5000, None),
        (" 49168", None),
        ("49168 ", None),
        ("4_9168", None),
        ("1e5", None),
        ("49168.0", None),
        ("0x1F", None),
        ("abc", None),
        ("", None),
        ("-", None),
        ("٤٩١٦٨", None),
        (49168, None),
        (["49168"], None),
    ],
)
def test_ports(port: Any, expected: int | None) -> None:
    out = normalize(raw_event(SourcePort=port, DestinationPort=port))
    assert out["source"].get("port") == expected
    assert out["destination"].get("port") == expected


@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("10.20.30.42", True),
        ("::1", True),
        ("fe80:0:0:0:9c3d:51ff:fe2a:7b10", True),
        ("::ffff:10.20.30.42", True),
        ("10.20.30.256", False),
        ("010.20.30.42", False),
        ("fe80::1%12", False),
        ("localhost", False),
        ("", False),
        ("-", False),
        (167772161, False),
    ],
)
def test_ip_addresses_are_kept_verbatim_when_valid(address: Any, kept: bool) -> None:
    out = normalize(raw_event(SourceIp=address))
    assert out["source"].get("ip") == (address if kept else None)
    assert out["related"]["ip"] == ([address, "10.20.30.7"] if kept else ["10.20.30.7"])


@pytest.mark.parametrize(
    ("initiated", "direction"),
    [("true", "egress"), ("false", "ingress"), ("True", None), ("1", None), (True, None), ("", None)],
)
def test_network_direction(initiated: Any, direction: str | None) -> None:
    assert normalize(raw_event(Initiated=initiated))["network"].get("direction") == direction


@pytest.mark.parametrize(
    ("is_ipv6", "network_type"), [("true", "ipv6"), ("false", "ipv4"), ("yes", None), (False, None)]
)
def test_network_type(is_ipv6: Any, network_type: str | None) -> None:
    assert normalize(raw_event(SourceIsIpv6=is_ipv6))["network"].get("type") == network_type


@pytest.mark.parametrize(
    ("destination_name", "source_name", "protocol"),
    [("epmap", "-", "epmap"), ("-", "http", "http"), ("epmap", "http", "epmap"), ("", "", None)],
)
def test_network_protocol_from_port_names(destination_name: str, source_name: str, protocol: str | None) -> None:
    out = normalize(raw_event(DestinationPortName=destination_name, SourcePortName=source_name))
    assert out["network"].get("protocol") == protocol


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("C:\\Windows\\System32\\MSHTA.EXE", "MSHTA.EXE"),
        ("\\\\?\\C:\\Windows\\mshta.exe", "mshta.exe"),
        ("mshta.exe", None),
        ("C:/Windows/System32/mshta.exe", None),
        ("C:\\Windows\\", None),
        ("\\", None),
        ("-", None),
    ],
)
def test_process_name_is_what_follows_the_last_backslash(image: str, name: str | None) -> None:
    out = normalize(raw_event(Image=image))
    assert out["process"].get("name") == name


@pytest.mark.parametrize(
    ("user", "domain", "name"),
    [
        ("CORP\\j.doe", "CORP", "j.doe"),
        ("NT AUTHORITY\\SYSTEM", "NT AUTHORITY", "SYSTEM"),
        ("j.doe", None, None),
        ("\\j.doe", None, "j.doe"),
        ("CORP\\", None, None),
        ("CORP\\\\", None, None),
        ("A\\B\\C", None, None),
        ("-", None, None),
        (["CORP", "j.doe"], None, None),
    ],
)
def test_user_from_domain_and_name(user: Any, domain: str | None, name: str | None) -> None:
    out = normalize(raw_event(User=user))
    assert out.get("user", {}).get("domain") == domain
    assert out.get("user", {}).get("name") == name
    assert out.get("related", {}).get("user") == ([name] if name else None)


def test_no_value_markers_are_ignored() -> None:
    doc = raw_event(
        "1",
        CommandLine="-",
        ParentProcessGuid="{00000000-0000-0000-0000-000000000000}",
        ParentImage="",
        RuleName="-",
    )
    process = normalize(doc)["process"]
    assert "command_line" not in process and "args" not in process
    assert "parent" not in process
    assert "rule" not in normalize(doc)


def test_rule_name_is_copied_when_set() -> None:
    assert normalize(raw_event(RuleName="technique_id=T1021.003"))["rule"] == {"name": "technique_id=T1021.003"}


def test_whitespace_only_command_line_gives_no_arguments() -> None:
    """The pipeline's split skips leading blanks: no empty program name (Windows would give one)."""
    process = normalize(raw_event("1", CommandLine="   "))["process"]
    assert process["args"] == [] and process["args_count"] == 0


# -- robustness ---------------------------------------------------------------------------------


def test_blocked_paths_are_skipped_and_the_rest_is_mapped() -> None:
    doc = raw_event("3")
    doc["event"] = "not an object"
    doc["source"] = ["not", "an", "object"]
    out = normalize(doc)
    assert out["event"] == "not an object"
    assert out["source"] == ["not", "an", "object"]
    assert out["network"]["direction"] == "ingress"
    assert out["destination"]["port"] == 55683


def test_existing_objects_are_copied_not_modified() -> None:
    doc = raw_event("3")
    doc["network"] = {"community_id": "1:abc"}
    doc["related"] = {"hosts": ["ws-fin-042"]}
    before = copy.deepcopy(doc)
    out = normalize(doc)
    assert doc == before
    assert out["network"]["community_id"] == "1:abc" and out["network"]["direction"] == "ingress"
    assert out["related"]["hosts"] == ["ws-fin-042"]
    assert out["winlog"] is doc["winlog"]


def test_wrong_types_in_event_data_are_left_out() -> None:
    garbage = {"Image": 12, "ProcessGuid": ["a"], "Protocol": {"x": 1}, "SourceHostname": None, "UtcTime": 1.5}
    out = normalize(raw_event("3", **garbage))
    assert "executable" not in out["process"] and "entity_id" not in out["process"]
    assert "transport" not in out["network"]
    assert "domain" not in out["source"]
    assert out["@timestamp"] == "2024-05-01T10:15:04.612Z"


def test_mapped_lists_are_not_shared_between_events() -> None:
    first, second = normalize(raw_event("3")), normalize(raw_event("3"))
    first["event"]["type"].append("mutated")
    assert second["event"]["type"] == ["start", "connection", "protocol"]


@given(st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,4}){2,4}", fullmatch=True) | st.ip_addresses().map(str))
def test_source_ip_is_kept_exactly_when_it_is_an_address(text: str) -> None:
    try:
        ip_address(text)
        valid = "%" not in text
    except ValueError:
        valid = False
    assert normalize(raw_event(SourceIp=text))["source"].get("ip") == (text if valid else None)


@pytest.mark.parametrize(
    ("shipped", "created"),
    [
        ({}, "2024-05-01T10:15:04.612Z"),  # none sent: the raw @timestamp (when Sysmon wrote the record)
        ({"event": {"code": "3", "kind": "event", "created": "2024-05-01T10:15:05.001Z"}}, "2024-05-01T10:15:05.001Z"),
        ({"event.created": "2024-05-01T10:15:05.001Z"}, None),  # dotted: kept as it was, nothing added
    ],
)
def test_event_created_is_the_shippers_own_when_it_sent_one(shipped: dict[str, Any], created: str | None) -> None:
    """Winlogbeat 8 sends its read time as event.created; only without it does the raw @timestamp go there."""
    out = normalize({**raw_event("3"), **shipped})
    assert out["@timestamp"] == "2024-05-01T10:15:03.407Z"  # the event's time is Sysmon's UtcTime either way
    assert out["event"].get("created") == created
    if created is None:
        assert out["event.created"] == "2024-05-01T10:15:05.001Z"
