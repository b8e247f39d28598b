"""Golden tests of ``normalize`` per input shape, and the mapped events against the default rule.

Fixtures (tests/fixtures/inputs/) are hand-written from the documented shapes of what Winlogbeat
6/7/8, Elastic Agent and Elastic Defend put on Kafka; the expected fields follow Elastic's Sysmon
ingest pipeline (see app/core/normalize/sysmon.py). Each golden test asserts the exact set of fields
the mapping adds or changes, that no original field disappears, and that the input is not modified.
The other mapped Sysmon events (7, 10, 11, 12-14, 22) are written here in the Winlogbeat 8 envelope
of the event 3 fixture; the last tests run a sequence rule over raw records through the detector.
"""

from __future__ import annotations

import copy
import json
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import DEFAULT_RULE_PATH, load_rules
from app.core.normalize import DERIVED_FIELDS, normalize
from tests.support.detection import RULE, compile_query, detect
from tests.support.mapping import mapped_changes
from tests.support.paths import INPUTS

START_STAGE, INBOUND_STAGE = RULE.stages

HOST_ID = "7c0e5d2a-91b4-4f36-a8e1-3b5f0d9c6e21"
MSHTA_GUID = "{5b8e21c4-1a36-6632-b402-000000002c00}"
SVCHOST_GUID = "{5b8e21c4-0c02-6632-0c00-000000002c00}"


def load(name: str) -> dict[str, Any]:
    return json.loads((INPUTS / f"{name}.json").read_text(encoding="utf-8"))


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


# -- the other mapped events: image load, process access, file, registry, DNS --------------------

RUNDLL_GUID = "{5b8e21c4-3f10-6632-d804-000000002c00}"
RUNDLL_PROCESS = {
    "process.entity_id": RUNDLL_GUID,
    "process.pid": 7344,
    "process.executable": "C:\\Windows\\System32\\rundll32.exe",
    "process.name": "rundll32.exe",
}
OTHER_EVENT_CREATED = "2024-05-01T10:16:41.0034518Z"


def winlogbeat8_sysmon(event_id: str, task: str, event_data: dict[str, Any]) -> dict[str, Any]:
    """A raw Sysmon record as Winlogbeat 8 ships it: the envelope of the event 3 fixture around ``event_data``."""
    doc = load("winlogbeat8_sysmon_3_mshta_inbound")
    doc["@timestamp"] = OTHER_EVENT_CREATED
    doc["event"].update({"code": event_id, "action": task})
    title = task.split(" (rule:")[0]
    doc["message"] = "\n".join([f"{title}:", *(f"{key}: {value}" for key, value in event_data.items())])
    doc["winlog"].update({"event_id": event_id, "task": task, "record_id": 118800, "event_data": event_data})
    return doc


def mapped(action: str, categories: list[str], types: list[str]) -> dict[str, Any]:
    """The changes every mapped Winlogbeat 8 record of ``winlogbeat8_sysmon`` shares."""
    return {
        "@timestamp": "2024-05-01T10:16:40.221Z",
        "event.created": OTHER_EVENT_CREATED,
        "event.module": "sysmon",
        "event.category": categories,
        "event.type": types,
        "event.action": action,
    }


def image_load(**overrides: Any) -> dict[str, Any]:
    data = {
        "RuleName": "technique_id=T1218.011,technique_name=Rundll32",
        "UtcTime": "2024-05-01 10:16:40.221",
        "ProcessGuid": RUNDLL_GUID,
        "ProcessId": "7344",
        "Image": "C:\\Windows\\System32\\rundll32.exe",
        "ImageLoaded": "C:\\Users\\j.doe\\AppData\\Local\\Temp\\vcredist_x64\\VCRUNTIME140.dll",
        "FileVersion": "14.38.33130.0 built by: vcwrkspc",
        "Description": "Microsoft\u00ae C Runtime Library",
        "Product": "Microsoft\u00ae Visual Studio\u00ae",
        "Company": "Microsoft Corporation",
        "OriginalFileName": "vcruntime140.dll",
        "Hashes": "SHA256=3B2E9A1C07D54F7E8C6A0D19F2B4C58E7A61D3F09C2B8E4A5D7F1C06B9E3A2D4",
        "Signed": "true",
        "Signature": "Microsoft Corporation",
        "SignatureStatus": "Valid",
        "User": "CORP\\j.doe",
    }
    return winlogbeat8_sysmon("7", "Image loaded (rule: ImageLoad)", {**data, **overrides})


def test_image_load_maps_the_loaded_image_to_file_and_its_loader_to_process() -> None:
    assert mapped_changes(image_load()) == {
        **mapped("Image loaded", ["process"], ["change"]),
        **RUNDLL_PROCESS,
        "rule.name": "technique_id=T1218.011,technique_name=Rundll32",
        "file.path": "C:\\Users\\j.doe\\AppData\\Local\\Temp\\vcredist_x64\\VCRUNTIME140.dll",
        "file.directory": "C:\\Users\\j.doe\\AppData\\Local\\Temp\\vcredist_x64",
        "file.name": "VCRUNTIME140.dll",
        "file.extension": "dll",
        "file.code_signature.subject_name": "Microsoft Corporation",
        "file.code_signature.status": "Valid",
        "file.code_signature.valid": True,  # the string Signed "true" sets no file.code_signature.signed
        # The PE metadata is the loaded image's: file.pe, never process.pe.
        "file.pe.original_file_name": "vcruntime140.dll",
        "file.pe.company": "Microsoft Corporation",
        "file.pe.description": "Microsoft\u00ae C Runtime Library",
        "file.pe.file_version": "14.38.33130.0 built by: vcwrkspc",
        "file.pe.product": "Microsoft\u00ae Visual Studio\u00ae",
        **CORP_USER,
    }


def process_access(**overrides: Any) -> dict[str, Any]:
    data = {
        "RuleName": "-",
        "UtcTime": "2024-05-01 10:16:40.221",
        "SourceProcessGUID": "{5b8e21c4-4a02-6632-e104-000000002c00}",
        "SourceProcessId": "8120",
        "SourceThreadId": "8164",
        "SourceImage": "C:\\Users\\j.doe\\Downloads\\pd64.exe",
        "TargetProcessGUID": "{5b8e21c4-0b8d-6632-0c00-000000002c00}",
        "TargetProcessId": "736",
        "TargetImage": "C:\\Windows\\system32\\lsass.exe",
        "GrantedAccess": "0x1fffff",
        "CallTrace": "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\KERNELBASE.dll+2b96e|UNKNOWN(00007FF6A1C2B3D4)",
        "SourceUser": "CORP\\j.doe",
        "TargetUser": "NT AUTHORITY\\SYSTEM",
    }
    return winlogbeat8_sysmon("10", "Process accessed (rule: ProcessAccess)", {**data, **overrides})


def test_process_access_maps_the_source_process_and_leaves_the_target_in_event_data() -> None:
    # No User field in event 10 (SourceUser and TargetUser are not read): user.id is the logging account.
    assert mapped_changes(process_access()) == {
        **mapped("ProcessAccess", ["process"], ["access"]),
        "process.entity_id": "{5b8e21c4-4a02-6632-e104-000000002c00}",
        "process.pid": 8120,
        "process.thread.id": 8164,
        "process.executable": "C:\\Users\\j.doe\\Downloads\\pd64.exe",
        "process.name": "pd64.exe",
        "user.id": "S-1-5-18",
    }


@pytest.mark.parametrize(
    ("overrides", "entity_id", "pid"),
    [
        # A rename never overwrites: the first of ProcessGuid, SourceProcessGuid, SourceProcessGUID wins.
        ({"ProcessGuid": MSHTA_GUID}, MSHTA_GUID, 8120),
        ({"SourceProcessGuid": SVCHOST_GUID}, SVCHOST_GUID, 8120),
        # A convert does: a valid SourceProcessId replaces ProcessId; an invalid one leaves it.
        ({"ProcessId": "6212"}, "{5b8e21c4-4a02-6632-e104-000000002c00}", 8120),
        ({"ProcessId": "6212", "SourceProcessId": "n/a"}, "{5b8e21c4-4a02-6632-e104-000000002c00}", 6212),
    ],
)
def test_process_access_source_fields_follow_the_pipelines_order(
    overrides: dict[str, str], entity_id: str, pid: int
) -> None:
    process = normalize(process_access(**overrides))["process"]
    assert (process["entity_id"], process["pid"]) == (entity_id, pid)


def test_file_creation() -> None:
    doc = winlogbeat8_sysmon(
        "11",
        "File created (rule: FileCreate)",
        {
            "RuleName": "-",
            "UtcTime": "2024-05-01 10:16:40.221",
            "ProcessGuid": RUNDLL_GUID,
            "ProcessId": "7344",
            "Image": "C:\\Windows\\System32\\rundll32.exe",
            "TargetFilename": "C:\\Users\\j.doe\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup\\"
            "OneDrive Sync.lnk",
            "CreationUtcTime": "2024-05-01 10:16:40.219",
            "User": "CORP\\j.doe",
        },
    )
    directory = "C:\\Users\\j.doe\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup"
    assert mapped_changes(doc) == {
        **mapped("FileCreate", ["file"], ["creation"]),
        **RUNDLL_PROCESS,
        "file.path": f"{directory}\\OneDrive Sync.lnk",
        "file.directory": directory,
        "file.name": "OneDrive Sync.lnk",
        "file.extension": "lnk",
        **CORP_USER,
    }


RUN_KEY = "HKU\\S-1-5-21-1004336348-1177238915-682003330-1104\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
RUN_KEY_UNDER_HIVE = RUN_KEY.removeprefix("HKU\\")
REGISTRY = ["configuration", "registry"]


def registry_event(event_id: str, **event_data: str) -> dict[str, Any]:
    data = {
        "RuleName": "technique_id=T1547.001,technique_name=Registry Run Keys / Start Folder",
        "UtcTime": "2024-05-01 10:16:40.221",
        "ProcessGuid": RUNDLL_GUID,
        "ProcessId": "7344",
        "Image": "C:\\Windows\\System32\\rundll32.exe",
        **event_data,
        "User": "CORP\\j.doe",
    }
    task = {"12": "Registry object added or deleted", "13": "Registry value set", "14": "Registry object renamed"}
    return winlogbeat8_sysmon(event_id, f"{task[event_id]} (rule: RegistryEvent)", data)


REGISTRY_COMMON = {
    **RUNDLL_PROCESS,
    "rule.name": "technique_id=T1547.001,technique_name=Registry Run Keys / Start Folder",
    **CORP_USER,
}


def test_registry_value_set() -> None:
    doc = registry_event(
        "13",
        EventType="SetValue",
        TargetObject=f"{RUN_KEY}\\OneDriveSync",
        Details='"C:\\Users\\j.doe\\AppData\\Local\\Temp\\odsync.exe" /background',
    )
    assert mapped_changes(doc) == {
        **mapped("RegistryEvent (Value Set)", REGISTRY, ["change"]),
        **REGISTRY_COMMON,
        "registry.path": f"{RUN_KEY}\\OneDriveSync",
        "registry.hive": "HKU",
        "registry.key": f"{RUN_KEY_UNDER_HIVE}\\OneDriveSync",
        "registry.value": "OneDriveSync",
        "registry.data.strings": ['"C:\\Users\\j.doe\\AppData\\Local\\Temp\\odsync.exe" /background'],
        "registry.data.type": "REG_SZ",
    }


def test_registry_key_created() -> None:
    # The pipeline names the last path element registry.value even when the object is a key.
    path = "HKLM\\System\\CurrentControlSet\\Services\\WinSvcUpd"
    assert mapped_changes(registry_event("12", EventType="CreateKey", TargetObject=path)) == {
        **mapped("RegistryEvent (Object create and delete)", REGISTRY, ["change"]),
        **REGISTRY_COMMON,
        "registry.path": path,
        "registry.hive": "HKLM",
        "registry.key": "System\\CurrentControlSet\\Services\\WinSvcUpd",
        "registry.value": "WinSvcUpd",
    }


def test_registry_key_renamed_is_described_by_its_old_name() -> None:
    old = "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Exclusions\\Paths"
    doc = registry_event("14", EventType="RenameKey", TargetObject=old, NewName=f"{old}.bak")
    assert mapped_changes(doc) == {
        **mapped("RegistryEvent (Key and Value Rename)", REGISTRY, ["change"]),
        **REGISTRY_COMMON,
        "registry.path": old,
        "registry.hive": "HKLM",
        "registry.key": "SOFTWARE\\Microsoft\\Windows Defender\\Exclusions\\Paths",
        "registry.value": "Paths",
    }


def dns_query(**overrides: Any) -> dict[str, Any]:
    data = {
        "RuleName": "-",
        "UtcTime": "2024-05-01 10:16:40.221",
        "ProcessGuid": RUNDLL_GUID,
        "ProcessId": "7344",
        "QueryName": "dl.contoso-updates.example",
        "QueryStatus": "0",
        "QueryResults": "type:  5 dl.contoso-updates.example.cdn.example;::ffff:198.51.100.23;::ffff:198.51.100.24;",
        "Image": "C:\\Windows\\System32\\rundll32.exe",
        "User": "CORP\\j.doe",
    }
    return winlogbeat8_sysmon("22", "Dns query (rule: DnsQuery)", {**data, **overrides})


def test_dns_query() -> None:
    assert mapped_changes(dns_query()) == {
        **mapped("DNSEvent (DNS query)", ["network"], ["connection", "protocol", "info"]),
        **RUNDLL_PROCESS,
        "network.protocol": "dns",
        "dns.question.name": "dl.contoso-updates.example",
        "dns.answers": [
            {"type": "CNAME", "data": "dl.contoso-updates.example.cdn.example"},
            {"type": "A", "data": "198.51.100.23"},
            {"type": "A", "data": "198.51.100.24"},
        ],
        "dns.resolved_ip": ["198.51.100.23", "198.51.100.24"],
        "sysmon.dns.status": "SUCCESS",
        **CORP_USER,
        "related.hosts": ["dl.contoso-updates.example.cdn.example", "dl.contoso-updates.example"],
        "related.ip": ["198.51.100.23", "198.51.100.24"],
    }


@pytest.mark.parametrize(
    "doc",
    [image_load(), process_access(), registry_event("13", TargetObject=f"{RUN_KEY}\\x", Details="DWORD (0x00000001)")],
    ids=["7", "10", "13"],
)
def test_forwarded_events_of_the_other_ids_are_mapped(doc: dict[str, Any]) -> None:
    doc["winlog"]["channel"] = "ForwardedEvents"
    assert normalize(doc)["event"]["code"] == doc["winlog"]["event_id"]
    del doc["winlog"]["provider_name"]
    assert normalize(doc) is doc


@pytest.mark.parametrize("doc", [image_load(), dns_query(), registry_event("12", TargetObject="HKLM\\x")])
def test_already_categorized_events_of_the_other_ids_are_left_alone(doc: dict[str, Any]) -> None:
    doc["event"]["category"] = ["registry"]
    assert normalize(doc) is doc


def test_the_winlogbeat6_and_nxlog_layouts_map_the_other_ids_too() -> None:
    data = registry_event("13", TargetObject=f"{RUN_KEY}\\x", Details="Binary Data")["winlog"]["event_data"]
    legacy = {**load("winlogbeat6_sysmon_1_mshta_embedding"), "event_id": 13, "event_data": data}
    nxlog = {**load("nxlog_sysmon_1_mshta_embedding"), "EventID": 13, **data}
    for doc in (legacy, nxlog):
        registry = normalize(doc)["registry"]
        assert registry["hive"] == "HKU" and registry["value"] == "x"
        assert registry["data"] == {"strings": ["Binary Data"], "type": "REG_BINARY"}


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


@pytest.mark.parametrize(
    "event_id", ["2", "5", "6", "8", "9", "15", "17", "23", "255", "01", "07", " 3", 3.0, 22.0, True, None, ["3"]]
)
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
        ("fe80::1%12", True),  # Elasticsearch ignores the scope ID
        ("fe80::1%", False),  # an empty scope ID is no address
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


# -- image loads, files, registry and DNS: conversions and edge cases ----------------------------


@pytest.mark.parametrize(
    ("overrides", "signature"),
    [
        ({}, {"subject_name": "Microsoft Corporation", "status": "Valid", "valid": True}),
        ({"Signed": True}, {"subject_name": "Microsoft Corporation", "status": "Valid", "valid": True, "signed": True}),
        ({"Signed": "false", "Signature": "-", "SignatureStatus": "Unavailable"}, {"status": "Unavailable"}),
        ({"SignatureStatus": "Expired"}, {"subject_name": "Microsoft Corporation", "status": "Expired"}),
        ({"SignatureStatus": "valid"}, {"subject_name": "Microsoft Corporation", "status": "valid"}),
        ({"Signature": 12, "SignatureStatus": ["Valid"]}, None),
    ],
)
def test_image_load_signature(overrides: dict[str, Any], signature: dict[str, Any] | None) -> None:
    assert normalize(image_load(**overrides))["file"].get("code_signature") == signature


@pytest.mark.parametrize(
    ("path", "name", "directory", "extension"),
    [
        ("C:\\Windows\\System32\\amsi.dll", "amsi.dll", "C:\\Windows\\System32", "dll"),
        ("C:\\ProgramData\\pkg.v2\\LICENSE", "LICENSE", "C:\\ProgramData\\pkg.v2", "v2\\LICENSE"),  # the last dot
        ("C:\\Temp\\", "", "C:\\Temp", None),  # an empty name is set, unlike process.name
        ("\\\\?\\C:\\x.tar.gz", "x.tar.gz", "\\\\?\\C:", "gz"),
        ("amsi.dll", None, None, None),  # no backslash: file.path only
        ("\\", None, None, None),
        ("C:/Windows/amsi.dll", None, None, None),
    ],
)
def test_file_name_directory_and_extension_from_the_path(
    path: str, name: str | None, directory: str | None, extension: str | None
) -> None:
    file = normalize(image_load(ImageLoaded=path))["file"]
    assert file["path"] == path
    assert (file.get("name"), file.get("directory"), file.get("extension")) == (name, directory, extension)


def test_a_file_path_of_no_value_or_of_the_wrong_type_gives_no_file_fields() -> None:
    assert "file" not in normalize(winlogbeat8_sysmon("11", "File created", {"TargetFilename": "-"}))
    assert "file" not in normalize(winlogbeat8_sysmon("11", "File created", {"TargetFilename": ["C:\\x.exe"]}))


def test_target_filename_comes_first_and_a_rename_never_overwrites() -> None:
    assert normalize(image_load(TargetFilename="C:\\a.txt"))["file"]["path"] == "C:\\a.txt"


@pytest.mark.parametrize(
    ("path", "registry"),
    [
        ("HKLM\\SOFTWARE\\Classes\\x", {"hive": "HKLM", "key": "SOFTWARE\\Classes\\x", "value": "x"}),
        ("HKEY_LOCAL_MACHINE\\SOFTWARE\\x", {"hive": "HKLM", "key": "SOFTWARE\\x", "value": "x"}),
        ("HKEY_CLASSES_ROOT\\.hta", {"hive": "HKCR", "key": ".hta", "value": ".hta"}),
        (
            "HKCU\\Environment\\UserInitMprLogonScript",
            {"hive": "HKCU", "key": "Environment\\UserInitMprLogonScript", "value": "UserInitMprLogonScript"},
        ),
        ("HKLM\\SOFTWARE\\x\\", {"hive": "HKLM", "key": "SOFTWARE\\x", "value": "x"}),  # trailing separators dropped
        ("HKLM\\\\x", {"hive": "HKLM", "key": "\\x", "value": "x"}),
        ("HKLM", {"hive": "HKLM", "value": "HKLM"}),
        ("hklm\\SOFTWARE\\x", {"value": "x"}),  # hive names are matched case-sensitively
        ("\\REGISTRY\\MACHINE\\SOFTWARE\\x", {"value": "x"}),
        ("\\\\", {}),  # the pipeline's script fails here: registry.path only
    ],
)
def test_registry_path_split(path: str, registry: dict[str, str]) -> None:
    assert normalize(registry_event("13", TargetObject=path))["registry"] == {"path": path, **registry}


FULLWIDTH_DWORD = "DWORD (0x" + "\uff10" * 7 + "\uff11)"  # Java's [0-9A-F] is ASCII, like re.ASCII


@pytest.mark.parametrize(
    ("details", "data"),
    [
        ("DWORD (0x00000001)", {"strings": ["1"], "type": "SZ_DWORD"}),
        ("DWORD (0xffffffff)", {"strings": ["4294967295"], "type": "SZ_DWORD"}),
        ("dword (0X0000002A)", {"strings": ["42"], "type": "SZ_DWORD"}),
        # The pipeline shifts the high half by 8 bits, not 32: (1 << 8) + 2.
        ("QWORD (0x00000001-0x00000002)", {"strings": ["258"], "type": "SZ_QWORD"}),
        ("QWORD (0x00000000-0x00000005)", {"strings": ["5"], "type": "SZ_QWORD"}),
        ("Binary Data", {"strings": ["Binary Data"], "type": "REG_BINARY"}),
        ("binary data", {"strings": ["binary data"], "type": "REG_SZ"}),
        ("DWORD (0x1)", {"strings": ["DWORD (0x1)"], "type": "REG_SZ"}),
        ("DWORD (0x0000001g)", {"strings": ["DWORD (0x0000001g)"], "type": "REG_SZ"}),
        (FULLWIDTH_DWORD, {"strings": [FULLWIDTH_DWORD], "type": "REG_SZ"}),
        ("(Empty)", {"strings": ["(Empty)"], "type": "REG_SZ"}),
        ("-", None),
        ("", None),
        (1, None),
    ],
)
def test_registry_data(details: Any, data: dict[str, Any] | None) -> None:
    registry = normalize(registry_event("13", TargetObject=f"{RUN_KEY}\\x", Details=details))["registry"]
    assert registry.get("data") == data


def test_registry_fields_only_for_registry_events() -> None:
    doc = winlogbeat8_sysmon("11", "File created", {"TargetObject": "HKLM\\x", "Details": "DWORD (0x00000001)"})
    assert "registry" not in normalize(doc)
    for no_path in ("-", "", None, 7):
        assert "registry" not in normalize(registry_event("13", TargetObject=no_path))


@pytest.mark.parametrize(
    ("results", "answers", "resolved", "hosts"),
    [
        (
            "type:  5 a.cdn.example;type:  28 ;2001:db8::7;::ffff:198.51.100.9;",
            [{"type": "CNAME", "data": "a.cdn.example"}, {"type": "AAAA"}]
            + [{"type": "AAAA", "data": "2001:db8::7"}, {"type": "A", "data": "198.51.100.9"}],
            ["2001:db8::7", "198.51.100.9"],
            ["a.cdn.example"],
        ),
        # A number the pipeline's table lacks gives a null type.
        ("type:  65 svc.example;", [{"type": None, "data": "svc.example"}], None, ["svc.example"]),
        ("type:  5 a.example extra;", [{"type": "CNAME"}], None, []),  # not exactly three words: no data
        # IPv4-mapped addresses, bracketed, with a port: the IPv4 address; the rest kept as written.
        (
            "[::ffff:203.0.113.5]:53;::FFFF:203.0.113.6;",
            [{"type": "A", "data": "203.0.113.5"}, {"type": "AAAA", "data": "::FFFF:203.0.113.6"}],
            ["203.0.113.5", "::FFFF:203.0.113.6"],
            [],
        ),
        # An invalid address is dropped, and the pipeline's loop then skips the next one's answer.
        ("bogus;192.0.2.9;192.0.2.10;", [{"type": "A", "data": "192.0.2.10"}], ["192.0.2.9", "192.0.2.10"], []),
        ("x;y;192.0.2.9;", [{"type": "A", "data": "192.0.2.9"}], ["192.0.2.9"], []),
        ("type:;192.0.2.9;", None, None, []),  # the pipeline's script fails: nothing of the results
        (";;", None, None, []),
        ("-", None, None, []),
        (["192.0.2.9"], None, None, []),
    ],
)
def test_dns_query_results(
    results: Any, answers: list[dict[str, Any]] | None, resolved: list[str] | None, hosts: list[str]
) -> None:
    out = normalize(dns_query(QueryResults=results))
    assert out["dns"].get("answers") == answers
    assert out["dns"].get("resolved_ip") == resolved
    assert out["related"]["hosts"] == [*hosts, "dl.contoso-updates.example"]
    assert out["related"].get("ip") == (list(dict.fromkeys(resolved)) if resolved else None)


def test_dns_answers_need_a_query_name() -> None:
    out = normalize(dns_query(QueryName="-"))
    assert "dns" not in out and "hosts" not in out["related"]
    assert out["network"]["protocol"] == "dns"


def test_a_query_name_among_the_answers_is_not_repeated() -> None:
    out = normalize(dns_query(QueryResults="type:  5 dl.contoso-updates.example;"))
    assert out["related"]["hosts"] == ["dl.contoso-updates.example"]


@pytest.mark.parametrize(
    ("status", "name"),
    [
        ("0", "SUCCESS"),
        ("9003", "DNS_ERROR_RCODE_NAME_ERROR"),
        ("9501", "DNS_INFO_NO_RECORDS"),
        ("1460", "ERROR_TIMEOUT"),
        ("10060", "WSAETIMEDOUT"),
        ("12345", "12345"),  # unknown: kept as written
        ("09003", "09003"),
        ("-", None),
        (0, None),
    ],
)
def test_dns_query_status(status: Any, name: str | None) -> None:
    assert normalize(dns_query(QueryStatus=status)).get("sysmon", {}).get("dns", {}).get("status") == name


def test_dns_protocol_ignores_port_names() -> None:
    assert normalize(dns_query(DestinationPortName="domain"))["network"] == {"protocol": "dns"}


# -- the prefilter's contract: a value the mapping writes is in the raw bytes, or a derived field -----


def mapped_values(path: str, value: Any) -> list[tuple[str, Any]]:
    """(field, scalar) pairs of a mapped value: list elements and the objects in lists unfolded."""
    if type(value) is list:
        return [pair for item in value for pair in mapped_values(path, item)]
    if type(value) is dict:
        return [pair for key, item in value.items() for pair in mapped_values(f"{path}.{key}", item)]
    return [(path, value)]


def underived_values_missing_from_the_raw_bytes(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """The values ``normalize`` writes that a rule's literal could need but the raw JSON lacks.

    The prefilter requires a rule's literals in a record's bytes unless the field is derived, so a
    value the mapping computes (not a copy of part of a raw string) must be in ``DERIVED_FIELDS``.
    JSON escapes character by character, so the escaped copy of a substring is a substring of the
    escaped record. Numbers never make literals.
    """
    raw = orjson.dumps(doc)
    missing = []
    for path, value in mapped_changes(doc).items():
        for field, scalar in mapped_values(path, value):
            if field in DERIVED_FIELDS or scalar is None or type(scalar) in (int, float):
                continue
            if type(scalar) is not str or orjson.dumps(scalar)[1:-1] not in raw:
                missing.append((field, scalar))
    return missing


@pytest.mark.parametrize(
    "doc",
    [
        image_load(Signed=True),
        process_access(),
        registry_event("13", TargetObject="HKEY_LOCAL_MACHINE\\SOFTWARE\\x", Details="QWORD (0x00000001-0x00000002)"),
        registry_event("13", TargetObject=f"{RUN_KEY}\\x", Details="Binary Data"),
        registry_event("14", TargetObject=f"{RUN_KEY}\\x\\", NewName=f"{RUN_KEY}\\y"),
        dns_query(QueryStatus="9003", QueryResults="type:  5 a.example;[::ffff:203.0.113.5]:53;bad;2001:db8::1;"),
        load("winlogbeat8_sysmon_1_mshta_embedding"),
        load("winlogbeat8_sysmon_3_mshta_inbound"),
    ],
    ids=["7", "10", "13-qword", "13-binary", "14", "22", "1", "3"],
)
def test_values_the_mapping_computes_are_derived_fields(doc: dict[str, Any]) -> None:
    assert underived_values_missing_from_the_raw_bytes(doc) == []


# -- detection on raw records: a sequence over Sysmon 1 and 13 -------------------------------------

RUN_KEY_RULE = compile_query(
    "sequence by host.id, process.entity_id with maxspan=1m"
    ' [process where event.type == "start" and process.name : "rundll32.exe"]'
    ' [registry where registry.path : "HKLM\\\\SOFTWARE\\\\*\\\\Run\\\\*"]'
)
HKLM_RUN = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"


def rundll32_start(utc_time: str = "2024-05-01 10:16:38.904") -> bytes:
    doc = load("winlogbeat8_sysmon_1_mshta_embedding")
    data = doc["winlog"]["event_data"]
    data.update(
        {
            "UtcTime": utc_time,
            "ProcessGuid": RUNDLL_GUID,
            "ProcessId": "7344",
            "Image": "C:\\Windows\\System32\\rundll32.exe",
            "OriginalFileName": "RUNDLL32.EXE",
            "Description": "Windows host process (Rundll32)",
            "CommandLine": '"C:\\Windows\\System32\\rundll32.exe" C:\\Users\\j.doe\\AppData\\Local\\Temp\\odsync.dll,Start',
        }
    )
    return orjson.dumps(doc)


def run_key_set(path: str = f"{HKLM_RUN}\\OneDriveSync", guid: str = RUNDLL_GUID, utc: str = "") -> bytes:
    doc = registry_event("13", EventType="SetValue", TargetObject=path, Details="C:\\ProgramData\\odsync.exe")
    data = doc["winlog"]["event_data"]
    data["ProcessGuid"] = guid
    if utc:
        data["UtcTime"] = utc
    return orjson.dumps(doc)


def test_a_sequence_fires_on_raw_sysmon_process_creation_then_registry_value_set() -> None:
    found = detect([rundll32_start(), run_key_set()], [RUN_KEY_RULE])
    assert found.rejections == []
    assert {key for key, _ in found.sequences()} == {(HOST_ID, RUNDLL_GUID)}
    assert len(found.alerts) == 1


@pytest.mark.parametrize(
    "registry_record",
    [
        run_key_set(path=f"{RUN_KEY}\\OneDriveSync"),  # HKU, not HKLM
        run_key_set(guid=SVCHOST_GUID),  # another process
        run_key_set(utc="2024-05-01 10:17:39.000"),  # more than a minute after the start
    ],
    ids=["another-hive", "another-process", "too-late"],
)
def test_near_misses_on_raw_sysmon_do_not_fire(registry_record: bytes) -> None:
    found = detect([rundll32_start(), registry_record], [RUN_KEY_RULE])
    assert found.rejections == [] and found.alerts == []


def test_a_rule_on_values_only_the_mapping_computes_passes_the_prefilter() -> None:
    """``network.protocol`` "dns", ``dns.answers.type`` "CNAME" and ``sysmon.dns.status`` "SUCCESS" are in
    no raw byte: without DERIVED_FIELDS the prefilter would drop the record before it is mapped."""
    rule = compile_query(
        "sequence by host.id, process.entity_id with maxspan=1m"
        ' [process where event.type == "start" and process.name : "rundll32.exe"]'
        ' [network where network.protocol == "dns" and dns.answers.type == "CNAME"'
        ' and sysmon.dns.status == "SUCCESS"]'
    )
    assert len(detect([rundll32_start(), orjson.dumps(dns_query())], [rule]).alerts) == 1
    hive_rule = compile_query(
        "sequence by host.id, process.entity_id with maxspan=1m"
        ' [process where event.type == "start" and process.name : "rundll32.exe"]'
        ' [registry where registry.hive == "HKLM" and registry.data.strings == "258" and'
        ' registry.data.type == "SZ_QWORD"]'
    )
    value = registry_event(
        "13", TargetObject="HKEY_LOCAL_MACHINE\\SOFTWARE\\x", Details="QWORD (0x00000001-0x00000002)"
    )
    assert len(detect([rundll32_start(), orjson.dumps(value)], [hive_rule]).alerts) == 1
