"""What Windows and Beats write the same way for both Winlogbeat shapes (7 with ECS, 8 raw)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eqlstream_dev.synthetic.fleet import Host, Process, User


@dataclass(frozen=True)
class Provider:
    """A Windows event log provider and the channel it logs to."""

    name: str
    guid: str
    channel: str
    version: int  # the schema version of its events (winlog.version)


SYSMON = Provider(
    "Microsoft-Windows-Sysmon", "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}", "Microsoft-Windows-Sysmon/Operational", 5
)
SECURITY = Provider("Microsoft-Windows-Security-Auditing", "{54849625-5478-4994-a5ba-3e3b0328c30d}", "Security", 2)
AUDIT_SUCCESS = "Audit Success"
SYSMON_SERVICE_PID = 3188


def beats_host(host: Host, *, name: str, mac: str) -> dict[str, Any]:
    """``host.*`` as Beats' add_host_metadata writes it (Winlogbeat 7 and 8 differ in name and MAC format)."""
    return {
        "architecture": "x86_64",
        "hostname": host.name.lower(),
        "id": host.id,
        "ip": [host.ip, "fe80::" + host.id[:4] + ":" + host.id[9:13]],
        "mac": [mac],
        "name": name,
        "os": {
            "build": host.build,
            "family": "windows",
            "kernel": f"10.0.{host.build} (WinBuild.160101.0800)",
            "name": host.os_variant,
            "platform": "windows",
            "type": "windows",
            "version": "10.0",
        },
    }


def sysmon_process_ref(proc: Process) -> dict[str, Any]:
    """``process.*`` of a Sysmon event about something a process did (not its start)."""
    return {"entity_id": proc.entity_id, "pid": proc.pid, "executable": proc.image.path, "name": proc.image.name}


def logon_event_data(user: User, logon_id: str, source_ip: str, source_port: int) -> dict[str, str]:
    """``winlog.event_data`` of a Kerberos network logon (Security event 4624)."""
    return {
        "SubjectUserSid": "S-1-0-0",
        "SubjectUserName": "-",
        "SubjectDomainName": "-",
        "SubjectLogonId": "0x0",
        "TargetUserSid": user.sid,
        "TargetUserName": user.name,
        "TargetDomainName": user.domain,
        "TargetLogonId": logon_id,
        "LogonType": "3",
        "LogonProcessName": "Kerberos",
        "AuthenticationPackageName": "Kerberos",
        "WorkstationName": "-",
        "KeyLength": "0",
        "ProcessId": "0x0",
        "ProcessName": "-",
        "IpAddress": source_ip,
        "IpPort": str(source_port),
        "ImpersonationLevel": "%%1833",
        "ElevatedToken": "%%1843",
    }
