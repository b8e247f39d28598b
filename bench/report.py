"""The results file: the targets first (figures and ratios of this run), then the summary tables, then
each part's own table and the profiles.

Every ratio is between figures of one run; a missed target gets a sentence made from this run's
figures and profiles, so the explanation can never describe another run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.service.faust_app import STREAM_BUFFER_RECORDS
from app.service.records import PACK_MAX_BYTES
from bench.common import Part, cores

PROFILE_LINES = 25  # of each pyinstrument flat listing quoted in the results
CAPACITY_TARGET = 20_000
LATENCY_TARGET_MS = 500
RSS_TARGET_MB = 600

Check = Callable[[dict[str, Part]], tuple[str, bool] | None]  # (measured, met) or None if not measured


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, checked against this run's figures."""

    name: str
    check: Check


def _figure(parts: dict[str, Part], key: str, name: str) -> float | None:
    part = parts.get(key)
    if part is None or part.error:
        return None
    return part.figures.get(name)


def _ratio(parts: dict[str, Part], top: str, bottom: str, name: str = "rate") -> float | None:
    a, b = _figure(parts, top, name), _figure(parts, bottom, name)
    return a / b if a is not None and b else None


def _share_of(bottom: str, target: float) -> Check:
    """The ingest process's rate as a share of another reader's."""

    def check(parts: dict[str, Part]) -> tuple[str, bool] | None:
        ratio = _ratio(parts, "ingest_process", bottom)
        if ratio is None:
            return None
        text = f"{ratio:.1%} ({_figure(parts, 'ingest_process', 'rate'):,.0f} vs {_figure(parts, bottom, 'rate'):,.0f} events/s)"
        return (text if ratio >= target else f"{text}: {target - ratio:.1%} points short"), ratio >= target

    return check


def _times(bottom: str, target: float) -> Check:
    """The ingest process's rate as a multiple of another reader's."""

    def check(parts: dict[str, Part]) -> tuple[str, bool] | None:
        ratio = _ratio(parts, "ingest_process", bottom)
        if ratio is None:
            return None
        per_core = _ratio(parts, "ingest_process", bottom, "per_core")
        text = f"{ratio:.2f}x ({per_core:.2f}x per core)" if per_core else f"{ratio:.2f}x"
        return (text if ratio >= target else f"{text}: {target / ratio:.2f}x short"), ratio >= target

    return check


def _capacity(flood: str) -> Check:
    def check(parts: dict[str, Part]) -> tuple[str, bool] | None:
        rate = _figure(parts, "sequence", f"{flood}_rate")
        if rate is None:
            return None
        text = f"{rate:,.0f} candidates/s"
        met = rate >= CAPACITY_TARGET
        return (text if met else f"{text}: {1 - rate / CAPACITY_TARGET:.0%} short"), met

    return check


def _latency(key: str) -> Check:
    def check(parts: dict[str, Part]) -> tuple[str, bool] | None:
        p99 = _figure(parts, key, "p99_ms")
        if p99 is None:
            return None
        offered = _figure(parts, key, "offered") or 0
        unit = "candidates/s of flood" if key == "flood_latency" else "events/s"
        text = f"{p99:,.0f} ms at {offered:,.0f} {unit} offered"
        met = p99 < LATENCY_TARGET_MS
        return (text if met else f"{text}: {p99 - LATENCY_TARGET_MS:,.0f} ms over"), met

    return check


def _peak_rss(parts: dict[str, Part]) -> tuple[str, bool] | None:
    peak = _figure(parts, "memory", "peak_rss_mb")
    if peak is None:
        return None
    text = f"{peak:,.0f} MB"
    return (text if peak < RSS_TARGET_MB else f"{text}: {peak - RSS_TARGET_MB:,.0f} MB over"), peak < RSS_TARGET_MB


def _released(parts: dict[str, Part]) -> tuple[str, bool] | None:
    live = _figure(parts, "memory", "live_keys")
    advancing = _figure(parts, "memory", "advancing_keys")
    after = _figure(parts, "memory", "after_rss_mb")
    if live is None or advancing is None or after is None:
        return None
    return f"{live:,.0f} live keys left (the {advancing:,.0f} advancing ones); RSS after expiry {after:,.0f} MB", (
        live <= advancing
    )


def _replay(parts: dict[str, Part]) -> tuple[str, bool] | None:
    rate = _figure(parts, "replay", "rate")
    if rate is None:
        return None
    text = f"{rate:,.0f} events/s"
    return (text if rate >= 300_000 else f"{text}: {1 - rate / 300_000:.1%} short"), rate >= 300_000


def _rules_share(parts: dict[str, Part]) -> tuple[str, bool] | None:
    """The ingest process's rate with a folder of rules (``--rules``) as a share of its rate with one."""
    ratio = _ratio(parts, "ingest_process_rules", "ingest_process")
    if ratio is None:
        return None
    many, one = _figure(parts, "ingest_process_rules", "rate"), _figure(parts, "ingest_process", "rate")
    text = f"{ratio:.1%} ({many:,.0f} vs {one:,.0f} events/s)"
    return (text if ratio >= 0.9 else f"{text}: {0.9 - ratio:.1%} points short"), ratio >= 0.9


TARGETS = [
    Target("ingest process >= 90% of the bare consumer's rate", _share_of("ceiling", 0.9)),
    Target("ingest process with a folder of rules (--rules) >= 90% of it with the bundled rule", _rules_share),
    Target("ingest process >= 1.5x Quix Streams", _times("quix", 1.5)),
    Target("ingest process >= 10x the plain Faust agent", _times("faust", 10)),
    Target(
        "sequence stage >= 20,000 candidates/s per process (distinct keys, as on Apache Kafka)",
        _capacity("kafka_distinct"),
    ),
    Target("(for comparison) the same on the development broker", _capacity("development_distinct")),
    Target("(for comparison) one hot key, as on Apache Kafka", _capacity("kafka_hot")),
    Target("p99 detection latency < 500 ms at 20,000 events/s (one process)", _latency("latency_all")),
    Target(
        "p99 detection latency < 500 ms at 20,000 events/s (ingest + sequence processes)", _latency("latency_split")
    ),
    Target("(for comparison) one process with the default fetch max wait, 500 ms", _latency("latency_all-wait500")),
    Target("(for comparison) p99 latency of an attack during a candidate flood", _latency("flood_latency")),
    Target("sequence stage peak RSS < 600 MB during the key flood", _peak_rss),
    Target("state released after expiry", _released),
    Target("replay >= 300,000 events/s", _replay),
]
GLANCE = (
    "ceiling",
    "quix",
    "ingest_process",
    "ingest_process_rules",
    "ingest",
    "adversarial_process",
    "adversarial",
    "faust",
    "faust_prefilter",
)
LATENCIES = ("latency_all", "latency_split", "latency_all-wait500", "flood_latency")


def render(parts: list[Part], context: list[tuple[str, str]], *, quick: bool) -> str:
    """The whole results file."""
    by_key = {part.key: part for part in parts}
    lines = [
        "# Performance results",
        "",
        "Written by `python -m bench` (`make bench`); do not edit by hand. Every figure below comes from one run on "
        "one machine and one generated corpus; ratios are between figures of this run.",
    ]
    if quick:
        lines += ["", "**Quick mode (a smoke run on small volumes): these figures mean nothing.**"]
    lines += _targets(by_key)
    lines += _glance(by_key)
    lines += _capacity_table(by_key)
    lines += _latency_table(by_key)
    lines += ["", "## Run", "", "| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in context)]
    for part in parts:
        lines += ["", f"## {part.title}", ""]
        if part.error:
            lines.append(f"**Failed:** `{part.error}`")
        elif part.key in ("profile_ingest", "profile_replay"):
            lines += [*part.notes, "", "```", *_pyinstrument_excerpt(part.rows[0][1]), "```"]
        elif part.key == "profile_ingest_process":
            lines += [*part.notes, "", "```", part.rows[0][1], "```"]
        else:
            lines += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in part.rows)]
            lines += [f"\n{note}" for note in part.notes]
    return "\n".join(lines) + "\n"


def _targets(parts: dict[str, Part]) -> list[str]:
    lines = ["", "## Targets", "", "| target | this run | met |", "|---|---|---|"]
    for target in TARGETS:
        result = target.check(parts)
        if result is None:
            lines.append(f"| {target.name} | not measured | |")
        else:
            measured, met = result
            lines.append(f"| {target.name} | {measured} | {'yes' if met else '**no**'} |")
    reasons = _why(parts)
    if reasons:
        lines += ["", "Why the targets not met are missed (figures and profiles of this run):", ""]
        lines += [f"- {reason}" for reason in reasons]
    return lines


def _glance(parts: dict[str, Part]) -> list[str]:
    lines = [
        "",
        "## Throughput at a glance",
        "",
        "| reader | events/s | events per CPU second | vs the ceiling |",
        "|---|---|---|---|",
    ]
    ceiling = _figure(parts, "ceiling", "rate")
    for key in GLANCE:
        part = parts.get(key)
        if part is not None and not part.error:
            rate = part.figures["rate"]
            versus = f"{rate / ceiling:.0%}" if ceiling else ""
            lines.append(f"| {part.title} | {rate:,.0f} | {part.figures['per_core']:,.0f} | {versus} |")
    for key in ("eql", "replay"):
        part = parts.get(key)
        if part is not None and not part.error:
            rate = part.figures["events"] / part.figures["seconds"] if key == "eql" else part.figures["rate"]
            lines.append(f"| {part.title} | {rate:,.0f} | (one process, one core, from a file) | |")
    return lines


def _capacity_table(parts: dict[str, Part]) -> list[str]:
    part = parts.get("sequence")
    if part is None or part.error:
        return []
    lines = [
        "",
        "## Sequence stage capacity at a glance",
        "",
        "| broker | distinct keys, candidates/s | one hot key, candidates/s | event loop busy, distinct keys |",
        "|---|---|---|---|",
    ]
    for broker, label in (
        ("kafka", "as on Apache Kafka: changelog batched"),
        ("development", "development broker: changelog one record per batch"),
    ):
        figures = part.figures
        busy = figures.get(f"{broker}_distinct_loop_busy")
        lines.append(
            f"| {label} | {figures.get(f'{broker}_distinct_rate', 0):,.0f} | {figures.get(f'{broker}_hot_rate', 0):,.0f} "
            f"| {f'{busy:.0%}' if busy is not None else 'not profiled'} |"
        )
    return lines


def _latency_table(parts: dict[str, Part]) -> list[str]:
    rows = []
    for key in LATENCIES:
        part = parts.get(key)
        if part is not None and not part.error:
            f = part.figures
            rows.append(f"| {part.title} | {f['p50_ms']:,.0f} | {f['p99_ms']:,.0f} | {f['max_ms']:,.0f} |")
    if not rows:
        return []
    return ["", "## Latency at a glance", "", "| measurement | p50 ms | p99 ms | max ms |", "|---|---|---|---|", *rows]


def _heaviest(part: Part, name: str) -> str:
    """The profile's heaviest functions in words: "a 30%, b 12%"."""
    return ", ".join(f"`{function}` {share:.0%}" for function, share in part.heaviest.get(name, []))


def _why(parts: dict[str, Part]) -> list[str]:
    """One explanation per missed target, from this run's own figures and profiles."""
    reasons = []
    ratio = _ratio(parts, "ingest_process", "ceiling")
    ingest, ceiling = parts.get("ingest_process"), parts.get("ceiling")
    if ratio is not None and ratio < 0.9 and ingest and ceiling:
        text = (
            f"Ingest process vs ceiling ({ratio:.0%}): per CPU second the ingest process handles "
            f"{ingest.figures['per_core']:,.0f} events and the bare consumer {ceiling.figures['per_core']:,.0f}; they "
            f"kept {ingest.figures['cpu']:.2f} and {ceiling.figures['cpu']:.2f} cores busy, on {cores()} cores shared "
            "with the broker that serves them."
        )
        profile = parts.get("profile_ingest_process")
        if profile is not None and not profile.error:
            text += (
                f" py-spy on the process: the stage's loop thread ran Python {profile.figures['loop_busy']:.0%} of "
                f"the wall time, the rest it waited in librdkafka with the GIL released; its heaviest functions "
                f"(own time, share of wall time): {_heaviest(profile, 'ingest')}."
            )
        reasons.append(text)
    quix = _ratio(parts, "ingest_process", "quix")
    if quix is not None and quix < 1.5:
        reasons.append(
            f"Ingest process vs Quix Streams ({quix:.2f}x): Quix reads "
            f"{_figure(parts, 'quix', 'per_core'):,.0f} events per CPU second, the ingest process "
            f"{_figure(parts, 'ingest_process', 'per_core'):,.0f}; both read the same topic on the same broker, so the "
            "gap is the readers' own cost per event (see the ingest profile)."
        )
    sequence = parts.get("sequence")
    rate = _figure(parts, "sequence", "kafka_distinct_rate")
    if sequence is not None and rate is not None and rate < CAPACITY_TARGET:
        busy = sequence.figures.get("kafka_distinct_loop_busy")
        text = f"Sequence capacity ({rate:,.0f} candidates/s with distinct keys, as on Apache Kafka):"
        if busy is not None:
            text += (
                f" the worker's event loop ran Python {busy:.0%} of the wall time, so the stage is "
                f"{'CPU-bound in Python' if busy > 0.7 else 'waiting on the brokers much of the time'}; the "
                f"heaviest functions (own time, all threads): {_heaviest(sequence, 'kafka_distinct')}."
            )
        dev = sequence.figures.get("development_distinct_rate")
        dev_busy = sequence.figures.get("development_distinct_loop_busy")
        if dev is not None and dev_busy is not None:
            text += f" On the development broker ({dev:,.0f}/s) the event loop ran Python {dev_busy:.0%} of the time"
            text += (
                ": the rest it waited for the changelog, written one record per produce request there."
                if dev_busy < 0.7
                else "."
            )
        hot = sequence.figures.get("kafka_hot_rate")
        if hot is not None and sequence.heaviest.get("kafka_hot"):
            text += (
                f" With one hot key ({hot:,.0f}/s) every candidate re-evaluates the key's events; the heaviest "
                f"functions: {_heaviest(sequence, 'kafka_hot')}."
            )
        reasons.append(text)
    for variant in ("all", "split"):
        p99 = _figure(parts, f"latency_{variant}", "p99_ms")
        if p99 is not None and p99 >= LATENCY_TARGET_MS:
            reasons.append(
                f"Latency ({variant}): p99 {p99:,.0f} ms with a 20 ms fetch max wait. The embedded broker holds a "
                "fetch on a quiet topic for the consumer's whole max wait instead of answering when records arrive "
                "(Apache Kafka answers at once), so each of the two low-volume hops (candidates, alerts) can add up "
                "to that wait; the rest is the service on cores shared with the broker and the load producer."
            )
    memory = parts.get("memory")
    peak = _figure(parts, "memory", "peak_rss_mb")
    if memory is not None and peak is not None and peak >= RSS_TARGET_MB:
        f = memory.figures
        reasons.append(
            f"Memory: peak RSS {peak:,.0f} MB (VmHWM). The process had {f['start_rss_mb']:,.0f} MB at its first "
            f"candidate, reached {f['flood_peak_mb']:,.0f} MB during the flood and {f['expiry_peak_mb']:,.0f} MB while "
            f"expiring every key. Its settings let RocksDB hold up to {f['rocksdb_budget_mb']:,.0f} MB, and the "
            f"engine's expiry index takes {f['index_mb']:,.0f} MB. Not verified in this run, the likely rest: candidate "
            f"records held before the stage processes them (the stream buffer takes up to {STREAM_BUFFER_RECORDS:,} "
            f"records, and a packed candidates record holds up to {PACK_MAX_BYTES // 1024:,} KiB, so a backlog can put "
            f"{STREAM_BUFFER_RECORDS * PACK_MAX_BYTES / 1e6:.0f} MB of records in the process), the changelog records "
            "of each batch held until acknowledged, and memory the allocator keeps after freeing it (glibc arenas)."
        )
    replay = _figure(parts, "replay", "rate")
    if replay is not None and replay < 300_000:
        raw = _figure(parts, "replay", "raw_rate") or 0
        reasons.append(
            f"Replay: {replay:,.0f} events/s while merely reading the file's lines runs at {raw:,.0f} events/s in "
            "the same run: see the replay profile."
        )
    return reasons


def _pyinstrument_excerpt(text: str) -> list[str]:
    """The profile's heaviest lines, without pyinstrument's banner."""
    body = [line for line in text.splitlines() if line.strip() and "._" not in line and "/_/" not in line]
    return body[:PROFILE_LINES]
