"""The design card's single-stage design, written plainly: one Faust agent on the raw topic.

``python -m bench.faust_baseline --bootstrap HOST:PORT --topic T --events N --partitions P --datadir D
--result FILE``

What it does per event, and nothing else: ``orjson.loads`` of the record, then the service's own
detection code on the parsed event (``CandidateExtractor.extract`` with a prefilter that keeps
everything: ECS mapping of raw Sysmon, the compiled stage predicates, the join keys) and, for the
rare candidates, the detection core's ``SequenceDetector`` over a RocksDB-backed Faust Table (the
table co-partitioned with the topic, as the design card suggests). With
``--prefilter`` the extractor keeps its prefilter, which drops noise on its bytes before parsing:
that shows what Faust's own iteration costs once the per-event parsing is gone.

It writes a JSON object (events counted after the first, wall and CPU seconds from the first
event on, candidates, alerts) to ``--result`` once ``--events`` events are in, and exits at once: the parent only
wants the figures, and a Faust worker takes seconds to stop cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import orjson

from app.core import Detector, SequenceDetector, load_rules
from app.core.engine.state import KeyState, decode_state, encode_state
from app.core.rule.prefilter import Prefilter


class TableStore:
    """The engine's ``StateStore`` over a Faust Table: the state of the agent's current partition."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> KeyState | None:
        raw = self._table.get(key.encode())
        return None if raw is None else decode_state(raw)

    def set(self, key: str, state: KeyState) -> None:
        self._table[key.encode()] = encode_state(state)

    def delete(self, key: str) -> None:
        self._table.pop(key.encode(), None)

    def items(self) -> Iterator[tuple[str, KeyState]]:
        return iter(())  # only used to rebuild the expiry index after a restart


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faust_baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--prefilter", action="store_true")
    parser.add_argument("--result", required=True, help="file the JSON result is written to")
    args = parser.parse_args(argv)

    detector = Detector(load_rules())
    extractor = detector.extractor
    if not args.prefilter:
        extractor.prefilter = Prefilter([])  # no requirement: every record is parsed
    app = faust.App(
        f"bench-faust-{os.getpid()}",
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=args.datadir,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.6,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes)
    table = app.Table("state", partitions=args.partitions, key_type=bytes, value_type=bytes)
    sequencer: SequenceDetector = detector.sequencer(TableStore(table))
    counts = {"events": 0, "candidates": 0, "alerts": 0}
    clock: dict[str, float] = {}

    def detect(raw: bytes) -> None:
        found, _ = extractor.extract(raw)
        for candidate in found:
            counts["candidates"] += 1
            counts["alerts"] += len(sequencer.process(candidate, time.time_ns() // 1_000_000).alerts)

    @app.agent(topic)
    async def baseline(stream: Any) -> None:
        async for event in stream.events():
            detect(event.value)
            counts["events"] += 1
            if counts["events"] == 1:
                clock.update(wall=time.perf_counter(), cpu=time.process_time())
            elif counts["events"] >= args.events:
                result = {
                    "counted": counts["events"] - 1,
                    "wall": time.perf_counter() - clock["wall"],
                    "cpu": time.process_time() - clock["cpu"],
                    "candidates": counts["candidates"],
                    "alerts": counts["alerts"],
                }
                Path(args.result).write_bytes(orjson.dumps(result))  # Faust captures stdout into its log
                logging.shutdown()
                os._exit(0)

    worker = faust.Worker(app, loglevel="warn", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
