"""Realistic corpora (app.synthetic) through the detection path, checked against the oracle.

Hand-written cases test one rule at a time; these corpora mix Elastic Defend and Winlogbeat 7
events of real sizes, attacks, every kind of near miss, re-deliveries and Kafka-like arrival within
the default allowed lateness, the way the service will see them. The engine must find exactly the
sequences Elasticsearch finds over the same events in @timestamp order, whatever the arrival order.
"""

from __future__ import annotations

import functools
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.alerts.ids import event_id
from app.detector import Alert, CandidateExtractor, SequenceStage
from app.rule import load_rules
from app.settings import Settings
from app.synthetic import (
    ATTACK,
    CASE_ID_LABEL,
    CASE_LABEL,
    DEFEND,
    IMAGES,
    NEAR_MISSES,
    WINLOGBEAT,
    Connection,
    Event,
    EventFactory,
    arrival_order,
    generate_corpus,
    main,
)
from app.timeparse import NS_PER_S, parse_timestamp
from tests.oracle import es_sequences

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "scenario.ndjson"
RULES = load_rules()
RULE = RULES[0]
SEEDS = (3, 17, 29, 41)
EVENTS = 3000
LATENESS_S = 300.0  # the default allowed lateness (Settings().allowed_lateness)
NOW_NS = 1_715_700_000 * NS_PER_S  # alert creation time; ids do not depend on it

Found = tuple[tuple, tuple[str, ...]]  # (join key, event ids in stage order)


@functools.cache
def corpus(seed: int) -> tuple[Event, ...]:
    """A few thousand events over 25 minutes: 6 attacks, 60 near misses (every kind, both shapes)."""
    return tuple(generate_corpus(seed, EVENTS, attack_rate=2e-3, near_miss_rate=2e-2, source_mix=0.5, rate=2.0))


@functools.cache
def arrivals(seed: int) -> tuple[Event, ...]:
    """The same corpus as Kafka delivers it: out of order within 5 minutes, 2% delivered twice."""
    return tuple(arrival_order(corpus(seed), seed, max_lateness_s=LATENESS_S, duplicate_rate=0.02))


def detect(events: tuple[Event, ...] | list[Event]) -> list[Alert]:
    """Alerts of the extractor and the sequence stage fed the events' raw bytes in arrival order."""
    extractor = CandidateExtractor(RULES)
    stage = SequenceStage(RULES, Settings())
    alerts = []
    for event in events:
        candidates, rejections = extractor.extract(orjson.dumps(event))
        assert not rejections
        for candidate in candidates:
            alerts += stage.process(candidate, NOW_NS)
    return alerts


def sequences(alerts: list[Alert]) -> set[Found]:
    """The latest record per alert id (a re-emitted, revised alert replaces the earlier one)."""
    latest = {alert.id: (alert.match.key, tuple(entry.event_id for entry in alert.match.events)) for alert in alerts}
    return set(latest.values())


def cases(events: tuple[Event, ...]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """case id -> (kind, ids of its process event and its network event)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for event in events:
        labels = event["labels"]
        if CASE_ID_LABEL in labels:
            kind, ids = found.get(labels[CASE_ID_LABEL], (labels[CASE_LABEL], ()))
            found[labels[CASE_ID_LABEL]] = (kind, (*ids, event_id(event)))
    return found


def shape(event: Event) -> str:
    return DEFEND if event["agent"]["type"] == "endpoint" else WINLOGBEAT


# -- the generator -----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_events() -> None:
    first = orjson.dumps(generate_corpus(5, 500))
    assert orjson.dumps(generate_corpus(5, 500)) == first
    assert orjson.dumps(generate_corpus(6, 500)) != first
    again = list(arrival_order(generate_corpus(5, 500), 5, 60, 0.05))
    assert orjson.dumps(list(arrival_order(generate_corpus(5, 500), 5, 60, 0.05))) == orjson.dumps(again)


def test_corpus_is_in_timestamp_order_and_noise_is_one_to_three_kb() -> None:
    events = corpus(SEEDS[0])
    assert len(events) == EVENTS
    times = [parse_timestamp(e["@timestamp"]) for e in events]
    assert times == sorted(times)
    sizes = [len(orjson.dumps(e)) for e in events if CASE_LABEL not in e["labels"]]
    assert 1024 <= min(sizes) and max(sizes) <= 3072


def test_events_have_their_sources_shapes() -> None:
    events = corpus(SEEDS[0])
    for event in events:
        category, types = event["event"]["category"], event["event"]["type"]
        if shape(event) == DEFEND:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", event["@timestamp"])
            assert event["event"]["id"]
            assert not event["process"]["entity_id"].startswith("{")
            if category == ["process"]:
                assert types == ["start"]
            if category == ["network"] and event["event"]["action"] == "connection_accepted":
                assert event["network"]["direction"] == "ingress"
                assert event["source"]["address"] == event["source"]["ip"]
        else:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["@timestamp"])
            assert "id" not in event["event"] and "winlog" in event
            if category == ["process"]:
                assert types == ["start", "process_start"]
                assert re.fullmatch(r"\{[0-9a-f-]{36}\}", event["process"]["entity_id"])
            if category == ["network"] and "dns" not in event:
                assert types == ["connection", "start", "protocol"]
                assert "ip" in event["source"] and "address" not in event["source"]
    embedding = [e for e in events if e["event"]["category"] == ["process"] and "-Embedding" in e["process"]["args"]]
    assert {shape(e) for e in embedding} == {DEFEND, WINLOGBEAT}


def test_corpus_covers_attacks_and_every_near_miss_in_both_shapes() -> None:
    events = corpus(SEEDS[0])
    by_id = {event_id(e): e for e in events}
    shapes: dict[str, set[str]] = {}
    for kind, ids in cases(events).values():
        assert len(ids) == 2
        shapes.setdefault(kind, set()).add(shape(by_id[ids[0]]))
    both = {DEFEND, WINLOGBEAT}
    assert shapes[ATTACK] == both
    for kind in NEAR_MISSES:
        assert shapes[kind] == ({DEFEND} if kind in ("loopback_source", "network_not_start") else both), kind


def test_arrival_order_stays_within_lateness_and_duplicates_exactly() -> None:
    events = corpus(SEEDS[0])
    delivered = arrivals(SEEDS[0])
    lateness_ns = int(LATENESS_S * NS_PER_S)
    newest = None
    out_of_order = 0
    for event in delivered:
        ts = parse_timestamp(event["@timestamp"])
        if newest is not None:
            assert ts >= newest - lateness_ns
            out_of_order += ts < newest
        newest = ts if newest is None else max(newest, ts)
    assert out_of_order > len(events) // 20
    raw = [orjson.dumps(e) for e in delivered]
    assert sorted(set(raw)) == sorted(orjson.dumps(e) for e in events)
    assert 0 < len(raw) - len(events) < len(events) // 20


# -- the engine against Elasticsearch's semantics ----------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_replay_gives_elasticsearch_sequences(seed: int) -> None:
    expected = set(es_sequences(RULE, list(corpus(seed))))
    assert sequences(detect(corpus(seed))) == expected
    assert sequences(detect(arrivals(seed))) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_attacks_alert_and_near_misses_do_not(seed: int) -> None:
    found = sequences(detect(arrivals(seed)))
    alerting = {ids for _, ids in found}
    alerted_events = {eid for ids in alerting for eid in ids}
    for case_id, (kind, ids) in cases(corpus(seed)).items():
        if kind == ATTACK or NEAR_MISSES[kind]:
            assert ids in alerting, f"{case_id} ({kind}) did not alert"
        else:
            assert not alerted_events.intersection(ids), f"{case_id} ({kind}) alerted"
    expected = sum(kind == ATTACK or NEAR_MISSES[kind] for kind, _ in cases(corpus(seed)).values())
    assert len(found) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_alert_ids_do_not_depend_on_arrival_order_or_duplicates(seed: int) -> None:
    in_order = sorted(alert.id for alert in detect(corpus(seed)))
    assert in_order
    assert sorted(alert.id for alert in detect(arrivals(seed))) == in_order


def test_second_inbound_connection_delivered_first_is_paired_like_elasticsearch() -> None:
    """A COM server may accept two connections; Elasticsearch pairs the process with the first one.

    When the second connection is delivered before the first (within the allowed lateness), the
    engine must still report the process with the first connection, as it does in @timestamp order.
    """
    factory = EventFactory(random.Random(7))
    start = parse_timestamp("2024-05-14T08:00:00Z")
    host, peer = factory.fleet(2, 1.0, start)
    mshta = IMAGES["mshta"]
    process = factory.process(host, mshta, (mshta.path, "-Embedding"), factory.domain_user(), None, start)
    started = factory.process_start(host, process, start)
    inbound = functools.partial(Connection, True, "tcp", host.ip)
    first = factory.network(host, process, start + 5 * NS_PER_S, inbound(50001, peer.ip, 50002))
    second = factory.network(host, process, start + 9 * NS_PER_S, inbound(50003, peer.ip, 50004))
    expected = set(es_sequences(RULE, [started, first, second]))
    assert {ids for _, ids in expected} == {(event_id(started), event_id(first))}
    assert sequences(detect([started, first, second])) == expected
    assert sequences(detect([started, second, first])) == expected


# -- the demo ----------------------------------------------------------------------------------


def test_demo_scenario_is_what_its_readme_command_generates(tmp_path: Path) -> None:
    command = next(
        line.strip("`") for line in (ROOT / "demo" / "README.md").read_text().splitlines() if "app.synthetic" in line
    )
    argv = shlex.split(command)[3:]  # after ".venv/bin/python -m app.synthetic"
    out = argv.index("--out") + 1
    argv[out] = str(tmp_path / "scenario.ndjson")
    assert main(argv) == 0
    assert (tmp_path / "scenario.ndjson").read_bytes() == DEMO.read_bytes()


def test_demo_prints_exactly_two_alert_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "replay", "--format", "summary", str(DEMO)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    alerts = result.stdout.splitlines()
    assert len(alerts) == 2
    assert any("entity_id={" in line for line in alerts) and any("entity_id={" not in line for line in alerts)
    assert "duplicates: 1" in result.stderr
