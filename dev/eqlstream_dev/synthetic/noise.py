"""A Windows fleet's background events: what the detector must discard, cheaply and correctly.

The noise is weighted towards what comes close to the rule: about 13% of process starts carry
``-Embedding`` (COM servers started by DcomLaunch), and many network events are inbound high-port
TCP to RPC services, which pass every stage-2 test but the process name.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import replace

from eqlstream_dev.synthetic.clock import NS_PER_MS, NS_PER_S
from eqlstream_dev.synthetic.ecs import Shipped
from eqlstream_dev.synthetic.factory import EventFactory
from eqlstream_dev.synthetic.fleet import (
    DEFEND,
    IMAGES,
    LOCAL_SERVICE,
    NETWORK_SERVICE,
    SYSTEM,
    Connection,
    Host,
    User,
    round_down,
)

_LOWER_SYS32 = "C:\\Windows\\system32\\"  # how command lines usually spell it
_WBEM = _LOWER_SYS32 + "wbem\\"
_SVCHOST = _LOWER_SYS32 + "svchost.exe"
# (weight, image, args, parent service, user)
_PROCESS_TEMPLATES: tuple[tuple[float, str, tuple[str, ...], str, User], ...] = (
    (6, "wmiprvse", (_WBEM + "wmiprvse.exe", "-secured", "-Embedding"), "dcomlaunch", NETWORK_SERVICE),
    (4, "runtimebroker", ("C:\\Windows\\System32\\RuntimeBroker.exe", "-Embedding"), "dcomlaunch", SYSTEM),
    (3, "searchindexer", ("C:\\Windows\\system32\\SearchIndexer.exe", "/Embedding"), "services", SYSTEM),
    (20, "svchost", (_SVCHOST, "-k", "netsvcs", "-p", "-s", "Schedule"), "services", SYSTEM),
    (12, "svchost", (_SVCHOST, "-k", "LocalServiceNetworkRestricted", "-p"), "services", LOCAL_SERVICE),
    (12, "conhost", ("\\??\\C:\\Windows\\system32\\conhost.exe", "0xffffffff", "-ForceV1"), "netsvcs", SYSTEM),
    (
        10,
        "dllhost",
        (_LOWER_SYS32 + "DllHost.exe", "/Processid:{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}"),
        "dcomlaunch",
        SYSTEM,
    ),
    (10, "taskhostw", ("taskhostw.exe", "NGCKeyPregen"), "netsvcs", SYSTEM),
    (
        12,
        "searchprotocolhost",
        (
            "C:\\Windows\\system32\\SearchProtocolHost.exe",
            "Global\\UsGthrFltPipeMssGthrPipe8_",
            "Global\\UsGthrCtrlFltPipeMssGthrPipe8",
            "1",
            "-2147483646",
            "Software\\Microsoft\\Windows Search",
        ),
        "searchindexer",
        SYSTEM,
    ),
    (
        11,
        "backgroundtaskhost",
        (
            "C:\\Windows\\system32\\backgroundTaskHost.exe",
            "-ServerName:BackgroundTaskHost.WebAccountProvider",
        ),
        "dcomlaunch",
        SYSTEM,
    ),
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
    (
        "HKLM\\SYSTEM\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\{sid}",
        "\\Device\\HarddiskVolume3\\Windows\\System32\\svchost.exe",
        "Binary Data",
    ),
    ("HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates", "SignaturesLastUpdated", "2024-05-14T06:12:40Z"),
    ("HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\RecentDocs", "MRUListEx", "Binary Data"),
    (
        "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tree\\Microsoft\\Windows\\"
        "UpdateOrchestrator",
        "Index",
        "DWORD (0x00000003)",
    ),
    ("HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\{{{guid}}}", "DhcpIPAddress", "{ip}"),
)
_DNS_NAMES = (
    "login.microsoftonline.com",
    "settings-win.data.microsoft.com",
    "ctldl.windowsupdate.com",
    "v10.events.data.microsoft.com",
    "wdcp.microsoft.com",
    "dc01.corp.example.com",
    "fs01.corp.example.com",
    "wpad.corp.example.com",
    "time.windows.com",
    "outlook.office365.com",
)
_NOISE_KINDS = ("registry", "file", "network", "dns", "process", "logon")
_NOISE_WEIGHTS = (30, 28, 18, 10, 9, 5)


class NoiseWriter:
    """Writes one background event at a time, of a randomly chosen kind."""

    def __init__(self, factory: EventFactory, fleet: list[Host]) -> None:
        self.factory = factory
        self.rng = factory.rng
        self.fleet = fleet

    def event(self, host: Host, ts_ns: int) -> Shipped:
        """One noise event of a randomly chosen kind on ``host``."""
        kind = self.rng.choices(_NOISE_KINDS, _NOISE_WEIGHTS)[0]
        return getattr(self, f"_{kind}")(host, ts_ns)

    def stream(self, count: int, start_ns: int, rate: float) -> Iterator[tuple[int, Shipped]]:
        """``count`` events in event-time order: Poisson arrivals over the fleet, each truncated to its
        source's precision.

        Truncation moves an event back by less than a millisecond, which can put it before the previous
        one; a heap holding that last millisecond restores the order.
        """
        rng = self.rng
        pending: list[tuple[int, int, Shipped]] = []
        now = float(start_ns)
        for index in range(count):
            now += rng.expovariate(rate) * NS_PER_S
            host = rng.choice(self.fleet)
            ts = round_down(int(now), host.shape)
            heapq.heappush(pending, (ts, index, self.event(host, ts)))
            while pending[0][0] < int(now) - NS_PER_MS:
                ts, _, shipped = heapq.heappop(pending)
                yield ts, shipped
        while pending:
            ts, _, shipped = heapq.heappop(pending)
            yield ts, shipped

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
