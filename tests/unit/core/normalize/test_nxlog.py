"""NXLog's Windows events (``im_msvistalog`` JSON) mapped like raw Sysmon, and unknown layouts told apart.

NXLog writes a flat record: its own names for the system fields and every Sysmon ``EventData``
field at the top level. Mapped, a Sysmon 1 or 3 record must carry the ECS fields Elastic's pipeline
would have given the same event shipped by Winlogbeat, so that the rule reads it the same way; a
Windows event in a layout nobody maps must be recognisable, so that it is a dead letter
(``unknown_layout``) rather than silently matching nothing.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.core.normalize import normalize, unmapped_windows_layout
from app.core.normalize.nxlog import is_nxlog
from tests.support.detection import RULE
from tests.support.paths import INPUTS

START_STAGE, INBOUND_STAGE = RULE.stages
MSHTA_GUID = "{5b8e21c4-1a36-6632-b402-000000002c00}"


def load(name: str) -> dict[str, Any]:
    return json.loads((INPUTS / f"{name}.json").read_text(encoding="utf-8"))


NXLOG_START = load("nxlog_sysmon_1_mshta_embedding")
NXLOG_INBOUND = load("nxlog_sysmon_3_mshta_inbound")


def test_process_creation_is_mapped_like_winlogbeats_raw_record() -> None:
    before = copy.deepcopy(NXLOG_START)
    mapped = normalize(NXLOG_START)
    assert before == NXLOG_START, "the input was modified"
    assert all(mapped[key] == value for key, value in before.items()), "an original field changed"
    winlogbeat = normalize(load("winlogbeat8_sysmon_1_mshta_embedding"))
    assert mapped["@timestamp"] == "2024-05-01T10:15:02.138Z"  # from UtcTime; NXLog sends no @timestamp
    for name in ("process", "user", "related"):
        assert mapped[name] == winlogbeat[name], name
    derived = ("kind", "code", "category", "type", "action", "module")
    assert {k: mapped["event"][k] for k in derived} == {k: winlogbeat["event"][k] for k in derived}
    assert mapped["host"] == {"name": "ws-fin-042.corp.example"}  # from Hostname; NXLog has no host.id
    assert mapped["winlog"] == {
        "event_id": "1",
        "computer_name": "ws-fin-042.corp.example",
        "provider_name": "Microsoft-Windows-Sysmon",
        "channel": "Microsoft-Windows-Sysmon/Operational",
        "record_id": 734521,
        "user": {"identifier": "S-1-5-18"},
    }
    assert "created" not in mapped["event"]  # no shipper time and no raw @timestamp to keep


def test_network_connection_keeps_sysmons_orientation() -> None:
    mapped = normalize(NXLOG_INBOUND)
    assert mapped["event"]["category"] == ["network"] and "start" in mapped["event"]["type"]
    assert mapped["network"] == {"transport": "tcp", "direction": "ingress", "type": "ipv4"}
    assert mapped["source"] == {"ip": "10.20.30.42", "port": 49168, "domain": "ws-fin-042.corp.example"}
    assert mapped["destination"] == {"ip": "10.20.30.7", "port": 55683}
    assert mapped["process"]["entity_id"] == MSHTA_GUID


def test_the_mapped_pair_meets_the_rule_but_joins_only_on_a_host_id() -> None:
    start, inbound = normalize(NXLOG_START), normalize(NXLOG_INBOUND)
    assert START_STAGE.predicate(start) and INBOUND_STAGE.predicate(inbound)
    assert START_STAGE.join_keys(start, 64) == INBOUND_STAGE.join_keys(inbound, 64) == []


@pytest.mark.parametrize("event_id", [1, "1"])
def test_event_id_as_a_number_or_a_string(event_id: Any) -> None:
    assert normalize({**NXLOG_START, "EventID": event_id})["event"]["code"] == "1"


@pytest.mark.parametrize(
    "changes",
    [
        {"EventID": 5},  # another Sysmon event (process terminated): not one of the mapped IDs
        {"EventID": [1]},
        {"SourceName": "Microsoft-Windows-Security-Auditing", "Channel": "Security"},
        {"event": {"category": ["process"]}},  # mapped already
        {"process": {"name": "mshta.exe"}},
    ],
)
def test_what_is_not_a_raw_sysmon_event_of_a_mapped_id_is_left_alone(changes: dict[str, Any]) -> None:
    doc = {**NXLOG_START, **changes}
    assert normalize(doc) is doc


def test_the_layout_is_recognised_by_module_or_by_field_names() -> None:
    assert is_nxlog({"SourceModuleType": "im_msvistalog"})
    assert is_nxlog({"EventID": 1, "Hostname": "h", "Channel": "Security"})
    assert is_nxlog({"EventID": 1, "Hostname": "h", "SourceName": "x"})
    assert not is_nxlog({"EventID": 1, "Hostname": "h"})
    assert not is_nxlog({"EventID": 1, "Channel": "Security"})


@pytest.mark.parametrize(
    ("doc", "unknown"),
    [
        ({"EventCode": 1, "ComputerName": "ws-01", "Image": "mshta.exe"}, True),  # Splunk's Windows add-on
        ({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"}, True),  # no Hostname: not NXLog
        ({"Event": {"System": {"EventID": 1}}}, True),  # event XML turned into JSON
        ({"ProviderName": "Microsoft-Windows-Sysmon", "Id": 1}, True),
        ({"SourceName": "Microsoft-Windows-Sysmon"}, True),
        ({"SourceName": "Application Error"}, False),
        ({**NXLOG_START, "EventID": 5}, False),  # a known layout, just not an event the rules read
        ({"winlog": {"event_id": 11}}, False),
        ({"event_data": {}}, False),
        ({"EventID": 1, "event": {"category": "process"}}, False),  # ECS: categorized already
        ({"EventID": 1, "event.category": "process"}, False),
        ({"message": "EventID 1"}, False),
    ],
)
def test_windows_events_in_an_unknown_layout_are_recognised(doc: dict[str, Any], unknown: bool) -> None:
    assert unmapped_windows_layout(doc) is unknown
