"""Coverage-guided fuzzing of the raw-record path with atheris (libFuzzer), seeded with real events.

    .venv/bin/python -m tests.fuzz.atheris_extractor -max_total_time=600 [corpus_dir]

(``make fuzz``). An empty or missing corpus directory is seeded with the real events first; without
one, a fresh temporary directory is.

Each input is one record, run through the extractor with and without the prefilter: an exception,
a reason that is not documented, or a candidate that only one of the two finds stops the run
with the input saved by libFuzzer (``crash-*``). Extra arguments go to libFuzzer.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["app"]):
    from app.detector import CandidateExtractor

from tests.fuzz.strategies import REAL_EVENTS, REASONS, RULES, outcome, unfiltered

_filtered = CandidateExtractor(RULES)
_plain = unfiltered(CandidateExtractor(RULES))


def check(record: bytes) -> None:
    """The property of tests/fuzz/test_fuzz_parser.py on one record."""
    filtered = outcome(_filtered.extract(record))
    plain = outcome(_plain.extract(record))
    if not set(filtered[1]) <= REASONS or filtered[0] != plain[0] or not set(filtered[1]) <= set(plain[1]):
        raise AssertionError(f"prefiltered {filtered} != unfiltered {plain}")


def main(argv: list[str]) -> None:
    arguments = [argv[0], *(a for a in argv[1:] if a.startswith("-"))]
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    corpus = corpus or [tempfile.mkdtemp(prefix="eqlstream-fuzz-")]
    seeds = Path(corpus[0])
    seeds.mkdir(parents=True, exist_ok=True)
    if not any(seeds.iterdir()):
        for index, event in enumerate(REAL_EVENTS):
            (seeds / f"seed-{index}").write_bytes(event)
    atheris.Setup([*arguments, *corpus], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
