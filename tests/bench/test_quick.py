"""``python -m bench --quick``: every part of the benchmark runs and reports figures (CI smoke test).

The figures of a quick run mean nothing (tiny volumes, a shared CI machine), so nothing is asserted
about speed: only that each measurement produced its numbers and that the results file has the
shape ``make bench`` writes. It never touches bench/RESULTS.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import TARGETS
from tests.support.wave import WAVE

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = [
    "Ceiling: bare confluent-kafka consumer",
    "Service ingest stage",
    "Service ingest stage as a process (`python -m app run --role ingest`), running",
    "Design-card baseline: plain Faust agent",
    "Faust agent with the prefilter per record",
    "Elastic's `eql` library",
    "Replay CLI",
    "Detection latency at 20,000 events/s: one process",
    "Detection latency at 20,000 events/s: two processes",
    "Detection latency at 20,000 events/s: one process, `python -m app run` (role all); fetch max wait 500 ms",
    "Sequence stage memory",
    "Profile: ingest stage",
    "Profile: replay",
]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_run_reports_every_part(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    committed = ROOT / "bench" / "RESULTS.md"
    before = committed.read_bytes() if committed.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results), "--rules", str(WAVE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1150,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = results.read_text()
    assert "**Failed:**" not in text
    for section in SECTIONS:
        assert re.search(rf"^## {re.escape(section)}", text, re.MULTILINE), section
    targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    for target in TARGETS:
        row = next(line for line in targets.splitlines() if line.startswith(f"| {target.name} |"))
        assert "not measured" not in row, row
        assert re.search(r"\d", row.split("|")[2]), row  # a figure, whatever it is
    # Absolute figures for each reader, and the run's context.
    assert re.search(r"\| Ceiling: bare confluent-kafka consumer \| [\d,]+ \| [\d,]+ \|", text)
    assert re.search(r"latency p50 / p99 / max \| \*\*[\d,]+ / [\d,]+ / [\d,]+ ms\*\*", text)
    assert "| command | `" in text and "--quick" in text
    assert (committed.read_bytes() if committed.exists() else None) == before
