"""What every measurement shares: the corpus, the broker topics, CPU and memory readings, results.

All parts run on one corpus: a synthetic Windows fleet from ``eqlstream_dev.synthetic`` with three
sources (Elastic Defend, Winlogbeat 7 ECS, Winlogbeat 8 raw Sysmon/Security records), 1-3 KB per
event, >= 99.9% noise, attacks and near misses sprinkled in, in a Kafka-like arrival order with some
re-deliveries. It is generated once per size, seed and generator version and cached in bench/out/.
The adversarial variant is the same corpus with a sixth of its records naming mshta.exe, so that
the prefilter keeps them and the ingest stage has to parse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer
from eqlstream_dev import synthetic

from app.service.kafka import KafkaConnection
from app.service.topics import OwnedTopic, TopicAdmin
from app.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PROFILES = OUT / "profiles"
LOGS = OUT / "logs"
FLEET_RATE = 500.0  # events/s across the fleet: sets the corpus' event-time span, not the benchmark's speed
MAX_LATENESS_S = 300.0
DUPLICATE_RATE = 0.001
DEFEND_SHARE = 0.3  # hosts running Elastic Defend
RAW_SHARE = 0.4  # hosts running Winlogbeat 8 (raw Sysmon); the rest run Winlogbeat 7
INPUT_PARTITIONS = 4
ADVERSARIAL_EVERY = 6  # every sixth record of the adversarial topic names mshta.exe
# What the adversarial records carry: a field naming the rule's literal that no stage reads, so each of
# them passes the prefilter and is parsed, mapped and evaluated, and none becomes a candidate.
_ADVERSARIAL_FIELD = b'{"bench_note":"C:\\\\Windows\\\\System32\\\\mshta.exe",'
SOURCE_NAMES = {
    synthetic.DEFEND: "Elastic Defend",
    synthetic.WINLOGBEAT: "Winlogbeat 7 (ECS)",
    synthetic.WINLOGBEAT8: "Winlogbeat 8 (raw Sysmon)",
}


@dataclass(frozen=True)
class Corpus:
    """A cached NDJSON corpus and what went into it."""

    path: Path
    events: int
    attacks: int
    near_misses: int
    sources: dict[str, int]  # lines per source (re-deliveries included)
    naming_mshta: int  # lines that contain "mshta" in any case: what the prefilter keeps

    @property
    def lines_total(self) -> int:
        """Lines in the file (events plus re-deliveries)."""
        return sum(self.sources.values())

    @property
    def noise_share(self) -> float:
        """The share of events that belong to no attack or near miss (two events each)."""
        return 1 - 2 * (self.attacks + self.near_misses) / self.events

    @property
    def expected_alerts(self) -> int:
        """Attacks plus the near misses Elasticsearch alerts on (near misses cycle through the kinds)."""
        kinds = list(synthetic.NEAR_MISSES)
        return self.attacks + sum(synthetic.NEAR_MISSES[kinds[i % len(kinds)]] for i in range(self.near_misses))

    def lines(self) -> list[bytes]:
        """Every line without its newline, in arrival order."""
        return self.path.read_bytes().splitlines()

    def describe(self) -> str:
        """One line for the results: size, mix and contents."""
        size = self.path.stat().st_size
        total = self.lines_total
        mix = ", ".join(f"{SOURCE_NAMES[s]} {self.sources.get(s, 0) / total:.0%}" for s in synthetic.SHAPES)
        return (
            f"{total:,} events, {size / 1e6:,.0f} MB ({size / total:,.0f} B/event); {mix}; "
            f"{self.noise_share:.3%} noise, {self.attacks} attacks and {self.near_misses} near misses; "
            f"{self.naming_mshta / total:.3%} of the records name mshta (what the prefilter keeps); "
            f"arrival within {MAX_LATENESS_S:.0f} s of event time, {DUPLICATE_RATE:.1%} re-delivered"
        )


def corpus_for(events: int, seed: int) -> Corpus:
    """The corpus of ``events`` events for ``seed``, generated once and cached under bench/out/.

    The file name carries a digest of every file of the generator's package, so a changed generator
    never reuses a stale file.
    """
    attacks = max(2, events // 200_000)
    near_misses = max(len(synthetic.NEAR_MISSES), events // 20_000)
    path = OUT / f"corpus-{events}-seed{seed}-mixed-{_generator_digest()}.ndjson"
    facts_path = path.with_suffix(".facts.json")
    if not (path.exists() and facts_path.exists()):
        started = time.perf_counter()
        log(f"generating {path.relative_to(ROOT)} (once; cached) ...")
        stream = synthetic.iter_corpus(
            seed, events, attacks / events, near_misses / events, DEFEND_SHARE, raw_share=RAW_SHARE, rate=FLEET_RATE
        )
        sources: Counter[str] = Counter()
        partial = path.with_suffix(".partial")
        arrivals = synthetic.arrival_order(stream, seed, MAX_LATENESS_S, DUPLICATE_RATE)
        synthetic.write_ndjson(_tally(arrivals, sources), partial)
        naming = sum(1 for line in partial.read_bytes().splitlines() if b"mshta" in line.lower())
        facts_path.write_text(json.dumps({"sources": dict(sources), "naming_mshta": naming}, sort_keys=True))
        partial.rename(path)
        log(f"generated in {time.perf_counter() - started:.0f} s")
    facts = json.loads(facts_path.read_text())
    return Corpus(path, events, attacks, near_misses, facts["sources"], facts["naming_mshta"])


def _generator_digest() -> str:
    package = Path(synthetic.__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def _tally(events: Iterable[synthetic.Event], sources: Counter[str]) -> Iterator[synthetic.Event]:
    for event in events:
        sources[synthetic.source_of(event)] += 1
        yield event


def adversarial(lines: list[bytes]) -> list[bytes]:
    """The corpus with every ``ADVERSARIAL_EVERY``-th record naming mshta.exe in a field of its own.

    An attacker (or a fleet that runs HTML applications) can make this many events name the rule's
    literal; the prefilter then keeps them and each is parsed, mapped and evaluated, the ingest
    stage's worst case short of every record being a candidate.
    """
    return [
        _ADVERSARIAL_FIELD + line[1:] if index % ADVERSARIAL_EVERY == 0 and line[:1] == b"{" else line
        for index, line in enumerate(lines)
    ]


def log(message: str) -> None:
    """Progress on stderr (the results go to the file)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Part:
    """One measurement's figures: rows of (name, value) plus notes, for the results file."""

    key: str
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # machine-readable, for ratios and the summary
    # A profile's heaviest functions by name (e.g. "ingest"): (function, share of wall time), for the
    # explanation of a missed target.
    heaviest: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    error: str | None = None

    def row(self, name: str, value: str) -> None:
        self.rows.append((name, value))


@dataclass(frozen=True)
class Usage:
    """Wall and CPU time of the current process (all its threads, librdkafka's included)."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Usage:
        return cls(time.perf_counter(), time.process_time())

    def since(self, start: Usage) -> Usage:
        return Usage(self.wall - start.wall, self.cpu - start.cpu)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def free_port() -> int:
    """A loopback port nothing listens on now, for a service's metrics endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create an input topic (the service creates only the topics it owns)."""
    settings = ServiceSettings(kafka_bootstrap_servers=bootstrap)
    TopicAdmin(KafkaConnection.from_settings(settings)).ensure(settings, [OwnedTopic(topic, partitions, {})])


def bulk_producer(bootstrap: str, **extra: object) -> Producer:
    """A producer for loading topics fast: large batches and a large local queue."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "acks": 1,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.max.bytes": 2_000_000,
            **extra,
        }
    )


def produce(producer: Producer, topic: str, value: bytes, partition: int = -1) -> None:
    """Produce one record, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def load_topic(bootstrap: str, topic: str, lines: list[bytes], partitions: int = INPUT_PARTITIONS) -> float:
    """Create ``topic`` and produce ``lines`` to it round-robin over its partitions, the way Beats
    spreads a host's events; returns the seconds it took. Uncompressed, so that every reader
    (confluent-kafka, Quix Streams and Faust's aiokafka alike) pays the same decoding."""
    create_topic(bootstrap, topic, partitions)
    producer = bulk_producer(bootstrap)
    started = time.perf_counter()
    for index, line in enumerate(lines):
        produce(producer, topic, line, index % partitions)
    if producer.flush(120):
        raise RuntimeError(f"could not load {topic}: records left undelivered")
    return time.perf_counter() - started


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's description elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    """The cores this process may run on (what the broker, the readers and the bench share)."""
    return len(os.sched_getaffinity(0))


def code_version() -> str:
    """The git commit measured, marked when app/, dev/ or bench/ have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "app", "dev", "bench"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if dirty.strip() else commit


def load_average() -> str:
    """The 1/5/15-minute load averages: a busy machine shows here."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
