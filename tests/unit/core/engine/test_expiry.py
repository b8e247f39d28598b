"""The packed expiry index must pop exactly what a plain heap of (timestamp, key) would."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.engine.expiry import ExpiryIndex

PREFIX = '["rule-1"'
S = 1000  # milliseconds per second: a bucket is one second of event time


def key(name: str) -> str:
    return f'{PREFIX},"host","{name}"]'


def test_keys_come_out_once_behind_the_cutoff_with_the_prefix_restored() -> None:
    index = ExpiryIndex(PREFIX)
    index.add(10 * S, key("a"))
    index.add(10 * S + 500, key("b"))  # same second as a
    index.add(12 * S, key("c"))
    assert list(index.pop_before(10 * S)) == []
    # The cutoff falls inside a's and b's second: only a is behind it.
    assert list(index.pop_before(10 * S + 1)) == [(10 * S, key("a"))]
    assert list(index.pop_before(13 * S)) == [(10 * S + 500, key("b")), (12 * S, key("c"))]
    assert len(index) == 0


def test_keys_added_while_popping_are_seen_by_the_same_pop() -> None:
    index = ExpiryIndex(PREFIX)
    index.add(5 * S, key("a"))
    popped = []
    for _, name in index.pop_before(20 * S):
        popped.append(name)
        if name == key("a"):
            index.add(7 * S, key("a2"))  # behind the cutoff: must come out too
            index.add(30 * S, key("a3"))  # ahead of it: must stay
    assert popped == [key("a"), key("a2")]
    assert list(index.pop_before(31 * S)) == [(30 * S, key("a3"))]


def test_negative_timestamps_and_non_ascii_keys() -> None:
    index = ExpiryIndex(PREFIX)
    index.add(-3 * S, key("ü"))
    assert list(index.pop_before(0)) == [(-3 * S, key("ü"))]


def test_ownership_is_the_prefix() -> None:
    index = ExpiryIndex(PREFIX)
    assert index.owns(key("a"))
    assert not index.owns('["rule-2","host","a"]')


def test_a_packed_key_costs_little_memory() -> None:
    index = ExpiryIndex(PREFIX)
    for i in range(10_000):
        index.add(i * S // 100, key(f"{i:040d}"))
    suffix = len(key(f"{0:040d}")) - len(PREFIX)
    assert index.memory_bytes() == 10_000 * (12 + suffix)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5))
def test_same_pops_as_a_heap(seed: int, bucket_s: int) -> None:
    rng = random.Random(seed)
    index = ExpiryIndex(PREFIX, bucket_ms=bucket_s * S)
    reference: list[tuple[int, str]] = []
    cutoff = -10 * S
    for step in range(rng.randrange(1, 60)):
        for _ in range(rng.randrange(0, 8)):
            record = (cutoff + rng.randrange(-2 * S, 20 * S), key(f"k{rng.randrange(30)}"))
            index.add(*record)
            heapq.heappush(reference, record)
        cutoff += rng.randrange(0, 4 * S)
        expected = []
        while reference and reference[0][0] < cutoff:
            expected.append(heapq.heappop(reference))
        got = []
        for record in index.pop_before(cutoff):
            got.append(record)
            if rng.random() < 0.2:  # the engine re-indexes a popped key, ahead of the cutoff
                again = (cutoff + rng.randrange(0, 3 * S), record[1])
                index.add(*again)
                heapq.heappush(reference, again)
        assert sorted(got) == sorted(expected), step
        assert len(index) == len(reference)


def test_a_pop_stopped_early_leaves_the_rest_for_the_next_one() -> None:
    index = ExpiryIndex(PREFIX)
    records = [(i * 37, key(f"k{i}")) for i in range(500)]  # many keys per one-second bucket
    for record in records:
        index.add(*record)
    first = []
    for record in index.pop_before(10**9):
        first.append(record)
        if len(first) == 120:
            break
    rest = list(index.pop_before(10**9))
    assert first + rest == records and len(index) == 0
