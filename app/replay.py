"""Offline replay: NDJSON files through the same extractor and engine as the streaming service."""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from tqdm import tqdm

from app.detector import Alert, CandidateExtractor, SequenceStage
from app.rule.compiler import CompiledRule
from app.settings import Settings


@dataclass
class ReplayReport:
    """What a replay did, for the closing summary."""

    events: int
    rejected: dict[str, int]
    candidates: int
    no_join_key: int
    duplicates: int
    late: int
    sequences: int
    superseded: int
    alerts: int
    seconds: float

    def text(self) -> str:
        """The human summary printed on stderr."""
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        rejected = ", ".join(f"{reason} {count}" for reason, count in sorted(self.rejected.items())) or "none"
        return (
            f"events read: {self.events}\n"
            f"rejected lines: {sum(self.rejected.values())} ({rejected})\n"
            f"candidates: {self.candidates} (without a join key: {self.no_join_key}, duplicates: {self.duplicates}, "
            f"beyond allowed lateness: {self.late})\n"
            f"sequences: {self.sequences} (superseded by later arrivals: {self.superseded})\n"
            f"alerts: {self.alerts}\n"
            f"rate: {rate:,.0f} events/s ({self.seconds:.2f} s)"
        )


class UnreadableInput(Exception):
    """An input file that cannot be opened or read."""


@contextmanager
def open_input(name: str) -> Iterator[BinaryIO]:
    """Open a file (``.gz`` transparently) or ``-`` for stdin, in binary mode."""
    if name == "-":
        yield sys.stdin.buffer
        return
    path = Path(name)
    try:
        stream: BinaryIO = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UnreadableInput(f"{name}: {exc.strerror or exc}") from None
    with stream:
        yield stream


def replay(
    files: list[str],
    rules: list[CompiledRule],
    settings: Settings,
    on_alert: Callable[[Alert], None],
    *,
    progress: bool = False,
) -> ReplayReport:
    """Replay ``files`` in order (arrival order = line order) and call ``on_alert`` for each alert."""
    extractor = CandidateExtractor(rules)
    stage = SequenceStage(rules, settings)
    extract = extractor.extract
    alerts = 0
    started = time.perf_counter()
    with tqdm(total=None, unit=" events", unit_scale=True, disable=not progress, file=sys.stderr, mininterval=0.5) as bar:
        for name in files:
            origin = "stdin" if name == "-" else name
            with open_input(name) as stream:
                pending = 0
                try:
                    for line in stream:
                        if len(line) < 3 and not line.strip():
                            continue  # blank lines are not events
                        pending += 1
                        if pending == 65536:
                            bar.update(pending)
                            pending = 0
                        candidates, _ = extract(line, origin)  # rejections are counted in extractor.stats
                        for candidate in candidates:
                            for alert in stage.process(candidate, time.time_ns()):
                                alerts += 1
                                on_alert(alert)
                except (OSError, EOFError) as exc:
                    raise UnreadableInput(f"{name}: {exc}") from None
                bar.update(pending)
    seconds = time.perf_counter() - started
    engines = stage.engines.values()
    return ReplayReport(
        events=extractor.stats.records,
        rejected=dict(extractor.stats.rejected),
        candidates=extractor.stats.candidates,
        no_join_key=extractor.stats.no_join_key,
        duplicates=sum(e.stats.duplicates for e in engines),
        late=sum(e.stats.late for e in engines),
        sequences=sum(e.stats.sequences for e in engines),
        superseded=sum(e.stats.superseded for e in engines),
        alerts=alerts,
        seconds=seconds,
    )
