"""``python -m eqlstream_dev.synthetic``: write a corpus as NDJSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from eqlstream_dev.synthetic.corpus import DEFAULT_START, arrival_order, iter_corpus, write_ndjson
from eqlstream_dev.synthetic.ecs import Event
from eqlstream_dev.synthetic.scenarios import ATTACK, ATTACK_VARIANTS, NEAR_MISSES

DESCRIPTION = "Deterministic synthetic Windows events for tests, the benchmark and the demo."


def main(argv: Sequence[str] | None = None) -> int:
    """Write the corpus the arguments describe; 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m eqlstream_dev.synthetic", description=DESCRIPTION)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--attack-rate", type=float, default=1e-3, help="attacks per event")
    parser.add_argument("--near-miss-rate", type=float, default=5e-3, help="near misses per event")
    parser.add_argument("--source-mix", type=float, default=0.5, help="share of hosts running Elastic Defend")
    parser.add_argument(
        "--raw-share",
        type=float,
        default=0.0,
        help="share of hosts running Winlogbeat 8, shipping raw Sysmon and Security records (the rest: Winlogbeat 7)",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="fleet events per second (sets the time span)")
    parser.add_argument("--hosts", type=int, help="fleet size (default: from --events)")
    parser.add_argument("--start", default=DEFAULT_START, help="start of the time range (ISO 8601 UTC)")
    parser.add_argument(
        "--attack-kinds",
        default=",".join((ATTACK, *ATTACK_VARIANTS)),
        help=f"comma-separated subset of: {', '.join((ATTACK, *ATTACK_VARIANTS))} (variants need Defend hosts)",
    )
    parser.add_argument(
        "--near-miss-kinds", default=",".join(NEAR_MISSES), help=f"comma-separated subset of: {', '.join(NEAR_MISSES)}"
    )
    parser.add_argument("--max-lateness", type=float, default=0.0, help="seconds of out-of-order arrival (0: in order)")
    parser.add_argument("--duplicate-rate", type=float, default=0.0, help="share of events delivered twice")
    parser.add_argument("--out", type=Path, required=True, help="NDJSON file (.gz to compress)")
    args = parser.parse_args(argv)
    events: Iterable[Event] = iter_corpus(
        args.seed,
        args.events,
        args.attack_rate,
        args.near_miss_rate,
        args.source_mix,
        raw_share=args.raw_share,
        rate=args.rate,
        hosts=args.hosts,
        start=args.start,
        attack_kinds=tuple(kind for kind in args.attack_kinds.split(",") if kind),
        near_miss_kinds=tuple(kind for kind in args.near_miss_kinds.split(",") if kind),
    )
    if args.max_lateness > 0 or args.duplicate_rate > 0:
        events = arrival_order(events, args.seed, args.max_lateness, args.duplicate_rate)
    count = write_ndjson(events, args.out)
    print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return 0
