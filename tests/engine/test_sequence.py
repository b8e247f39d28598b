"""The sequence engine against the semantics doc, case by case, with exact expected pairs."""

from __future__ import annotations

import pytest

from app.engine.sequence import Candidate, SequenceEngine
from app.engine.state import KeyState, MemoryStore
from app.engine.watermark import Watermark

S = 1_000_000_000
MS = 1_000_000
T0 = 1_714_557_600 * S  # 2024-05-01T10:00:00Z


def engine(**overrides) -> SequenceEngine:
    options = dict(
        rule_id="r",
        stage_count=2,
        maxspan_ns=60 * S,
        store=MemoryStore(),
        allowed_lateness_ns=300 * S,
        watermark=Watermark(1),
    )
    options.update(overrides)
    return SequenceEngine(**options)


def cand(eid: str, stage: int | tuple[int, ...], ts: int, key: tuple = ("h1", "p1"), host: str = "h1") -> Candidate:
    stages = stage if isinstance(stage, tuple) else (stage,)
    return Candidate("r", key, stages, ts, eid, {"id": eid}, host)


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
        (60 * S + MS, []),  # 60.001 s is too late
        (60 * S + 1, []),  # even by one nanosecond
        (1, [("a", "b")]),
    ],
)
def test_maxspan_boundary(delta: int, expected: list) -> None:
    assert run(engine(), cand("a", 0, T0), cand("b", 1, T0 + delta)) == expected


def test_stage_two_before_stage_one_never_pairs() -> None:
    assert run(engine(), cand("b", 1, T0), cand("a", 0, T0 + S)) == []


def test_stage_two_arriving_first_but_later_in_time_pairs() -> None:
    # Out-of-order arrival within the allowed lateness gives the sorted-order answer.
    assert run(engine(), cand("b", 1, T0 + 10 * S), cand("a", 0, T0)) == [("a", "b")]


def test_equal_timestamps_are_ordered_by_arrival() -> None:
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


def test_duplicates_are_ignored() -> None:
    eng = engine()
    pairs = run(eng, cand("a", 0, T0), cand("a", 0, T0), cand("b", 1, T0 + S), cand("b", 1, T0 + S), cand("a", 0, T0))
    assert pairs == [("a", "b")]
    assert (eng.stats.duplicates, eng.stats.repeated) == (3, 0)


def test_with_repeat_alerts_a_duplicate_repeats_the_alert_it_belongs_to() -> None:
    """A re-delivery before the sequence completes changes nothing; one after it repeats the same alert
    (the service may have stored the state of an alert it died before sending)."""
    eng = engine(repeat_alerts=True)
    pairs = run(eng, cand("a", 0, T0), cand("a", 0, T0), cand("b", 1, T0 + S), cand("b", 1, T0 + S), cand("a", 0, T0))
    assert pairs == [("a", "b")] * 3
    assert (eng.stats.duplicates, eng.stats.sequences, eng.stats.repeated) == (3, 1, 2)


def test_a_repeat_carries_the_latest_revision_of_the_alert() -> None:
    eng = engine(repeat_alerts=True)
    pairs = run(eng, cand("a", 0, T0), cand("c", 1, T0 + 3 * S), cand("b", 1, T0 + S), cand("c", 1, T0 + 3 * S))
    assert pairs == [("a", "c"), ("a", "b")]  # revised: b is the connection Elasticsearch pairs
    assert run(eng, cand("a", 0, T0)) == [("a", "b")]
    assert eng.stats.repeated == 1


def test_a_duplicate_of_an_unpaired_event_repeats_nothing() -> None:
    eng = engine(repeat_alerts=True)
    assert run(eng, cand("a", 0, T0), cand("b", 1, T0 + S), cand("z", 0, T0 + 2 * S), cand("z", 0, T0 + 2 * S)) == [
        ("a", "b")
    ]
    assert eng.stats.repeated == 0


def test_event_meeting_both_stages_does_not_pair_with_itself() -> None:
    assert run(engine(), cand("x", (0, 1), T0)) == []
    assert run(engine(order_tolerance_ns=5 * S), cand("x", (0, 1), T0)) == []
    # ...but it does complete an earlier sequence and start a new one.
    assert run(engine(), cand("a", 0, T0), cand("x", (0, 1), T0 + S), cand("b", 1, T0 + 2 * S)) == [
        ("a", "x"),
        ("x", "b"),
    ]


def test_order_tolerance_is_opt_in() -> None:
    # The LethalHTA capture: the network event's time is 3.975 s before the process start.
    process, network = cand("p", 0, T0), cand("n", 1, T0 - 3_975 * MS)
    assert run(engine(), process, network) == []
    assert run(engine(order_tolerance_ns=5 * S), process, network) == [("p", "n")]
    assert run(engine(order_tolerance_ns=3 * S), process, network) == []


def test_three_stages() -> None:
    eng = engine(stage_count=3)
    pairs = run(eng, cand("a", 0, T0), cand("b", 1, T0 + S), cand("x", 2, T0 + S // 2), cand("c", 2, T0 + 2 * S))
    assert pairs == [("a", "b", "c")]


def test_three_stages_maxspan_from_first_event() -> None:
    eng = engine(stage_count=3)
    assert run(eng, cand("a", 0, T0), cand("b", 1, T0 + 30 * S), cand("c", 2, T0 + 61 * S)) == []


def test_no_maxspan() -> None:
    assert run(engine(maxspan_ns=None), cand("a", 0, T0), cand("b", 1, T0 + 86400 * S)) == [("a", "b")]


def test_late_different_stage_one_supersedes_but_never_retracts() -> None:
    eng = engine()
    first = run(eng, cand("a1", 0, T0), cand("b", 1, T0 + 30 * S))
    assert first == [("a1", "b")]
    # a2 arrives late but is before b: Elasticsearch pairs (a2, b) and a1 is consumed silently.
    second = run(eng, cand("a2", 0, T0 + 10 * S))
    assert second == [("a2", "b")]
    assert eng.stats.superseded == 1


def test_late_earlier_stage_two_revises_the_alert_under_the_same_first_event() -> None:
    eng = engine()
    assert run(eng, cand("a", 0, T0), cand("b2", 1, T0 + 20 * S)) == [("a", "b2")]
    # b1 is earlier: Elasticsearch pairs (a, b1). Same first event, so the same alert id, re-emitted
    # with Elasticsearch's events; the latest record per alert id is Elasticsearch's answer.
    assert run(eng, cand("b1", 1, T0 + 10 * S)) == [("a", "b1")]
    assert (eng.stats.sequences, eng.stats.revised, eng.stats.superseded) == (1, 1, 0)
    # A later connection changes nothing.
    assert run(eng, cand("b3", 1, T0 + 30 * S)) == []


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
    run(eng, *(cand(f"b{i}", 1, T0 + i * MS) for i in range(10)))
    state = eng.store.get(eng.state_key(("h1", "p1")))
    assert [e.event_id for e in state.entries] == ["b7", "b8", "b9"]
    assert eng.stats.evicted == 7


def test_rebuild_expiry_index_after_restart() -> None:
    store = MemoryStore()
    run(engine(store=store), cand("a", 0, T0))
    restarted = engine(store=store)
    assert restarted.rebuild_expiry_index(store.items()) == 1
    run(restarted, cand("z", 0, T0 + 400 * S, key=("h1", "p2")))
    assert store.get(restarted.state_key(("h1", "p1"))) is None


def test_state_survives_serialization() -> None:
    store = MemoryStore()
    eng = engine(store=store)
    run(eng, cand("a", 0, T0))
    skey = eng.state_key(("h1", "p1"))
    store.set(skey, KeyState.from_json(store.get(skey).to_json()))
    assert run(eng, cand("b", 1, T0 + S)) == [("a", "b")]


def test_event_older_than_retained_state_is_dropped_and_counted() -> None:
    eng = engine()
    run(eng, cand("z", 0, T0 + 1000 * S, key=("h1", "p2")))
    assert run(eng, cand("a", 0, T0), cand("b", 1, T0 + S)) == []
    assert eng.stats.too_late == 2
    assert len(eng.store) == 1


def test_late_but_retained_event_is_still_evaluated() -> None:
    eng = engine()
    run(eng, cand("a", 0, T0))
    run(eng, cand("z", 0, T0 + 340 * S, key=("h1", "p2")))
    # b is 5m10s behind the watermark (beyond the 5 min lateness) but a is still retained.
    assert run(eng, cand("b", 1, T0 + 30 * S)) == [("a", "b")]
    assert eng.stats.late == 1
