"""Deterministic synthetic Windows events for tests, the benchmark and the demo.

Real data cannot be shipped with the project, and hand-written fixtures are too few and too clean to
show that the engine gives Elasticsearch's answer on a realistic stream. This module writes a
Windows fleet's events from a seed: mostly noise of the kinds that reach the detector (process
starts, many with ``-Embedding``; inbound high-port TCP of lsass, services and svchost; file,
registry, DNS and logon events), a few DCOM/MSHTA attacks, and near misses that each break exactly
one condition of the rule. Every host ships one of three sources, and each event has that source's
shape (docs/input-sources.md) and a realistic size (1-3 KB):

* Elastic Defend and Winlogbeat 7 with the Sysmon module send ECS;
* Winlogbeat 8 sends Sysmon and Security records raw (``winlog.event_data`` strings, no ECS
  categorization), because its mapping runs only in the Elasticsearch ingest pipeline.

For every event the generator also writes its *twin*: the event as Elasticsearch indexes it. An ECS
event is its own twin; a raw Winlogbeat 8 record's twin is what Elastic's ingest pipeline makes of
it, written here from the generator's own model of the event (the process, the connection, the
times), never by ``app.normalize``. The oracle's answer on the twins is therefore an independent
check of the product's normalizer on the raw records.
The Winlogbeat fleets drop ``message`` (a common ``drop_fields`` setting: the rendered text repeats
the event data and would push process starts past 3 KB).

Attack and near-miss events carry ``labels.synthetic_case`` (the kind) and
``labels.synthetic_case_id`` so that tests and readers can tell what each one is meant to do.
The same seed always gives the same events, byte for byte.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import heapq
import itertools
import random
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from app.timeparse import NS_PER_MS, NS_PER_S, parse_timestamp

Event = dict[str, Any]

DEFEND = "defend"
WINLOGBEAT = "winlogbeat7"
WINLOGBEAT8 = "winlogbeat8"  # raw Sysmon and Security records
SHAPES = (DEFEND, WINLOGBEAT, WINLOGBEAT8)

CASE_LABEL = "synthetic_case"
CASE_ID_LABEL = "synthetic_case_id"
ATTACK = "attack"

# Near-miss kinds and whether Elasticsearch alerts on them (only the inclusive maxspan boundary does).
NEAR_MISSES: dict[str, bool] = {
    "delay_over_maxspan": False,
    "delay_at_maxspan": True,
    "outbound": False,
    "udp": False,
    "low_port": False,
    "loopback_source": False,
    "no_embedding": False,
    "other_host": False,
    "other_entity": False,
    "network_first": False,
    "network_not_start": False,
}
# The v4 rule excludes loopback through source.address, which only Elastic Defend sets, and Sysmon
# always reports a network connection as started: these near misses exist only in Defend's shape
# (Winlogbeat 7 and 8 both carry Sysmon's view).
_DEFEND_ONLY = frozenset({"loopback_source", "network_not_start"})

MAXSPAN_NS = 60 * NS_PER_S
DEFAULT_START = "2024-05-14T08:00:00Z"
# 7 fractional digits vs Sysmon's milliseconds (Winlogbeat 8's Security records follow the same clock).
_PRECISION_NS = {DEFEND: 100, WINLOGBEAT: NS_PER_MS, WINLOGBEAT8: NS_PER_MS}
_FILETIME_EPOCH_S = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01


# -- fleet model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An executable and its version resource (what Sysmon and Defend report about the file)."""

    path: str
    description: str
    original_name: str
    version: str = "10.0.19041.3636 (WinBuild.160101.0800)"
    product: str = "Microsoft® Windows® Operating System"
    company: str = "Microsoft Corporation"

    @property
    def name(self) -> str:
        """The file name, as ``process.name`` holds it."""
        return self.path.rsplit("\\", 1)[-1]

    def digest(self, algorithm: str) -> str:
        """A stable fake file hash: the same binary has the same hash on every host."""
        return hashlib.new(algorithm, self.path.lower().encode()).hexdigest()


@dataclass(frozen=True)
class User:
    """A Windows account."""

    domain: str
    name: str
    sid: str


SYSTEM = User("NT AUTHORITY", "SYSTEM", "S-1-5-18")
LOCAL_SERVICE = User("NT AUTHORITY", "LOCAL SERVICE", "S-1-5-19")
NETWORK_SERVICE = User("NT AUTHORITY", "NETWORK SERVICE", "S-1-5-20")

_SYS32 = "C:\\Windows\\System32\\"
IMAGES = {
    "wininit": Image(_SYS32 + "wininit.exe", "Windows Start-Up Application", "wininit.exe"),
    "services": Image(_SYS32 + "services.exe", "Services and Controller app", "services.exe"),
    "lsass": Image(_SYS32 + "lsass.exe", "Local Security Authority Process", "lsass.exe"),
    "svchost": Image(_SYS32 + "svchost.exe", "Host Process for Windows Services", "svchost.exe"),
    "wmiprvse": Image(_SYS32 + "wbem\\WmiPrvSE.exe", "WMI Provider Host", "Wmiprvse.exe"),
    "searchindexer": Image(_SYS32 + "SearchIndexer.exe", "Microsoft Windows Search Indexer", "SearchIndexer.exe"),
    "runtimebroker": Image(_SYS32 + "RuntimeBroker.exe", "Runtime Broker", "RuntimeBroker.exe"),
    "dllhost": Image(_SYS32 + "dllhost.exe", "COM Surrogate", "dllhost.exe"),
    "conhost": Image(_SYS32 + "conhost.exe", "Console Window Host", "CONHOST.EXE"),
    "taskhostw": Image(_SYS32 + "taskhostw.exe", "Host Process for Windows Tasks", "taskhostw.exe"),
    "backgroundtaskhost": Image(_SYS32 + "backgroundTaskHost.exe", "Background Task Host", "backgroundTaskHost.exe"),
    "searchprotocolhost": Image(
        _SYS32 + "SearchProtocolHost.exe", "Microsoft Windows Search Protocol Host", "searchprotocolhost.exe"
    ),
    "explorer": Image("C:\\Windows\\explorer.exe", "Windows Explorer", "EXPLORER.EXE"),
    "msmpeng": Image(
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24030.9-0\\MsMpEng.exe",
        "Antimalware Service Executable",
        "MsMpEng.exe",
        "4.18.24030.9 (WinBuild.160101.0800)",
    ),
    "mshta": Image(
        _SYS32 + "mshta.exe",
        "Microsoft (R) HTML Application host",
        "MSHTA.EXE",
        "11.00.19041.3636 (WinBuild.160101.0800)",
        "Internet Explorer",
    ),
}


@dataclass(frozen=True)
class Process:
    """A running process as both sources identify it."""

    image: Image
    args: tuple[str, ...]
    pid: int
    entity_id: str
    user: User
    parent: Process | None = None

    @property
    def command_line(self) -> str:
        """The command line, quoting arguments with spaces as Windows does."""
        return " ".join(f'"{arg}"' if " " in arg else arg for arg in self.args)


@dataclass
class Host:
    """One Windows machine and the agent that ships its events."""

    id: str
    name: str
    domain: str
    ip: str
    mac: str
    shape: str
    agent_id: str
    ephemeral_id: str
    guid_prefix: str
    os_variant: str
    build: str
    labels: dict[str, str]
    services: dict[str, Process] = field(default_factory=dict)
    next_sequence: int = 1
    next_record_id: int = 1

    @property
    def fqdn(self) -> str:
        """The DNS name Windows reports (``winlog.computer_name``)."""
        return f"{self.name}.{self.domain}"


@dataclass(frozen=True)
class Connection:
    """A TCP/UDP flow from the point of view of the host that reports it."""

    inbound: bool
    transport: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    ended: bool = False


@dataclass(frozen=True)
class Shipped:
    """One event as its source puts it on Kafka, and its twin: the same event as Elasticsearch indexes it.

    Elasticsearch indexes ECS events (Elastic Defend, Winlogbeat 7) as they are, so such an event is
    its own twin. A raw Winlogbeat 8 record has a separate twin, written from the generator's model.
    """

    event: Event
    twin: Event

    @classmethod
    def ecs(cls, event: Event) -> Shipped:
        """An event that is already ECS: its own twin."""
        return cls(event, event)


# -- raw Windows event log records (Winlogbeat 8) ------------------------------------------------

WINLOGBEAT8_VERSION = "8.13.4"


@dataclass(frozen=True)
class _Provider:
    """A Windows event log provider and the channel it logs to."""

    name: str
    guid: str
    channel: str
    version: int  # the schema version of its events (winlog.version)


_SYSMON = _Provider("Microsoft-Windows-Sysmon", "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}",
                    "Microsoft-Windows-Sysmon/Operational", 5)
_SECURITY = _Provider("Microsoft-Windows-Security-Auditing", "{54849625-5478-4994-a5ba-3e3b0328c30d}", "Security", 2)
_AUDIT_SUCCESS = "Audit Success"
_SYSMON_SERVICE_PID = 3188


@dataclass(frozen=True)
class _Record:
    """A Windows event log record as Winlogbeat 8 reads it, before any ingest pipeline ran."""

    provider: _Provider
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
_SYSMON_PIPELINE_CONSUMED = frozenset({
    "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "CommandLine", "CurrentDirectory", "User", "Hashes",
    "OriginalFileName", "ParentProcessGuid", "ParentProcessId", "ParentImage", "ParentCommandLine", "TargetFilename",
    "TargetObject", "Protocol", "Initiated", "SourceIsIpv6", "SourceIp", "SourceHostname", "SourcePort",
    "SourcePortName", "DestinationIsIpv6", "DestinationIp", "DestinationHostname", "DestinationPort",
    "DestinationPortName", "QueryName", "QueryStatus", "QueryResults",
})
# Port names Sysmon resolves (from the services file) for the ports the generator uses.
_PORT_NAMES = {135: "epmap", 443: "https", 3389: "ms-wbt-server"}
_WELL_KNOWN_LOGON_IDS = {SYSTEM.sid: "0x3e7", LOCAL_SERVICE.sid: "0x3e5", NETWORK_SERVICE.sid: "0x3e4"}
_WORKING_DIRECTORY = "C:\\Windows\\system32\\"


class EventFactory:
    """Writes a fleet's events in Elastic Defend, Winlogbeat 7 (Sysmon module) or raw Winlogbeat 8 shape."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._entity_ids: set[str] = set()  # an entity id names one process: never issue one twice

    # -- fleet -------------------------------------------------------------------------------

    def fleet(self, count: int, defend_share: float, start_ns: int, raw_share: float = 0.0) -> list[Host]:
        """``count`` hosts booted before ``start_ns``: ``defend_share`` of them run Elastic Defend,
        ``raw_share`` Winlogbeat 8 (raw records), the rest Winlogbeat 7.

        Every source with a positive share gets at least one host as far as ``count`` allows, so
        the scenarios can be written in each of them.
        """
        rest_share = 1 - defend_share - raw_share
        if defend_share < 0 or raw_share < 0 or rest_share < -1e-9:
            raise ValueError(f"invalid source shares: Defend {defend_share}, raw Winlogbeat 8 {raw_share}")
        counts = {DEFEND: round(count * defend_share), WINLOGBEAT8: round(count * raw_share)}
        for shape, share in ((DEFEND, defend_share), (WINLOGBEAT8, raw_share)):
            if share > 0:
                counts[shape] = max(counts[shape], 1)
        # Leave Winlogbeat 7 its host if it has a share, taking hosts from the larger of the others.
        available = count - 1 if rest_share > 1e-9 else count
        while counts[DEFEND] + counts[WINLOGBEAT8] > available:
            counts[max(counts, key=counts.__getitem__)] -= 1
        winlogbeat7 = count - counts[DEFEND] - counts[WINLOGBEAT8]
        shapes = [DEFEND] * counts[DEFEND] + [WINLOGBEAT] * winlogbeat7 + [WINLOGBEAT8] * counts[WINLOGBEAT8]
        self.rng.shuffle(shapes)
        return [self._host(index, shape, start_ns) for index, shape in enumerate(shapes)]

    def _host(self, index: int, shape: str, start_ns: int) -> Host:
        rng = self.rng
        server = index % 5 == 0
        site = rng.choice(("ams1", "fra2", "nyc3"))
        variant, build = (
            ("Windows Server 2019 Datacenter", "17763.5696") if server else ("Windows 10 Enterprise", "19045.4291")
        )
        host = Host(
            id=self.uuid(),
            name=f"{'SRV-APP' if server else 'WS'}-{site.upper()[:3]}-{index:04d}",
            domain="corp.example.com",
            ip=f"10.{rng.randrange(10, 40)}.{rng.randrange(0, 255)}.{rng.randrange(2, 254)}",
            mac="-".join(f"{b:02X}" for b in [0x00, 0x50, 0x56, *(rng.randrange(256) for _ in range(3))]),
            shape=shape,
            agent_id=self.uuid(),
            ephemeral_id=self.uuid(),
            guid_prefix=f"{rng.getrandbits(32):08x}",
            os_variant=variant,
            build=build,
            labels={"env": "prod", "site": site, "team": rng.choice(("finance", "ops", "sales", "rnd"))},
        )
        boot_ns = start_ns - rng.randrange(600, 30 * 86400) * NS_PER_S
        wininit = self.process(host, IMAGES["wininit"], ("wininit.exe",), SYSTEM, None, boot_ns)
        services = self.process(host, IMAGES["services"], (IMAGES["services"].path,), SYSTEM, wininit, boot_ns)
        svchost = "C:\\Windows\\system32\\svchost.exe"
        host.services = {
            "services": services,
            "lsass": self.process(host, IMAGES["lsass"], (IMAGES["lsass"].path,), SYSTEM, wininit, boot_ns),
            "dcomlaunch": self.process(
                host, IMAGES["svchost"], (svchost, "-k", "DcomLaunch", "-p"), SYSTEM, services, boot_ns
            ),
            "rpcss": self.process(
                host, IMAGES["svchost"], (svchost, "-k", "RPCSS", "-p"), NETWORK_SERVICE, services, boot_ns
            ),
            "netsvcs": self.process(
                host, IMAGES["svchost"], (svchost, "-k", "netsvcs", "-p"), SYSTEM, services, boot_ns
            ),
            "dnscache": self.process(
                host, IMAGES["svchost"], (svchost, "-k", "NetworkService", "-p", "-s", "Dnscache"),
                NETWORK_SERVICE, services, boot_ns,
            ),
            "msmpeng": self.process(host, IMAGES["msmpeng"], (IMAGES["msmpeng"].path,), SYSTEM, services, boot_ns),
            "searchindexer": self.process(
                host, IMAGES["searchindexer"], (IMAGES["searchindexer"].path, "/Embedding"), SYSTEM, services, boot_ns
            ),
        }
        user = self.domain_user()
        host.services["explorer"] = self.process(
            host, IMAGES["explorer"], (IMAGES["explorer"].path,), user, None, boot_ns
        )
        return host

    # -- identities --------------------------------------------------------------------------

    def uuid(self) -> str:
        """A random version-4 UUID from the seeded generator."""
        value = self.rng.getrandbits(128)
        value = (value & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def domain_user(self) -> User:
        """A domain account of the fleet's directory."""
        rid = self.rng.randrange(1100, 9000)
        name = f"{self.rng.choice('ajkmrst')}{self.rng.choice(('doe', 'smith', 'meyer', 'rossi', 'tanaka'))}"
        return User("CORP", name, f"S-1-5-21-3623811015-3361044348-30300820-{rid}")

    def process(
        self, host: Host, image: Image, args: tuple[str, ...], user: User, parent: Process | None, start_ns: int
    ) -> Process:
        """A new process with an entity id of the host's source (Defend base64 or Sysmon GUID)."""
        while True:
            pid = self.rng.randrange(400, 20000, 4)
            if host.shape == DEFEND:
                seconds, nanos = divmod(start_ns, NS_PER_S)
                filetime = f"{seconds + _FILETIME_EPOCH_S}.{nanos:09d}"
                entity_id = base64.b64encode(f"{host.agent_id}-{pid}-{filetime}".encode()).decode()
            else:
                seconds = start_ns // NS_PER_S
                entity_id = (
                    f"{{{host.guid_prefix}-{(seconds >> 16) & 0xFFFF:04x}-{seconds & 0xFFFF:04x}-"
                    f"{self.rng.getrandbits(16):04x}-{self.rng.getrandbits(32):012x}}}"
                )
            if entity_id not in self._entity_ids:
                self._entity_ids.add(entity_id)
                break
        return Process(image, args, pid, entity_id, user, parent)

    # -- events ------------------------------------------------------------------------------

    def process_start(self, host: Host, proc: Process, ts_ns: int) -> Shipped:
        """A process start (Defend ``start`` / Sysmon event 1)."""
        if host.shape == DEFEND:
            return Shipped.ecs(self._defend_process_start(host, proc, ts_ns))
        if host.shape == WINLOGBEAT8:
            return self._raw_process_create(host, proc, ts_ns)
        return Shipped.ecs(self._sysmon_process_create(host, proc, ts_ns))

    def network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped:
        """A network connection (Defend ``connection_*`` / Sysmon event 3)."""
        if host.shape == DEFEND:
            return Shipped.ecs(self._defend_network(host, proc, ts_ns, conn))
        if host.shape == WINLOGBEAT8:
            return self._raw_network(host, proc, ts_ns, conn)
        return Shipped.ecs(self._sysmon_network(host, proc, ts_ns, conn))

    def file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped:
        """A file creation (Defend file event / Sysmon event 11)."""
        if host.shape == WINLOGBEAT8:
            return self._raw_file(host, proc, ts_ns, path)
        name = path.rsplit("\\", 1)[-1]
        if host.shape == DEFEND:
            event = self._defend_base(host, ts_ns, "file", "Endpoint file event", "creation", ["file"], ["creation"])
            event["process"] = self._defend_process_ref(proc)
            event["file"] = {
                "path": path,
                "name": name,
                "extension": _extension(name),
                "size": self.rng.randrange(200, 4_000_000),
                "Ext": {
                    "entropy": round(self.rng.uniform(1.0, 7.9), 6),
                    "header_bytes": f"{self.rng.getrandbits(64):016x}",
                },
            }
            event["user"] = self._defend_user(proc.user)
            return Shipped.ecs(event)
        event = self._winlogbeat_base(host, ts_ns, 11, "File created (rule: FileCreate)", ["file"], ["creation"])
        directory = path.rsplit("\\", 1)[0]
        event["file"] = {"path": path, "name": name, "directory": directory, "extension": _extension(name)}
        event["process"] = _sysmon_process_ref(proc)
        event["winlog"]["event_data"] = {"RuleName": "-", "CreationUtcTime": _sysmon_utc(ts_ns)}
        return Shipped.ecs(event)

    def registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, data: str) -> Shipped:
        """A registry value set (Defend ``modification`` / Sysmon event 13)."""
        if host.shape == WINLOGBEAT8:
            return self._raw_registry(host, proc, ts_ns, key, value, data)
        path = f"{key}\\{value}"
        if host.shape == DEFEND:
            event = self._defend_base(
                host, ts_ns, "registry", "Endpoint registry event", "modification", ["registry"], ["change"]
            )
            event["process"] = self._defend_process_ref(proc)
            event["registry"] = {
                "hive": key.split("\\", 1)[0],
                "key": key.split("\\", 1)[1],
                "path": path,
                "value": value,
                "data": {"strings": [data], "type": "REG_SZ"},
            }
            event["user"] = self._defend_user(proc.user)
            return Shipped.ecs(event)
        event = self._winlogbeat_base(
            host, ts_ns, 13, "Registry value set (rule: RegistryEvent)", ["configuration", "registry"], ["change"]
        )
        event["registry"] = {"path": path, "hive": key.split("\\", 1)[0], "key": key.split("\\", 1)[1], "value": value,
                             "data": {"strings": [data], "type": "SZ"}}
        event["process"] = _sysmon_process_ref(proc)
        event["winlog"]["event_data"] = {"RuleName": "-", "EventType": "SetValue", "Details": data}
        return Shipped.ecs(event)

    def dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped:
        """A DNS lookup (Defend ``lookup_result`` / Sysmon event 22)."""
        if host.shape == WINLOGBEAT8:
            return self._raw_dns(host, proc, ts_ns, name, answers)
        if host.shape == DEFEND:
            event = self._defend_base(
                host, ts_ns, "network", "Endpoint DNS event", "lookup_result", ["network"], ["protocol", "info"]
            )
            event["process"] = self._defend_process_ref(proc)
            event["dns"] = {
                "question": {"name": name, "type": "A", "registered_domain": _registered_domain(name)},
                "resolved_ip": answers,
                "Ext": {"options": "0x4000000000", "status": "0"},
            }
            event["network"] = {"protocol": "dns"}
            event["user"] = self._defend_user(proc.user)
            return Shipped.ecs(event)
        event = self._winlogbeat_base(
            host, ts_ns, 22, "Dns query (rule: DnsQuery)", ["network"], ["connection", "protocol", "info"]
        )
        event["dns"] = {"question": {"name": name, "registered_domain": _registered_domain(name)},
                        "resolved_ip": answers, "answers": [{"type": "A", "data": a} for a in answers]}
        event["network"] = {"protocol": "dns"}
        event["process"] = _sysmon_process_ref(proc)
        event["winlog"]["event_data"] = {"RuleName": "-", "QueryStatus": "0", "QueryResults": ";".join(answers)}
        return Shipped.ecs(event)

    def logon(self, host: Host, ts_ns: int, user: User, source_ip: str) -> Shipped:
        """A successful network logon (Defend security event / Security 4624 through Winlogbeat)."""
        lsass = host.services["lsass"]
        logon_id = f"0x{self.rng.getrandbits(28):x}"
        if host.shape == WINLOGBEAT8:
            return self._raw_logon(host, ts_ns, user, source_ip, logon_id)
        if host.shape == DEFEND:
            event = self._defend_base(
                host, ts_ns, "security", "Endpoint security event", "log_on", ["authentication", "session"], ["start"]
            )
            event["event"]["outcome"] = "success"
            event["process"] = self._defend_process_ref(lsass)
            event["user"] = self._defend_user(user)
            event["source"] = {"ip": source_ip}
            return Shipped.ecs(event)
        event = self._winlogbeat_base(host, ts_ns, 4624, "logged-in", ["authentication"], ["start"])
        event["event"].update({"module": "security", "provider": _SECURITY.name,
                               "outcome": "success", "dataset": "security"})
        event["winlog"].update({"channel": _SECURITY.channel, "provider_name": _SECURITY.name,
                                "provider_guid": _SECURITY.guid, "task": "Logon",
                                "keywords": [_AUDIT_SUCCESS], "logon": {"id": logon_id, "type": "Network"}})
        source_port = self.rng.randrange(49152, 65536)
        event["winlog"]["event_data"] = _logon_event_data(user, logon_id, source_ip, source_port)
        event["user"] = {"id": user.sid, "name": user.name, "domain": user.domain}
        event["source"] = {"ip": source_ip, "port": source_port}
        event["related"] = {"user": [user.name], "ip": [source_ip]}
        return Shipped.ecs(event)

    # -- Elastic Defend ----------------------------------------------------------------------

    def _defend_base(
        self, host: Host, ts_ns: int, dataset: str, message: str, action: str, category: list[str], etype: list[str]
    ) -> Event:
        timestamp = _iso(ts_ns, 7)
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

    @staticmethod
    def _defend_user(user: User) -> dict[str, str]:
        return {"domain": user.domain, "id": user.sid, "name": user.name}

    @staticmethod
    def _defend_process_ref(proc: Process) -> dict[str, Any]:
        return {
            "entity_id": proc.entity_id,
            "executable": proc.image.path,
            "name": proc.image.name,
            "pid": proc.pid,
            "Ext": {"ancestry": [p.entity_id for p in _ancestors(proc)]},
        }

    def _defend_process_start(self, host: Host, proc: Process, ts_ns: int) -> Event:
        event = self._defend_base(host, ts_ns, "process", "Endpoint process event", "start", ["process"], ["start"])
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
            "working_directory": _WORKING_DIRECTORY,
            "code_signature": signature,
            "hash": {"md5": image.digest("md5"), "sha1": image.digest("sha1"), "sha256": image.digest("sha256")},
            "pe": _pe_fields(image),
            "Ext": {
                "ancestry": [p.entity_id for p in _ancestors(proc)],
            },
        }
        if parent is not None:
            event["process"]["parent"] = _parent_fields(parent)
        event["user"] = self._defend_user(proc.user)
        return event

    def _defend_network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Event:
        if conn.ended:
            action, etype = ("disconnect_received", ["end"])
        else:
            action, etype = ("connection_accepted", ["start"]) if conn.inbound else ("connection_attempted", ["start"])
        event = self._defend_base(host, ts_ns, "network", "Endpoint network event", action, ["network"], etype)
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
        event["process"] = self._defend_process_ref(proc)
        event["user"] = self._defend_user(proc.user)
        return event

    # -- Winlogbeat 7 with the Sysmon module -------------------------------------------------

    def _winlogbeat_base(
        self, host: Host, ts_ns: int, event_id: int, action: str, category: list[str], etype: list[str]
    ) -> Event:
        record_id = host.next_record_id
        host.next_record_id += 1
        # Sysmon's UtcTime becomes @timestamp; the record is written a little later.
        written = ts_ns + self.rng.randrange(1, 1500) * NS_PER_MS
        return {
            "@timestamp": _iso(ts_ns, 3),
            "@metadata": {"beat": "winlogbeat", "type": "_doc", "version": "7.17.18"},
            "agent": {
                "ephemeral_id": host.ephemeral_id,
                "hostname": host.name,
                "id": host.agent_id,
                "name": host.name,
                "type": "winlogbeat",
                "version": "7.17.18",
            },
            "ecs": {"version": "1.12.0"},
            "event": {
                "action": action,
                "category": category,
                "code": str(event_id),
                "created": _iso(written, 3),
                "kind": "event",
                "module": "sysmon",
                "provider": _SYSMON.name,
                "type": etype,
            },
            "host": _beats_host(host, name=host.fqdn.lower(), mac=host.mac.replace("-", ":").lower()),
            "labels": dict(host.labels),
            "log": {"level": "information"},
            "winlog": {
                "api": "wineventlog",
                "channel": _SYSMON.channel,
                "computer_name": host.fqdn,
                "event_id": event_id,
                "opcode": "Info",
                "process": {"pid": _SYSMON_SERVICE_PID, "thread": {"id": self.rng.randrange(1000, 9000, 4)}},
                "provider_guid": _SYSMON.guid,
                "provider_name": _SYSMON.name,
                "record_id": record_id,
                "task": action,
                "user": {"domain": "NT AUTHORITY", "identifier": "S-1-5-18", "name": "SYSTEM", "type": "User"},
                "version": _SYSMON.version,
            },
        }

    def _sysmon_process_create(self, host: Host, proc: Process, ts_ns: int) -> Event:
        event = self._winlogbeat_base(
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
            "pe": _pe_fields(image),
            "pid": proc.pid,
            "working_directory": _WORKING_DIRECTORY,
        }
        if parent is not None:
            event["process"]["parent"] = _parent_fields(parent)
        event["related"] = {"user": [proc.user.name], "hash": list(hashes.values())}
        event["user"] = {"domain": proc.user.domain, "id": proc.user.sid, "name": proc.user.name}
        event["winlog"]["event_data"] = {
            "RuleName": "-",
            "LogonId": "0x3e7",
            "TerminalSessionId": "0",
            "IntegrityLevel": "System",
        }
        return event

    def _sysmon_network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Event:
        if conn.ended:
            raise ValueError("Sysmon reports connections when they start, never when they end")
        event = self._winlogbeat_base(
            host, ts_ns, 3, "Network connection detected (rule: NetworkConnect)", ["network"],
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
        event["process"] = _sysmon_process_ref(proc)
        event["related"] = {"ip": [conn.local_ip, conn.remote_ip], "user": [proc.user.name]}
        event["user"] = {"domain": proc.user.domain, "name": proc.user.name}
        event["winlog"]["event_data"] = {
            "RuleName": "-",
            "SourceIsIpv6": "false",
            "DestinationIsIpv6": "false",
            "SourcePortName": "-",
            "DestinationPortName": "-",
        }
        return event

    # -- Winlogbeat 8: raw records and their twins -------------------------------------------
    # Each writer puts the record's strings together and, separately and from the same model
    # objects, the ECS fields Elastic's ingest pipeline would derive from them: the twin.

    def _raw_process_create(self, host: Host, proc: Process, ts_ns: int) -> Shipped:
        image, user, parent = proc.image, proc.user, proc.parent
        sha256 = image.digest("sha256")
        data = {
            "RuleName": "-",
            "UtcTime": _sysmon_utc(ts_ns),
            "ProcessGuid": proc.entity_id,
            "ProcessId": str(proc.pid),
            "Image": image.path,
            "FileVersion": image.version,
            "Description": image.description,
            "Product": image.product,
            "Company": image.company,
            "OriginalFileName": image.original_name,
            "CommandLine": proc.command_line,
            "CurrentDirectory": _WORKING_DIRECTORY,
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
            "pe": _pe_fields(image),
            "pid": proc.pid,
            "working_directory": _WORKING_DIRECTORY,
        }
        if parent is not None:
            data.update({
                "ParentProcessGuid": parent.entity_id,
                "ParentProcessId": str(parent.pid),
                "ParentImage": parent.image.path,
                "ParentCommandLine": parent.command_line,
                "ParentUser": _account(parent.user),
            })
            process["parent"] = _parent_fields(parent)
        ecs = {"process": process, "user": _sysmon_user(user), "related": {"user": [user.name], "hash": [sha256]}}
        return self._sysmon_record(host, 1, "Process Create (rule: ProcessCreate)", ts_ns, data, ecs)

    def _raw_network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped:
        if conn.ended:
            raise ValueError("Sysmon reports connections when they start, never when they end")
        ipv6 = "true" if ":" in conn.local_ip else "false"
        local_name, remote_name = _PORT_NAMES.get(conn.local_port), _PORT_NAMES.get(conn.remote_port)
        # Sysmon puts the local socket in Source* and the peer in Destination*, whoever initiated.
        data = {
            "RuleName": "-",
            "UtcTime": _sysmon_utc(ts_ns),
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
            "process": _sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "related": {"ip": list(dict.fromkeys((conn.local_ip, conn.remote_ip))), "user": [proc.user.name]},
        }
        return self._sysmon_record(host, 3, "Network connection detected (rule: NetworkConnect)", ts_ns, data, ecs)

    def _raw_file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped:
        directory, name = path.rsplit("\\", 1)
        utc = _sysmon_utc(ts_ns)
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
            file["extension"] = _extension(name)
        ecs = {
            "file": file,
            "process": _sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "related": {"user": [proc.user.name]},
        }
        return self._sysmon_record(host, 11, "File created (rule: FileCreate)", ts_ns, data, ecs)

    def _raw_registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, details: str) -> Shipped:
        path = f"{key}\\{value}"
        data = {
            "RuleName": "-",
            "EventType": "SetValue",
            "UtcTime": _sysmon_utc(ts_ns),
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
            "process": _sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "related": {"user": [proc.user.name]},
        }
        return self._sysmon_record(host, 13, "Registry value set (rule: RegistryEvent)", ts_ns, data, ecs)

    def _raw_dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped:
        data = {
            "RuleName": "-",
            "UtcTime": _sysmon_utc(ts_ns),
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
                "question": {"name": name, "registered_domain": _registered_domain(name)},
                "resolved_ip": answers,
                "answers": [{"type": "A", "data": address} for address in answers],
            },
            "network": {"protocol": "dns"},
            "process": _sysmon_process_ref(proc),
            "user": _sysmon_user(proc.user),
            "sysmon": {"dns": {"status": "SUCCESS"}},
            "related": {"hosts": [name], "ip": list(dict.fromkeys(answers)), "user": [proc.user.name]},
        }
        return self._sysmon_record(host, 22, "Dns query (rule: DnsQuery)", ts_ns, data, ecs)

    def _raw_logon(self, host: Host, ts_ns: int, user: User, source_ip: str, logon_id: str) -> Shipped:
        source_port = self.rng.randrange(49152, 65536)
        data = _logon_event_data(user, logon_id, source_ip, source_port)
        record = _Record(_SECURITY, 4624, "Logon", ts_ns, ts_ns, host.services["lsass"].pid, data, (_AUDIT_SUCCESS,))
        ecs = {
            "event": {
                "action": "logged-in",
                "category": ["authentication"],
                "code": "4624",
                "kind": "event",
                "module": "security",
                "outcome": "success",
                "provider": _SECURITY.name,
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
            "provider": _SYSMON.name,
            "type": types,
        }
        record = _Record(_SYSMON, event_id, task, ts_ns, written_ns, _SYSMON_SERVICE_PID, data)
        return self._shipped_record(host, record, ecs)

    def _shipped_record(self, host: Host, record: _Record, ecs: Event) -> Shipped:
        """``record`` as Winlogbeat 8 ships it, and its twin: the same envelope with ``ecs`` merged in.

        ``ecs`` holds the fields the ingest pipeline derives, as the caller wrote them from its
        model of the event (not from the record's strings).
        """
        record_id = host.next_record_id
        host.next_record_id += 1
        thread_id = self.rng.randrange(1000, 9000, 4)
        event = {"action": record.task, "code": str(record.event_id), "kind": "event", "provider": record.provider.name}
        if _AUDIT_SUCCESS in record.keywords:
            event["outcome"] = "success"
        raw = {
            "@timestamp": _iso(record.written_ns, 7),
            "@metadata": {"beat": "winlogbeat", "type": "_doc", "version": WINLOGBEAT8_VERSION},
            "event": event,
            **self._winlogbeat8_envelope(host, record, record_id, thread_id),
        }
        raw["winlog"]["event_data"] = dict(record.data)

        twin = self._winlogbeat8_envelope(host, record, record_id, thread_id)
        if record.provider is _SYSMON:
            # The pipeline dates the event by UtcTime; the write time (the raw @timestamp) is lost.
            twin["@timestamp"] = _iso(record.time_ns, 3)
            twin["winlog"]["event_data"] = {
                key: value for key, value in record.data.items()
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
        return Shipped(raw, twin)

    def _winlogbeat8_envelope(self, host: Host, record: _Record, record_id: int, thread_id: int) -> Event:
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
        if record.provider is _SYSMON:  # the Sysmon service logs as SYSTEM
            winlog["user"] = {"domain": SYSTEM.domain, "identifier": SYSTEM.sid, "name": SYSTEM.name, "type": "User"}
        return {
            "agent": {
                "ephemeral_id": host.ephemeral_id,
                "id": host.agent_id,
                "name": host.name,
                "type": "winlogbeat",
                "version": WINLOGBEAT8_VERSION,
            },
            "ecs": {"version": "8.0.0"},
            "host": _beats_host(host, name=host.name.lower(), mac=host.mac),
            "labels": dict(host.labels),
            "log": {"level": "information"},
            "winlog": winlog,
        }


def _beats_host(host: Host, *, name: str, mac: str) -> dict[str, Any]:
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


def _sysmon_process_ref(proc: Process) -> dict[str, Any]:
    return {"entity_id": proc.entity_id, "pid": proc.pid, "executable": proc.image.path, "name": proc.image.name}


def _parent_fields(parent: Process) -> dict[str, Any]:
    """``process.parent`` of a process start, as every source reports it."""
    return {
        "args": list(parent.args),
        "args_count": len(parent.args),
        "command_line": parent.command_line,
        "entity_id": parent.entity_id,
        "executable": parent.image.path,
        "name": parent.image.name,
        "pid": parent.pid,
    }


def _pe_fields(image: Image) -> dict[str, str]:
    """``process.pe``: the executable's version resource."""
    return {
        "company": image.company,
        "description": image.description,
        "file_version": image.version,
        "original_file_name": image.original_name,
        "product": image.product,
    }


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


def _logon_event_data(user: User, logon_id: str, source_ip: str, source_port: int) -> dict[str, str]:
    """``winlog.event_data`` of a Kerberos network logon (Security event 4624)."""
    return {
        "SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-", "SubjectLogonId": "0x0",
        "TargetUserSid": user.sid, "TargetUserName": user.name, "TargetDomainName": user.domain,
        "TargetLogonId": logon_id, "LogonType": "3", "LogonProcessName": "Kerberos",
        "AuthenticationPackageName": "Kerberos", "WorkstationName": "-", "KeyLength": "0",
        "ProcessId": "0x0", "ProcessName": "-", "IpAddress": source_ip, "IpPort": str(source_port),
        "ImpersonationLevel": "%%1833", "ElevatedToken": "%%1843",
    }


def _registered_domain(name: str) -> str:
    """The last two labels of a DNS name: right for every name the generator uses."""
    return ".".join(name.split(".")[-2:])


def _ancestors(proc: Process) -> list[Process]:
    chain = []
    parent = proc.parent
    while parent is not None:
        chain.append(parent)
        parent = parent.parent
    return chain


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1] if "." in name else ""


def _iso(ts_ns: int, digits: int) -> str:
    """ISO-8601 UTC with exactly ``digits`` fractional digits (truncated, as the sources do)."""
    seconds, nanos = divmod(ts_ns, NS_PER_S)
    base = _utc_seconds(seconds)
    return f"{base[:10]}T{base[11:]}.{nanos // 10 ** (9 - digits):0{digits}d}Z"


def _sysmon_utc(ts_ns: int) -> str:
    """Sysmon's ``UtcTime``: ``YYYY-MM-DD hh:mm:ss.fff``."""
    seconds, nanos = divmod(ts_ns, NS_PER_S)
    return f"{_utc_seconds(seconds)}.{nanos // NS_PER_MS:03d}"


def _utc_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _round_down(ts_ns: int, shape: str) -> int:
    precision = _PRECISION_NS[shape]
    return ts_ns - ts_ns % precision


# -- noise -------------------------------------------------------------------------------------

# Process starts of a Windows fleet; about 13% carry -Embedding (COM servers started by DcomLaunch).
_LOWER_SYS32 = "C:\\Windows\\system32\\"  # how command lines usually spell it
_WBEM = _LOWER_SYS32 + "wbem\\"
_SVCHOST = _LOWER_SYS32 + "svchost.exe"
_PROCESS_TEMPLATES: tuple[tuple[float, str, tuple[str, ...], str, User], ...] = (
    (6, "wmiprvse", (_WBEM + "wmiprvse.exe", "-secured", "-Embedding"), "dcomlaunch", NETWORK_SERVICE),
    (4, "runtimebroker", ("C:\\Windows\\System32\\RuntimeBroker.exe", "-Embedding"), "dcomlaunch", SYSTEM),
    (3, "searchindexer", ("C:\\Windows\\system32\\SearchIndexer.exe", "/Embedding"), "services", SYSTEM),
    (20, "svchost", (_SVCHOST, "-k", "netsvcs", "-p", "-s", "Schedule"), "services", SYSTEM),
    (12, "svchost", (_SVCHOST, "-k", "LocalServiceNetworkRestricted", "-p"), "services", LOCAL_SERVICE),
    (12, "conhost", ("\\??\\C:\\Windows\\system32\\conhost.exe", "0xffffffff", "-ForceV1"), "netsvcs", SYSTEM),
    (10, "dllhost", (_LOWER_SYS32 + "DllHost.exe", "/Processid:{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}"),
     "dcomlaunch", SYSTEM),
    (10, "taskhostw", ("taskhostw.exe", "NGCKeyPregen"), "netsvcs", SYSTEM),
    (12, "searchprotocolhost", (
        "C:\\Windows\\system32\\SearchProtocolHost.exe",
        "Global\\UsGthrFltPipeMssGthrPipe8_", "Global\\UsGthrCtrlFltPipeMssGthrPipe8", "1", "-2147483646",
        "Software\\Microsoft\\Windows Search",
    ), "searchindexer", SYSTEM),
    (11, "backgroundtaskhost", (
        "C:\\Windows\\system32\\backgroundTaskHost.exe", "-ServerName:BackgroundTaskHost.WebAccountProvider",
    ), "dcomlaunch", SYSTEM),
)
_PROCESS_WEIGHTS = tuple(t[0] for t in _PROCESS_TEMPLATES)

_FILE_PATHS = (
    "C:\\Windows\\Temp\\MpCmdRun.log",
    "C:\\Windows\\System32\\LogFiles\\WMI\\RtBackup\\EtwRTDiagLog.etl",
    "C:\\ProgramData\\Microsoft\\Windows Defender\\Scans\\History\\CacheManager\\{:08X}-0.bin",
    "C:\\Windows\\SoftwareDistribution\\DataStore\\Logs\\tmp{:08x}.edb",
    "C:\\Users\\{user}\\AppData\\Local\\Temp\\{:08x}.tmp",
    "C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\IE\\{:08X}\\update[1].xml",
    "C:\\Windows\\Prefetch\\SVCHOST.EXE-{:08X}.pf",
    "C:\\Windows\\ServiceProfiles\\NetworkService\\AppData\\Local\\Microsoft\\Windows\\DeliveryOptimization\\Cache\\"
    "{:08x}",
)
_REGISTRY_VALUES = (
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\{sid}",
     "\\Device\\HarddiskVolume3\\Windows\\System32\\svchost.exe", "Binary Data"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates", "SignaturesLastUpdated", "2024-05-14T06:12:40Z"),
    ("HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\RecentDocs", "MRUListEx", "Binary Data"),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tree\\Microsoft\\Windows\\"
     "UpdateOrchestrator",
     "Index", "DWORD (0x00000003)"),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\{{{guid}}}", "DhcpIPAddress", "{ip}"),
)
_DNS_NAMES = (
    "login.microsoftonline.com", "settings-win.data.microsoft.com", "ctldl.windowsupdate.com",
    "v10.events.data.microsoft.com", "wdcp.microsoft.com", "dc01.corp.example.com", "fs01.corp.example.com",
    "wpad.corp.example.com", "time.windows.com", "outlook.office365.com",
)
_NOISE_KINDS = ("registry", "file", "network", "dns", "process", "logon")
_NOISE_WEIGHTS = (30, 28, 18, 10, 9, 5)


class NoiseWriter:
    """Background events of a fleet: what the detector must discard, cheaply and correctly."""

    def __init__(self, factory: EventFactory, fleet: list[Host]) -> None:
        self.factory = factory
        self.rng = factory.rng
        self.fleet = fleet

    def event(self, host: Host, ts_ns: int) -> Shipped:
        """One noise event of a randomly chosen kind on ``host``."""
        kind = self.rng.choices(_NOISE_KINDS, _NOISE_WEIGHTS)[0]
        return getattr(self, f"_{kind}")(host, ts_ns)

    def _peer(self, host: Host) -> str:
        peer = self.rng.choice(self.fleet)
        return peer.ip if peer is not host else f"10.{self.rng.randrange(10, 40)}.0.{self.rng.randrange(2, 254)}"

    def _internet_ip(self) -> str:
        rng = self.rng
        return f"{rng.choice((13, 20, 40, 52))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    def _process(self, host: Host, ts_ns: int) -> Shipped:
        _, image_key, args, parent_key, user = self.rng.choices(_PROCESS_TEMPLATES, _PROCESS_WEIGHTS)[0]
        parent = host.services[parent_key]
        proc = self.factory.process(host, IMAGES[image_key], args, user, parent, ts_ns)
        return self.factory.process_start(host, proc, ts_ns)

    def _network(self, host: Host, ts_ns: int) -> Shipped:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            # Inbound high-port TCP to an RPC service: passes every stage-2 test but the process name.
            proc = host.services[rng.choice(("lsass", "services", "netsvcs"))]
            local_port = rng.randrange(49664, 49680)
            conn = Connection(True, "tcp", host.ip, local_port, self._peer(host), rng.randrange(49152, 65536))
        elif roll < 0.55:
            conn = Connection(True, "tcp", host.ip, 135, self._peer(host), rng.randrange(49152, 65536))
            proc = host.services["rpcss"]
        else:
            proc = host.services[rng.choice(("netsvcs", "msmpeng", "dnscache"))]
            conn = Connection(False, "tcp", host.ip, rng.randrange(49152, 65536), self._internet_ip(), 443)
        if host.shape == DEFEND and rng.random() < 0.3:
            conn = replace(conn, ended=True)
        return self.factory.network(host, proc, ts_ns, conn)

    def _file(self, host: Host, ts_ns: int) -> Shipped:
        template = self.rng.choice(_FILE_PATHS)
        user = host.services["explorer"].user
        path = template.replace("{user}", user.name).format(self.rng.getrandbits(32))
        proc = host.services[self.rng.choice(("msmpeng", "netsvcs", "explorer"))]
        return self.factory.file(host, proc, ts_ns, path)

    def _registry(self, host: Host, ts_ns: int) -> Shipped:
        key, value, data = self.rng.choice(_REGISTRY_VALUES)
        sid = host.services["explorer"].user.sid
        key = key.format(sid=sid, guid=host.id)
        data = data.format(ip=host.ip)
        proc = host.services[self.rng.choice(("msmpeng", "netsvcs", "explorer", "services"))]
        return self.factory.registry(host, proc, ts_ns, key, value, data)

    def _dns(self, host: Host, ts_ns: int) -> Shipped:
        name = self.rng.choice(_DNS_NAMES)
        answers = [self._internet_ip() for _ in range(self.rng.randrange(1, 4))]
        proc = host.services[self.rng.choice(("dnscache", "explorer", "msmpeng"))]
        return self.factory.dns(host, proc, ts_ns, name, answers)

    def _logon(self, host: Host, ts_ns: int) -> Shipped:
        return self.factory.logon(host, ts_ns, self.factory.domain_user(), self._peer(host))


# -- attacks and near misses -------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The two events of one DCOM/MSHTA scenario; a near miss changes exactly one field."""

    delay_ns: int
    local_port: int
    remote_port: int
    remote_ip: str
    inbound: bool = True
    transport: str = "tcp"
    embedding: bool = True
    other_host: bool = False
    other_entity: bool = False
    ended: bool = False
    loopback: bool = False


class ScenarioWriter:
    """Writes attacks and near misses: an mshta.exe COM server, then an inbound connection to it."""

    def __init__(self, factory: EventFactory, fleet: list[Host]) -> None:
        self.factory = factory
        self.rng = factory.rng
        self.fleet = fleet

    def plan(self, delay_s: tuple[float, float], attacker: Host, shape: str) -> Plan:
        """A true attack: delay within ``delay_s`` (seconds), both ports dynamic, peer another host."""
        tick = _PRECISION_NS[shape]
        low, high = (int(bound * NS_PER_S) for bound in delay_s)
        delay = max(self.rng.randrange(low, high + 1) // tick * tick, tick)
        return Plan(delay, self.rng.randrange(49152, 65536), self.rng.randrange(49152, 65536), attacker.ip)

    def near_miss(self, kind: str, plan: Plan, shape: str) -> Plan:
        """``plan`` with the one condition of ``kind`` broken (or at its boundary)."""
        match kind:
            case "delay_over_maxspan":  # by the source's smallest step: 100 ns or 1 ms
                changes: dict[str, Any] = {"delay_ns": MAXSPAN_NS + _PRECISION_NS[shape]}
            case "delay_at_maxspan":
                changes = {"delay_ns": MAXSPAN_NS}
            case "outbound":
                changes = {"inbound": False}
            case "udp":
                changes = {"transport": "udp"}
            case "low_port":
                changes = {"local_port": self.rng.choice((135, 443, 3389, 5985))}
            case "loopback_source":
                changes = {"loopback": True}
            case "no_embedding":
                changes = {"embedding": False}
            case "other_host":
                changes = {"other_host": True}
            case "other_entity":
                changes = {"other_entity": True}
            case "network_first":
                changes = {"delay_ns": -plan.delay_ns}
            case "network_not_start":
                changes = {"ended": True}
            case _:
                raise ValueError(f"unknown near-miss kind {kind!r}")
        return replace(plan, **changes)

    def write(self, host: Host, start_ns: int, plan: Plan, case: str, case_id: str) -> list[tuple[int, Shipped]]:
        """The process start and the network event of ``plan`` on ``host``, with their timestamps."""
        factory = self.factory
        image = IMAGES["mshta"]
        hta = "C:\\Users\\Public\\Documents\\update.hta"
        args = (image.path, "-Embedding") if plan.embedding else (image.path, hta)
        attacker = factory.domain_user()
        proc = factory.process(host, image, args, attacker, host.services["dcomlaunch"], start_ns)
        started = factory.process_start(host, proc, start_ns)

        net_host = host
        if plan.other_host:
            others = [h for h in self.fleet if h is not host]
            net_host = next((h for h in others if h.shape == host.shape), others[0])
        net_proc = proc
        if plan.other_entity:
            net_proc = factory.process(host, image, args, attacker, host.services["dcomlaunch"], start_ns)
        local_ip, remote_ip = (("127.0.0.1", "127.0.0.1") if plan.loopback else (net_host.ip, plan.remote_ip))
        conn = Connection(
            plan.inbound, plan.transport, local_ip, plan.local_port, remote_ip, plan.remote_port, plan.ended
        )
        net_ts = start_ns + plan.delay_ns
        connected = factory.network(net_host, net_proc, net_ts, conn)

        for shipped in (started, connected):
            for event in (shipped.event, shipped.twin):
                event["labels"].update({CASE_LABEL: case, CASE_ID_LABEL: case_id})
        return [(start_ns, started), (net_ts, connected)]


# -- corpus ------------------------------------------------------------------------------------


def iter_corpus_with_twins(
    seed: int,
    events: int,
    attack_rate: float = 1e-3,
    near_miss_rate: float = 5e-3,
    source_mix: float = 0.5,
    *,
    raw_share: float = 0.0,
    rate: float = 50.0,
    hosts: int | None = None,
    start: str = DEFAULT_START,
    attack_delay_s: tuple[float, float] = (0.05, 30.0),
    near_miss_kinds: Sequence[str] = tuple(NEAR_MISSES),
) -> Iterator[Shipped]:
    """Stream a corpus of ``events`` events with their twins, in event-time order (the twins'
    @timestamp order), in constant memory for big corpora.

    ``attack_rate`` and ``near_miss_rate`` are scenarios per event (each scenario is two of the
    events); ``source_mix`` is the share of hosts running Elastic Defend and ``raw_share`` the share
    running Winlogbeat 8 (raw records), the rest run Winlogbeat 7; ``rate`` is the fleet's events
    per second. Scenarios cycle through the shapes present and near misses through
    ``near_miss_kinds``, so small corpora still cover every case.
    """
    unknown = set(near_miss_kinds) - NEAR_MISSES.keys()
    if unknown:
        raise ValueError(f"unknown near-miss kinds: {sorted(unknown)}")
    start_ns = parse_timestamp(start)
    if start_ns is None:
        raise ValueError(f"invalid start time {start!r}")
    if hosts is not None and hosts < 2:
        raise ValueError("a fleet needs at least two hosts (lateral movement comes from another one)")
    rng = random.Random(seed)
    factory = EventFactory(rng)
    fleet = factory.fleet(hosts or min(max(events // 200, 6), 400), source_mix, start_ns, raw_share)
    by_shape = {shape: [h for h in fleet if h.shape == shape] for shape in SHAPES}
    shapes = [shape for shape in SHAPES if by_shape[shape]]

    span_ns = int(events / rate * NS_PER_S)
    # Scenarios start early enough for their second event to fall inside the corpus' time range,
    # but are spread over at least a minute even in a short corpus.
    window_ns = max(span_ns - 2 * MAXSPAN_NS, span_ns // 2, MAXSPAN_NS)
    attacks = round(events * attack_rate)
    near_misses = round(events * near_miss_rate) if near_miss_kinds else 0
    writer = ScenarioWriter(factory, fleet)
    scenario: list[tuple[int, Shipped]] = []
    for index in range(attacks + near_misses):
        kind = ATTACK if index < attacks else near_miss_kinds[(index - attacks) % len(near_miss_kinds)]
        shape = DEFEND if kind in _DEFEND_ONLY and DEFEND in shapes else shapes[index % len(shapes)]
        if kind in _DEFEND_ONLY and shape != DEFEND:
            continue  # a fleet without Defend cannot express this near miss
        host = rng.choice(by_shape[shape])
        attacker = rng.choice([h for h in fleet if h is not host])
        plan = writer.plan(attack_delay_s, attacker, shape)
        if kind != ATTACK:
            plan = writer.near_miss(kind, plan, shape)
        begin = start_ns + rng.randrange(window_ns)
        begin = _round_down(begin + (MAXSPAN_NS if plan.delay_ns < 0 else 0), shape)
        case_id = f"{'attack' if kind == ATTACK else 'near-miss'}-{index:05d}"
        scenario += writer.write(host, begin, plan, kind, case_id)
    scenario.sort(key=lambda pair: pair[0])

    noise = _noise(NoiseWriter(factory, fleet), fleet, max(events - len(scenario), 0), start_ns, rate)
    for _, shipped in heapq.merge(noise, scenario, key=lambda pair: pair[0]):
        yield shipped


def iter_corpus(
    seed: int,
    events: int,
    attack_rate: float = 1e-3,
    near_miss_rate: float = 5e-3,
    source_mix: float = 0.5,
    **options: Any,
) -> Iterator[Event]:
    """The corpus' events as their sources ship them (see ``iter_corpus_with_twins`` for the parameters)."""
    for shipped in iter_corpus_with_twins(seed, events, attack_rate, near_miss_rate, source_mix, **options):
        yield shipped.event


def generate_corpus(
    seed: int,
    events: int,
    attack_rate: float = 1e-3,
    near_miss_rate: float = 5e-3,
    source_mix: float = 0.5,
    **options: Any,
) -> list[Event]:
    """A corpus as a list in event-time order (see ``iter_corpus_with_twins`` for the parameters)."""
    return list(iter_corpus(seed, events, attack_rate, near_miss_rate, source_mix, **options))


def source_of(event: Event) -> str:
    """Which of the generator's sources (``SHAPES``) wrote ``event``, told by its agent."""
    agent = event["agent"]
    if agent["type"] == "endpoint":
        return DEFEND
    return WINLOGBEAT8 if agent["version"] == WINLOGBEAT8_VERSION else WINLOGBEAT


def event_time_ns(event: Event) -> int | None:
    """When ``event`` happened, as Elasticsearch orders it (None if its time is not a date).

    That is the @timestamp, except for a raw Sysmon record: there the @timestamp is when the
    record was written, and the ingest pipeline dates the event by Sysmon's ``UtcTime`` instead.
    """
    data = event.get("winlog", {}).get("event_data", {})
    if "category" not in event["event"] and "UtcTime" in data:
        return parse_timestamp(data["UtcTime"] + "Z")
    return parse_timestamp(event["@timestamp"])


def _noise(
    writer: NoiseWriter, fleet: list[Host], count: int, start_ns: int, rate: float
) -> Iterator[tuple[int, Shipped]]:
    """Noise in event-time order: Poisson arrivals over the fleet, each truncated to its source's precision.

    Truncation moves an event back by less than a millisecond, which can put it before the previous
    one; a heap holding that last millisecond restores the order.
    """
    rng = writer.rng
    pending: list[tuple[int, int, Shipped]] = []
    now = float(start_ns)
    for index in range(count):
        now += rng.expovariate(rate) * NS_PER_S
        host = rng.choice(fleet)
        ts = _round_down(int(now), host.shape)
        heapq.heappush(pending, (ts, index, writer.event(host, ts)))
        while pending[0][0] < int(now) - NS_PER_MS:
            ts, _, shipped = heapq.heappop(pending)
            yield ts, shipped
    while pending:
        ts, _, shipped = heapq.heappop(pending)
        yield ts, shipped


def arrival_order(
    events: Iterable[Event], seed: int, max_lateness_s: float = 300.0, duplicate_rate: float = 0.0
) -> Iterator[Event]:
    """Re-order an event-time-ordered stream the way Kafka delivers it, with Beats' re-deliveries.

    Beats writes each event to a random partition and process and network events come from
    different data streams, so consumers see events out of time order. Each event gets a random
    transport delay in [0, max_lateness_s] and events are delivered in order of event time plus
    delay; hence no event arrives more than ``max_lateness_s`` behind the largest event time
    already delivered (event time as ``event_time_ns``: what the detector's lateness is measured
    in). A ``duplicate_rate`` share of events is delivered a second time, later, as an exact copy
    (at-least-once delivery). Works as a stream, holding only the lateness window.
    """
    rng = random.Random(f"{seed}:arrival")
    lateness = int(max_lateness_s * NS_PER_S)
    counter = itertools.count()
    queue: list[tuple[int, int, Event]] = []
    for event in events:
        ts = event_time_ns(event)
        if ts is None:
            raise ValueError(f"event without a valid time: {event.get('@timestamp')!r}")
        while queue and queue[0][0] <= ts:
            yield heapq.heappop(queue)[2]
        # Most events are delayed a little; some wait in a lagging partition up to the limit.
        delay = rng.randrange(lateness + 1) if rng.random() < 0.2 else rng.randrange(min(lateness, 2 * NS_PER_S) + 1)
        heapq.heappush(queue, (ts + delay, next(counter), event))
        if rng.random() < duplicate_rate:
            heapq.heappush(queue, (ts + rng.randrange(delay, lateness + 1), next(counter), _copy(event)))
    while queue:
        yield heapq.heappop(queue)[2]


def _copy(event: Event) -> Event:
    return orjson.loads(orjson.dumps(event))


def write_ndjson(events: Iterable[Event], path: Path) -> int:
    """Write events as NDJSON (gzip if the name ends in ``.gz``); returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.synthetic``: write a corpus as NDJSON."""
    parser = argparse.ArgumentParser(prog="python -m app.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--attack-rate", type=float, default=1e-3, help="attacks per event")
    parser.add_argument("--near-miss-rate", type=float, default=5e-3, help="near misses per event")
    parser.add_argument("--source-mix", type=float, default=0.5, help="share of hosts running Elastic Defend")
    parser.add_argument(
        "--raw-share", type=float, default=0.0,
        help="share of hosts running Winlogbeat 8, shipping raw Sysmon and Security records (the rest: Winlogbeat 7)",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="fleet events per second (sets the time span)")
    parser.add_argument("--hosts", type=int, help="fleet size (default: from --events)")
    parser.add_argument("--start", default=DEFAULT_START, help="start of the time range (ISO 8601)")
    parser.add_argument(
        "--near-miss-kinds", default=",".join(NEAR_MISSES), help=f"comma-separated subset of: {', '.join(NEAR_MISSES)}"
    )
    parser.add_argument("--max-lateness", type=float, default=0.0, help="seconds of out-of-order arrival (0: in order)")
    parser.add_argument("--duplicate-rate", type=float, default=0.0, help="share of events delivered twice")
    parser.add_argument("--out", type=Path, required=True, help="NDJSON file (.gz to compress)")
    args = parser.parse_args(argv)
    events: Iterable[Event] = iter_corpus(
        args.seed, args.events, args.attack_rate, args.near_miss_rate, args.source_mix,
        raw_share=args.raw_share, rate=args.rate, hosts=args.hosts, start=args.start,
        near_miss_kinds=tuple(kind for kind in args.near_miss_kinds.split(",") if kind),
    )
    if args.max_lateness > 0 or args.duplicate_rate > 0:
        events = arrival_order(events, args.seed, args.max_lateness, args.duplicate_rate)
    count = write_ndjson(events, args.out)
    print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
