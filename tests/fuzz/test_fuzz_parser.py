"""Fuzzing the raw-record path: CandidateExtractor on arbitrary bytes and on mutated real events.

Properties: nothing but a documented rejection ever comes out (no exception), the three entry
points agree, and the prefilter never changes a result: with it and without it the candidates are
the same (only records the prefilter drops as noise without parsing may differ, by a rejection).
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import (
    FUZZ,
    json_values,
    mutated_events,
    new_extractor,
    outcome,
    prefilter_problem,
    unfiltered,
)

_extractor = new_extractor()
_unfiltered = unfiltered(new_extractor())


def _check(record: bytes) -> None:
    filtered, plain = _extractor.extract(record), _unfiltered.extract(record)
    assert prefilter_problem(record, filtered, plain) is None, (record, outcome(filtered), outcome(plain))


def test_a_multi_line_record_may_get_another_reason_but_never_more_bad_lines() -> None:
    """Found by atheris: the object-shaped line 4 is noise to the prefilter, a bad line to a full parse."""
    record = b'2\n\n:\n{"}'
    filtered, plain = _extractor.extract(record), _unfiltered.extract(record)
    assert [(r.reason, r.lines) for r in filtered[1]] == [("not_an_object", (1, 3))]
    assert [(r.reason, r.lines) for r in plain[1]] == [("invalid_json", (1, 3, 4))]
    assert prefilter_problem(record, filtered, plain) is None


def test_the_listed_bad_lines_are_compared_only_as_far_as_both_lists_go() -> None:
    """Found by atheris in CI: with more bad lines than the 20 listed, the prefilter's list reaches
    lines beyond the end of the full parse's list (it skipped noise lines before them)."""
    record = b"\n".join([b"x"] * 3 + [b'{"}'] * 3 + [b"x"] * 30)  # {"}: object-shaped noise, not JSON
    filtered, plain = _extractor.extract(record), _unfiltered.extract(record)
    assert filtered[1][0].count < plain[1][0].count and max(filtered[1][0].lines) > max(plain[1][0].lines)
    assert prefilter_problem(record, filtered, plain) is None


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(record: bytes) -> None:
    _check(record)
    _check(b'{"process":{"name":"mshta.exe"},' + record + b"}")


@FUZZ
@given(mutated_events())
def test_mutated_real_events(record: bytes) -> None:
    _check(record)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.sampled_from([0, 1, 2]))
def test_arbitrary_json_objects_in_any_encoding(doc: dict, encoding: int) -> None:
    """orjson, ASCII-only JSON (every non-ASCII character escaped) and fully escaped keys and strings."""
    record = json.dumps(doc, ensure_ascii=encoding == 1).encode()
    if encoding == 2:
        record = record.replace(b"m", b"\\u006d").replace(b"E", b"\\u0045")
    _check(record)


@FUZZ
@given(st.lists(st.one_of(mutated_events(), st.binary(max_size=60)), max_size=12))
def test_a_batch_and_a_block_agree_with_records_one_by_one(records: list[bytes]) -> None:
    alone = [outcome(_extractor.extract(r)) for r in records]
    batch = _extractor.extract_many(records, ["t/0"] * len(records))
    assert {i: outcome(e) for i, e in batch} == {i: o for i, o in enumerate(alone) if o != ([], [])}
    lines = [r for r in records if b"\n" not in r and r.strip()]  # a block's records are its non-blank lines
    found, rejections = _extractor.extract_block(b"\n".join(lines))
    expected = [outcome(_extractor.extract(line)) for line in lines]
    assert sorted(outcome((found, []))[0]) == sorted(c for e in expected for c in e[0])
    assert sorted(r.reason for r in rejections) == sorted(r for e in expected for r in e[1])


@FUZZ
@given(st.lists(st.integers(0, 40), max_size=20), st.integers(4, 24), st.booleans())
def test_oversized_lines_are_found_exactly(lengths: list[int], limit: int, final_newline: bool) -> None:
    """The block scan for lines over the limit, against the obvious split (tiny limits make it bite)."""
    block = b"\n".join(b"x" * n for n in lengths) + (b"\n" if final_newline and lengths else b"")
    tiny = _unfiltered.options
    _unfiltered.options = dataclasses.replace(tiny, max_record_bytes=limit)
    try:
        spans = _unfiltered._oversized_lines(block, 0, len(block))
    finally:
        _unfiltered.options = tiny
    assert [block[a:b] for a, b in spans] == [line for line in block.split(b"\n") if len(line) > limit]
