"""Memory of the sequence stage under a flood of distinct stage-1 keys, and after they expire.

An attacker (or a misbehaving fleet) that sends ``mshta.exe -Embedding`` process starts, each with
a new ``process.entity_id``, makes the sequence stage hold one pending sequence per event for the
allowed lateness plus maxspan. ``keys`` such candidates (1,000,000 by default), dated within one
minute of event time from 500 hosts, are packed into the candidates topic of a
``python -m app run --role sequence`` process (default settings apart from the broker, the topic
names, the state directory and the web port), on the broker started as Apache Kafka would batch
(``bench.sequence``). Then candidates from ``watermark_quorum`` hosts dated past the expiry horizon
go to every candidates partition (each has its own watermark), and every flooded key must expire.

Progress is read from the process's own metrics (``eqlstream_sequence_candidates_total``,
``eqlstream_state_expired_keys_total``); its RSS is sampled throughout and its peak is the
kernel's (VmHWM); the keys left are read from the RocksDB databases once the process stopped.
The memory the engine itself keeps per key (its expiry index) is measured in this process.
"""

from __future__ import annotations

import dataclasses
import gc
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eqlstream_dev.broker import EmbeddedBroker

from app.core import Candidate, CompiledRule, DetectionOptions
from app.core.engine.sequence import SequenceEngine
from app.core.engine.state import KeyState
from app.core.engine.watermark import Watermark
from app.settings import ServiceSettings
from bench.candidates import FloodWriter, flood, templates
from bench.common import Part, bulk_producer, log, rss_bytes
from bench.sequence import HANDLED, KAFKA_LIKE_CLUSTER, SPAN_MS, handled, prepare
from bench.service import Service, Window, follow, start

EXPIRED = "eqlstream_state_expired_keys_total"
INDEX_SAMPLE_KEYS = 200_000  # keys the engine's own memory is measured on (per key it is constant)
MB = 1_000_000
MIB = 1 << 20


@dataclass
class Readings:
    """What the flood and the expiry did to the process (bytes, seconds, counts)."""

    flood: Window
    start_rss: int = 0  # at the first candidate
    flood_peak: int = 0  # sampled, during the flood
    expiry_peak: int = 0  # sampled, from the flood's end to the expiry's
    peak: int = 0  # VmHWM: the kernel's peak over the whole run
    after_rss: int = 0
    state_keys: float = 0.0  # RocksDB's estimates at the flood's end
    state_bytes: float = 0.0
    flood_disk: int = 0
    after_disk: int = 0
    compacted_disk: int = 0
    expired: float = 0.0
    expiry_seconds: float = 0.0
    live: int = 0


def measure_memory(rules: list[CompiledRule], keys: int, seed: int) -> Part:
    """The flood through a sequence process (see the module docstring)."""
    part = Part("memory", f"Sequence stage memory: a flood of {keys:,} distinct stage-1 keys within one minute")
    template = templates(rules, seed).first
    name = f"bench-memory-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker(cluster_id=KAFKA_LIKE_CLUSTER) as broker, tempfile.TemporaryDirectory() as data_dir:
        settings = prepare(broker.bootstrap_servers, name, Path(data_dir))
        readings = _flood_and_expire(broker.bootstrap_servers, settings, template, keys, name)
    options = settings.detection_options()
    partitions = settings.candidates_partitions
    advancing = options.watermark_quorum * partitions
    per_key = _engine_index_bytes(template, options, min(keys, INDEX_SAMPLE_KEYS))
    # What RocksDB may hold in memory by the settings: a block cache and two write buffers per partition.
    rocksdb_budget = partitions * (settings.rocksdb_block_cache + 2 * settings.rocksdb_write_buffer)
    part.figures.update(
        peak_rss_mb=readings.peak / MB,
        start_rss_mb=readings.start_rss / MB,
        flood_peak_mb=readings.flood_peak / MB,
        expiry_peak_mb=readings.expiry_peak / MB,
        after_rss_mb=readings.after_rss / MB,
        rocksdb_budget_mb=rocksdb_budget / MB,
        index_mb=per_key * keys / MB,
        live_keys=readings.live,
        advancing_keys=advancing,
        absorb_rate=readings.flood.rate,
    )
    flood = readings.flood
    part.row(
        "flood",
        f"{keys:,} candidates (≈{len(template.event_json):,} B of event each) over 1 min of event time from 500 "
        f"hosts, packed into the candidates topic beforehand; as on Apache Kafka (cluster id `{KAFKA_LIKE_CLUSTER}`); "
        f"**{flood.rate:,.0f} keys/s absorbed** (`{HANDLED}`, {flood.wall:.0f} s)",
    )
    part.row(
        "**peak RSS (VmHWM, whole run)**",
        f"**{readings.peak / MB:,.0f} MB**; sampled every 0.2 s: {readings.start_rss / MB:,.0f} MB at the first "
        f"candidate, at most {readings.flood_peak / MB:,.0f} MB during the flood and "
        f"{readings.expiry_peak / MB:,.0f} MB during the expiry",
    )
    part.row(
        "what the settings let RocksDB and the engine hold",
        f"RocksDB up to {rocksdb_budget / MB:,.0f} MB ({partitions} partitions × (block cache "
        f"{settings.rocksdb_block_cache / MIB:,.0f} MiB + 2 write buffers of {settings.rocksdb_write_buffer / MIB:,.0f} "
        f"MiB)); the engine's expiry index {per_key * keys / MB:,.0f} MB ({per_key:,.0f} B/key, measured in-process "
        f"with tracemalloc over {min(keys, INDEX_SAMPLE_KEYS):,} keys and a store that keeps nothing)",
    )
    part.row(
        "state at the end of the flood",
        f"{readings.state_keys:,.0f} keys, {readings.state_bytes / MB:,.0f} MB (RocksDB's estimates, memtables "
        f"included); {readings.flood_disk / MB:,.0f} MB on disk in {partitions} partitions",
    )
    part.row(
        "expiry",
        f"{options.watermark_quorum} hosts × {partitions} partitions dated past the horizon; {readings.expired:,.0f} "
        f"keys expired (`{EXPIRED}`) {readings.expiry_seconds:.0f} s after they were sent",
    )
    part.row(
        "after expiry",
        f"RSS {readings.after_rss / MB:,.0f} MB; keys left in the state store: {readings.live:,} (the {advancing} "
        f"advancing keys: {'yes' if readings.live == advancing else 'NO'}); on disk {readings.after_disk / MB:,.0f} "
        f"MB, {readings.compacted_disk / MB:,.0f} MB after a RocksDB compaction",
    )
    log(f"memory: peak RSS {readings.peak / MB:,.0f} MB, after expiry {readings.after_rss / MB:,.0f} MB")
    return part


def _flood_and_expire(bootstrap: str, settings: ServiceSettings, template: Candidate, keys: int, name: str) -> Readings:
    """Pack the flood, let a sequence process absorb it, then expire it; the process's readings throughout."""
    data_dir = settings.data_dir
    producer = bulk_producer(bootstrap, **{"compression.type": "lz4"})
    writer = FloodWriter(producer, settings.candidates_topic, settings.candidates_partitions)
    started = time.perf_counter()
    for candidate in flood(template, keys, template.timestamp_ms, SPAN_MS):
        writer.add(candidate)
    writer.flush()
    producer.flush(300)
    log(f"packed {keys:,} candidates in {time.perf_counter() - started:.0f} s")
    service = start("sequence", settings, name)
    sampler = _Sampler(service)
    try:
        start_rss: list[int] = []
        window = follow(service, handled, keys, on_start=lambda: start_rss.append(rss_bytes(service.pid)[0]))
        readings = Readings(window, start_rss=start_rss[0])
        time.sleep(2)  # the last batch's state is written after its candidates are counted
        readings.flood_peak = sampler.take_peak()
        metrics = service.metrics()
        readings.state_keys = metrics.get("eqlstream_state_keys", 0.0)
        readings.state_bytes = metrics.get("eqlstream_state_size_bytes", 0.0)
        readings.flood_disk = _du(data_dir)
        # Past the horizon, from `quorum` hosts, on every partition: each partition has its own watermark.
        options = settings.detection_options()
        later = template.timestamp_ms + SPAN_MS + options.allowed_lateness_ms + options.order_tolerance_ms + 120_000
        for partition in range(settings.candidates_partitions):
            hosts = range(options.watermark_quorum)
            writer.send_to(partition, [_advancing(template, partition, host, later) for host in hosts])
        producer.flush(60)
        expiry_started = time.perf_counter()
        readings.expired = follow(service, lambda s: s.total(EXPIRED), keys).last
        readings.expiry_seconds = time.perf_counter() - expiry_started
        time.sleep(2)
        readings.expiry_peak = sampler.take_peak()
        readings.after_rss, readings.peak = rss_bytes(service.pid)
        readings.after_disk = _du(data_dir)
    finally:
        sampler.stop()
        service.stop()  # a clean stop: the state is read from its databases next
    readings.live, readings.compacted_disk = _live_keys_and_compact(data_dir)
    return readings


def _advancing(template: Candidate, partition: int, host: int, timestamp_ms: int) -> Candidate:
    """A candidate of host ``host`` dated ``timestamp_ms``, keyed apart for ``partition``."""
    return dataclasses.replace(
        template,
        key=(f"advance-{host}", f"p{partition}"),
        event_id=f"advance-{partition}-{host}",
        timestamp_ms=timestamp_ms,
        watermark_host=f"advance-{host}",
    )


class _Sampler:
    """Samples a process' RSS every 0.2 s in a thread; keeps the peak."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.peak = 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.wait(0.2):
            try:
                self.peak = max(self.peak, rss_bytes(self.service.pid)[0])
            except OSError:
                return

    def take_peak(self) -> int:
        """The peak since the last call (or the start)."""
        peak, self.peak = self.peak, 0
        return peak

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _live_keys_and_compact(data_dir: Path) -> tuple[int, int]:
    """Live keys in the state's RocksDB databases, and the directory's size after compacting them."""
    from rocksdict import Rdict  # the store Faust uses; read here only after the service stopped

    live = 0
    for db_path in sorted(p for p in data_dir.rglob("*.db") if p.is_dir() and "sequence-state" in p.name):
        db = Rdict(str(db_path))
        # Faust keeps each partition's changelog offset under a key of its own.
        live += sum(1 for key in db.keys() if not key.startswith(b"__faust"))  # noqa: SIM118 - Rdict iterates items
        db.compact_range(None, None)
        db.close()
    return live, _du(data_dir)


class _NullStore:
    """A store that keeps nothing: what remains in memory is the engine's own."""

    def get(self, key: str) -> KeyState | None:
        return None

    def set(self, key: str, state: KeyState) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def items(self) -> Iterator[tuple[str, KeyState]]:
        return iter(())


def _engine_index_bytes(template: Candidate, options: DetectionOptions, keys: int) -> float:
    """Bytes the engine itself keeps per distinct key, over ``keys`` stage-1 candidates (tracemalloc)."""
    engine = SequenceEngine(
        rule_id=template.rule_id,
        stage_count=2,
        maxspan_ms=SPAN_MS,
        store=_NullStore(),
        allowed_lateness_ms=options.allowed_lateness_ms,
        watermark=Watermark(options.watermark_quorum),
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for candidate in flood(template, keys, template.timestamp_ms, SPAN_MS):
        engine.process(candidate)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return grown / keys
