"""Properties of the whole detection path (extractor + engine + alert ids), checked with hypothesis.

* In @timestamp order, the sequences equal Elasticsearch's exactly (tests/oracle.py).
* With one stage-1 event per key, any arrival order within the allowed lateness alerts on the same
  stage-1 events, with the same alert ids, and the latest record per alert id is Elasticsearch's.
* Re-delivering events never changes the set of alert ids.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.detector import CandidateExtractor, SequenceStage
from app.rule import load_rules
from app.settings import Settings
from app.timeparse import format_timestamp, parse_timestamp
from tests.oracle import es_sequences

RULE = load_rules()[0]
S = 1_000_000_000
T0 = 1_714_557_600 * S
LATENESS_S = 300
HOSTS = ["h1", "h2", "h3", "h4"]
ENTITIES = ["p1", "p2"]


def process_start(eid: str, ts: int, host: str, entity: str) -> dict:
    return {
        "@timestamp": format_timestamp(ts),
        "event": {"id": eid, "category": ["process"], "type": ["start"]},
        "host": {"id": host},
        "process": {"name": "mshta.exe", "entity_id": entity, "args": ["mshta.exe", "-Embedding"]},
    }


def inbound(eid: str, ts: int, host: str, entity: str, *, near_miss: bool = False) -> dict:
    return {
        "@timestamp": format_timestamp(ts),
        "event": {"id": eid, "category": ["network"], "type": ["start"]},
        "host": {"id": host},
        "process": {"name": "mshta.exe", "entity_id": entity},
        "network": {"direction": "ingress", "transport": "udp" if near_miss else "tcp"},
        "source": {"ip": "10.0.0.5", "port": 50000},
        "destination": {"ip": "10.0.0.9", "port": 50001},
    }


@st.composite
def streams(draw: st.DrawFn, one_start_per_key: bool = False) -> list[dict]:
    """Events in @timestamp order: starts and inbound connections on a few keys, some near misses."""
    count = draw(st.integers(2, 40))
    # Distinct timestamps on a half-second grid over four minutes, so that pairs exactly at the
    # 60 s maxspan (and just over it) are common.
    offsets = sorted(draw(st.lists(st.integers(0, 480), min_size=count, max_size=count, unique=True)))
    events = []
    used_keys: set[tuple[str, str]] = set()
    for index, offset in enumerate(offsets):
        ts = T0 + offset * S // 2
        host, entity = draw(st.sampled_from(HOSTS)), draw(st.sampled_from(ENTITIES))
        kind = draw(st.sampled_from(["start", "inbound", "inbound", "miss"]))
        if kind == "start" and one_start_per_key:
            if (host, entity) in used_keys:
                kind = "inbound"
            used_keys.add((host, entity))
        if kind == "start":
            events.append(process_start(f"e{index}", ts, host, entity))
        else:
            events.append(inbound(f"e{index}", ts, host, entity, near_miss=kind == "miss"))
    return events


def detect(events: list[dict], **overrides: str) -> list[tuple[tuple, tuple[str, ...], str]]:
    """(key, event ids, alert id) of every alert, through the product's extractor and engine."""
    extractor = CandidateExtractor([RULE])
    stage = SequenceStage([RULE], Settings(**overrides))
    found = []
    for doc in events:
        for candidate in extractor.candidates(doc):
            for alert in stage.process(candidate, 0):
                found.append((alert.match.key, tuple(e.event_id for e in alert.match.events), alert.id))
    return found


def arrival_order(events: list[dict], rng: random.Random, lateness_s: int) -> list[dict]:
    """A Kafka-like shuffle: each event is delayed by up to ``lateness_s``, so none arrives later than that."""
    arrivals = [
        (parse_timestamp(e["@timestamp"]) + int(rng.uniform(0, lateness_s) * S), i) for i, e in enumerate(events)
    ]
    return [events[i] for _, i in sorted(arrivals)]


COMMON = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(streams())
def test_in_timestamp_order_equals_elasticsearch(events: list[dict]) -> None:
    assert [(k, ids) for k, ids, _ in detect(events)] == es_sequences(RULE, events)


@COMMON
@given(streams(one_start_per_key=True), st.randoms(use_true_random=False))
def test_arrival_order_within_lateness_never_changes_which_starts_alert(events: list[dict], rng: random.Random) -> None:
    in_order = detect(events)
    shuffled = detect(arrival_order(events, rng, LATENESS_S))
    assert {(k, ids[0], aid) for k, ids, aid in shuffled} == {(k, ids[0], aid) for k, ids, aid in in_order}
    # ...and the latest record per alert id (revisions replace earlier records) is Elasticsearch's pair.
    latest = {aid: (k, ids) for k, ids, aid in shuffled}
    assert set(latest.values()) == set(es_sequences(RULE, events))


@COMMON
@given(streams(), st.randoms(use_true_random=False))
def test_duplicates_never_change_alert_ids(events: list[dict], rng: random.Random) -> None:
    redelivered = list(events)
    for event in rng.sample(events, k=rng.randint(1, len(events))):
        redelivered.insert(rng.randint(redelivered.index(event), len(redelivered)), dict(event))
    assert {aid for _, _, aid in detect(redelivered)} == {aid for _, _, aid in detect(events)}
