"""The sequence stage's state under a flood, without Kafka: what the memory target is about, at full size.

``python -m bench.state_flood --keys N --dir D --result FILE``

The service's sequence stage absorbs new keys only as fast as Faust writes their changelog records
(a few hundred to ~1,000 keys/s on the embedded broker), so a 1,000,000-key flood through it does
not fit in a benchmark run. This runs what holds the state in that process, at full size: the
service's ``SequenceStage`` per candidates partition (engine, expiry index, watermark) over the
service's ``TableStore`` serialization into RocksDB databases opened with Faust's own
``RocksDBOptions`` and the service's memory settings (block cache and write buffers per partition),
one database per partition as Faust keeps them. What it leaves out is Faust's and aiokafka's own
memory (their buffers, the changelog producer), which the service-level flood measures.

It writes a JSON object: peak RSS (VmHWM) of this process, RSS at the end of the flood and after
expiry, the state directory's size at both points, and the keys left.
"""

from __future__ import annotations

import argparse
import gc
import os
import zlib
from pathlib import Path

import orjson
from faust.stores.rocksdb import RocksDBOptions

from app.detector import SequenceStage
from app.engine.sequence import Candidate
from app.engine.state import KeyState
from app.rule import load_rules
from app.settings import Settings
from app.timeparse import NS_PER_S
from bench.common import rss_bytes
from bench.memory import FLOOD_SPAN_NS, _du, _template, flood_candidates


class RocksStore:
    """``app.kafka.sequence.TableStore``'s serialization over one RocksDB database."""

    def __init__(self, db: object) -> None:
        self._db = db

    def get(self, key: str) -> KeyState | None:
        raw = self._db.get(key.encode())
        return KeyState.from_json(orjson.loads(raw)) if raw is not None else None

    def set(self, key: str, state: KeyState) -> None:
        self._db[key.encode()] = orjson.dumps(state.to_json())

    def delete(self, key: str) -> None:
        del self._db[key.encode()]

    def items(self):  # noqa: ANN201 - not used: nothing is restored here
        return iter(())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_flood", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    settings = Settings()
    rules = load_rules(settings.rule_path)
    template = _template(rules, args.seed)
    options = RocksDBOptions(
        block_cache_size=settings.rocksdb_block_cache, block_cache_compressed_size=0,
        write_buffer_size=settings.rocksdb_write_buffer, max_write_buffer_number=2,
    )
    partitions = settings.candidates_partitions
    dbs = [options.open(args.dir / f"sequence-state-{p}.db") for p in range(partitions)]
    stages = [SequenceStage(rules, settings, RocksStore(db)) for db in dbs]
    gc.collect()
    start_rss = rss_bytes_now()
    for candidate in flood_candidates(template, args.keys, template.timestamp_ns):
        stages[_partition(candidate, partitions)].process(candidate, 0)
    flood_rss = rss_bytes_now()
    flood_disk = _du(args.dir)
    horizon_ns = settings.allowed_lateness_ns + FLOOD_SPAN_NS + settings.order_tolerance_ns
    later = template.timestamp_ns + FLOOD_SPAN_NS + horizon_ns + 60 * NS_PER_S
    for partition, stage in enumerate(stages):
        for host in range(settings.watermark_quorum):
            stage.process(Candidate(template.rule_id, (f"advance-{host}", f"p{partition}"), (0,), later,
                                    f"advance-{partition}-{host}", template.event, f"advance-{host}", "bench"), 0)
    gc.collect()
    after_rss = rss_bytes_now()
    live = sum(sum(1 for _ in db.keys()) for db in dbs)  # noqa: SIM118 - an Rdict iterates items
    after_disk = _du(args.dir)
    for db in dbs:
        db.close()
    args.result.write_bytes(orjson.dumps({
        "start_rss": start_rss, "flood_rss": flood_rss, "after_rss": after_rss, "peak_rss": rss_bytes_now(peak=True),
        "flood_disk": flood_disk, "after_disk": after_disk, "live": live,
        "expired": sum(engine.stats.expired_keys for stage in stages for engine in stage.engines.values()),
    }))


def _partition(candidate: Candidate, partitions: int) -> int:
    """A stable partition per join key (the candidates topic's partitioner spreads keys the same way)."""
    return zlib.crc32(orjson.dumps(list(candidate.key))) % partitions


def rss_bytes_now(peak: bool = False) -> int:
    current, highest = rss_bytes(os.getpid())
    return highest if peak else current


if __name__ == "__main__":
    main()
