"""Golden tests of ``normalize`` on raw Windows Security events, and a Security sequence rule end to end.

The events are hand-written in the shape Winlogbeat 8 puts on Kafka (``winlog.event_data`` strings,
``event.code``/``event.action``/``event.outcome`` set by the Beat); the expected fields follow
Elastic's Security ingest pipeline (see app/core/normalize/security.py). Each golden test asserts
the exact set of fields the mapping adds or changes, that no original field disappears, and that
the input is not modified.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from app.core.normalize import DERIVED_FIELDS, normalize, unmapped_windows_layout
from app.core.normalize.security import java_long_decode, split_4688_command_line
from tests.support.detection import compile_query, detect
from tests.support.mapping import mapped_changes

HOST_ID = "2f6d81c4-7a9e-4c0b-b1d3-5e8a90c4d7f2"
DC_HOST_ID = "9b14e0d7-3c52-4f8a-a6e9-0d2c7b5f1e48"
DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"
OPERATOR_SID = f"{DOMAIN_SID}-1107"
LOGON_ID = "0x5a3c1f2"
SUBJECT = {
    "SubjectUserSid": OPERATOR_SID,
    "SubjectUserName": "helpdesk.op",
    "SubjectDomainName": "CORP",
    "SubjectLogonId": LOGON_ID,
}


def security_event(
    event_id: str,
    task: str,
    event_data: dict[str, Any],
    *,
    at: str = "2024-05-02T08:14:07.512Z",
    host_id: str = HOST_ID,
    computer: str = "srv-app-02.corp.example",
    keywords: tuple[str, ...] = ("Audit Success",),
) -> dict[str, Any]:
    """A raw Security record as Winlogbeat 8 ships it (no ingest pipeline has run)."""
    outcome = "failure" if "Audit Failure" in keywords else "success"
    return {
        "@timestamp": at,
        "agent": {"type": "winlogbeat", "version": "8.13.4", "name": computer.split(".")[0].upper()},
        "ecs": {"version": "8.0.0"},
        "host": {"id": host_id, "name": computer, "hostname": computer.split(".")[0].upper()},
        "event": {
            "code": event_id,
            "action": task,
            "kind": "event",
            "outcome": outcome,
            "provider": "Microsoft-Windows-Security-Auditing",
            "created": "2024-05-02T08:14:08.004Z",
        },
        "log": {"level": "information"},
        "winlog": {
            "api": "wineventlog",
            "channel": "Security",
            "computer_name": computer,
            "event_data": event_data,
            "event_id": event_id,
            "keywords": list(keywords),
            "opcode": "Info",
            "process": {"pid": 704, "thread": {"id": 5212}},
            "provider_guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}",
            "provider_name": "Microsoft-Windows-Security-Auditing",
            "record_id": 8812410,
            "task": task,
        },
    }


# -- raw events, one per mapped event ID -----------------------------------------------------------


def network_logon(**overrides: Any) -> dict[str, Any]:
    """4624: helpdesk.op logs on over the network (NTLM) from a workstation."""
    data = {
        "SubjectUserSid": "S-1-0-0",
        "SubjectUserName": "-",
        "SubjectDomainName": "-",
        "SubjectLogonId": "0x0",
        "TargetUserSid": OPERATOR_SID,
        "TargetUserName": "helpdesk.op",
        "TargetDomainName": "CORP",
        "TargetLogonId": LOGON_ID,
        "LogonType": "3",
        "LogonProcessName": "NtLmSsp ",
        "AuthenticationPackageName": "NTLM",
        "WorkstationName": "WS-OPS-07",
        "LogonGuid": "{00000000-0000-0000-0000-000000000000}",
        "TransmittedServices": "-",
        "LmPackageName": "NTLM V2",
        "KeyLength": "128",
        "ProcessId": "0x0",
        "ProcessName": "-",
        "IpAddress": "10.20.30.41",
        "IpPort": "50322",
        "ImpersonationLevel": "%%1833",
        "RestrictedAdminMode": "-",
        "VirtualAccount": "%%1843",
        "TargetLinkedLogonId": "0x0",
        "ElevatedToken": "%%1842",
    }
    return security_event("4624", "Logon", {**data, **overrides})


def special_logon() -> dict[str, Any]:
    privileges = "SeSecurityPrivilege\n\t\t\tSeBackupPrivilege\n\t\t\tSeRestorePrivilege\n\t\t\tSeDebugPrivilege"
    return security_event("4672", "Special Logon", {**SUBJECT, "PrivilegeList": privileges})


def process_creation(**overrides: Any) -> dict[str, Any]:
    data = {
        **SUBJECT,
        "NewProcessId": "0x1a2c",
        "NewProcessName": "C:\\Windows\\System32\\net.exe",
        "TokenElevationType": "%%1936",
        "ProcessId": "0x1f4c",
        "CommandLine": '"C:\\Windows\\system32\\net.exe" user "Backup Operator" /domain',
        "TargetUserSid": "S-1-0-0",
        "TargetUserName": "-",
        "TargetDomainName": "-",
        "TargetLogonId": "0x0",
        "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
        "MandatoryLabel": "S-1-16-12288",
    }
    return security_event("4688", "Process Creation", {**data, **overrides})


def service_installed(**overrides: Any) -> dict[str, Any]:
    data = {
        **SUBJECT,
        "ServiceName": "UpdSvcHelper",
        "ServiceFileName": "%SystemRoot%\\Temp\\updsvc.exe -k netsvcs",
        "ServiceType": "0x10",
        "ServiceStartType": "3",
        "ServiceAccount": "LocalSystem",
        "ClientProcessStartKey": "16888498602640021",
        "ClientProcessId": "1276",
        "ParentProcessId": "704",
    }
    return security_event("4697", "Security System Extension", {**data, **overrides})


TASK_NAME = "\\Microsoft\\Windows\\Maintenance\\CacheRefresh"
TASK_XML = (
    '<?xml version="1.0" encoding="UTF-16"?>\r\n<Task version="1.2" '
    'xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task"><Actions Context="Author"><Exec>'
    "<Command>C:\\Windows\\Temp\\updsvc.exe</Command></Exec></Actions></Task>"
)


def scheduled_task(event_id: str) -> dict[str, Any]:
    data = {
        **SUBJECT,
        "TaskName": TASK_NAME,
        "TaskContent": TASK_XML,
        "ClientProcessStartKey": "16888498602640034",
        "ClientProcessId": "4410",
        "ParentProcessId": "1196",
        "RpcCallClientLocality": "0",
        "FQDN": "srv-app-02.corp.example",
    }
    return security_event(event_id, "Other Object Access Events", data)


def password_reset(**overrides: Any) -> dict[str, Any]:
    data = {
        **SUBJECT,
        "TargetUserName": "adm.jsmith",
        "TargetDomainName": "CORP",
        "TargetSid": f"{DOMAIN_SID}-1142",
    }
    return security_event("4724", "User Account Management", {**data, **overrides})


def tgt_request(**overrides: Any) -> dict[str, Any]:
    data = {
        "TargetUserName": "helpdesk.op",
        "TargetDomainName": "CORP",
        "TargetSid": OPERATOR_SID,
        "ServiceName": "krbtgt",
        "ServiceSid": f"{DOMAIN_SID}-502",
        "TicketOptions": "0x40810010",
        "Status": "0x0",
        "TicketEncryptionType": "0x12",
        "PreAuthType": "2",
        "IpAddress": "::ffff:10.20.30.41",
        "IpPort": "50331",
        "CertIssuerName": "",
        "CertSerialNumber": "",
        "CertThumbprint": "",
    }
    return security_event(
        "4768",
        "Kerberos Authentication Service",
        {**data, **overrides},
        host_id=DC_HOST_ID,
        computer="dc01.corp.example",
    )


def service_ticket_request(**overrides: Any) -> dict[str, Any]:
    data = {
        "TargetUserName": "helpdesk.op@CORP.EXAMPLE",
        "TargetDomainName": "CORP.EXAMPLE",
        "ServiceName": "FS01$",
        "ServiceSid": f"{DOMAIN_SID}-1605",
        "TicketOptions": "0x40810000",
        "TicketEncryptionType": "0x17",
        "IpAddress": "::ffff:10.20.30.41",
        "IpPort": "50342",
        "Status": "0x0",
        "LogonGuid": "{8a4b2f1e-6d3c-9e07-41b5-c2d8e6f09a13}",
        "TransmittedServices": "-",
    }
    return security_event(
        "4769",
        "Kerberos Service Ticket Operations",
        {**data, **overrides},
        host_id=DC_HOST_ID,
        computer="dc01.corp.example",
    )


def share_access(**overrides: Any) -> dict[str, Any]:
    data = {
        **SUBJECT,
        "ObjectType": "File",
        "IpAddress": "10.20.30.41",
        "IpPort": "50355",
        "ShareName": "\\\\*\\ADMIN$",
        "ShareLocalPath": "\\??\\C:\\Windows",
        "RelativeTargetName": "Temp\\updsvc.exe",
        "AccessMask": "0x2",
        "AccessList": "%%4417\n\t\t\t\t",
        "AccessReason": "%%4417: %%1801\tD:(A;;FA;;;BA)\n\t\t\t\t",
    }
    return security_event("5145", "Detailed File Share", {**data, **overrides})


# -- expected mappings -----------------------------------------------------------------------------

OPERATOR = {
    "user.id": OPERATOR_SID,
    "user.name": "helpdesk.op",
    "user.domain": "CORP",
    "related.user": ["helpdesk.op"],
}
SUBJECT_FIELDS = {**OPERATOR, "winlog.logon.id": LOGON_ID}
WINLOGBEAT = {"event.module": "security"}


def test_network_logon() -> None:
    assert mapped_changes(network_logon()) == {
        **WINLOGBEAT,
        "event.category": ["authentication"],
        "event.type": ["start"],
        "event.action": "logged-in",
        **OPERATOR,
        # The pipeline takes the logon ID of 4624 from the Subject (the requesting account), not the new logon.
        "winlog.logon.id": "0x0",
        "winlog.logon.type": "Network",
        "process.pid": 0,
        "source.ip": "10.20.30.41",
        "source.port": 50322,
        "source.domain": "WS-OPS-07",
        "related.ip": ["10.20.30.41"],
    }


def test_special_privileges() -> None:
    assert mapped_changes(special_logon()) == {
        **WINLOGBEAT,
        "event.category": ["iam"],
        "event.type": ["admin"],
        "event.action": "logged-in-special",
        **SUBJECT_FIELDS,
        "winlog.event_data.PrivilegeList": [
            "SeSecurityPrivilege",
            "SeBackupPrivilege",
            "SeRestorePrivilege",
            "SeDebugPrivilege",
        ],
    }


def test_process_creation() -> None:
    assert mapped_changes(process_creation()) == {
        **WINLOGBEAT,
        "event.category": ["process"],
        "event.type": ["start"],
        "event.action": "created-process",
        **SUBJECT_FIELDS,
        "user.effective.id": "S-1-0-0",
        "process.pid": 0x1A2C,
        "process.executable": "C:\\Windows\\System32\\net.exe",
        "process.name": "net.exe",
        "process.parent.pid": 0x1F4C,
        "process.parent.executable": "C:\\Windows\\System32\\cmd.exe",
        "process.parent.name": "cmd.exe",
        "process.command_line": '"C:\\Windows\\system32\\net.exe" user "Backup Operator" /domain',
        # Split at blanks outside quotes, the quotes kept: not the Sysmon pipeline's argv rules.
        "process.args": ['"C:\\Windows\\system32\\net.exe"', "user", '"Backup Operator"', "/domain"],
        "process.args_count": 4,
    }


def test_service_installed() -> None:
    assert mapped_changes(service_installed()) == {
        **WINLOGBEAT,
        "event.category": ["iam", "configuration"],
        "event.type": ["admin", "change"],
        "event.action": "service-installed",
        **SUBJECT_FIELDS,
        "service.name": "UpdSvcHelper",
        "service.type": "Win32 Own Process",
    }


@pytest.mark.parametrize(
    ("event_id", "event_type", "action"),
    [("4698", "creation", "scheduled-task-created"), ("4699", "deletion", "scheduled-task-deleted")],
)
def test_scheduled_task(event_id: str, event_type: str, action: str) -> None:
    assert mapped_changes(scheduled_task(event_id)) == {
        **WINLOGBEAT,
        "event.category": ["iam", "configuration"],
        "event.type": [event_type, "admin"],
        "event.action": action,
        **SUBJECT_FIELDS,
        "winlog.scheduled_task.name": TASK_NAME,
    }


def test_password_reset() -> None:
    assert mapped_changes(password_reset()) == {
        **WINLOGBEAT,
        "event.category": ["iam"],
        "event.type": ["user", "change"],
        "event.action": "reset-password",
        **SUBJECT_FIELDS,
        "user.target.id": f"{DOMAIN_SID}-1142",
        "user.target.name": "adm.jsmith",
        "user.target.domain": "CORP",
        "related.user": ["helpdesk.op", "adm.jsmith"],
    }


KERBEROS_CLIENT = {
    "source.ip": "10.20.30.41",  # the IPv4-mapped IPv6 address the DC logs, unwrapped
    "related.ip": ["10.20.30.41"],
    "winlog.event_data.StatusDescription": "KDC_ERR_NONE",
}


def test_tgt_request() -> None:
    assert mapped_changes(tgt_request()) == {
        **WINLOGBEAT,
        "event.category": ["authentication"],
        "event.type": ["start"],
        "event.action": "kerberos-authentication-ticket-requested",
        **OPERATOR,
        **KERBEROS_CLIENT,
        "source.port": 50331,
        "service.name": "krbtgt",
        "winlog.event_data.TicketOptionsDescription": ["Forwardable", "Renewable", "Name-canonicalize", "Renewable-ok"],
        "winlog.event_data.TicketEncryptionTypeDescription": "AES256-CTS-HMAC-SHA1-96",
    }


def test_service_ticket_request() -> None:
    assert mapped_changes(service_ticket_request()) == {
        **WINLOGBEAT,
        "event.category": ["authentication"],
        "event.type": ["start"],
        "event.action": "kerberos-service-ticket-requested",
        "user.name": "helpdesk.op",  # what precedes the "@"
        "user.domain": "CORP.EXAMPLE",
        "related.user": ["helpdesk.op"],
        **KERBEROS_CLIENT,
        "source.port": 50342,
        "service.name": "FS01$",
        "winlog.event_data.TicketOptionsDescription": ["Forwardable", "Renewable", "Name-canonicalize"],
        "winlog.event_data.TicketEncryptionTypeDescription": "RC4-HMAC",
    }


def test_share_access() -> None:
    assert mapped_changes(share_access()) == {
        **WINLOGBEAT,
        "event.category": ["network", "file"],
        "event.type": ["info", "access"],
        "event.action": "network-share-object-access-checked",
        **SUBJECT_FIELDS,
        "source.ip": "10.20.30.41",
        "source.port": 50355,
        "related.ip": ["10.20.30.41"],
        "file.name": "Temp\\updsvc.exe",
        "file.directory": "\\??\\C:\\Windows",
        "file.path": "\\??\\C:\\Windows\\Temp\\updsvc.exe",
        "file.target_path": "\\\\*\\ADMIN$\\Temp\\updsvc.exe",
        "file.extension": "exe",
    }


def test_elastic_agent_takes_module_and_dataset_from_the_integration() -> None:
    doc = password_reset()
    doc["data_stream"] = {"type": "logs", "dataset": "system.security", "namespace": "default"}
    doc["event"].update(module="system", dataset="system.security")
    doc["elastic_agent"] = {"id": "f1c9e2a0-55b4-4d7e-9a63-2b8f0c1d4e57", "version": "8.13.4", "snapshot": False}
    changes = mapped_changes(doc)
    assert "event.module" not in changes
    assert changes["event.action"] == "reset-password"
    assert changes["user.target.name"] == "adm.jsmith"


# -- what is recognized ----------------------------------------------------------------------------


def test_forwarded_events_are_recognized_by_provider() -> None:
    doc = network_logon()
    doc["winlog"]["channel"] = "ForwardedEvents"
    assert normalize(doc)["event"]["action"] == "logged-in"


def test_security_channel_suffices_without_a_provider() -> None:
    doc = network_logon()
    del doc["winlog"]["provider_name"]
    assert normalize(doc)["winlog"]["logon"]["type"] == "Network"


@pytest.mark.parametrize("provider", ["Microsoft-Windows-Eventlog", "Microsoft-Windows-Sysmon", "", 7, ["x"]])
def test_other_providers_are_not_mapped_as_security(provider: Any) -> None:
    doc = network_logon()
    doc["winlog"]["provider_name"] = provider
    assert normalize(doc) is doc


def test_event_id_as_an_integer_and_from_event_code() -> None:
    doc = network_logon()
    doc["winlog"]["event_id"] = 4624
    assert normalize(doc)["event"]["category"] == ["authentication"]
    del doc["winlog"]["event_id"]
    assert normalize(doc)["event"]["category"] == ["authentication"]


@pytest.mark.parametrize("event_id", ["4625", "4634", "4663", "5156", "1102", "04624", " 4624", 4624.0, True, None])
def test_other_event_ids_are_left_alone(event_id: Any) -> None:
    doc = network_logon()
    doc["winlog"]["event_id"] = event_id
    doc["event"]["code"] = None
    assert normalize(doc) is doc


@pytest.mark.parametrize(
    "marker",
    [
        {"event": {"code": "4624", "category": ["authentication"], "action": "logged-in"}},
        {"event": {"code": "4624", "type": ["start"]}},
        {"event.category": "authentication"},
        {"process": {"pid": 612}},
    ],
)
def test_already_mapped_events_are_left_alone(marker: dict[str, Any]) -> None:
    # Winlogbeat 7's security module, or a pipeline that already ran: event_data is still attached.
    doc = {**network_logon(), **marker}
    before = copy.deepcopy(doc)
    assert normalize(doc) is doc
    assert doc == before


@pytest.mark.parametrize("event_data", [None, "x", ["LogonType", "3"]])
def test_categorized_even_without_an_event_data_object(event_data: Any) -> None:
    # The pipeline categorizes by event.code alone.
    doc = network_logon()
    doc["winlog"]["event_data"] = event_data
    assert mapped_changes(doc) == {
        **WINLOGBEAT,
        "event.category": ["authentication"],
        "event.type": ["start"],
        "event.action": "logged-in",
    }


def test_security_layout_is_not_an_unknown_windows_layout() -> None:
    assert not unmapped_windows_layout(network_logon())
    doc = network_logon()
    doc["winlog"]["event_id"] = "4663"
    assert not unmapped_windows_layout(doc)


# -- values ----------------------------------------------------------------------------------------


def test_no_value_markers_are_ignored() -> None:
    out = normalize(network_logon(IpAddress="-", IpPort="-", WorkstationName="", TargetDomainName="-"))
    assert "source" not in out and "related" in out and "ip" not in out["related"]
    assert "domain" not in out["user"]


def test_wrong_types_in_event_data_are_left_out() -> None:
    doc = network_logon(LogonType=3, IpPort=50322, IpAddress=168434217, TargetUserName=["helpdesk.op"], ProcessId=612)
    changes = mapped_changes(doc)
    assert "winlog.logon.type" not in changes and "source.port" not in changes and "source.ip" not in changes
    assert "user.name" not in changes and "related.user" not in changes
    # The pipeline takes a process ID that is already a number as it is.
    assert changes["process.pid"] == 612


@pytest.mark.parametrize(
    ("logon_type", "expected"),
    [
        ("2", "Interactive"),
        ("3", "Network"),
        ("4", "Batch"),
        ("5", "Service"),
        ("7", "Unlock"),
        ("8", "NetworkCleartext"),
        ("9", "NewCredentials"),
        ("10", "RemoteInteractive"),
        ("11", "CachedInteractive"),
        ("0", None),
        ("6", None),
        ("12", None),
        ("03", None),
        ("Network", None),
    ],
)
def test_logon_types(logon_type: str, expected: str | None) -> None:
    out = normalize(network_logon(LogonType=logon_type))
    assert out["winlog"].get("logon", {}).get("type") == expected


@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("10.20.30.41", "10.20.30.41"),
        ("::ffff:10.20.30.41", "10.20.30.41"),
        ("[::ffff:10.20.30.41]:445", "10.20.30.41"),
        ("::FFFF:10.20.30.41", "::FFFF:10.20.30.41"),  # the pipeline's pattern is case-sensitive; still an IPv6
        ("::1", "::1"),
        ("fe80::9c3d:51ff:fe2a:7b10", "fe80::9c3d:51ff:fe2a:7b10"),
        ("fe80::1%12", "fe80::1%12"),  # Elasticsearch ignores the scope ID
        ("fe80::1%", None),  # an empty scope ID is no address
        ("10.20.30.041", None),
        ("WS-OPS-07", None),
        ("::ffff:999.1.1.1", None),
    ],
)
def test_source_ip(address: str, kept: str | None) -> None:
    out = normalize(network_logon(IpAddress=address))
    assert out.get("source", {}).get("ip") == kept
    assert out.get("related", {}).get("ip") == ([kept] if kept else None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0x1f4", 500),
        ("0X1F4", 500),
        ("#1f4", 500),
        ("500", 500),
        ("0764", 500),  # a leading zero means octal to Long.decode
        ("0", 0),
        ("00", 0),
        ("-0x10", -16),
        ("+5", 5),
        ("0x7fffffffffffffff", 2**63 - 1),
        ("-0x8000000000000000", -(2**63)),
        ("0x8000000000000000", None),
        ("0" * 5000 + "1", 1),
        ("9" * 30, None),
        ("09", None),
        ("0x", None),
        ("0x-1", None),
        ("-", None),
        ("", None),
        (" 1", None),
        ("1 ", None),
        ("0x1g", None),
        ("١٢", None),
        (None, None),
    ],
)
def test_java_long_decode(text: str | None, expected: int | None) -> None:
    assert java_long_decode(text) == expected


@pytest.mark.parametrize(
    ("command_line", "args"),
    [
        ("cmd.exe /c whoami", ["cmd.exe", "/c", "whoami"]),
        ('"C:\\Program Files\\x.exe" -a "b c"', ['"C:\\Program Files\\x.exe"', "-a", '"b c"']),
        ('a"b c"d e', ['a"b c"d', "e"]),
        ("a  b", ["a", "", "b"]),
        ("a ", ["a", ""]),
        (" a", ["", "a"]),
        ("a\tb\u3000c\u00a0d", ["a", "b", "c\u00a0d"]),
        ('"unterminated quote b', ['"unterminated quote b']),
        ("x", ["x"]),
    ],
)
def test_4688_command_line_split(command_line: str, args: list[str]) -> None:
    assert split_4688_command_line(command_line) == args


def test_empty_arguments_are_dropped_but_counted() -> None:
    # The pipeline counts the arguments before its final clean-up deletes the empty ones.
    out = normalize(process_creation(CommandLine="net  user  /domain "))
    assert out["process"]["args"] == ["net", "user", "/domain"]
    assert out["process"]["args_count"] == 6


def test_blank_values_are_dropped() -> None:
    out = normalize(process_creation(CommandLine="   ", NewProcessName="C:\\Windows\\", SubjectUserName=" "))
    assert "command_line" not in out["process"] and "args" not in out["process"]
    assert out["process"]["args_count"] == 4
    assert out["process"]["executable"] == "C:\\Windows\\" and "name" not in out["process"]
    assert "name" not in out["user"] and "related" not in out


def test_process_name_without_a_backslash_is_the_whole_executable() -> None:
    assert normalize(process_creation(NewProcessName="net.exe"))["process"]["name"] == "net.exe"


def test_process_creation_with_a_target_account() -> None:
    doc = process_creation(TargetUserSid=f"{DOMAIN_SID}-1142", TargetUserName="adm.jsmith", TargetDomainName="CORP")
    out = normalize(doc)
    assert out["user"]["effective"] == {"id": f"{DOMAIN_SID}-1142", "name": "adm.jsmith", "domain": "CORP"}
    assert out["related"]["user"] == ["helpdesk.op", "adm.jsmith"]


def test_password_reset_of_a_user_principal_name() -> None:
    out = normalize(password_reset(TargetUserName="adm.jsmith@corp.example"))
    assert out["user"]["target"]["name"] == "adm.jsmith"
    # The pipeline appends the full TargetUserName as well.
    assert out["related"]["user"] == ["helpdesk.op", "adm.jsmith", "adm.jsmith@corp.example"]


def test_an_existing_user_keeps_its_value_and_the_logged_on_account_becomes_the_target() -> None:
    doc = network_logon()
    doc["user"] = {"name": "svc-collector"}
    out = normalize(doc)
    assert out["user"] == {
        "name": "svc-collector",
        "id": OPERATOR_SID,
        "domain": "CORP",
        "target": {"name": "helpdesk.op"},
    }
    assert doc["user"] == {"name": "svc-collector"}


@pytest.mark.parametrize(
    ("service_type", "expected"),
    [("0x1", "Kernel Driver"), ("0x2", "File System Driver"), ("0x120", "Interactive Share Process"), ("0x50", None)],
)
def test_service_types(service_type: str, expected: str | None) -> None:
    assert normalize(service_installed(ServiceType=service_type))["service"].get("type") == expected


@pytest.mark.parametrize(
    ("overrides", "options", "encryption", "status"),
    [
        ({"TicketOptions": "0x60810010"}, ["Forwardable", "Forwarded", "Renewable", "Name-canonicalize", "Renewable-ok"], "AES256-CTS-HMAC-SHA1-96", "KDC_ERR_NONE"),
        ({"TicketOptions": "0x0"}, None, "AES256-CTS-HMAC-SHA1-96", "KDC_ERR_NONE"),
        ({"TicketOptions": "forwardable"}, None, "AES256-CTS-HMAC-SHA1-96", "KDC_ERR_NONE"),
        ({"TicketEncryptionType": "0X17"}, ["Forwardable", "Renewable", "Name-canonicalize", "Renewable-ok"], "RC4-HMAC", "KDC_ERR_NONE"),
        ({"TicketEncryptionType": "0xffffffff", "Status": "0x6"}, ["Forwardable", "Renewable", "Name-canonicalize", "Renewable-ok"], "FAIL", "KDC_ERR_C_PRINCIPAL_UNKNOWN"),
        ({"TicketEncryptionType": "0x99", "Status": "0x1a"}, ["Forwardable", "Renewable", "Name-canonicalize", "Renewable-ok"], None, None),
        ({"Status": "0x1A"}, ["Forwardable", "Renewable", "Name-canonicalize", "Renewable-ok"], "AES256-CTS-HMAC-SHA1-96", "KDC_ERR_SERVER_NOMATCH"),
    ],
)  # fmt: skip
def test_kerberos_codes(
    overrides: dict[str, str], options: list[str] | None, encryption: str | None, status: str | None
) -> None:
    data = normalize(tgt_request(**overrides))["winlog"]["event_data"]
    assert data.get("TicketOptionsDescription") == options
    assert data.get("TicketEncryptionTypeDescription") == encryption
    assert data.get("StatusDescription") == status


def test_privilege_list_separators() -> None:
    doc = special_logon()
    doc["winlog"]["event_data"]["PrivilegeList"] = "\n\t\t\tSeTcbPrivilege \t SeDebugPrivilege\r\n"
    out = normalize(doc)
    assert out["winlog"]["event_data"]["PrivilegeList"] == ["SeTcbPrivilege", "SeDebugPrivilege"]


def test_share_access_without_a_relative_name_has_only_the_directory() -> None:
    changes = mapped_changes(share_access(RelativeTargetName="", ShareName="\\\\*\\IPC$", ShareLocalPath="-"))
    assert not any(path.startswith("file.") for path in changes)
    changes = mapped_changes(share_access(RelativeTargetName="svcctl", ShareName="\\\\*\\IPC$", ShareLocalPath="-"))
    assert {path: value for path, value in changes.items() if path.startswith("file.")} == {
        "file.name": "svcctl",
        "file.target_path": "\\\\*\\IPC$\\svcctl",
    }


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [(["Audit Success"], "success"), (["Audit Failure"], "failure"), (["Audit Success", "Audit Failure"], "failure"), ([], None), ("Audit Success", None)],
)  # fmt: skip
def test_outcome_from_keywords_when_the_shipper_sent_none(keywords: Any, expected: str | None) -> None:
    doc = network_logon()
    del doc["event"]["outcome"]
    doc["winlog"]["keywords"] = keywords
    assert normalize(doc)["event"].get("outcome") == expected


def test_the_shippers_outcome_is_kept() -> None:
    doc = network_logon()
    doc["winlog"]["keywords"] = ["Audit Failure"]
    assert normalize(doc)["event"]["outcome"] == "success"


def test_mapped_lists_are_not_shared_between_events() -> None:
    first, second = normalize(network_logon()), normalize(network_logon())
    first["event"]["category"].append("x")
    assert second["event"]["category"] == ["authentication"]


def test_computed_fields_are_derived_for_the_prefilter() -> None:
    # Values from code tables, decoded numbers and the keyword-based outcome are not in the raw bytes.
    assert {
        "event.outcome",
        "winlog.logon.type",
        "service.type",
        "winlog.event_data.TicketOptionsDescription",
        "winlog.event_data.TicketEncryptionTypeDescription",
        "winlog.event_data.StatusDescription",
        "process.pid",
        "process.parent.pid",
        "source.port",
    } <= DERIVED_FIELDS


# -- a Security sequence rule end to end ------------------------------------------------------------

# In the style of Elastic's "Account Password Reset Remotely": a network logon, then a password reset
# by that logon session, joined on the logon ID (a winlog.event_data string in both events).
PASSWORD_RESET_RULE = compile_query(
    "sequence by winlog.computer_name with maxspan=1m"
    ' [authentication where event.action == "logged-in" and winlog.logon.type : "Network" and'
    ' event.outcome == "success" and source.ip != null and not source.ip in ("127.0.0.1", "::1")]'
    " by winlog.event_data.TargetLogonId"
    ' [iam where event.action == "reset-password" and winlog.event_data.TargetUserName : "adm*"]'
    " by winlog.event_data.SubjectLogonId",
    name="Remote password reset (test)",
    rule_id="remote-password-reset-test",
)
RESET_AT = "2024-05-02T08:14:31.077Z"


def reset_after_logon() -> dict[str, Any]:
    """The 4724 of the logon session of ``network_logon()``, 24 seconds after it."""
    reset = password_reset()
    reset["@timestamp"] = RESET_AT
    return reset


def test_remote_password_reset_fires_on_raw_records() -> None:
    # Raw bytes through the prefilter: "Network", "logged-in" and "reset-password" are nowhere in
    # the records, so the rule must not require them there (DERIVED_FIELDS).
    logon, reset = network_logon(), reset_after_logon()
    logon["message"] = "An account was successfully logged on."
    reset["message"] = "An attempt was made to reset an account's password."
    found = detect([orjson.dumps(logon), orjson.dumps(reset)], [PASSWORD_RESET_RULE])
    assert len(found.alerts) == 1
    assert set(found.keys.values()) == {("srv-app-02.corp.example", LOGON_ID)}
    assert found.rejections == []


def _other_session(doc: dict[str, Any]) -> None:
    doc["winlog"]["event_data"]["SubjectLogonId"] = "0x5a3c1f9"


def _late(doc: dict[str, Any]) -> None:
    doc["@timestamp"] = "2024-05-02T08:15:08.000Z"


def _other_host(doc: dict[str, Any]) -> None:
    doc["winlog"]["computer_name"] = "srv-app-03.corp.example"


@pytest.mark.parametrize(
    ("logon_overrides", "change_reset"),
    [
        ({"IpAddress": "127.0.0.1"}, None),
        ({"IpAddress": "::1"}, None),
        ({"IpAddress": "-"}, None),
        ({"LogonType": "10"}, None),
        ({}, _other_session),
        ({}, _late),
        ({}, _other_host),
    ],
    ids=[
        "loopback",
        "ipv6-loopback",
        "no-address",
        "remote-interactive",
        "other-session",
        "after-maxspan",
        "other-host",
    ],
)
def test_near_misses_do_not_fire(logon_overrides: dict[str, str], change_reset: Any) -> None:
    logon, reset = network_logon(**logon_overrides), reset_after_logon()
    if change_reset is not None:
        change_reset(reset)
    assert detect([logon, reset], [PASSWORD_RESET_RULE]).alerts == []


def test_a_failed_logon_outcome_does_not_fire() -> None:
    logon = network_logon()
    logon["event"]["outcome"] = "failure"
    assert detect([logon, reset_after_logon()], [PASSWORD_RESET_RULE]).alerts == []
