"""A short coverage-guided run of tests/fuzz/atheris_extractor.py (``make fuzz`` runs it for longer)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

SECONDS = 10


def test_a_bounded_atheris_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_extractor", f"-max_total_time={SECONDS}", "-max_len=8192",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = re.search(r"Done (\d+) runs", result.stderr)
    assert runs and int(runs.group(1)) > 1000, result.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*"))
