"""The detection core's facade (app.core.detector): rules and options in, capped alerts out.

``Detector.detect`` is what replay runs; the service runs the same two halves apart (the extractor
in the ingest stage, a ``SequenceDetector`` per state partition). Both must give the same alerts,
and a flood (of one key, or of distinct keys) must keep the state bounded.
"""

from __future__ import annotations

import orjson
import pytest

from app.core import AlertKind, Candidate, DetectionOptions, Detector, load_rules
from app.core.engine.state import MemoryStore
from tests.support.detection import (
    RULE_ID,
    RULES,
    T0,
    S,
    attack,
    compile_query,
    detect,
    mshta_inbound,
    mshta_start,
)
from tests.support.hostile import CASES


def candidate(event_id: str, ts: int, host: str, entity: str, stage: int) -> Candidate:
    event = {"event": {"id": event_id}}
    return Candidate(
        rule_id=RULE_ID,
        key=(host, entity),
        stages=(stage,),
        timestamp_ms=ts,
        event_id=event_id,
        event=event,
        event_json=orjson.dumps(event),
        watermark_host=host,
    )


def test_detect_gives_what_the_two_halves_give_apart() -> None:
    """Replay's loop (``Detector.detect``) and the tests' one (extractor, then sequencer) agree exactly."""
    records = [orjson.dumps(e) for pair in (attack(i, host=f"h{i % 2}") for i in range(5)) for e in pair]
    records += [case.record for case in CASES]
    report = Detector(RULES).detect(records, now_ms=T0)
    found = detect(records, now_ms=T0)
    assert [alert.documents for alert in report.alerts] == [alert.documents for alert in found.alerts]
    assert [r.reason for r in report.rejections] == [r.reason for r in found.rejections]
    assert report.engine == found.engine and report.engine.sequences == len(report.alerts)


def test_detect_reads_events_as_well_as_bytes() -> None:
    start, inbound = attack(0)
    assert Detector(RULES).detect([start, orjson.dumps(inbound)]).alerts[0].event_ids == (
        Detector(RULES).detect([orjson.dumps(start), orjson.dumps(inbound)]).alerts[0].event_ids
    )


def test_an_alert_carries_its_rule_kind_events_and_the_time_of_its_last_event() -> None:
    start, inbound = mshta_start("s", T0 + 123), mshta_inbound("n", T0 + 10 * S + 456)
    (alert,) = Detector(RULES).detect([start, inbound], now_ms=T0 + 11 * S).alerts
    assert (alert.rule_id, alert.rule_name, alert.kind) == (RULE_ID, RULES[0].meta.name, AlertKind.NEW)
    assert alert.last_event_ms == T0 + 10 * S + 456
    assert alert.id == alert.documents[-1]["kibana.alert.uuid"] and len(alert.documents) == 3
    assert alert.documents[-1]["@timestamp"] == "2024-05-01T10:00:11.000Z"  # written now, not at event time


def test_the_alerts_index_option_names_the_building_blocks_index() -> None:
    options = DetectionOptions(alerts_index="security-alerts-prod")
    (alert,) = Detector(RULES, options).detect([*attack(0)]).alerts
    signals = [a for a in alert.documents[-1]["kibana.alert.ancestors"] if a["type"] == "signal"]
    assert [a["index"] for a in signals] == ["security-alerts-prod"] * 2


def test_caps_may_be_shared_by_the_sequencers_of_one_process() -> None:
    """The service's partitions share one cap per rule: the cap counts alerts per process, not per partition."""
    detector = Detector(RULES, DetectionOptions(alert_cap=1))
    caps = detector.alert_caps()
    first, second = detector.sequencer(MemoryStore(), caps), detector.sequencer(MemoryStore(), caps)
    outcomes = []
    for sequencer, index in ((first, 0), (second, 1)):
        for event in attack(index):
            for found in detector.extractor.extract(orjson.dumps(event))[0]:
                outcomes.append(sequencer.process(found, T0))
    assert sum(len(o.alerts) for o in outcomes) == 1 and sum(len(o.suppressed) for o in outcomes) == 1


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"allowed_lateness_ms": -1}, "must not be negative"),
        ({"watermark_quorum": 0}, "at least 1"),
        ({"max_join_keys": 0}, "at least 1"),
        ({"alert_cap": -2}, "alert_cap"),
        ({"max_event_bytes": 2000, "max_state_bytes": 1000}, "one event must always fit"),
    ],
)
def test_options_that_cannot_work_are_refused(overrides: dict[str, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DetectionOptions(**overrides)


def test_a_flood_on_one_key_keeps_its_state_bounded_and_the_latest_stage_1_pairs() -> None:
    detector = Detector(load_rules(), DetectionOptions(max_entries_per_stage=100))
    store = MemoryStore()
    sequencer = detector.sequencer(store)
    engine = sequencer.engines[RULE_ID]
    for i in range(3_000):
        assert sequencer.process(candidate(f"s{i}", T0 + i, "h", "e", 0), 0).alerts == []
    state = store.get(engine.state_key(("h", "e")))
    assert state is not None and len(state.entries) == 100
    assert engine.stats.evicted == 2_900
    outcome = sequencer.process(candidate("in", T0 + 3_000, "h", "e", 1), 0)
    assert [alert.event_ids for alert in outcome.alerts] == [("s2999", "in")]


def test_a_flood_of_distinct_keys_is_bounded_by_event_time_expiry() -> None:
    """30,000 keys that never complete, over 5 hours of event time: the store holds only the last horizon's."""
    store = MemoryStore()
    sequencer = Detector(load_rules()).sequencer(store)
    engine = sequencer.engines[RULE_ID]
    step = 600  # ms: 30,000 events over 5 hours, from 5 hosts in turn
    most = 0
    for i in range(30_000):
        sequencer.process(candidate(f"k{i}", T0 + i * step, f"host-{i % 5}", f"e{i}", 0), 0)
        most = max(most, len(store))
    horizon = engine.horizon_ms // step  # keys an in-lateness event could still pair with (600)
    assert most <= horizon + 5
    assert engine.stats.expired_keys >= 30_000 - horizon - 5


@pytest.mark.parametrize(("gap_s", "alerts"), [(539.999, 1), (540, 1), (540.001, 0)])
def test_without_maxspan_a_sequence_spans_at_most_the_rules_lookback(gap_s: float, alerts: int) -> None:
    """``from = "now-9m"`` and no maxspan: a Kibana run never sees two events more than 9 minutes apart."""
    rule = compile_query(
        'sequence by host.id [process where process.name : "a.exe"] [process where process.name : "b.exe"]',
        **{"from": "now-9m"},
    )
    first = {"@timestamp": T0, "host": {"id": "h1"}, "event": {"category": "process"}, "process": {"name": "a.exe"}}
    second = {**first, "@timestamp": T0 + round(gap_s * 1000), "process": {"name": "b.exe"}}
    assert len(detect([first, second], [rule]).ids()) == alerts
