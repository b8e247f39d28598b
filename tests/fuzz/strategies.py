"""Inputs for the fuzz tests: arbitrary JSON values, real events, and mutations of their bytes.

``EXAMPLES`` (``EQLSTREAM_FUZZ_EXAMPLES``, default 300) is the example count of every property;
``make fuzz`` raises it for a long run.
"""

from __future__ import annotations

import json
import os

import orjson
from eqlstream_dev.synthetic import generate_corpus
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from app.core import DEFAULT_RULE_PATH, Detector, RejectReason, load_rules
from app.core.extract import MAX_LISTED_LINES, CandidateExtractor
from app.core.rule.predicates import NO_REQUIREMENT
from app.core.rule.prefilter import Prefilter
from tests.support.paths import INPUTS

EXAMPLES = int(os.environ.get("EQLSTREAM_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
RULES = [rule for path in sorted(DEFAULT_RULE_PATH.parent.glob("*.toml")) for rule in load_rules(path)]
# The documented rejection reasons of an input record: anything else (an exception above all) is a bug.
REASONS = frozenset(RejectReason) - {RejectReason.INVALID_CANDIDATE, RejectReason.PRODUCE_REFUSED}


def new_extractor() -> CandidateExtractor:
    """An extractor of both bundled rules with the default options."""
    return Detector(RULES).extractor


def _real_events() -> list[bytes]:
    """Every input fixture, and the candidates and near misses of a small synthetic corpus (all shapes)."""
    events = [orjson.dumps(json.loads(path.read_text())) for path in sorted(INPUTS.glob("*.json"))]
    corpus = [orjson.dumps(e) for e in generate_corpus(3, 3000, attack_rate=0.02, near_miss_rate=0.05, raw_share=0.4)]
    extractor = new_extractor()
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
    b"\xef\xbb\xbf",
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
    b"2024-05-01 10:00:00Z",
    b'"EventID":1,',
    b'"SourceModuleType":"im_msvistalog",',
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
            "+49152",
            "4.9152e4",
            "2024-05-01T10:00:00.123456789+02",
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
    extractor.prefilter = Prefilter([NO_REQUIREMENT])
    return extractor


def outcome(extraction: tuple[list, list]) -> tuple[list, list[str]]:
    """What an extraction decided, comparable across extractors."""
    found, rejections = extraction
    return sorted((c.rule_id, c.key, c.stages, c.timestamp_ms, c.event_id) for c in found), [
        r.reason for r in rejections
    ]


def prefilter_problem(record: bytes, filtered: tuple[list, list], plain: tuple[list, list]) -> str | None:
    """Why the prefilter changed a result (None: it did not). ``filtered`` and ``plain`` are the raw
    extractions of ``record`` with and without the prefilter.

    The candidates must be the same, and only the rejection of noise may be saved: a record the
    prefilter drops unparsed may lack the rejection parsing would give it. A multi-line record
    (Logstash json_lines) gives one rejection whose reason is the most common among the bad lines
    actually parsed; the prefilter skips object-shaped lines without a rule literal, so there its bad
    lines may be fewer and its reason another documented one, never more lines.
    """
    if outcome(filtered)[0] != outcome(plain)[0]:
        return "the candidates differ"
    reasons = set(outcome(filtered)[1])
    if not reasons <= REASONS:
        return f"an undocumented reason: {reasons - REASONS}"
    if reasons <= set(outcome(plain)[1]):
        return None
    multi_line = filtered[1] and plain[1] and (filtered[1][0].lines or plain[1][0].lines)
    if multi_line and filtered[1][0].count <= plain[1][0].count:
        # Only the first MAX_LISTED_LINES bad lines are listed: compare within what both lists cover.
        listed = plain[1][0].lines
        covered = max(listed) if len(listed) == MAX_LISTED_LINES else None
        mine = {line for line in filtered[1][0].lines if covered is None or line <= covered}
        if mine <= set(listed):
            return None
    return "a rejection the unfiltered extraction does not give"
