"""Coverage-guided fuzzing of the raw-record path with atheris (libFuzzer), seeded with real events.

    .venv/bin/python -m tests.fuzz.atheris_extractor -max_total_time=600 [corpus_dir]

(``make fuzz``). An empty or missing corpus directory is seeded with the real events first; without
one, a fresh temporary directory is.

Each input is one record, run through the extractor with and without the prefilter: an exception,
a reason that is not documented, a candidate that only one of the two finds, or a rejection the
prefilter should not change (``strategies.prefilter_problem``) stops the run with the input saved
by libFuzzer (``crash-*``). Extra arguments go to libFuzzer.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["app"]):
    import app.core  # noqa: F401 - instrumented before the strategies import it

from tests.fuzz.strategies import REAL_EVENTS, new_extractor, outcome, prefilter_problem, unfiltered

_filtered = new_extractor()
_plain = unfiltered(new_extractor())


def check(record: bytes) -> None:
    """The property of tests/fuzz/test_fuzz_parser.py on one record."""
    filtered, plain = _filtered.extract(record), _plain.extract(record)
    problem = prefilter_problem(record, filtered, plain)
    if problem is not None:
        raise AssertionError(f"{problem}: prefiltered {outcome(filtered)} != unfiltered {outcome(plain)}")


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
