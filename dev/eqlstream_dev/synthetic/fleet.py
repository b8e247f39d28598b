"""The fleet model: Windows hosts, their executables, accounts and processes, and network flows.

Everything here is what happened, independent of how a source reports it: the renderers
(defend.py, winlogbeat7.py, winlogbeat8.py) write the same model objects in each shipper's shape,
which is what lets a raw record's twin be written without reading the record back.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass, field

from eqlstream_dev.synthetic.clock import FILETIME_EPOCH_S, NS_PER_MS, NS_PER_S

DEFEND = "defend"
WINLOGBEAT = "winlogbeat7"
WINLOGBEAT8 = "winlogbeat8"  # raw Sysmon and Security records
SHAPES = (DEFEND, WINLOGBEAT, WINLOGBEAT8)

# 7 fractional digits vs Sysmon's milliseconds (Winlogbeat 8's Security records follow the same clock).
PRECISION_NS = {DEFEND: 100, WINLOGBEAT: NS_PER_MS, WINLOGBEAT8: NS_PER_MS}


def round_down(ts_ns: int, shape: str) -> int:
    """``ts_ns`` as precisely as ``shape``'s source can tell it."""
    return ts_ns - ts_ns % PRECISION_NS[shape]


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

WORKING_DIRECTORY = "C:\\Windows\\system32\\"  # where the fleet's services and COM servers start
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

    @property
    def ancestors(self) -> list[Process]:
        """Parent, grandparent, ... (Defend's ``process.Ext.ancestry`` lists their entity ids)."""
        chain = []
        parent = self.parent
        while parent is not None:
            chain.append(parent)
            parent = parent.parent
        return chain


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


class FleetBuilder:
    """Hosts, accounts and processes drawn from the seeded generator: the identities events refer to."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._entity_ids: set[str] = set()  # an entity id names one process: never issue one twice

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
                host,
                IMAGES["svchost"],
                (svchost, "-k", "NetworkService", "-p", "-s", "Dnscache"),
                NETWORK_SERVICE,
                services,
                boot_ns,
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
                filetime = f"{seconds + FILETIME_EPOCH_S}.{nanos:09d}"
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
