"""Winlogbeat 8: raw Sysmon and Security records, and their twins as Elastic's ingest pipeline indexes them.

Winlogbeat 8 leaves the mapping to ECS to the Elasticsearch ingest pipeline, so the records on
Kafka carry only ``winlog.event_data`` strings. Each writer here puts those strings together and,
separately and from the same model objects, the ECS fields the pipeline would derive from them:
the twin. Never deriving the twin from the record is what makes the oracle's answer on the twins
an independent check of the product's normalizer.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from eqlstream_dev.synthetic.clock import NS_PER_MS, iso, sysmon_utc
from eqlstream_dev.synthetic.ecs import Event, Shipped, extension, parent_fields, pe_fields, registered_domain
from eqlstream_dev.synthetic.fleet import (
    LOCAL_SERVICE,
    NETWORK_SERVICE,
    SYSTEM,
    WORKING_DIRECTORY,
    Connection,
    Host,
    Process,
    User,
)
from eqlstream_dev.synthetic.windows import (
    AUDIT_SUCCESS,
    SECURITY,
    SYSMON,
    SYSMON_SERVICE_PID,
    Provider,
    beats_host,
    logon_event_data,
    sysmon_process_ref,
)

VERSION = "8.13.4"


@dataclass(frozen=True)
class _Record:
    """A Windows event log record as Winlogbeat 8 reads it, before any ingest pipeline ran."""

    provider: Provider
    event_id: int
    task: str  # the task's display name, which Winlogbeat ships as event.action
    time_ns: int  # when it happened: Sysmon's UtcTime, the record time for other providers
    written_ns: int  # when it was written to the log: Winlogbeat's @timestamp
    logged_by: int  # pid of the logging process (winlog.process.pid)
    data: dict[str, str]  # winlog.event_data: every value a string
    keywords: tuple[str, ...] = ()


# What Elastic's Sysmon ingest pipeline sets per event ID: event.category, event.type, event.action.
_SYSMON_PIPELINE_EVENTS: dict[int, tuple[list[str], list[str], str]] = {
    1: (["process"], ["start"], "Process creation"),
    3: (["network"], ["start", "connection", "protocol"], "Network connection"),
    11: (["file"], ["creation"], "FileCreate"),
    13: (["configuration", "registry"], ["change"], "RegistryEvent (Value Set)"),
    22: (["network"], ["connection", "protocol", "info"], "DNSEvent (DNS query)"),
}
# The pipeline first deletes event_data entries meaning "no value", then moves these into ECS
# fields or deletes them; the rest stay in winlog.event_data.
_NO_VALUE = frozenset({"", "-", "{00000000-0000-0000-0000-000000000000}"})
_SYSMON_PIPELINE_CONSUMED = frozenset(
    {
        "RuleName",
        "UtcTime",
        "ProcessGuid",
        "ProcessId",
        "Image",
        "CommandLine",
        "CurrentDirectory",
        "User",
        "Hashes",
        "OriginalFileName",
        "ParentProcessGuid",
        "ParentProcessId",
        "ParentImage",
        "ParentCommandLine",
        "TargetFilename",
        "TargetObject",
        "Protocol",
        "Initiated",
        "SourceIsIpv6",
        "SourceIp",
        "SourceHostname",
        "SourcePort",
        "SourcePortName",
        "DestinationIsIpv6",
        "DestinationIp",
        "DestinationHostname",
        "DestinationPort",
        "DestinationPortName",
        "QueryName",
        "QueryStatus",
        "QueryResults",
    }
)
# Port names Sysmon resolves (from the services file) for the ports the generator uses.
_PORT_NAMES = {135: "epmap", 443: "https", 3389: "ms-wbt-server"}
_WELL_KNOWN_LOGON_IDS = {SYSTEM.sid: "0x3e7", LOCAL_SERVICE.sid: "0x3e5", NETWORK_SERVICE.sid: "0x3e4"}


class Winlogbeat8Renderer:
    """Writes model events as the raw records Winlogbeat 8 ships, each with its twin."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def process_start(self, host: Host, proc: Process, ts_ns: int) -> Shipped:
        image, user, parent = proc.image, proc.user, proc.parent
        sha256 = image.digest("sha256")
        data = {
            "RuleName": "-",
            "UtcTime": sysmon_utc(ts_ns),
            "ProcessGuid": proc.entity_id,
            "ProcessId": str(proc.pid),
            "Image": image.path,
            "FileVersion": image.version,
            "Description": image.description,
            "Product": image.product,
            "Company": image.company,
            "OriginalFileName": image.original_name,
            "CommandLine": proc.command_line,
            "CurrentDirectory": WORKING_DIRECTORY,
            "User": _account(user),
            "LogonGuid": _logon_guid(host, user),
            "LogonId": _logon_id(user),
            "TerminalSessionId": "0",
            "IntegrityLevel": "System" if user.domain == SYSTEM.domain else "Medium",
            "Hashes": f"SHA256={sha256.upper()}",
        }
        process = {
            "args": list(proc.args),
            "args_count": len(proc.args),
            "command_line": proc.command_line,
            "entity_id": proc.entity_id,
            "executable": image.path,
            "hash": {"sha256": sha256},
            "name": image.name,
            "pe": pe_fields(image),
            "pid": proc.pid,
            "working_directory": WORKING_DIRECTORY,
        }
        if parent is not None:
            data.update(
                {
                    "ParentProcessGuid": parent.entity_id,
                    "ParentProcessId": str(parent.pid),
                    "ParentImage": parent.image.path,
                    "ParentCommandLine": parent.command_line,
                    "ParentUser": _account(parent.user),
                }
            )
            process["parent"] = parent_fields(parent)
        ecs = {"process": process, "user": _sysmon_user(user), "related": {"user": [user.name], "hash": [sha256]}}
        return self._sysmon_record(host, 1, "Process Create (rule: ProcessCreate)", ts_ns, data, ecs)

    def network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped:
        if conn.ended:
            raise ValueError("Sysmon reports connections when they start, never when they end")
        ipv6 = "true" if ":" in conn.local_ip else "false"
        local_name, remote_name = _PORT_NAMES.get(conn.local_port), _PORT_NAMES.get(conn.remote_port)
        # Sysmon puts the local socket in Source* and the peer in Destination*, whoever initiated.
        data = {
            "RuleName": "-",
            "UtcTime": sysmon_utc(ts_ns),
            "ProcessGuid": proc.entity_id,
            "ProcessId": str(proc.pid),
            "Image": proc.image.path,
            "User": _account(proc.user),
            "Protocol": conn.transport,
            "Initiated": "false" if conn.inbound else "true",
            "SourceIsIpv6": ipv6,
            "SourceIp": conn.local_ip,
            "SourceHostname": host.fqdn.lower(),
            "SourcePort": str(conn.local_port),
            "SourcePortName": local_name or "-",
            "DestinationIsIpv6": ipv6,
            "DestinationIp": conn.remote_ip,
            "DestinationHostname": "-",
            "DestinationPort": str(conn.remote_port),
            "DestinationPortName": remote_name or "-",
        }
        network = {
            "direction": "ingress" if conn.inbound else "egress",
            "transport": conn.transport,
            "type": "ipv6" if ipv6 == "true" else "ipv4",
        }
        if remote_name or local_name:
            network["protocol"] = remote_name or local_name
        ecs = {
            "network": network,
            "source": {"domain": host.fqdn.lower(), "ip": conn.local_ip, "port": conn.local_port},
            "destination": {"ip": conn.remote_ip, "port": conn.remote_port},
            "process": sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "related": {"ip": list(dict.fromkeys((conn.local_ip, conn.remote_ip))), "user": [proc.user.name]},
        }
        return self._sysmon_record(host, 3, "Network connection detected (rule: NetworkConnect)", ts_ns, data, ecs)

    def file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped:
        directory, name = path.rsplit("\\", 1)
        utc = sysmon_utc(ts_ns)
        data = {
            "RuleName": "-",
            "UtcTime": utc,
            "ProcessGuid": proc.entity_id,
            "ProcessId": str(proc.pid),
            "Image": proc.image.path,
            "TargetFilename": path,
            "CreationUtcTime": utc,
            "User": _account(proc.user),
        }
        file = {"directory": directory, "name": name, "path": path}
        if "." in name:
            file["extension"] = extension(name)
        ecs = {
            "file": file,
            "process": sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "related": {"user": [proc.user.name]},
        }
        return self._sysmon_record(host, 11, "File created (rule: FileCreate)", ts_ns, data, ecs)

    def registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, details: str) -> Shipped:
        path = f"{key}\\{value}"
        data = {
            "RuleName": "-",
            "EventType": "SetValue",
            "UtcTime": sysmon_utc(ts_ns),
            "ProcessGuid": proc.entity_id,
            "ProcessId": str(proc.pid),
            "Image": proc.image.path,
            "TargetObject": path,
            "Details": details,
            "User": _account(proc.user),
        }
        hive, hive_key = key.split("\\", 1)
        ecs = {
            "registry": {"hive": hive, "key": hive_key, "path": path, "value": value},
            "process": sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "related": {"user": [proc.user.name]},
        }
        return self._sysmon_record(host, 13, "Registry value set (rule: RegistryEvent)", ts_ns, data, ecs)

    def dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped:
        data = {
            "RuleName": "-",
            "UtcTime": sysmon_utc(ts_ns),
            "ProcessGuid": proc.entity_id,
            "ProcessId": str(proc.pid),
            "QueryName": name,
            "QueryStatus": "0",
            "QueryResults": "".join(f"::ffff:{address};" for address in answers),  # IPv4 answers, as Sysmon maps them
            "Image": proc.image.path,
            "User": _account(proc.user),
        }
        ecs = {
            "dns": {
                "question": {"name": name, "registered_domain": registered_domain(name)},
                "resolved_ip": answers,
                "answers": [{"type": "A", "data": address} for address in answers],
            },
            "network": {"protocol": "dns"},
            "process": sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "sysmon": {"dns": {"status": "SUCCESS"}},
            "related": {"hosts": [name], "ip": list(dict.fromkeys(answers)), "user": [proc.user.name]},
        }
        return self._sysmon_record(host, 22, "Dns query (rule: DnsQuery)", ts_ns, data, ecs)

    def logon(self, host: Host, ts_ns: int, user: User, source_ip: str, logon_id: str) -> Shipped:
        source_port = self.rng.randrange(49152, 65536)
        data = logon_event_data(user, logon_id, source_ip, source_port)
        record = _Record(SECURITY, 4624, "Logon", ts_ns, ts_ns, host.services["lsass"].pid, data, (AUDIT_SUCCESS,))
        ecs = {
            "event": {
                "action": "logged-in",
                "category": ["authentication"],
                "code": "4624",
                "kind": "event",
                "module": "security",
                "outcome": "success",
                "provider": SECURITY.name,
                "type": ["start"],
            },
            "user": {"domain": user.domain, "id": user.sid, "name": user.name},
            "source": {"ip": source_ip, "port": source_port},
            "related": {"ip": [source_ip], "user": [user.name]},
            "winlog": {"logon": {"id": logon_id, "type": "Network"}},
        }
        return self._shipped_record(host, record, ecs)

    def _sysmon_record(
        self, host: Host, event_id: int, task: str, ts_ns: int, data: dict[str, str], ecs: Event
    ) -> Shipped:
        """A Sysmon record of an event at ``ts_ns`` (its UtcTime), written to the log up to 1.5 s later."""
        written_ns = ts_ns + self.rng.randrange(15_000_000) * 100
        category, types, action = _SYSMON_PIPELINE_EVENTS[event_id]
        ecs["event"] = {
            "action": action,
            "category": category,
            "code": str(event_id),
            "kind": "event",
            "module": "sysmon",
            "provider": SYSMON.name,
            "type": types,
        }
        record = _Record(SYSMON, event_id, task, ts_ns, written_ns, SYSMON_SERVICE_PID, data)
        return self._shipped_record(host, record, ecs)

    def _shipped_record(self, host: Host, record: _Record, ecs: Event) -> Shipped:
        """``record`` as Winlogbeat 8 ships it, and its twin: the same envelope with ``ecs`` merged in.

        ``ecs`` holds the fields the ingest pipeline derives, as the caller wrote them from its
        model of the event (not from the record's strings).
        """
        record_id = host.next_record_id
        host.next_record_id += 1
        thread_id = self.rng.randrange(1000, 9000, 4)
        created = iso(_read_ns(record.written_ns), 3)
        event = {
            "action": record.task,
            "code": str(record.event_id),
            "created": created,
            "kind": "event",
            "provider": record.provider.name,
        }
        if AUDIT_SUCCESS in record.keywords:
            event["outcome"] = "success"
        raw = {
            "@timestamp": iso(record.written_ns, 7),
            "@metadata": {"beat": "winlogbeat", "type": "_doc", "version": VERSION},
            "event": event,
            **_envelope(host, record, record_id, thread_id),
        }
        raw["winlog"]["event_data"] = dict(record.data)

        twin = _envelope(host, record, record_id, thread_id)
        if record.provider is SYSMON:
            # The pipeline dates the event by UtcTime; the write time (the raw @timestamp) is lost.
            twin["@timestamp"] = iso(record.time_ns, 3)
            twin["winlog"]["event_data"] = {
                key: value
                for key, value in record.data.items()
                if value not in _NO_VALUE and key not in _SYSMON_PIPELINE_CONSUMED
            }
        else:
            twin["@timestamp"] = raw["@timestamp"]
            twin["winlog"]["event_data"] = dict(record.data)
        twin["winlog"]["record_id"] = str(record_id)  # the pipeline indexes it as a keyword
        for key, value in ecs.items():
            if key in twin:
                twin[key].update(value)
            else:
                twin[key] = value
        # The pipeline keeps the Beat's read time (in Beats' alphabetical key order, as in the record).
        twin["event"] = dict(sorted({**twin["event"], "created": created}.items()))
        return Shipped(raw, twin)


def _envelope(host: Host, record: _Record, record_id: int, thread_id: int) -> Event:
    """What Winlogbeat 8 puts around every record (add_host_metadata on): a new object on each call."""
    winlog: dict[str, Any] = {
        "api": "wineventlog",
        "channel": record.provider.channel,
        "computer_name": host.fqdn,
        "event_id": str(record.event_id),
        "opcode": "Info",
        "process": {"pid": record.logged_by, "thread": {"id": thread_id}},
        "provider_guid": record.provider.guid,
        "provider_name": record.provider.name,
        "record_id": record_id,
        "task": record.task,
        "version": record.provider.version,
    }
    if record.keywords:
        winlog["keywords"] = list(record.keywords)
    if record.provider is SYSMON:  # the Sysmon service logs as SYSTEM
        winlog["user"] = {"domain": SYSTEM.domain, "identifier": SYSTEM.sid, "name": SYSTEM.name, "type": "User"}
    return {
        "agent": {
            "ephemeral_id": host.ephemeral_id,
            "id": host.agent_id,
            "name": host.name,
            "type": "winlogbeat",
            "version": VERSION,
        },
        "ecs": {"version": "8.0.0"},
        "host": beats_host(host, name=host.name.lower(), mac=host.mac),
        "labels": dict(host.labels),
        "log": {"level": "information"},
        "winlog": winlog,
    }


def _read_ns(written_ns: int) -> int:
    """When Winlogbeat read a record written at ``written_ns`` (its ``event.created``): 5 to 404 ms later.

    The lag is taken from the write time's milliseconds, random already, rather than drawn: the
    read times then take nothing from the corpus' random stream.
    """
    return written_ns + (5 + written_ns // NS_PER_MS % 400) * NS_PER_MS


def _account(user: User) -> str:
    """A user as Sysmon writes it: ``DOMAIN\\name``."""
    return f"{user.domain}\\{user.name}"


def _sysmon_user(user: User) -> dict[str, str]:
    """``user.*`` as the Sysmon pipeline sets it: the name from the event, the id of the account that
    logged it (the Sysmon service runs as SYSTEM)."""
    return {"domain": user.domain, "id": SYSTEM.sid, "name": user.name}


def _logon_id(user: User) -> str:
    """The logon session of ``user``'s processes: well known for service accounts, stable for others."""
    return _WELL_KNOWN_LOGON_IDS.get(user.sid) or f"0x{int(hashlib.sha1(user.sid.encode()).hexdigest()[:6], 16):x}"


def _logon_guid(host: Host, user: User) -> str:
    """Sysmon's LogonGuid: the machine's GUID prefix and the logon id."""
    value = int(_logon_id(user), 16)
    return f"{{{host.guid_prefix}-0000-0000-{value & 0xFFFF:04x}-{value >> 16:012x}}}"
