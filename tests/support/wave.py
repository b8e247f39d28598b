"""A folder of rules in Elastic's upstream layout (tests/support/wave/, written for these tests) and,
for each rule, an attack and near misses, as the shippers send them.

The rules use what Elastic's Windows sequence rules use: sequence-level and per-stage ``by``,
3 stages, ``any``, ``maxspan`` from 30 s to 5 min, ``startsWith~``, ``cidrMatch``, ``like~``,
``in~``, ``?field``, null checks; their events come as Elastic Defend writes them, as raw Sysmon
(Winlogbeat 8) and as raw Windows Security events (Winlogbeat 8). Each near miss differs from its
attack in one thing the rule looks at.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

WAVE = Path(__file__).parent / "wave"
T0 = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)

Event = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """One rule's attack (its events in order) and near misses (each a list of events)."""

    rule_file: str
    attack: list[Event]
    near_misses: dict[str, list[Event]]


def at(seconds: float) -> str:
    """``@timestamp`` text ``seconds`` after T0, as Beats write it."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sysmon_time(seconds: float) -> str:
    """Sysmon's ``UtcTime`` text ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def changed(event: Event, path: str, value: Any) -> Event:
    """A copy of ``event`` with the dotted ``path`` set to ``value``."""
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = out
    for name in parents:
        node = node[name]
    node[last] = value
    return out


# -- executable written over SMB, then started (Elastic Defend) ------------------------------------

_DEFEND_HOST = {"id": "6f1e9a2c-host-fs01", "name": "fs01", "os": {"type": "windows"}}
_SMB_WRITE = {
    "@timestamp": at(0),
    "agent": {"type": "endpoint"},
    "host": _DEFEND_HOST,
    "event": {"category": ["file"], "type": ["creation"], "action": "creation", "dataset": "endpoint.events.file"},
    "process": {"pid": 4, "name": "System", "entity_id": "sys-4"},
    "file": {"path": "C:\\Windows\\Temp\\upd-7731.exe", "name": "upd-7731.exe", "extension": "exe"},
}
_TEMP_START = {
    "@timestamp": at(20),
    "agent": {"type": "endpoint"},
    "host": _DEFEND_HOST,
    "event": {"category": ["process"], "type": ["start"], "action": "start", "dataset": "endpoint.events.process"},
    "process": {
        "pid": 6120,
        "name": "upd-7731.exe",
        "entity_id": "proc-6120",
        "executable": "C:\\Windows\\Temp\\upd-7731.exe",
        "parent": {"name": "services.exe"},
    },
}
SMB_FILE_THEN_EXECUTION = Scenario(
    "lateral_movement_smb_file_then_execution.toml",
    [_SMB_WRITE, _TEMP_START],
    {
        "written by a local process": [changed(_SMB_WRITE, "process.pid", 5120), _TEMP_START],
        "another file started": [
            _SMB_WRITE,
            changed(_TEMP_START, "process.executable", "C:\\Windows\\Temp\\other.exe"),
        ],
        "started after maxspan": [_SMB_WRITE, changed(_TEMP_START, "@timestamp", at(61))],
    },
)


# -- rundll32 sets a Run key (raw Sysmon from Winlogbeat 8) ----------------------------------------

_WINLOGBEAT_HOST = {"id": "0d5c3b1a-host-ws07", "name": "ws07", "os": {"type": "windows", "family": "windows"}}


def _sysmon(event_id: str, seconds: float, data: dict[str, str]) -> Event:
    return {
        "@timestamp": at(seconds + 0.4),
        "agent": {"type": "winlogbeat", "version": "8.15.0"},
        "host": _WINLOGBEAT_HOST,
        "event": {"code": event_id, "provider": "Microsoft-Windows-Sysmon", "kind": "event"},
        "winlog": {
            "provider_name": "Microsoft-Windows-Sysmon",
            "channel": "Microsoft-Windows-Sysmon/Operational",
            "event_id": event_id,
            "computer_name": "ws07.corp.example",
            "event_data": {"UtcTime": sysmon_time(seconds), "RuleName": "-", **data},
        },
    }


_GUID = "{7c1f4a2b-3e5d-6f70-8a9b-0c1d2e3f4a5b}"
_RUNDLL_START = _sysmon(
    "1",
    0,
    {
        "ProcessGuid": _GUID,
        "ProcessId": "5532",
        "Image": "C:\\Windows\\System32\\rundll32.exe",
        "CommandLine": "rundll32.exe C:\\Users\\Public\\helper.dll,Start",
        "ParentImage": "C:\\Windows\\explorer.exe",
        "ParentProcessGuid": "{7c1f4a2b-0000-6f70-8a9b-0c1d2e3f0001}",
        "ParentProcessId": "4100",
        "User": "CORP\\dana",
    },
)
_RUN_KEY_SET = _sysmon(
    "13",
    6,
    {
        "EventType": "SetValue",
        "ProcessGuid": _GUID,
        "ProcessId": "5532",
        "Image": "C:\\Windows\\System32\\rundll32.exe",
        "TargetObject": "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\HelperUpdate",
        "Details": "C:\\Users\\Public\\helper.exe",
        "User": "CORP\\dana",
    },
)
RUNDLL32_RUN_KEY = Scenario(
    "persistence_rundll32_run_key.toml",
    [_RUNDLL_START, _RUN_KEY_SET],
    {
        "a user's Run key": [
            _RUNDLL_START,
            changed(
                _RUN_KEY_SET,
                "winlog.event_data.TargetObject",
                "HKU\\S-1-5-21-1-2-3-1104\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\HelperUpdate",
            ),
        ],
        "another process": [_RUNDLL_START, changed(_RUN_KEY_SET, "winlog.event_data.ProcessGuid", "{7c1f4a2b-9999}")],
        "set after maxspan": [_RUNDLL_START, changed(_RUN_KEY_SET, "winlog.event_data.UtcTime", sysmon_time(31))],
    },
)


# -- failed logon, network logon, then the PsExec service (Elastic Defend) -------------------------

_FAILED = {
    "@timestamp": at(0),
    "host": _DEFEND_HOST,
    "event": {"category": ["authentication"], "type": ["start"], "action": "log_on", "outcome": "failure"},
    "source": {"ip": "10.20.30.41"},
    "user": {"name": "admin"},
}
_NETWORK_LOGON = {
    "@timestamp": at(40),
    "host": _DEFEND_HOST,
    "event": {"category": ["authentication"], "type": ["start"], "action": "log_on", "outcome": "success"},
    "source": {"ip": "10.20.30.41"},
    "user": {"name": "admin"},
    "winlog": {"logon": {"type": "Network"}},
}
_PSEXESVC = {
    "@timestamp": at(75),
    "host": _DEFEND_HOST,
    "event": {"category": ["process"], "type": ["start"], "action": "start"},
    "process": {"name": "PSEXESVC.exe", "entity_id": "proc-7001", "executable": "C:\\Windows\\PSEXESVC.exe"},
    "user": {"name": "admin"},
}
LOGONS_THEN_PSEXESVC = Scenario(
    "lateral_movement_logons_then_psexesvc.toml",
    [_FAILED, _NETWORK_LOGON, _PSEXESVC],
    {
        "failure from the internet": [changed(_FAILED, "source.ip", "203.0.113.9"), _NETWORK_LOGON, _PSEXESVC],
        "interactive logon": [_FAILED, changed(_NETWORK_LOGON, "winlog.logon.type", "Interactive"), _PSEXESVC],
        "the backup account": [_FAILED, _NETWORK_LOGON, changed(_PSEXESVC, "user.name", "SVC_Backup")],
        "out of order": [_FAILED, _PSEXESVC, changed(_NETWORK_LOGON, "@timestamp", at(80))],
    },
)


# -- password reset over a network logon (raw Windows Security events from Winlogbeat 8) -----------

_DC = {"id": "9a8b7c6d-host-dc01", "name": "dc01", "os": {"type": "windows", "family": "windows"}}


def _security(event_id: str, seconds: float, data: dict[str, str]) -> Event:
    return {
        "@timestamp": at(seconds),
        "agent": {"type": "winlogbeat", "version": "8.15.0"},
        "host": _DC,
        "event": {"code": event_id, "provider": "Microsoft-Windows-Security-Auditing", "kind": "event"},
        "winlog": {
            "provider_name": "Microsoft-Windows-Security-Auditing",
            "channel": "Security",
            "event_id": event_id,
            "computer_name": "dc01.corp.example",
            "keywords": ["Audit Success"],
            "event_data": data,
        },
    }


_LOGON = _security(
    "4624",
    0,
    {
        "SubjectUserSid": "S-1-0-0",
        "SubjectUserName": "-",
        "SubjectDomainName": "-",
        "SubjectLogonId": "0x0",
        "TargetUserSid": "S-1-5-21-1-2-3-1105",
        "TargetUserName": "helpdesk",
        "TargetDomainName": "CORP",
        "TargetLogonId": "0x8f1a2b",
        "LogonType": "3",
        "LogonProcessName": "NtLmSsp ",
        "AuthenticationPackageName": "NTLM",
        "WorkstationName": "WS07",
        "IpAddress": "10.20.30.41",
        "IpPort": "51234",
        "ProcessId": "0x0",
        "ProcessName": "-",
    },
)
_RESET = _security(
    "4724",
    12,
    {
        "TargetUserName": "ceo",
        "TargetDomainName": "CORP",
        "TargetSid": "S-1-5-21-1-2-3-1001",
        "SubjectUserSid": "S-1-5-21-1-2-3-1105",
        "SubjectUserName": "helpdesk",
        "SubjectDomainName": "CORP",
        "SubjectLogonId": "0x8f1a2b",
    },
)
REMOTE_PASSWORD_RESET = Scenario(
    "lateral_movement_remote_password_reset.toml",
    [_LOGON, _RESET],
    {
        "local logon": [changed(_LOGON, "winlog.event_data.LogonType", "2"), _RESET],
        "from the host itself": [changed(_LOGON, "winlog.event_data.IpAddress", "127.0.0.1"), _RESET],
        "another session resets": [_LOGON, changed(_RESET, "winlog.event_data.SubjectLogonId", "0x1d2e")],
    },
)

SCENARIOS = [SMB_FILE_THEN_EXECUTION, RUNDLL32_RUN_KEY, LOGONS_THEN_PSEXESVC, REMOTE_PASSWORD_RESET]


def shifted(event: Event, seconds: float) -> Event:
    """``event`` moved ``seconds`` later (``@timestamp``, and Sysmon's ``UtcTime`` that replaces it)."""
    out = changed(event, "@timestamp", _moved(event["@timestamp"], seconds, "%Y-%m-%dT%H:%M:%S.%fZ"))
    data = out.get("winlog", {}).get("event_data", {})
    if "UtcTime" in data:
        data["UtcTime"] = _moved(data["UtcTime"], seconds, "%Y-%m-%d %H:%M:%S.%f")
    return out


def _moved(text: str, seconds: float, layout: str) -> str:
    moved = datetime.strptime(text, layout) + timedelta(seconds=seconds)
    return moved.strftime(layout)[:-3] + ("Z" if layout.endswith("Z") else "")


def stream(seconds: float = 0) -> tuple[list[Event], int]:
    """Every scenario's attack and near misses, ``seconds`` later than written, and the number of attacks.

    The groups overlap in time (so that the whole stream spans less than the allowed lateness) but
    cannot pair with each other: each has its own ``host.id`` and logon IDs, which every rule joins on.
    """
    groups = [group for scenario in SCENARIOS for group in (scenario.attack, *scenario.near_misses.values())]
    return [_apart(shifted(event, seconds), index) for index, group in enumerate(groups) for event in group], len(
        SCENARIOS
    )


def _apart(event: Event, group: int) -> Event:
    out = changed(event, "host.id", f"{event['host']['id']}-g{group}")
    data = out.get("winlog", {}).get("event_data", {})
    for name in ("TargetLogonId", "SubjectLogonId"):
        if name in data:
            data[name] = f"{data[name]}{group:02x}"
    return out
