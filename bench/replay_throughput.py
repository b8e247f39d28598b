"""Single-process replay throughput on a realistic, noise-heavy corpus.

Nearly every event a fleet sends is noise the detector must discard, so the service's capacity is
the rate at which it discards 1-3 KB events. This measures that rate through the CLI's code path
(``app.replay.replay``) on a synthetic corpus (>= 99.9% noise, a few attacks and near misses, in a
Kafka-like arrival order with some re-deliveries), next to a raw baseline that only iterates the
file's lines, and writes the figures to ``bench/RESULTS.md``. No assertion is made on speed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class Corpus:
    """A cached corpus file and what went into it."""

    path: Path
    events: int
    attacks: int
    near_misses: int

    @property
    def scenario_events(self) -> int:
        """Events that belong to an attack or a near miss (two each)."""
        return 2 * (self.attacks + self.near_misses)

    @property
    def expected_alerts(self) -> int:
        """Attacks plus the near misses Elasticsearch alerts on (near misses cycle through the kinds)."""
        kinds = list(synthetic.NEAR_MISSES)
        return self.attacks + sum(synthetic.NEAR_MISSES[kinds[i % len(kinds)]] for i in range(self.near_misses))


def corpus_for(events: int, seed: int) -> Corpus:
    """The corpus for ``events`` and ``seed``, generated once and cached under bench/out/.

    The file name carries a digest of the generator's source, so a changed generator never reuses
    a stale file.
    """
    attacks = max(2, events // 200_000)
    near_misses = max(len(synthetic.NEAR_MISSES), events // 20_000)
    digest = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    path = OUT / f"corpus-{events}-seed{seed}-{digest}.ndjson"
    if not path.exists():
        started = time.perf_counter()
        print(f"generating {path.relative_to(ROOT)} ...", file=sys.stderr)
        stream = synthetic.iter_corpus(
            seed, events, attacks / events, near_misses / events, 0.5, rate=FLEET_RATE
        )
        partial = path.with_suffix(".partial")
        synthetic.write_ndjson(synthetic.arrival_order(stream, seed, MAX_LATENESS_S, DUPLICATE_RATE), partial)
        partial.rename(path)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return Corpus(path, events, attacks, near_misses)


def best_of(runs: int, measure: Callable[[], int]) -> tuple[float, int]:
    """The shortest wall time of ``runs`` calls and the count the last call returned."""
    best = float("inf")
    count = 0
    for _ in range(runs):
        started = time.perf_counter()
        count = measure()
        best = min(best, time.perf_counter() - started)
    return best, count


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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results table."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="corpus size (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement; the best counts")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events, one run: a CI smoke run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--results", type=Path, help="where to write the table (default bench/RESULTS.md; bench/out/ with --quick)"
    )
    raw_argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw_argv)
    events = QUICK_EVENTS if args.quick else args.events
    runs = 1 if args.quick else args.runs
    results = args.results or (OUT / "RESULTS.quick.md" if args.quick else RESULTS)

    corpus = corpus_for(events, args.seed)
    size = corpus.path.stat().st_size
    noise_share = 1 - corpus.scenario_events / events
    if noise_share < 0.999:
        raise ValueError(f"corpus is only {noise_share:.4%} noise; use more events")

    # Loaded once, outside the timing: the first load pays a one-off ~1 s for the EQL grammar.
    rules = load_rules(Settings().rule_path)
    raw_seconds, lines = best_of(runs, lambda: iterate_lines(corpus.path))
    replay_seconds, alerts = best_of(runs, lambda: replay_corpus(corpus.path, rules))
    rows = [
        ("corpus", f"`{corpus.path.relative_to(ROOT)}` (seed {args.seed}, {noise_share:.3%} noise, "
                   f"{corpus.attacks} attacks, {corpus.near_misses} near misses, arrival within "
                   f"{MAX_LATENESS_S:.0f} s, {DUPLICATE_RATE:.1%} re-delivered)"),
        ("events (lines)", f"{lines:,}"),
        ("size", f"{size / 1e6:,.1f} MB ({size / lines:,.0f} B/event)"),
        ("replay", f"**{lines / replay_seconds:,.0f} events/s**, {size / replay_seconds / 1e6:,.1f} MB/s "
                   f"({replay_seconds:.2f} s, best of {runs})"),
        ("raw line iteration", f"{lines / raw_seconds:,.0f} events/s, {size / raw_seconds / 1e6:,.1f} MB/s "
                               f"({raw_seconds:.2f} s, best of {runs})"),
        ("replay / raw", f"{raw_seconds / replay_seconds:.1%} of the raw rate"),
        ("alerts", f"{alerts} (expected {corpus.expected_alerts}: the attacks and the exactly-60 s near misses)"),
        ("code", f"git {code_version()}"),
        ("machine", f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("command", f"`{command_line(raw_argv)}`"),
    ]
    table = "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        "# Replay throughput\n\n"
        "Single process, `app.replay.replay` (the `python -m app replay` code path) with a counting alert "
        "callback, on a synthetic Windows-fleet corpus from `app.synthetic` (Elastic Defend and Winlogbeat 7 "
        "events of 1-3 KB). Written by `bench/replay_throughput.py`; do not edit by hand.\n\n"
        f"{table}\n"
    )
    print(table)
    print(f"wrote {results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
