"""Elastic Defend's events: ECS as the endpoint writes it, so each event is its own twin.

Defend stamps events with 7 fractional digits, names processes by base64 entity ids and numbers
each agent's events (``event.sequence``); it is the only source here with an ``event.id``.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from eqlstream_dev.synthetic.clock import iso
from eqlstream_dev.synthetic.ecs import Event, Shipped, extension, parent_fields, pe_fields, registered_domain
from eqlstream_dev.synthetic.fleet import WORKING_DIRECTORY, Connection, Host, Process, User

DIGITS = 7


class DefendRenderer:
    """Writes model events in Elastic Defend's shape."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def process_start(self, host: Host, proc: Process, ts_ns: int) -> Shipped:
        event = self._base(host, ts_ns, "process", "Endpoint process event", "start", ["process"], ["start"])
        image = proc.image
        signature = {"exists": True, "status": "trusted", "subject_name": "Microsoft Windows", "trusted": True}
        parent = proc.parent
        event["process"] = {
            "args": list(proc.args),
            "args_count": len(proc.args),
            "command_line": proc.command_line,
            "entity_id": proc.entity_id,
            "executable": image.path,
            "name": image.name,
            "pid": proc.pid,
            "working_directory": WORKING_DIRECTORY,
            "code_signature": signature,
            "hash": {"md5": image.digest("md5"), "sha1": image.digest("sha1"), "sha256": image.digest("sha256")},
            "pe": pe_fields(image),
            "Ext": {
                "ancestry": [p.entity_id for p in proc.ancestors],
            },
        }
        if parent is not None:
            event["process"]["parent"] = parent_fields(parent)
        event["user"] = _user(proc.user)
        return Shipped.ecs(event)

    def network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped:
        if conn.ended:
            action, etype = ("disconnect_received", ["end"])
        else:
            action, etype = ("connection_accepted", ["start"]) if conn.inbound else ("connection_attempted", ["start"])
        event = self._base(host, ts_ns, "network", "Endpoint network event", action, ["network"], etype)
        local = {"address": conn.local_ip, "ip": conn.local_ip, "port": conn.local_port}
        remote = {"address": conn.remote_ip, "ip": conn.remote_ip, "port": conn.remote_port}
        # Defend orients a flow by who initiated it: the peer is the source of an accepted connection.
        event["source"], event["destination"] = (remote, local) if conn.inbound else (local, remote)
        if conn.ended:
            event["source"]["bytes"] = self.rng.randrange(60, 90_000)
            event["destination"]["bytes"] = self.rng.randrange(60, 90_000)
        event["network"] = {
            "direction": "ingress" if conn.inbound else "egress",
            "transport": conn.transport,
            "type": "ipv6" if ":" in conn.local_ip else "ipv4",
        }
        event["process"] = _process_ref(proc)
        event["user"] = _user(proc.user)
        return Shipped.ecs(event)

    def file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped:
        name = path.rsplit("\\", 1)[-1]
        event = self._base(host, ts_ns, "file", "Endpoint file event", "creation", ["file"], ["creation"])
        event["process"] = _process_ref(proc)
        event["file"] = {
            "path": path,
            "name": name,
            "extension": extension(name),
            "size": self.rng.randrange(200, 4_000_000),
            "Ext": {
                "entropy": round(self.rng.uniform(1.0, 7.9), 6),
                "header_bytes": f"{self.rng.getrandbits(64):016x}",
            },
        }
        event["user"] = _user(proc.user)
        return Shipped.ecs(event)

    def registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, data: str) -> Shipped:
        event = self._base(host, ts_ns, "registry", "Endpoint registry event", "modification", ["registry"], ["change"])
        event["process"] = _process_ref(proc)
        event["registry"] = {
            "hive": key.split("\\", 1)[0],
            "key": key.split("\\", 1)[1],
            "path": f"{key}\\{value}",
            "value": value,
            "data": {"strings": [data], "type": "REG_SZ"},
        }
        event["user"] = _user(proc.user)
        return Shipped.ecs(event)

    def dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped:
        event = self._base(
            host, ts_ns, "network", "Endpoint DNS event", "lookup_result", ["network"], ["protocol", "info"]
        )
        event["process"] = _process_ref(proc)
        event["dns"] = {
            "question": {"name": name, "type": "A", "registered_domain": registered_domain(name)},
            "resolved_ip": answers,
            "Ext": {"options": "0x4000000000", "status": "0"},
        }
        event["network"] = {"protocol": "dns"}
        event["user"] = _user(proc.user)
        return Shipped.ecs(event)

    def logon(self, host: Host, ts_ns: int, user: User, source_ip: str, logon_id: str) -> Shipped:
        """A network logon as lsass reports it to Defend (which does not report the logon session id)."""
        event = self._base(
            host, ts_ns, "security", "Endpoint security event", "log_on", ["authentication", "session"], ["start"]
        )
        event["event"]["outcome"] = "success"
        event["process"] = _process_ref(host.services["lsass"])
        event["user"] = _user(user)
        event["source"] = {"ip": source_ip}
        return Shipped.ecs(event)

    def _base(
        self, host: Host, ts_ns: int, dataset: str, message: str, action: str, category: list[str], etype: list[str]
    ) -> Event:
        timestamp = iso(ts_ns, DIGITS)
        sequence = host.next_sequence
        host.next_sequence += 1
        return {
            "@timestamp": timestamp,
            "agent": {"id": host.agent_id, "type": "endpoint", "version": "8.13.2"},
            "data_stream": {"dataset": f"endpoint.events.{dataset}", "namespace": "default", "type": "logs"},
            "ecs": {"version": "8.10.0"},
            "elastic": {"agent": {"id": host.agent_id}},
            "event": {
                "action": action,
                "agent_id_status": "verified",
                "category": category,
                "created": timestamp,
                "dataset": f"endpoint.events.{dataset}",
                "id": base64.b64encode(self.rng.randbytes(18)).decode(),
                "kind": "event",
                "module": "endpoint",
                "sequence": sequence,
                "type": etype,
            },
            "host": {
                "architecture": "x86_64",
                "hostname": host.name,
                "id": host.id,
                "ip": [host.ip, "fe80::" + host.id[:4] + ":" + host.id[9:13]],
                "mac": [host.mac],
                "name": host.name,
                "os": {
                    "Ext": {"variant": host.os_variant},
                    "family": "windows",
                    "full": f"{host.os_variant} ({host.build})",
                    "kernel": f"{host.build}",
                    "name": "Windows",
                    "platform": "windows",
                    "type": "windows",
                    "version": host.build.split(".")[0],
                },
            },
            "labels": dict(host.labels),
            "message": message,
        }


def restamp(shipped: Shipped, ts_ns: int, digits: int) -> None:
    """Give a Defend event's times ``digits`` fractional digits: a Defend-like ECS shipper with another clock.

    Elasticsearch keeps the text as written and works on its milliseconds, so the digits matter
    only to a detector that does not truncate them.
    """
    timestamp = iso(ts_ns, digits)
    shipped.event["@timestamp"] = shipped.event["event"]["created"] = timestamp


def _user(user: User) -> dict[str, str]:
    return {"domain": user.domain, "id": user.sid, "name": user.name}


def _process_ref(proc: Process) -> dict[str, Any]:
    return {
        "entity_id": proc.entity_id,
        "executable": proc.image.path,
        "name": proc.image.name,
        "pid": proc.pid,
        "Ext": {"ancestry": [p.entity_id for p in proc.ancestors]},
    }
