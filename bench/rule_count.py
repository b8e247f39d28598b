"""How the ingest stage's extraction scales with the number of rules: the bundled rule against a folder.

    .venv/bin/python -m bench.rule_count ~/detection-rules/rules/windows [--events 100000]

The project ships no rule of Elastic's but its default, so the folder is the user's copy of
detection-rules. Both runs extract candidates in-process (``CandidateExtractor.extract_many``, the
ingest stage's call, in its batch size) from the same synthetic fleet's records, best of three;
no Kafka, so the figures are the extraction's own ceiling, not the service's.

A third run keeps the folder's rules whose every stage names a literal the prefilter can look for:
a rule with a stage such as ``[network where host.os.type == "windows"]`` makes every record
parsed and every such event a candidate, whatever the other rules are. The rules that make the
most candidates are listed last.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import orjson
from eqlstream_dev import synthetic

from app.core import CompiledRule, Detector, load_rules
from app.service.ingest import BATCH_SIZE


def extraction_rate(rules: list[CompiledRule], records: list[bytes]) -> tuple[float, Counter[str]]:
    """(events/s, candidates by rule name) of extracting ``records`` with ``rules``, best of three runs."""
    extractor = Detector(rules).extractor
    names = {rule.meta.rule_id: rule.meta.name for rule in rules}
    best, candidates = 0.0, Counter[str]()
    for _ in range(3):
        started, found = time.perf_counter(), Counter[str]()
        for start in range(0, len(records), BATCH_SIZE):
            batch = records[start : start + BATCH_SIZE]
            for _index, (batch_candidates, _rejections) in extractor.extract_many(batch, ["input"] * len(batch)):
                found.update(names[candidate.rule_id] for candidate in batch_candidates)
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
    folder = load_rules(args.rules)
    selective = [rule for rule in folder if all(stage.requirement for stage in rule.stages)]
    runs = (
        ("bundled rule", load_rules()),
        ("folder, rules whose every stage names a literal", selective),
        ("folder", folder),
    )
    for label, rules in runs:
        rate, candidates = extraction_rate(rules, records)
        print(f"{label}: {len(rules)} rules, {rate:,.0f} events/s, {candidates.total():,} candidates")
    print("most candidates: " + "; ".join(f"{name} {count:,}" for name, count in candidates.most_common(5)))


if __name__ == "__main__":
    main()
