"""Offline replay: NDJSON files through the same extractor and engine as the streaming service."""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
    missing_host_id: int
    duplicates: int
    late: int
    sequences: int
    revised: int
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
            f"parsed events without host.id: {self.missing_host_id}\n"
            f"sequences: {self.sequences} (re-emitted with corrected events: {self.revised}, "
            f"superseded by later arrivals: {self.superseded})\n"
            f"alerts: {self.alerts}\n"
            f"rate: {rate:,.0f} events/s ({self.seconds:.2f} s)"
        )


class UnreadableInput(Exception):
    """An input file that cannot be opened or read."""


_BLOCK_SIZE = 4 << 20


def _blocks(stream: BinaryIO, name: str) -> Iterator[tuple[bytes, int, int]]:
    """The stream as (buffer, start, end) spans of whole lines, without copying the buffers.

    The last line may lack its newline. A line cut by a buffer boundary is yielded on its own.
    """
    read = getattr(stream, "read1", stream.read)  # read1: do not wait for a full block on a pipe
    carry = b""
    try:
        while chunk := read(_BLOCK_SIZE):
            first = chunk.find(b"\n") + 1
            if first == 0:
                carry += chunk
                continue
            start = 0
            if carry:
                yield carry + chunk[:first], 0, len(carry) + first
                start = first
            cut = chunk.rfind(b"\n") + 1
            if cut > start:
                yield chunk, start, cut
            carry = chunk[cut:]
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UnreadableInput(f"{name}: {exc}") from None
    if carry:
        yield carry, 0, len(carry)


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
    extractor = CandidateExtractor(rules, settings)
    stage = SequenceStage(rules, settings)
    alerts = 0
    started = time.perf_counter()
    with tqdm(
        total=None, unit=" events", unit_scale=True, disable=not progress, file=sys.stderr, mininterval=0.5
    ) as bar:
        for name in files:
            origin = "stdin" if name == "-" else name
            with open_input(name) as stream:
                for block, start, end in _blocks(stream, name):
                    before = extractor.stats.records
                    # Rejections are counted in extractor.stats.
                    candidates, _ = extractor.extract_block(block, origin, start, end)
                    for candidate in candidates:
                        for alert in stage.process(candidate, time.time_ns()):
                            alerts += 1
                            on_alert(alert)
                    bar.update(extractor.stats.records - before)
    seconds = time.perf_counter() - started
    engines = stage.engines.values()
    return ReplayReport(
        events=extractor.stats.records,
        rejected=dict(extractor.stats.rejected),
        candidates=extractor.stats.candidates,
        no_join_key=extractor.stats.no_join_key,
        missing_host_id=extractor.stats.missing_host_id,
        duplicates=sum(e.stats.duplicates for e in engines),
        late=sum(e.stats.late for e in engines),
        sequences=sum(e.stats.sequences for e in engines),
        revised=sum(e.stats.revised for e in engines),
        superseded=sum(e.stats.superseded for e in engines),
        alerts=alerts,
        seconds=seconds,
    )
