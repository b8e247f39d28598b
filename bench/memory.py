"""Part 6: memory of the sequence stage under a flood of distinct stage-1 keys, and after they expire.

An attacker (or a misbehaving fleet) that sends ``mshta.exe -Embedding`` process starts, each with
a new ``process.entity_id``, makes the sequence stage hold one pending sequence per event for the
allowed lateness plus maxspan. Two floods, each dated within one minute of event time:

* through the service: ``service_keys`` candidates straight to the candidates topic of a
  ``python -m app run --role sequence`` process (the records the ingest stage would produce for
  real process starts), then events from ``watermark_quorum`` hosts dated past the expiry horizon
  to every candidates partition (each has its own watermark). Progress is read from the state
  changelog (one record per key written, one tombstone per key deleted). It gives the process'
  RSS (sampled, and VmHWM), the state directory's size, the keys left afterwards (read with
  rocksdict once the process stopped), the rate at which the stage absorbs new keys, and a py-spy
  profile of the flood;
* through the state code alone (``bench.state_flood``), ``keys`` of them (1,000,000 by default):
  the service absorbs new keys only as fast as Faust writes their changelog records, too slowly
  for a benchmark run, so the full-size figure is the service's own peak plus the state's growth;
* and, in this process, the memory the engine itself keeps per key (its expiry index).
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from app import synthetic
from app.detector import CandidateExtractor
from app.engine.sequence import Candidate, SequenceEngine
from app.engine.state import KeyState
from app.engine.watermark import Watermark
from app.kafka.admin import ensure_topics
from app.kafka.records import candidate_key, encode_candidate
from app.kafka.sequence import STATE_TABLE
from app.rule import CompiledRule
from app.settings import Settings
from app.timeparse import NS_PER_S
from bench.common import OUT, ROOT, Part, log, rss_bytes
from bench.profiles import py_spy
from bench.service import Service, start
from bench.throughput import bench_settings

FLOOD_SPAN_NS = 60 * NS_PER_S
FLOOD_HOSTS = 500
WARMUP_TIMEOUT_S = 180.0
FLOOD_TIMEOUT_S = 1800.0
PROFILE_S = 15.0
INDEX_SAMPLE_KEYS = 200_000  # keys the engine's own memory is measured on (per key it is constant)
MB = 1_000_000


def _template(rules: list[CompiledRule], seed: int) -> Candidate:
    """A real stage-1 candidate (an Elastic Defend ``mshta.exe -Embedding`` process start)."""
    extractor = CandidateExtractor(rules)
    for event in synthetic.iter_corpus(seed, 2_000, 1e-3, 0.0, 1.0, near_miss_kinds=()):
        for candidate in extractor.candidates(event):
            if candidate.stages == (0,):
                return candidate
    raise RuntimeError("the generator wrote no stage-1 event")


def flood_candidates(template: Candidate, keys: int, start_ns: int, prefix: str = "flood") -> Iterator[Candidate]:
    """``keys`` stage-1 candidates, each with its own process entity, spread over one minute of event time."""
    doc = template.event
    for index in range(keys):
        host_id = str(uuid.UUID(bytes=hashlib.md5(b"host%d" % (index % FLOOD_HOSTS)).digest()))
        entity = base64.b64encode(hashlib.blake2b(f"{prefix}{index}".encode(), digest_size=36).digest()).decode()
        event = {**doc, "host": {**doc["host"], "id": host_id}, "process": {**doc["process"], "entity_id": entity}}
        yield Candidate(
            template.rule_id, (host_id, entity), (0,), start_ns + index * FLOOD_SPAN_NS // keys,
            f"{prefix}-{index}", event, host_id, "bench",
        )


def measure_memory(
    bootstrap: str, rules: list[CompiledRule], keys: int, service_keys: int, seed: int, *, single_record_batches: bool
) -> Part:
    """A flood of ``service_keys`` keys through the service and one of ``keys`` keys through its state code."""
    part = _service_flood(bootstrap, rules, service_keys, seed, single_record_batches)
    part.title = f"Sequence stage memory: a flood of {keys:,} distinct stage-1 keys within one minute"
    _state_flood(part, keys, seed)
    return part


def _state_flood(part: Part, keys: int, seed: int) -> None:
    """``bench.state_flood`` in a subprocess (its own peak RSS); adds its rows and the estimate for the service."""
    with tempfile.TemporaryDirectory(prefix="bench-state-flood-") as work:
        result_path = Path(work) / "result.json"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bench.state_flood", "--keys", str(keys), "--dir", str(Path(work) / "db"),
             "--result", str(result_path), "--seed", str(seed)],
            cwd=ROOT, check=True, timeout=3600,
        )
        seconds = time.perf_counter() - started
        result = json.loads(result_path.read_text())
    state_growth = result["peak_rss"] - result["start_rss"]
    estimate = part.figures["service_peak_mb"] * MB + state_growth
    part.figures.update(peak_rss_mb=estimate / MB, state_peak_mb=result["peak_rss"] / MB, live_keys=result["live"],
                        state_keys=keys)
    part.rows.insert(0, ("**peak RSS of the sequence stage for the full flood (estimate)**",
                         f"**{estimate / MB:,.0f} MB** = the service's peak in its own flood below "
                         f"({part.figures['service_peak_mb']:,.0f} MB) + the state's growth at {keys:,} keys "
                         f"({state_growth / MB:,.0f} MB)"))
    part.rows.insert(1, (f"state code alone, {keys:,} keys (`bench.state_flood`: engine + RocksDB, in-process)",
                         f"RSS {result['start_rss'] / MB:,.0f} MB at start → {result['flood_rss'] / MB:,.0f} MB "
                         f"after the flood (peak {result['peak_rss'] / MB:,.0f} MB), {result['after_rss'] / MB:,.0f} "
                         f"MB after expiry; on disk {result['flood_disk'] / MB:,.0f} MB → "
                         f"{result['after_disk'] / MB:,.0f} MB (deletes are tombstones until compaction); "
                         f"{result['expired']:,} keys expired, {result['live']} left (the advancing keys); "
                         f"{seconds:.0f} s"))


def _service_flood(
    bootstrap: str, rules: list[CompiledRule], keys: int, seed: int, single_record_batches: bool
) -> Part:
    """The flood against a ``--role sequence`` subprocess; see the module docstring."""
    part = Part("memory", "")
    template = _template(rules, seed)
    name = f"memory-{uuid.uuid4().hex[:8]}"
    settings = bench_settings(bootstrap, f"{name}-input", name).model_copy(
        update={"single_record_batches": single_record_batches})
    changelog = f"{settings.consumer_group}-sequence-{STATE_TABLE}-changelog"
    partitions = settings.candidates_partitions
    ensure_topics(settings, {settings.candidates_topic: partitions, changelog: partitions})
    horizon_ns = settings.allowed_lateness_ns + FLOOD_SPAN_NS + settings.order_tolerance_ns
    start_ns = template.timestamp_ns
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": 1,
                         "queue.buffering.max.kbytes": 1_048_576})

    def send(candidate: Candidate, partition: int | None = None) -> None:
        value = encode_candidate(candidate, time.time_ns())
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(settings.candidates_topic, value, key=candidate_key(candidate), **extra)
                return
            except BufferError:
                producer.poll(0.05)

    profile: list[str | None] = []
    profile_path = OUT / "profiles" / "sequence-flood.txt"
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as data_dir:
        service = start("sequence", settings, Path(data_dir), name)
        counter = _ChangelogCounter(bootstrap, changelog, partitions)
        sampler = _Sampler(service)
        try:
            # One key first: once its state is written the worker has its partitions and the flood is timed alone.
            send(next(flood_candidates(template, 1, start_ns, prefix="warm-up")))
            producer.flush(30)
            counter.wait(service, lambda: counter.records >= 1, WARMUP_TIMEOUT_S)
            flood_started = time.perf_counter()
            profile_s = min(PROFILE_S, max(3.0, keys / 1000))
            profiler = threading.Thread(target=lambda: profile.append(py_spy(service.pid, profile_s, profile_path)),
                                        daemon=True)
            profiler.start()
            for candidate in flood_candidates(template, keys, start_ns):
                send(candidate)
            producer.flush(300)
            counter.wait(service, lambda: counter.records >= 1 + keys, FLOOD_TIMEOUT_S)
            flood_seconds = time.perf_counter() - flood_started
            flood_peak = sampler.peak
            flood_disk = _du(Path(data_dir))
            # Events past the horizon from `quorum` hosts on every partition: each partition has its own watermark.
            later = start_ns + FLOOD_SPAN_NS + horizon_ns + 60 * NS_PER_S
            for partition in range(partitions):
                for host in range(settings.watermark_quorum):
                    send(Candidate(template.rule_id, (f"advance-{host}", f"p{partition}"), (0,), later,
                                   f"advance-{partition}-{host}", template.event, f"advance-{host}", "bench"), partition)
            producer.flush(60)
            expiry_started = time.perf_counter()
            counter.wait(service, lambda: counter.tombstones >= 1 + keys, FLOOD_TIMEOUT_S)
            profiler.join(PROFILE_S + 10)
            expiry_seconds = time.perf_counter() - expiry_started
            time.sleep(2)
            after_rss, peak = rss_bytes(service.pid)
            after_disk = _du(Path(data_dir))
        finally:
            sampler.stop()
            counter.close()
            service.stop()
        live, compacted = _live_keys_and_compact(Path(data_dir))
    advancing = settings.watermark_quorum * partitions
    per_key = _engine_index_bytes(template, min(keys, INDEX_SAMPLE_KEYS))
    part.figures.update(service_peak_mb=peak / MB, flood_peak_mb=flood_peak / MB, after_rss_mb=after_rss / MB,
                        flood_disk_mb=flood_disk / MB, service_live_keys=live, advancing_keys=advancing,
                        index_bytes_per_key=per_key, absorb_rate=keys / flood_seconds)
    part.row("service flood", f"{keys:,} candidates (≈{len(encode_candidate(template, 0)):,} B each) over 1 min of event "
             f"time from {FLOOD_HOSTS} hosts, sent straight to the candidates topic; all state written "
             f"{flood_seconds:.0f} s after the first was sent: **{keys / flood_seconds:,.0f} keys/s absorbed**")
    part.row("peak RSS (VmHWM, whole run)", f"**{peak / MB:,.0f} MB** (sampled peak during the flood "
             f"{flood_peak / MB:,.0f} MB)")
    part.row("state on disk at the end of the flood", f"{flood_disk / MB:,.0f} MB (RocksDB, {partitions} partitions)")
    part.row("expiry", f"{settings.watermark_quorum} hosts × {partitions} partitions dated past the horizon "
             f"({horizon_ns / NS_PER_S:.0f} s); all {keys + 1:,} keys deleted (changelog tombstones) in "
             f"{expiry_seconds:.0f} s")
    part.row("after expiry", f"RSS {after_rss / MB:,.0f} MB; keys left in the state store: {live:,} "
             f"(the {advancing} advancing keys: {'yes' if live == advancing else 'NO'}); "
             f"on disk {after_disk / MB:,.0f} MB, {compacted / MB:,.0f} MB after a RocksDB compaction")
    part.row("engine's own memory per key (its expiry index)", f"{per_key:,.0f} B/key (tracemalloc over "
             f"{min(keys, INDEX_SAMPLE_KEYS):,} keys, in-process, over a store that keeps nothing)")
    if profile and profile[0]:
        part.notes.append(f"Where the sequence stage spends the flood (py-spy, {profile_s:.0f} s from the flood's "
                          f"start; bench/out/profiles/{profile_path.name}):\n\n```\n{profile[0]}\n```")
    log(f"memory: peak RSS {peak / MB:,.0f} MB, after expiry {after_rss / MB:,.0f} MB, keys left {live}")
    return part


class _ChangelogCounter:
    """Counts the records and tombstones of the state changelog in a thread: the stage's progress."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.records = 0
        self.tombstones = 0
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                   "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(10_000, 0.1):
                if message.error() is None:
                    if message.value() is None:
                        self.tombstones += 1
                    else:
                        self.records += 1
        self._consumer.close()

    def wait(self, service: Service, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not done():
            service.check()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out: {self.records:,} state records, {self.tombstones:,} deletions")
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


class _Sampler:
    """Samples a process' RSS every 0.2 s in a thread; keeps the peak."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, rss_bytes(self.service.pid)[0])
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
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

    def items(self):  # noqa: ANN201
        return iter(())


def _engine_index_bytes(template: Candidate, keys: int) -> float:
    """Bytes the engine itself keeps per distinct key, over ``keys`` stage-1 candidates (tracemalloc)."""
    settings = Settings()
    engine = SequenceEngine(
        rule_id=template.rule_id, stage_count=2, maxspan_ns=FLOOD_SPAN_NS, store=_NullStore(),
        allowed_lateness_ns=settings.allowed_lateness_ns, watermark=Watermark(settings.watermark_quorum),
    )
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for candidate in flood_candidates(template, keys, template.timestamp_ns):
        engine.process(candidate)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return grown / keys
