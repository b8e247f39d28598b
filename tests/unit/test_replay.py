"""Replay's reading (app.replay): block-wise and batch-wise, the same records, candidates and rejections
as record-by-record extraction, so replay and the service's ingest stage answer alike."""

from __future__ import annotations

import io

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import replay as replay_module
from app.core import DetectionOptions
from app.core.extract import CandidateExtractor
from tests.support.detection import RULE

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
    b"\xef\xbb\xbf" + START,  # a byte-order mark is no reason to refuse a record
    b'{"EventCode": 1, "Image": "mshta.exe"}',  # a Windows event in an unknown layout
]


def extractor() -> CandidateExtractor:
    return CandidateExtractor([RULE], DetectionOptions())


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
    by_record = extractor()
    expected = []
    for line in lines:
        if line.strip():
            candidates, rejections = by_record.extract(line)
            expected += [c.event_id for c in candidates]
    by_block = extractor()
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
    by_record = extractor()
    expected = []
    for index, record in enumerate(records):
        candidates, rejections = by_record.extract(record)
        if candidates or rejections:
            expected.append((index, [c.event_id for c in candidates], [r.reason for r in rejections]))
    by_batch = extractor()
    found = [
        (index, [c.event_id for c in candidates], [r.reason for r in rejections])
        for index, (candidates, rejections) in by_batch.extract_many(records, ["t"] * len(records))
    ]
    assert found == expected
    assert by_batch.stats.records == by_record.stats.records == len(records)
    assert by_batch.stats.rejected == by_record.stats.rejected
