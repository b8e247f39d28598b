"""Winlogbeat 7 with its Sysmon and Security modules: ECS mapped on the host, so each event is its own twin.

Sysmon's view of the world: millisecond timestamps (its ``UtcTime``), GUID entity ids, the local
socket in ``source.*`` whoever initiated a connection, and a start for every connection.
"""

from __future__ import annotations

import base64
import random

from eqlstream_dev.synthetic.clock import NS_PER_MS, iso, sysmon_utc
from eqlstream_dev.synthetic.ecs import Event, Shipped, extension, parent_fields, pe_fields, registered_domain
from eqlstream_dev.synthetic.fleet import WORKING_DIRECTORY, Connection, Host, Process, User
from eqlstream_dev.synthetic.windows import (
    AUDIT_SUCCESS,
    SECURITY,
    SYSMON,
    SYSMON_SERVICE_PID,
    beats_host,
    logon_event_data,
    sysmon_process_ref,
)

VERSION = "7.17.18"


class Winlogbeat7Renderer:
    """Writes model events as Winlogbeat 7 ships them (``message`` dropped, a common ``drop_fields``)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def process_start(self, host: Host, proc: Process, ts_ns: int) -> Shipped:
        event = self._base(
            host, ts_ns, 1, "Process Create (rule: ProcessCreate)", ["process"], ["start", "process_start"]
        )
        image = proc.image
        parent = proc.parent
        hashes = {"sha256": image.digest("sha256")}  # a common Sysmon HashAlgorithms setting
        event["process"] = {
            "args": list(proc.args),
            "args_count": len(proc.args),
            "command_line": proc.command_line,
            "entity_id": proc.entity_id,
            "executable": image.path,
            "hash": hashes,
            "name": image.name,
            "pe": pe_fields(image),
            "pid": proc.pid,
            "working_directory": WORKING_DIRECTORY,
        }
        if parent is not None:
            event["process"]["parent"] = parent_fields(parent)
        event["related"] = {"user": [proc.user.name], "hash": list(hashes.values())}
        event["user"] = {"domain": proc.user.domain, "id": proc.user.sid, "name": proc.user.name}
        event["winlog"]["event_data"] = {
            "RuleName": "-",
            "LogonId": "0x3e7",
            "TerminalSessionId": "0",
            "IntegrityLevel": "System",
        }
        return Shipped.ecs(event)

    def network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped:
        if conn.ended:
            raise ValueError("Sysmon reports connections when they start, never when they end")
        event = self._base(
            host,
            ts_ns,
            3,
            "Network connection detected (rule: NetworkConnect)",
            ["network"],
            ["connection", "start", "protocol"],
        )
        # Sysmon puts the local socket in Source* and the peer in Destination*, whoever initiated.
        source = {"ip": conn.local_ip, "port": conn.local_port, "domain": host.fqdn.lower()}
        destination = {"ip": conn.remote_ip, "port": conn.remote_port}
        event["source"], event["destination"] = source, destination
        event["network"] = {
            "direction": "ingress" if conn.inbound else "egress",
            "transport": conn.transport,
            "type": "ipv6" if ":" in conn.local_ip else "ipv4",
            "community_id": "1:" + base64.b64encode(self.rng.randbytes(20)).decode(),
        }
        event["process"] = sysmon_process_ref(proc)
        event["related"] = {"ip": [conn.local_ip, conn.remote_ip], "user": [proc.user.name]}
        event["user"] = {"domain": proc.user.domain, "name": proc.user.name}
        event["winlog"]["event_data"] = {
            "RuleName": "-",
            "SourceIsIpv6": "false",
            "DestinationIsIpv6": "false",
            "SourcePortName": "-",
            "DestinationPortName": "-",
        }
        return Shipped.ecs(event)

    def file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped:
        directory, name = path.rsplit("\\", 1)
        event = self._base(host, ts_ns, 11, "File created (rule: FileCreate)", ["file"], ["creation"])
        event["file"] = {"path": path, "name": name, "directory": directory, "extension": extension(name)}
        event["process"] = sysmon_process_ref(proc)
        event["winlog"]["event_data"] = {"RuleName": "-", "CreationUtcTime": sysmon_utc(ts_ns)}
        return Shipped.ecs(event)

    def registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, data: str) -> Shipped:
        event = self._base(
            host, ts_ns, 13, "Registry value set (rule: RegistryEvent)", ["configuration", "registry"], ["change"]
        )
        hive, hive_key = key.split("\\", 1)
        event["registry"] = {
            "path": f"{key}\\{value}",
            "hive": hive,
            "key": hive_key,
            "value": value,
            "data": {"strings": [data], "type": "SZ"},
        }
        event["process"] = sysmon_process_ref(proc)
        event["winlog"]["event_data"] = {"RuleName": "-", "EventType": "SetValue", "Details": data}
        return Shipped.ecs(event)

    def dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped:
        event = self._base(
            host, ts_ns, 22, "Dns query (rule: DnsQuery)", ["network"], ["connection", "protocol", "info"]
        )
        event["dns"] = {
            "question": {"name": name, "registered_domain": registered_domain(name)},
            "resolved_ip": answers,
            "answers": [{"type": "A", "data": a} for a in answers],
        }
        event["network"] = {"protocol": "dns"}
        event["process"] = sysmon_process_ref(proc)
        event["winlog"]["event_data"] = {"RuleName": "-", "QueryStatus": "0", "QueryResults": ";".join(answers)}
        return Shipped.ecs(event)

    def logon(self, host: Host, ts_ns: int, user: User, source_ip: str, logon_id: str) -> Shipped:
        """Security event 4624 through the Security module, on the Sysmon module's envelope."""
        event = self._base(host, ts_ns, 4624, "logged-in", ["authentication"], ["start"])
        event["event"].update(
            {"module": "security", "provider": SECURITY.name, "outcome": "success", "dataset": "security"}
        )
        event["winlog"].update(
            {
                "channel": SECURITY.channel,
                "provider_name": SECURITY.name,
                "provider_guid": SECURITY.guid,
                "task": "Logon",
                "keywords": [AUDIT_SUCCESS],
                "logon": {"id": logon_id, "type": "Network"},
            }
        )
        source_port = self.rng.randrange(49152, 65536)
        event["winlog"]["event_data"] = logon_event_data(user, logon_id, source_ip, source_port)
        event["user"] = {"id": user.sid, "name": user.name, "domain": user.domain}
        event["source"] = {"ip": source_ip, "port": source_port}
        event["related"] = {"user": [user.name], "ip": [source_ip]}
        return Shipped.ecs(event)

    def _base(self, host: Host, ts_ns: int, event_id: int, action: str, category: list[str], etype: list[str]) -> Event:
        record_id = host.next_record_id
        host.next_record_id += 1
        # Sysmon's UtcTime becomes @timestamp; the record is written a little later.
        written = ts_ns + self.rng.randrange(1, 1500) * NS_PER_MS
        return {
            "@timestamp": iso(ts_ns, 3),
            "@metadata": {"beat": "winlogbeat", "type": "_doc", "version": VERSION},
            "agent": {
                "ephemeral_id": host.ephemeral_id,
                "hostname": host.name,
                "id": host.agent_id,
                "name": host.name,
                "type": "winlogbeat",
                "version": VERSION,
            },
            "ecs": {"version": "1.12.0"},
            "event": {
                "action": action,
                "category": category,
                "code": str(event_id),
                "created": iso(written, 3),
                "kind": "event",
                "module": "sysmon",
                "provider": SYSMON.name,
                "type": etype,
            },
            "host": beats_host(host, name=host.fqdn.lower(), mac=host.mac.replace("-", ":").lower()),
            "labels": dict(host.labels),
            "log": {"level": "information"},
            "winlog": {
                "api": "wineventlog",
                "channel": SYSMON.channel,
                "computer_name": host.fqdn,
                "event_id": event_id,
                "opcode": "Info",
                "process": {"pid": SYSMON_SERVICE_PID, "thread": {"id": self.rng.randrange(1000, 9000, 4)}},
                "provider_guid": SYSMON.guid,
                "provider_name": SYSMON.name,
                "record_id": record_id,
                "task": action,
                "user": {"domain": "NT AUTHORITY", "identifier": "S-1-5-18", "name": "SYSTEM", "type": "User"},
                "version": SYSMON.version,
            },
        }
