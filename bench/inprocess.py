"""The detection without Kafka, on the corpus as NDJSON: Elastic's ``eql`` engine and our replay CLI.

* ``eql`` (the PyPI library, its ``PythonEngine``) gets what Elasticsearch would index: each line
  parsed with orjson and normalized to ECS (raw Sysmon records mapped, as Elastic's ingest pipeline
  would), then turned into an ``eql.Event`` (type = the rule's ``event.category``, time =
  ``@timestamp`` in ms). The engine raises TypeError when a compared field holds an array
  (``event.type``, ``process.args``). Elasticsearch compares multi-valued fields by "any value
  matches", so each array field the rule reads is replaced by the first value, in the order the
  rule's own literals are listed, that the array contains (case-folded like ``:``), or by its first
  element when none is: a comparison then holds exactly when one of the values satisfies it (the
  rule never needs two different values of one field on one event). It times the engine calls
  apart from parsing, so both figures are shown.
* The replay CLI's code path (``app.replay.replay``) with a counting callback, and the CLI itself
  (``python -m app replay --format summary``) as a subprocess, whose own "rate" line excludes the
  interpreter's start.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import eql
import orjson

from app.core import Alert, CompiledRule, Detector
from app.core.normalize import normalize
from app.core.timeparse import parse_timestamp
from app.replay import open_input, replay
from bench.common import ROOT, Corpus, Part, Usage, log

# Fields of the rule that arrive as arrays, and the rule's literals for them in the order it lists them.
_ARRAY_FIELDS = {"event.type": ("start", "process_started"), "process.args": ("-embedding",)}
_EVENT_TYPES = ("process", "network")


def measure_eql(corpus: Corpus, rule_path: Path) -> Part:
    """Elastic's ``eql`` PythonEngine over every event of the corpus, in arrival order."""
    part = Part("eql", "Elastic's `eql` library (PythonEngine), in-process")
    query = tomllib.loads(rule_path.read_text())["rule"]["query"]
    with eql.parser.elasticsearch_syntax, eql.parser.ignore_missing_functions:
        parsed = eql.parse_query(query)
    engine = eql.PythonEngine({"time_unit": 1_000})  # event times are epoch milliseconds
    engine.add_query(parsed)
    sequences = 0

    def found(_: Any) -> None:
        nonlocal sequences
        sequences += 1

    engine.add_output_hook(found)
    events = 0
    engine_seconds = 0.0
    clock = time.perf_counter
    started = Usage.now()
    with open_input(str(corpus.path)) as stream:
        for line in stream:
            event = _eql_event(orjson.loads(line))
            events += 1
            before = clock()
            engine.stream_event(event)
            engine_seconds += clock() - before
    used = Usage.now().since(started)
    part.figures.update(events=events, seconds=used.wall, engine_seconds=engine_seconds, alerts=sequences)
    part.row("events", f"{events:,}")
    part.row(
        "end to end (orjson + ECS mapping + eql engine)",
        f"**{events / used.wall:,.0f} events/s** ({used.wall:.1f} s wall, {used.cpu:.1f} s CPU)",
    )
    part.row(
        "eql engine calls alone (events built beforehand)",
        f"{events / engine_seconds:,.0f} events/s ({engine_seconds:.1f} s)",
    )
    part.row(
        "sequences found",
        f"{sequences} (expected {corpus.expected_alerts}; eql's engine reads events in "
        "arrival order, without Elasticsearch's sort by @timestamp)",
    )
    log(f"eql: {events / used.wall:,.0f} events/s end to end, {events / engine_seconds:,.0f} in the engine")
    return part


def _eql_event(doc: dict[str, Any]) -> eql.Event:
    """An ECS event as eql's PythonEngine takes it (see the module docstring for the arrays)."""
    doc = normalize(doc)
    event = doc.get("event") if isinstance(doc.get("event"), dict) else {}
    categories = event.get("category")
    categories = categories if isinstance(categories, list) else [categories]
    kind = next((c for c in categories if c in _EVENT_TYPES), categories[0] if categories else "generic")
    for dotted, literals in _ARRAY_FIELDS.items():
        parent_name, name = dotted.split(".")
        parent = doc.get(parent_name)
        if isinstance(parent, dict) and isinstance(parent.get(name), list):
            parent[name] = _pick(parent[name], literals)
    return eql.Event(kind, parse_timestamp(doc.get("@timestamp")) or 0, doc)


def _pick(values: list[Any], literals: tuple[str, ...]) -> Any:
    folded = [v.lower() if isinstance(v, str) else v for v in values]
    for literal in literals:
        if literal in folded:
            return values[folded.index(literal)]
    return values[0] if values else None


def measure_replay(corpus: Corpus, rules: list[CompiledRule], runs: int) -> Part:
    """The replay CLI's code path in-process (best of ``runs``), the CLI as a subprocess, and the raw file read."""
    part = Part("replay", "Replay CLI (`python -m app replay`), in-process and as a command")
    size = corpus.path.stat().st_size
    best = float("inf")
    best_raw = float("inf")
    alerts = 0
    lines = 0
    for _ in range(runs):
        started = time.perf_counter()
        lines = _iterate_lines(corpus.path)
        best_raw = min(best_raw, time.perf_counter() - started)
        count = 0

        def on_alert(_: Alert) -> None:
            nonlocal count
            count += 1

        started = time.perf_counter()
        report = replay([str(corpus.path)], Detector(rules), on_alert)
        best = min(best, time.perf_counter() - started)
        alerts = report.alerts
    cli_rate, cli_wall = _replay_command(corpus.path)
    part.figures.update(rate=lines / best, raw_rate=lines / best_raw, cli_rate=cli_rate, alerts=alerts)
    part.row(
        "`app.replay.replay` (the CLI's code path)",
        f"**{lines / best:,.0f} events/s**, {size / best / 1e6:,.0f} MB/s ({best:.2f} s, best of {runs})",
    )
    part.row(
        "`python -m app replay --format summary FILE` (subprocess)",
        f"{cli_rate:,.0f} events/s by its own summary; {cli_wall:.2f} s wall with the interpreter's start",
    )
    part.row(
        "reading the file line by line, doing nothing",
        f"{lines / best_raw:,.0f} events/s ({best_raw:.2f} s, best of {runs})",
    )
    part.row("replay / line reading", f"{best_raw / best:.1%}")
    part.row("alerts", f"{alerts} (expected {corpus.expected_alerts}: the attacks and the exactly-60 s near misses)")
    log(f"replay: {lines / best:,.0f} events/s in-process, {cli_rate:,.0f} as a command")
    return part


def _iterate_lines(path: Path) -> int:
    count = 0
    with open_input(str(path)) as stream:
        for _ in stream:
            count += 1
    return count


def _replay_command(path: Path) -> tuple[float, float]:
    """Run the CLI; returns (its reported events/s, the wall seconds of the whole command)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "app", "replay", "--format", "summary", "--no-progress", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    match = re.search(r"rate: ([\d,]+) events/s", done.stderr)
    if match is None:
        raise RuntimeError(f"no rate in the replay summary: {done.stderr[-500:]}")
    return float(match.group(1).replace(",", "")), wall
