"""Properties of the whole detection path (extractor + engine + alert ids), checked with hypothesis.

* In @timestamp order, the sequences equal Elasticsearch's exactly (the oracle, tests/support/oracle.py),
  with ties in the indexed millisecond ordered by arrival, and ``event.id`` values that collide.
* With one stage-1 event per key, whatever the arrival order within the allowed lateness, the latest
  record per alert id is Elasticsearch's sequence, under Elasticsearch's alert id.
* Re-delivering events, as exact copies or as a Beat's re-send after its restart, never changes the
  alerts.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import oracle
from tests.support.detection import RULE, T0, S, compile_query, detect, format_timestamp, mshta_inbound, mshta_start

LATENESS_S = 300
HOSTS = ["h1", "h2", "h3", "h4"]
ENTITIES = ["p1", "p2"]


def stamp(event: dict[str, Any], ms: int, extra: str) -> dict[str, Any]:
    """``event`` at ``ms``, written with ``extra`` digits after the milliseconds (dropped by Elasticsearch)."""
    text = event["@timestamp"]
    assert text.endswith("Z")
    return {**event, "@timestamp": text[:-1] + extra + "Z"}


@st.composite
def streams(draw: st.DrawFn, one_start_per_key: bool = False) -> list[dict[str, Any]]:
    """Events in @timestamp order: starts and inbound connections on a few keys, some near misses.

    Times fall on a 500 ms grid over four minutes (pairs exactly at the 60 s maxspan, and one step
    over it, are common), several events may share a millisecond, and each is written with 3 to 9
    fractional digits. Event ids come from a small pool, so documents often share one.
    """
    count = draw(st.integers(2, 40))
    offsets = sorted(draw(st.lists(st.integers(0, 480), min_size=count, max_size=count)))
    events = []
    used_keys: set[tuple[str, str]] = set()
    for offset in offsets:
        ms = T0 + offset * S // 2 + draw(st.sampled_from([0, 0, 1]))
        extra = draw(st.sampled_from(["", "0000", "9999", "999999"]))
        host, entity = draw(st.sampled_from(HOSTS)), draw(st.sampled_from(ENTITIES))
        event_id = f"id-{draw(st.integers(0, 5))}"
        kind = draw(st.sampled_from(["start", "inbound", "inbound", "miss"]))
        if kind == "start" and one_start_per_key:
            if (host, entity) in used_keys:
                kind = "inbound"
            used_keys.add((host, entity))
        if kind == "start":
            event = mshta_start(event_id, ms, host, entity)
        else:
            event = mshta_inbound(event_id, ms, host, entity, network__transport="udp" if kind == "miss" else "tcp")
        events.append(stamp(event, ms, extra))
    return events


def in_order(events: list[dict[str, Any]]) -> list[tuple[tuple[Any, ...], tuple[str, ...]]]:
    found = detect(events, [RULE])
    return [(found.keys[alert.id], alert.event_ids) for alert in found.alerts]


def arrival_order(events: list[dict[str, Any]], rng: random.Random, lateness_s: int) -> list[dict[str, Any]]:
    """A Kafka-like shuffle: each event is delayed by up to ``lateness_s``, so none arrives later than that."""
    arrivals = [
        (oracle.timestamp_ms(e["@timestamp"]) + int(rng.uniform(0, lateness_s) * S), i) for i, e in enumerate(events)
    ]
    return [events[i] for _, i in sorted(arrivals)]


def resent(event: dict[str, Any], run: int) -> dict[str, Any]:
    """``event`` as its Beat sends it again after a restart: a new run id, read time and envelope."""
    return {
        **event,
        "agent": {"id": "beat", "ephemeral_id": f"run-{run}"},
        "event": {**event["event"], "created": f"2024-05-01T11:00:0{run}.000Z"},
        "@metadata": {"beat": "winlogbeat", "version": "8.13.4", "pipeline": f"p{run}"},
    }


COMMON = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(streams())
def test_in_timestamp_order_equals_elasticsearch(events: list[dict[str, Any]]) -> None:
    expected = [(sequence.key, sequence.event_ids) for sequence in oracle.es_sequences(RULE, events)]
    assert in_order(events) == expected


@COMMON
@given(streams(one_start_per_key=True), st.randoms(use_true_random=False))
def test_arrival_order_within_lateness_never_changes_which_alerts_exist(
    events: list[dict[str, Any]], rng: random.Random
) -> None:
    delivered = arrival_order(events, rng, LATENESS_S)
    found = detect(delivered, [RULE])
    # The latest record per alert id (revisions replace earlier records) is Elasticsearch's sequence over
    # the same documents, under the id Elasticsearch's sequence has: nothing missed, nothing extra. (Events
    # of one millisecond are ordered by arrival, so Elasticsearch's answer is over the delivered order.)
    assert {alert_id: alert.event_ids for alert_id, alert in found.latest().items()} == oracle.es_alerts(
        RULE, delivered
    )


@COMMON
@given(streams(), st.randoms(use_true_random=False))
def test_redeliveries_and_resends_never_change_the_alerts(events: list[dict[str, Any]], rng: random.Random) -> None:
    with_agent = [resent(event, 0) for event in events]
    redelivered = list(with_agent)
    for index in rng.sample(range(len(events)), k=rng.randint(1, len(events))):
        copy = dict(with_agent[index]) if rng.random() < 0.5 else resent(events[index], rng.randint(1, 9))
        redelivered.insert(rng.randint(redelivered.index(with_agent[index]) + 1, len(redelivered)), copy)
    assert detect(redelivered, [RULE]).ids() == detect(with_agent, [RULE]).ids()


# -- a three-stage rule: per-stage join fields, string functions, cidrMatch ---------------------

THREE_STAGES = compile_query(
    """sequence by host.id with maxspan=30s
  [process where event.type == "start" and startsWith~(process.name, "PS")] by process.entity_id
  [network where cidrMatch(destination.ip, "10.0.0.0/8", "fd00::/8")] by process.entity_id
  [file where endsWith~(file.name, ".PS1")] by process.parent.entity_id"""
)


@st.composite
def three_stage_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Process starts, connections and file writes over a few hosts and processes, in @timestamp order,
    with near misses of each stage (another name, address or extension) and maxspan edges."""
    count = draw(st.integers(6, 60))
    offsets = sorted(draw(st.lists(st.integers(0, 100), min_size=count, max_size=count)))
    events = []
    for index, offset in enumerate(offsets):
        ms = T0 + offset * S // 2
        host, entity = draw(st.sampled_from(HOSTS[:2])), draw(st.sampled_from(["p1", "p2"]))
        base = {"@timestamp": format_timestamp(ms), "host": {"id": host}}
        kind = draw(st.sampled_from(["process", "network", "file"]))
        if kind == "process":
            name = draw(st.sampled_from(["PowerShell.exe", "psexec.exe", "pS.exe", "cmd.exe", "xps.exe"]))
            event = {
                "event": {"category": ["process"], "type": ["start"]},
                "process": {"name": name, "entity_id": entity},
            }
        elif kind == "network":
            address = draw(st.sampled_from(["10.1.2.3", "::ffff:10.9.9.9", "fd00::1", "11.0.0.1"]))
            event = {
                "event": {"category": ["network"]},
                "process": {"entity_id": entity},
                "destination": {"ip": address},
            }
        else:
            name = draw(st.sampled_from(["run.ps1", "RUN.PS1", "run.Ps1", "run.ps1.txt"]))
            event = {
                "event": {"category": ["file"]},
                "file": {"name": name},
                "process": {"parent": {"entity_id": entity}},
            }
        event["event"]["id"] = f"e{index}"
        events.append({**base, **event})
    return events


@COMMON
@given(three_stage_streams())
def test_a_three_stage_rule_with_per_stage_join_fields_equals_elasticsearch(events: list[dict[str, Any]]) -> None:
    found = detect(events, [THREE_STAGES])
    expected = [(sequence.key, sequence.event_ids) for sequence in oracle.es_sequences(THREE_STAGES, events)]
    assert [(found.keys[alert.id], alert.event_ids) for alert in found.alerts] == expected
