"""How the ingest stage's extraction scales with the number of rules: the bundled rule against a folder.

    .venv/bin/python -m bench.rule_count ~/detection-rules/rules/windows [--events 100000]

The project ships no rule of Elastic's but its default, so the folder is the user's copy of
detection-rules. Both runs extract candidates in-process (``CandidateExtractor.extract_many``, the
ingest stage's call, in its batch size) from the same synthetic fleet's records, best of three;
no Kafka, so the figures are the extraction's own ceiling, not the service's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson
from eqlstream_dev import synthetic

from app.core import CompiledRule, Detector, load_rules
from app.service.ingest import BATCH_SIZE


def extraction_rate(rules: list[CompiledRule], records: list[bytes]) -> tuple[float, int]:
    """(events/s, candidates) of extracting ``records`` with ``rules``, best of three runs."""
    extractor = Detector(rules).extractor
    best, candidates = 0.0, 0
    for _ in range(3):
        started, found = time.perf_counter(), 0
        for start in range(0, len(records), BATCH_SIZE):
            batch = records[start : start + BATCH_SIZE]
            for _index, (batch_candidates, _rejections) in extractor.extract_many(batch, ["input"] * len(batch)):
                found += len(batch_candidates)
        best, candidates = max(best, len(records) / (time.perf_counter() - started)), found
    return best, candidates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rule_count", description=__doc__.splitlines()[0])
    parser.add_argument("rules", type=Path, help="a folder of rule files (e.g. detection-rules' rules/windows)")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    events = synthetic.generate_corpus(
        3, args.events, attack_rate=0.001, near_miss_rate=0.01, source_mix=0.4, raw_share=0.3, rate=1000
    )
    records = [orjson.dumps(event) for event in events]
    print(f"{len(records):,} synthetic fleet records")
    for label, rules in (("bundled rule", load_rules()), ("folder", load_rules(args.rules))):
        rate, candidates = extraction_rate(rules, records)
        print(f"{label}: {len(rules)} rules, {rate:,.0f} events/s, {candidates:,} candidates")


if __name__ == "__main__":
    main()
