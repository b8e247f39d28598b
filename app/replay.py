"""Offline replay: NDJSON files through the same ``Detector`` as the streaming service.

Inputs are read in arrival order: files in the order given, a directory's ``*.ndjson`` and
``*.ndjson.gz`` files in name order, ``-`` for stdin. Gzip is recognised by its magic bytes (on
stdin too), whatever the name. Every named input is checked before anything is written, so a
typo in the last name does not come after a page of alerts.
"""

from __future__ import annotations

import gzip
import io
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from app.core import Alert, Detector
from app.core.engine.sequence import EngineStats

_GZIP_MAGIC = b"\x1f\x8b"
_BLOCK_SIZE = 4 << 20


@dataclass
class ReplayReport:
    """What a replay did, for the closing summary."""

    events: int
    parsed: int
    rejected: dict[str, int]
    candidates: int
    no_join_key: int
    missing_host_id: int
    engine: EngineStats
    alerts: int
    suppressed: int
    seconds: float

    def text(self) -> str:
        """The human summary printed on stderr."""
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        rejected = ", ".join(f"{reason} {count}" for reason, count in sorted(self.rejected.items())) or "none"
        engine = self.engine
        return (
            f"events read: {self.events}\n"
            f"rejected lines: {sum(self.rejected.values())} ({rejected})\n"
            f"candidates: {self.candidates} (without a join key: {self.no_join_key}, duplicates: {engine.duplicates}, "
            f"beyond allowed lateness: {engine.late})\n"
            f"parsed events without host.id: {self.missing_host_id}\n"
            f"sequences: {engine.sequences} (re-emitted with corrected events: {engine.revised}, "
            f"superseded by later arrivals: {engine.superseded})\n"
            f"alerts: {self.alerts} (held back by the alert cap: {self.suppressed})\n"
            f"rate: {rate:,.0f} events/s ({self.seconds:.2f} s)"
        )


class UnreadableInput(Exception):
    """An input that cannot be opened or read; the message names it."""


def resolve_inputs(names: list[str]) -> list[str]:
    """The files to read, in order: directories expanded, every one checked to be readable."""
    files: list[str] = []
    for name in names:
        if name == "-":
            files.append(name)
            continue
        path = Path(name)
        if path.is_dir():
            found = sorted([*path.glob("*.ndjson"), *path.glob("*.ndjson.gz")], key=lambda p: p.name)
            if not found:
                raise UnreadableInput(f"{name}: a directory without *.ndjson or *.ndjson.gz files")
            files += [str(p) for p in found]
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise UnreadableInput(f"{name}: {exc.strerror or exc}") from None
        files.append(name)
    return files


def replay(
    files: list[str],
    detector: Detector,
    on_alert: Callable[[Alert], None],
    *,
    progress: bool = False,
) -> ReplayReport:
    """Replay ``files`` in order (arrival order = line order) and call ``on_alert`` for each alert."""
    extractor = detector.extractor
    sequencer = detector.sequencer()
    alerts = suppressed = 0
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
                        outcome = sequencer.process(candidate, time.time_ns() // 1_000_000)
                        suppressed += len(outcome.suppressed)
                        for alert in outcome.alerts:
                            alerts += 1
                            on_alert(alert)
                    bar.update(extractor.stats.records - before)
    engine = EngineStats()
    for engine_stats in sequencer.stats().values():
        engine.add(engine_stats)
    stats = extractor.stats
    return ReplayReport(
        events=stats.records,
        parsed=stats.parsed,
        rejected=dict(stats.rejected),
        candidates=stats.candidates,
        no_join_key=stats.no_join_key,
        missing_host_id=stats.missing_host_id,
        engine=engine,
        alerts=alerts,
        suppressed=suppressed,
        seconds=time.perf_counter() - started,
    )


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
    """Open a file or ``-`` (stdin) in binary mode, decompressing gzip recognised by its magic bytes."""
    try:
        raw: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UnreadableInput(f"{name}: {exc.strerror or exc}") from None
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    try:
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=buffered) as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield buffered
    finally:
        if name != "-":
            raw.close()
