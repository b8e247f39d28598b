"""The sequence engine against the semantics doc, case by case, with exact expected pairs.

Times are epoch milliseconds, the unit Elasticsearch orders ``@timestamp`` in; the engine never
sees finer time. Candidates are built directly (the extractor has its own tests), one key by default.
"""

from __future__ import annotations

import orjson
import pytest

from app.core.engine.sequence import EXPIRE_PER_CALL, SequenceEngine
from app.core.engine.state import Entry, KeyState, MemoryStore, decode_state, encode_state
from app.core.engine.watermark import Watermark
from app.core.model import Candidate

S = 1000
T0 = 1_714_557_600 * S  # 2024-05-01T10:00:00Z


def engine(**overrides: object) -> SequenceEngine:
    options: dict[str, object] = {
        "rule_id": "r",
        "stage_count": 2,
        "maxspan_ms": 60 * S,
        "store": MemoryStore(),
        "allowed_lateness_ms": 300 * S,
        "watermark": Watermark(1),
    }
    options.update(overrides)
    return SequenceEngine(**options)  # type: ignore[arg-type]


def cand(
    eid: str,
    stage: int | tuple[int, ...],
    ts: int,
    key: tuple[str, ...] = ("h1", "p1"),
    host: str = "h1",
    padding: int = 0,
) -> Candidate:
    stages = stage if isinstance(stage, tuple) else (stage,)
    event = {"id": eid, "padding": "x" * padding}
    return Candidate(
        rule_id="r",
        key=key,
        stages=stages,
        timestamp_ms=ts,
        event_id=eid,
        event=event,
        event_json=orjson.dumps(event),
        watermark_host=host,
    )


def run(eng: SequenceEngine, *candidates: Candidate) -> list[tuple[str, ...]]:
    pairs = []
    for c in candidates:
        pairs += [tuple(e.event_id for e in m.events) for m in eng.process(c)]
    return pairs


def test_basic_pair() -> None:
    assert run(engine(), cand("a", 0, T0), cand("b", 1, T0 + 30 * S)) == [("a", "b")]


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (60 * S, [("a", "b")]),  # maxspan is inclusive
        (60 * S + 1, []),  # 60.001 s is too late
        (1, [("a", "b")]),
        (0, [("a", "b")]),
    ],
)
def test_maxspan_boundary(delta: int, expected: list[tuple[str, ...]]) -> None:
    assert run(engine(), cand("a", 0, T0), cand("b", 1, T0 + delta)) == expected


def test_stage_two_before_stage_one_never_pairs() -> None:
    assert run(engine(), cand("b", 1, T0), cand("a", 0, T0 + S)) == []


def test_stage_two_arriving_first_but_later_in_time_pairs() -> None:
    # Out-of-order arrival within the allowed lateness gives the sorted-order answer.
    assert run(engine(), cand("b", 1, T0 + 10 * S), cand("a", 0, T0)) == [("a", "b")]


def test_equal_milliseconds_are_ordered_by_arrival() -> None:
    assert run(engine(), cand("a", 0, T0), cand("b", 1, T0)) == [("a", "b")]
    assert run(engine(), cand("b", 1, T0), cand("a", 0, T0)) == []


def test_latest_stage_one_pairs_and_older_ones_are_consumed() -> None:
    eng = engine()
    pairs = run(eng, cand("a1", 0, T0), cand("a2", 0, T0 + S), cand("b1", 1, T0 + 2 * S), cand("b2", 1, T0 + 3 * S))
    # b1 takes the latest (a2) and consumes a1 with it; b2 finds nothing.
    assert pairs == [("a2", "b1")]


def test_new_stage_one_after_completion_can_pair_again() -> None:
    pairs = run(
        engine(), cand("a1", 0, T0), cand("b1", 1, T0 + S), cand("a2", 0, T0 + 2 * S), cand("b2", 1, T0 + 3 * S)
    )
    assert pairs == [("a1", "b1"), ("a2", "b2")]


def test_consumed_even_when_maxspan_fails() -> None:
    # b1 takes a (too old), consuming it: b2 cannot pair with a either.
    pairs = run(engine(), cand("a", 0, T0), cand("b1", 1, T0 + 61 * S), cand("b2", 1, T0 + 62 * S))
    assert pairs == []


def test_keys_are_independent_and_exact() -> None:
    pairs = run(
        engine(),
        cand("a", 0, T0, key=("h1", "p1")),
        cand("b", 1, T0 + S, key=("h1", "P1")),  # join keys are case-sensitive
        cand("c", 1, T0 + S, key=("h2", "p1")),
    )
    assert pairs == []


def test_duplicates_never_emit_anything() -> None:
    """A re-delivered event (same id) is one event: before or after its sequence completed, nothing repeats."""
    eng = engine()
    pairs = run(eng, cand("a", 0, T0), cand("a", 0, T0), cand("b", 1, T0 + S), cand("b", 1, T0 + S), cand("a", 0, T0))
    assert pairs == [("a", "b")]
    assert (eng.stats.duplicates, eng.stats.sequences, eng.stats.revised) == (3, 1, 0)


def test_event_meeting_both_stages_does_not_pair_with_itself() -> None:
    assert run(engine(), cand("x", (0, 1), T0)) == []
    assert run(engine(order_tolerance_ms=5 * S), cand("x", (0, 1), T0)) == []
    # ...but it does complete an earlier sequence and start a new one.
    assert run(engine(), cand("a", 0, T0), cand("x", (0, 1), T0 + S), cand("b", 1, T0 + 2 * S)) == [
        ("a", "x"),
        ("x", "b"),
    ]


def test_order_tolerance_is_opt_in() -> None:
    # The LethalHTA capture: the network event's time is 3.975 s before the process start.
    process, network = cand("p", 0, T0), cand("n", 1, T0 - 3_975)
    assert run(engine(), process, network) == []
    assert run(engine(order_tolerance_ms=5 * S), process, network) == [("p", "n")]
    assert run(engine(order_tolerance_ms=3 * S), process, network) == []


def test_three_stages() -> None:
    eng = engine(stage_count=3)
    pairs = run(eng, cand("a", 0, T0), cand("b", 1, T0 + S), cand("x", 2, T0 + S // 2), cand("c", 2, T0 + 2 * S))
    assert pairs == [("a", "b", "c")]


def test_three_stages_maxspan_from_first_event() -> None:
    eng = engine(stage_count=3)
    assert run(eng, cand("a", 0, T0), cand("b", 1, T0 + 30 * S), cand("c", 2, T0 + 61 * S)) == []


def test_no_maxspan() -> None:
    assert run(engine(maxspan_ms=None), cand("a", 0, T0), cand("b", 1, T0 + 86400 * S)) == [("a", "b")]


def test_late_different_stage_one_supersedes_but_never_retracts() -> None:
    eng = engine()
    first = eng.process(cand("a1", 0, T0)) + eng.process(cand("b", 1, T0 + 30 * S))
    assert [(tuple(e.event_id for e in m.events), m.revised) for m in first] == [(("a1", "b"), False)]
    # a2 arrives late but is before b: Elasticsearch pairs (a2, b) and a1 is consumed silently.
    second = eng.process(cand("a2", 0, T0 + 10 * S))
    assert [(tuple(e.event_id for e in m.events), m.revised) for m in second] == [(("a2", "b"), False)]
    assert eng.stats.superseded == 1


def test_late_earlier_stage_two_revises_the_alert_under_the_same_first_event() -> None:
    eng = engine()
    assert run(eng, cand("a", 0, T0), cand("b2", 1, T0 + 20 * S)) == [("a", "b2")]
    # b1 is earlier: Elasticsearch pairs (a, b1). Same first event, so the same alert id, re-emitted
    # with Elasticsearch's events; the latest record per alert id is Elasticsearch's answer.
    (revision,) = eng.process(cand("b1", 1, T0 + 10 * S))
    assert tuple(e.event_id for e in revision.events) == ("a", "b1") and revision.revised
    assert (eng.stats.sequences, eng.stats.revised, eng.stats.superseded) == (1, 1, 0)
    # A later connection, or the earlier one again, changes nothing.
    assert run(eng, cand("b3", 1, T0 + 30 * S), cand("b2", 1, T0 + 20 * S)) == []


def test_expiry_drops_state_behind_the_watermark() -> None:
    store = MemoryStore()
    eng = engine(store=store)
    run(eng, cand("a", 0, T0, key=("h1", "p1")))
    assert len(store) == 1
    # The watermark moves past T0 + lateness + maxspan: the pending stage-1 event can no longer match.
    run(eng, cand("z", 0, T0 + 361 * S, key=("h1", "p2")))
    assert len(store) == 1
    assert eng.stats.expired_keys == 1
    assert store.get(eng.state_key(("h1", "p1"))) is None


def test_a_watermark_jump_after_a_flood_expires_a_bounded_number_of_keys_per_call() -> None:
    """After a flood of distinct keys, one candidate that moves the watermark must not expire them
    all at once (all read, deleted and written to the changelog in one batch); later calls finish."""
    store = MemoryStore()
    eng = engine(store=store)
    flood = 2 * EXPIRE_PER_CALL + 500
    run(eng, *(cand(f"k{i}", 0, T0 + i, key=("h1", f"p{i}")) for i in range(flood)))
    run(eng, cand("z", 0, T0 + 400 * S, key=("h1", "late")))
    assert eng.stats.expired_keys == EXPIRE_PER_CALL
    assert eng.expire() == EXPIRE_PER_CALL
    assert eng.expire() == 500 and eng.expire() == 0
    assert len(store) == 1 and eng.stats.expired_keys == flood
    assert eng.expire(limit=None) == 0


def test_state_is_kept_while_a_late_partner_may_arrive() -> None:
    store = MemoryStore()
    eng = engine(store=store)
    run(eng, cand("a", 0, T0, key=("h1", "p1")))
    run(eng, cand("z", 0, T0 + 359 * S, key=("h1", "p2")))  # within lateness + maxspan of T0
    # b is 5 minutes late but within the allowed lateness: still found.
    assert run(eng, cand("b", 1, T0 + 59 * S, key=("h1", "p1"))) == [("a", "b")]


def test_forged_future_timestamp_from_one_host_does_not_blind_others() -> None:
    eng = engine(watermark=Watermark(3))
    run(eng, cand("a", 0, T0, key=("h1", "p1"), host="h1"))
    for i, host in enumerate(("h2", "h3")):
        run(eng, cand(f"n{i}", 0, T0 + S, key=(host, "p"), host=host))
    # One host claims the year 2099.
    run(eng, cand("evil", 0, 4_070_908_800 * S, key=("h9", "p"), host="h9"))
    assert run(eng, cand("b", 1, T0 + 30 * S, key=("h1", "p1"), host="h1")) == [("a", "b")]


def test_per_stage_bound_evicts_oldest() -> None:
    eng = engine(max_entries_per_stage=3)
    run(eng, *(cand(f"b{i}", 1, T0 + i) for i in range(10)))
    state = eng.store.get(eng.state_key(("h1", "p1")))
    assert state is not None and [e.event_id for e in state.entries] == ["b7", "b8", "b9"]
    assert eng.stats.evicted == 7


def test_byte_bound_evicts_oldest_and_never_the_newest_event() -> None:
    """A flood of large events on one key is cut to the byte budget, so the key's state fits one record."""
    eng = engine(max_state_bytes=10_000)
    run(eng, *(cand(f"s{i}", 0, T0 + i, padding=3_000) for i in range(10)))
    state = eng.store.get(eng.state_key(("h1", "p1")))
    assert state is not None
    assert [e.event_id for e in state.entries] == ["s7", "s8", "s9"]
    assert sum(e.size for e in state.entries) <= 10_000
    assert eng.stats.evicted == 7
    # The survivors still pair: the latest stage-1 event with the next connection.
    assert run(eng, cand("b", 1, T0 + 20)) == [("s9", "b")]


def test_byte_bound_keeps_an_event_larger_than_the_rest_of_the_budget() -> None:
    eng = engine(max_state_bytes=5_000)
    run(eng, cand("small", 0, T0, padding=1_000), cand("large", 0, T0 + 1, padding=4_500))
    state = eng.store.get(eng.state_key(("h1", "p1")))
    assert state is not None and [e.event_id for e in state.entries] == ["large"]


def test_rebuild_expiry_index_after_restart() -> None:
    store = MemoryStore()
    run(engine(store=store), cand("a", 0, T0))
    restarted = engine(store=store)
    assert restarted.rebuild_expiry_index(store.items()) == 1
    run(restarted, cand("z", 0, T0 + 400 * S, key=("h1", "p2")))
    assert store.get(restarted.state_key(("h1", "p1"))) is None


def test_state_survives_encoding_and_decoding() -> None:
    """The service stores ``encode_state`` bytes in RocksDB and its changelog; a restart decodes them."""
    store = MemoryStore()
    eng = engine(store=store)
    run(eng, cand("a", 0, T0), cand("b", 1, T0 + S), cand("c", 0, T0 + 2 * S, padding=10))
    skey = eng.state_key(("h1", "p1"))
    state = store.get(skey)
    assert state is not None
    raw = encode_state(state)
    assert raw.startswith(b"EQS3")
    decoded = decode_state(raw)
    assert [(e.timestamp_ms, e.arrival, e.stages, e.event_id, e.event_json) for e in decoded.entries] == [
        (e.timestamp_ms, e.arrival, e.stages, e.event_id, e.event_json) for e in state.entries
    ]
    assert (decoded.emitted, decoded.superseded, decoded.next_arrival) == (
        state.emitted,
        state.superseded,
        state.next_arrival,
    )
    assert decoded.entries[-1].event == {"id": "c", "padding": "x" * 10}  # parsed lazily, from the stored bytes
    store.set(skey, decoded)
    # The alerted pair is remembered (b again changes nothing); c pairs with the next connection.
    assert run(eng, cand("b", 1, T0 + S), cand("d", 1, T0 + 3 * S)) == [("c", "d")]


def test_state_of_version_0_1_is_still_read() -> None:
    """eqlstream 0.1 stored one JSON document with nanosecond timestamps and parsed events."""
    legacy = orjson.dumps(
        {
            "entries": [[T0 * 1_000_000 + 999_999, 0, [0], "a", {"id": "a"}, "t/0"]],
            "emitted": {},
            "superseded": [],
            "next_arrival": 1,
        }
    )
    state = decode_state(legacy)
    (entry,) = state.entries
    assert (entry.timestamp_ms, entry.stages, entry.event_id, entry.origin, entry.event) == (
        T0,
        (0,),
        "a",
        "t/0",
        {"id": "a"},
    )
    store = MemoryStore()
    eng = engine(store=store)
    store.set(eng.state_key(("h1", "p1")), state)
    assert run(eng, cand("b", 1, T0 + S)) == [("a", "b")]


@pytest.mark.parametrize("raw", [b"EQS3\x00\x00\x00\x02{}", b"EQS3\x00\x00\x00\x02{}extra", b"not state"])
def test_undecodable_state_is_a_value_error(raw: bytes) -> None:
    with pytest.raises((ValueError, KeyError)):
        decode_state(raw)


def test_entries_compare_by_identity() -> None:
    first, second = (Entry(T0, 0, (0,), "a", b"{}") for _ in range(2))
    assert first != second and first == first
    state = KeyState(entries=[first, second])
    state.entries.remove(second)
    assert state.entries == [first] and state.entries[0] is first


def test_event_older_than_retained_state_is_dropped_and_counted() -> None:
    eng = engine()
    run(eng, cand("z", 0, T0 + 1000 * S, key=("h1", "p2")))
    assert run(eng, cand("a", 0, T0), cand("b", 1, T0 + S)) == []
    assert eng.stats.too_late == 2
    assert len(eng.store) == 1  # type: ignore[arg-type]


def test_late_but_retained_event_is_still_evaluated() -> None:
    eng = engine()
    run(eng, cand("a", 0, T0))
    run(eng, cand("z", 0, T0 + 340 * S, key=("h1", "p2")))
    # b is 5m10s behind the watermark (beyond the 5 min lateness) but a is still retained.
    assert run(eng, cand("b", 1, T0 + 30 * S)) == [("a", "b")]
    assert eng.stats.late == 1
