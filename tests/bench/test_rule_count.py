"""``python -m bench.rule_count``: the rule-count measurement the README cites runs and reports its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.unit.test_rule_files import upstream_folder

ROOT = Path(__file__).resolve().parents[2]


def test_rule_count_reports_the_bundled_rule_and_the_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.rule_count", str(upstream_folder(tmp_path)), "--events", "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^bundled rule: 1 rules, [\d,]+ events/s, [\d,]+ candidates$", done.stdout, re.MULTILINE)
    assert re.search(r"^folder: 1 rules, [\d,]+ events/s, [\d,]+ candidates$", done.stdout, re.MULTILINE)
    selective = r"^folder, rules whose every stage names a literal: 1 rules, [\d,]+ events/s, [\d,]+ candidates$"
    assert re.search(selective, done.stdout, re.MULTILINE)
    assert re.search(r"^most candidates: ", done.stdout, re.MULTILINE)
