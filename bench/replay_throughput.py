"""Single-process replay throughput on realistic, noise-heavy corpora: ECS-only and raw-Sysmon-heavy.

Nearly every event a fleet sends is noise the detector must discard, so the service's capacity is
the rate at which it discards 1-3 KB events. This measures that rate through the CLI's code path
(``app.replay.replay``) on two synthetic corpora of the same size (>= 99.9% noise, a few attacks
and near misses, in a Kafka-like arrival order with some re-deliveries): one from a fleet shipping
ECS (Elastic Defend and Winlogbeat 7), one where most hosts run Winlogbeat 8 and ship raw Sysmon
and Security records, which the detector must map to ECS itself. Next to each it times a raw
baseline that only iterates the file's lines, and writes the figures and the raw-heavy/ECS-only
ratio to ``bench/RESULTS.md`` (the target: raw-heavy within 20% of ECS-only). No assertion is
made on speed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app import synthetic
from app.detector import Alert
from app.replay import open_input, replay
from app.rule import CompiledRule, load_rules
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "RESULTS.md"
QUICK_EVENTS = 50_000
FLEET_RATE = 500.0  # events/s across the fleet: sets the corpus' time span, not the benchmark's speed
MAX_LATENESS_S = 300.0
DUPLICATE_RATE = 0.001
TARGET_RATIO = 0.8  # the target: raw-heavy throughput within 20% of ECS-only
SOURCE_NAMES = {
    synthetic.DEFEND: "Elastic Defend",
    synthetic.WINLOGBEAT: "Winlogbeat 7",
    synthetic.WINLOGBEAT8: "raw Winlogbeat 8",
}


@dataclass(frozen=True)
class Mix:
    """Which sources a corpus' fleet runs (shares of hosts; the rest run Winlogbeat 7)."""

    name: str  # in the cached file's name
    title: str
    defend_share: float
    raw_share: float


ECS_ONLY = Mix("ecs", "ECS only", defend_share=0.5, raw_share=0.0)
RAW_HEAVY = Mix("raw90", "raw Sysmon heavy", defend_share=0.05, raw_share=0.9)
RAW_HEAVY_MIN_EVENT_SHARE = 0.8  # the raw-heavy figure means nothing if fewer events are raw


@dataclass(frozen=True)
class Corpus:
    """A cached corpus file and what went into it."""

    path: Path
    mix: Mix
    events: int
    attacks: int
    near_misses: int
    sources: dict[str, int]  # lines per source (re-deliveries included)

    @property
    def scenario_events(self) -> int:
        """Events that belong to an attack or a near miss (two each)."""
        return 2 * (self.attacks + self.near_misses)

    @property
    def expected_alerts(self) -> int:
        """Attacks plus the near misses Elasticsearch alerts on (near misses cycle through the kinds)."""
        kinds = list(synthetic.NEAR_MISSES)
        return self.attacks + sum(synthetic.NEAR_MISSES[kinds[i % len(kinds)]] for i in range(self.near_misses))

    def share(self, source: str) -> float:
        """The share of the file's lines that ``source`` wrote."""
        return self.sources.get(source, 0) / sum(self.sources.values())


@dataclass
class Timing:
    """The best wall times of one corpus' measurements."""

    raw_seconds: float = float("inf")
    replay_seconds: float = float("inf")
    lines: int = 0
    alerts: int = 0


def corpus_for(events: int, seed: int, mix: Mix) -> Corpus:
    """The corpus for ``events``, ``seed`` and ``mix``, generated once and cached under bench/out/.

    The file name carries a digest of the generator's source, so a changed generator never reuses
    a stale file. A side file records how many lines each source wrote.
    """
    attacks = max(2, events // 200_000)
    near_misses = max(len(synthetic.NEAR_MISSES), events // 20_000)
    digest = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    path = OUT / f"corpus-{events}-seed{seed}-{mix.name}-{digest}.ndjson"
    sources_path = path.with_suffix(".sources.json")
    if not (path.exists() and sources_path.exists()):
        started = time.perf_counter()
        print(f"generating {path.relative_to(ROOT)} ...", file=sys.stderr)
        stream = synthetic.iter_corpus(
            seed, events, attacks / events, near_misses / events, mix.defend_share,
            raw_share=mix.raw_share, rate=FLEET_RATE,
        )
        sources: Counter[str] = Counter()
        partial = path.with_suffix(".partial")
        arrivals = synthetic.arrival_order(stream, seed, MAX_LATENESS_S, DUPLICATE_RATE)
        synthetic.write_ndjson(_tally(arrivals, sources), partial)
        sources_path.write_text(json.dumps(dict(sources), sort_keys=True))
        partial.rename(path)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    sources = json.loads(sources_path.read_text())
    return Corpus(path, mix, events, attacks, near_misses, sources)


def _tally(events: Iterable[synthetic.Event], sources: Counter[str]) -> Iterator[synthetic.Event]:
    """Pass ``events`` through, counting them per source."""
    for event in events:
        sources[synthetic.source_of(event)] += 1
        yield event


def iterate_lines(path: Path) -> int:
    """The raw baseline: read the file the way replay does and do nothing with the lines."""
    count = 0
    with open_input(str(path)) as stream:
        for _ in stream:
            count += 1
    return count


def replay_corpus(path: Path, rules: list[CompiledRule]) -> int:
    """Replay through the CLI's path with a counting alert callback; returns the alert count."""
    alerts = 0

    def count(_: Alert) -> None:
        nonlocal alerts
        alerts += 1

    report = replay([str(path)], rules, Settings(), count)
    if report.alerts != alerts:
        raise RuntimeError(f"replay reported {report.alerts} alerts, the callback saw {alerts}")
    return alerts


def measure(corpora: list[Corpus], rules: list[CompiledRule], runs: int) -> list[Timing]:
    """The best of ``runs`` timings per corpus; the corpora take turns, so that a slow spell of the
    machine weighs on both figures alike and not on their ratio."""
    timings = [Timing() for _ in corpora]
    for _ in range(runs):
        for corpus, timing in zip(corpora, timings, strict=True):
            started = time.perf_counter()
            timing.lines = iterate_lines(corpus.path)
            timing.raw_seconds = min(timing.raw_seconds, time.perf_counter() - started)
            started = time.perf_counter()
            timing.alerts = replay_corpus(corpus.path, rules)
            timing.replay_seconds = min(timing.replay_seconds, time.perf_counter() - started)
    return timings


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's description elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version() -> str:
    """The git commit measured (figures move with the code), marked when the tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "app"], cwd=ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} (with uncommitted changes under app/)" if dirty.strip() else commit


def command_line(argv: list[str]) -> str:
    """The command as typed from the project root."""
    python = Path(sys.executable)
    shown = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else python.name
    return shlex.join([shown, "-m", "bench.replay_throughput", *argv])


def corpus_rows(corpus: Corpus, timing: Timing, runs: int) -> dict[str, str]:
    """The table's cells for one corpus, by row name."""
    size = corpus.path.stat().st_size
    lines, raw_s, replay_s = timing.lines, timing.raw_seconds, timing.replay_seconds
    present = [source for source in synthetic.SHAPES if corpus.sources.get(source)]
    sources = ", ".join(f"{SOURCE_NAMES[source]} {corpus.share(source):.1%}" for source in present)
    return {
        "corpus": f"`{corpus.path.relative_to(ROOT)}`",
        "events by source": sources,
        "events (lines)": f"{lines:,}",
        "size": f"{size / 1e6:,.1f} MB ({size / lines:,.0f} B/event)",
        "replay": f"**{lines / replay_s:,.0f} events/s**, {size / replay_s / 1e6:,.1f} MB/s "
                  f"({replay_s:.2f} s, best of {runs})",
        "raw line iteration": f"{lines / raw_s:,.0f} events/s, {size / raw_s / 1e6:,.1f} MB/s "
                              f"({raw_s:.2f} s, best of {runs})",
        "replay / raw": f"{raw_s / replay_s:.1%} of the raw rate",
        "alerts": f"{timing.alerts} (expected {corpus.expected_alerts}: the attacks and the exactly-60 s near misses)",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on both corpora and write the results tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="size of each corpus (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement; the best counts")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events, one run: a CI smoke run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--results", type=Path, help="where to write the tables (default bench/RESULTS.md; bench/out/ with --quick)"
    )
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw_argv)
    events = QUICK_EVENTS if args.quick else args.events
    runs = 1 if args.quick else args.runs
    results = args.results or (OUT / "RESULTS.quick.md" if args.quick else RESULTS)

    corpora = [corpus_for(events, args.seed, mix) for mix in (ECS_ONLY, RAW_HEAVY)]
    noise_share = 1 - corpora[0].scenario_events / events  # the same scenarios in both corpora
    if noise_share < 0.999:
        raise ValueError(f"corpus is only {noise_share:.4%} noise; use more events")
    raw_share = corpora[1].share(synthetic.WINLOGBEAT8)
    if raw_share < RAW_HEAVY_MIN_EVENT_SHARE:
        raise ValueError(f"the raw-heavy corpus has only {raw_share:.1%} raw Winlogbeat 8 events")

    # Loaded once, outside the timing: the first load pays a one-off ~1 s for the EQL grammar.
    rules = load_rules(Settings().rule_path)
    timings = measure(corpora, rules, runs)
    ecs_rate, raw_rate = (timing.lines / timing.replay_seconds for timing in timings)
    ratio = raw_rate / ecs_rate

    cells = [corpus_rows(corpus, timing, runs) for corpus, timing in zip(corpora, timings, strict=True)]
    header = ["| | " + " | ".join(corpus.mix.title for corpus in corpora) + " |", "|---|---|---|"]
    comparison = "\n".join([*header, *(f"| {row} | {cells[0][row]} | {cells[1][row]} |" for row in cells[0])])
    run_rows = [
        ("both corpora", f"seed {args.seed}, {noise_share:.3%} noise, {corpora[0].attacks} attacks, "
                         f"{corpora[0].near_misses} near misses, arrival within {MAX_LATENESS_S:.0f} s, "
                         f"{DUPLICATE_RATE:.1%} re-delivered"),
        ("code", f"git {code_version()}"),
        ("machine", f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("command", f"`{command_line(raw_argv)}`"),
    ]
    run_table = "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in run_rows)])
    verdict = (
        f"**Raw Sysmon heavy / ECS only: {ratio:.1%}** of the ECS-only replay rate ({raw_rate:,.0f} vs "
        f"{ecs_rate:,.0f} events/s; target: at least {TARGET_RATIO:.0%}, "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})."
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        "# Replay throughput\n\n"
        "Single process, `app.replay.replay` (the `python -m app replay` code path) with a counting alert "
        "callback, on two synthetic Windows-fleet corpora of the same size from `app.synthetic` (events of "
        "1-3 KB): one of ECS events only (Elastic Defend and Winlogbeat 7 hosts), one where most events are raw "
        "Sysmon and Security records from Winlogbeat 8 hosts, which the detector maps to ECS itself. "
        "Written by `bench/replay_throughput.py`; do not edit by hand.\n\n"
        f"{comparison}\n\n{verdict}\n\n{run_table}\n"
    )
    print(f"{comparison}\n\n{verdict}\n\n{run_table}")
    print(f"wrote {results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
