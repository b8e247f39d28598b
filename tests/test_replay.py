"""Block-wise reading: the same records, candidates and rejections as record-by-record extraction."""

from __future__ import annotations

import io

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import replay as replay_module
from app.detector import CandidateExtractor
from app.rule import load_rules

RULE = load_rules()[0]
START = orjson.dumps(
    {
        "@timestamp": "2024-05-01T10:00:00Z",
        "event": {"category": "process", "type": "start"},
        "host": {"id": "h"},
        "process": {"name": "mshta.exe", "entity_id": "e", "args": "-Embedding"},
    }
)
LINES = [
    START,
    b'{"event": {"category": "file"}, "message": "noise"}',
    b'{"note": "MSHTA.EXE mentioned in noise"}',
    b"plain text, mshta.exe",
    b"plain text without the literal",
    b'{"truncated": ',
    b"[1, 2]",
    b"",
    b"   ",
    b'{"escaped": "\\u006dshta.exe"}',
    b'{"a": 1}\r',
    START.replace(b"mshta.exe", b"\\u006dshta.exe"),
]


def blocks(data: bytes, size: int) -> list[tuple[bytes, int, int]]:
    original = replay_module._BLOCK_SIZE
    replay_module._BLOCK_SIZE = size
    try:
        return list(replay_module._blocks(io.BufferedReader(io.BytesIO(data)), "test"))
    finally:
        replay_module._BLOCK_SIZE = original


@pytest.mark.parametrize("size", [1, 3, 7, 64, 4096])
def test_blocks_split_only_at_line_ends(size: int) -> None:
    data = b"\n".join(LINES) + b"\n" + b'{"last": "no newline"}'
    pieces = blocks(data, size)
    assert b"".join(block[start:end] for block, start, end in pieces) == data
    assert all(block[end - 1 : end] == b"\n" for block, _, end in pieces[:-1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=30), st.integers(1, 200))
def test_block_extraction_equals_record_extraction(lines: list[bytes], size: int) -> None:
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    by_record = CandidateExtractor([RULE])
    expected = []
    for line in lines:
        if line.strip():
            candidates, rejections = by_record.extract(line)
            expected += [c.event_id for c in candidates]
    by_block = CandidateExtractor([RULE])
    found = []
    for block, start, end in blocks(data, size):
        candidates, _ = by_block.extract_block(block, "", start, end)
        found += [c.event_id for c in candidates]
    assert found == expected
    assert by_block.stats.records == by_record.stats.records
    assert by_block.stats.rejected == by_record.stats.rejected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(LINES), max_size=30))
def test_batch_extraction_equals_record_extraction(records: list[bytes]) -> None:
    by_record = CandidateExtractor([RULE])
    expected = []
    for index, record in enumerate(records):
        candidates, rejections = by_record.extract(record)
        if candidates or rejections:
            expected.append((index, [c.event_id for c in candidates], [r.reason for r in rejections]))
    by_batch = CandidateExtractor([RULE])
    found = [
        (index, [c.event_id for c in candidates], [r.reason for r in rejections])
        for index, (candidates, rejections) in by_batch.extract_many(records, ["t"] * len(records))
    ]
    assert found == expected
    assert by_batch.stats.records == by_record.stats.records == len(records)
    assert by_batch.stats.rejected == by_record.stats.rejected
