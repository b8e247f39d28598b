"""Inputs for the fuzz tests: arbitrary JSON values, real events, and mutations of their bytes.

``EXAMPLES`` (``EQLSTREAM_FUZZ_EXAMPLES``, default 300) is the example count of every property;
``make fuzz`` raises it for a long run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from app.detector import CandidateExtractor
from app.rule import load_rules
from app.rule.predicates import NO_REQUIREMENT
from app.rule.prefilter import Prefilter
from app.synthetic import generate_corpus

EXAMPLES = int(os.environ.get("EQLSTREAM_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
RULE_FILES = Path(__file__).resolve().parents[2] / "app" / "rule" / "files"
RULES = [rule for path in sorted(RULE_FILES.glob("*.toml")) for rule in load_rules(path)]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inputs"
# The documented rejection reasons: anything else (an exception above all) is a bug.
REASONS = frozenset({"invalid_json", "not_an_object", "invalid_timestamp", "record_too_large", "too_deep"})


def _real_events() -> list[bytes]:
    """Every input fixture, and the candidates and near misses of a small synthetic corpus (all shapes)."""
    events = [orjson.dumps(json.loads(path.read_text())) for path in sorted(FIXTURES.glob("*.json"))]
    corpus = [orjson.dumps(e) for e in generate_corpus(3, 3000, attack_rate=0.02, near_miss_rate=0.05, raw_share=0.4)]
    extractor = CandidateExtractor(RULES)
    events += [e for e in corpus if b"mshta" in e.lower()][:80]
    assert any(extractor.extract(e)[0] for e in events)
    return events


REAL_EVENTS = _real_events()

# Bytes that matter to the parser, the prefilter and the normalizers, spliced into real events.
TOKENS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff",
    b"\\u00",
    b"\\u006d",
    b"\\\\",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"mshta.exe",
    b"MSHTA.EXE",
    b"-Embedding",
    b'"process.name":"mshta.exe",',
    b'"event.category":"process",',
    b'"@timestamp":',
    b"9999-12-31T23:59:59Z",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "mshta.exe",
            "MsHtA.ExE",
            "-Embedding",
            "start",
            "process",
            "network",
            "ingress",
            "tcp",
            "50000",
            "49151",
            " 50000",
            "5e4",
            "127.0.0.1",
            "::1",
            "0:0:0:0:0:0:0:1",
            "::ffff:127.0.0.1",
            "2024-05-01T10:00:00Z",
            "1714557600000",
            "mshta.exe\u0000",
            "ｍｓｈｔａ.exe",
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A real event with a few byte-level edits: flips, deletions, truncation, spliced tokens."""
    data = bytearray(draw(st.sampled_from(REAL_EVENTS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        edit = draw(st.integers(0, 4))
        if edit == 0 and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif edit == 1:
            del data[position : position + draw(st.integers(1, 40))]
        elif edit == 2:
            data[position:position] = draw(st.sampled_from(TOKENS))
        elif edit == 3:
            del data[position:]
        else:
            data[position:position] = draw(st.binary(max_size=8))
    return bytes(data)


def unfiltered(extractor: CandidateExtractor) -> CandidateExtractor:
    """``extractor`` with a prefilter that keeps every record: what evaluation alone decides."""
    extractor.prefilter = Prefilter(NO_REQUIREMENT)
    return extractor


def outcome(extraction: tuple[list, list]) -> tuple[list, list[str]]:
    """What an extraction decided, comparable across extractors."""
    found, rejections = extraction
    return sorted((c.rule_id, c.key, c.stages, c.timestamp_ns, c.event_id) for c in found), [
        r.reason for r in rejections
    ]
