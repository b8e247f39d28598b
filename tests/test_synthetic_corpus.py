"""Realistic corpora (app.synthetic) through the detection path, checked against the oracle.

Hand-written cases test one rule at a time; these corpora mix Elastic Defend and Winlogbeat 7
events of real sizes, attacks, every kind of near miss, re-deliveries and Kafka-like arrival within
the default allowed lateness, the way the service will see them. The engine must find exactly the
sequences Elasticsearch finds over the same events in @timestamp order, whatever the arrival order.

Corpora with raw Winlogbeat 8 hosts check the normalizer too: the product is fed the raw records,
the oracle their ECS twins, which the generator writes from its own model of each event (see
app.synthetic), so both must agree without sharing any mapping code.
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
from app.rule import DEFAULT_RULE_PATH, CompiledRule, load_rules
from app.settings import Settings
from app.synthetic import (
    ATTACK,
    CASE_ID_LABEL,
    CASE_LABEL,
    DEFEND,
    IMAGES,
    NEAR_MISSES,
    SHAPES,
    WINLOGBEAT,
    WINLOGBEAT8,
    Connection,
    Event,
    EventFactory,
    Shipped,
    arrival_order,
    event_time_ns,
    generate_corpus,
    iter_corpus_with_twins,
    main,
    source_of,
)
from app.timeparse import NS_PER_S, parse_timestamp
from tests.oracle import es_sequences

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "scenario.ndjson"
RULES = load_rules()
RULE = RULES[0]
# The later upstream query: tests host.os.type (from add_host_metadata on raw records) and source.ip.
CURRENT_RULE = load_rules(DEFAULT_RULE_PATH.with_name("incoming_dcom_lateral_movement_via_mshta_current.toml"))[0]
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


def cases(events: tuple[Event, ...] | list[Event]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """case id -> (kind, ids of its process event and its network event)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for event in events:
        labels = event["labels"]
        if CASE_ID_LABEL in labels:
            kind, ids = found.get(labels[CASE_ID_LABEL], (labels[CASE_LABEL], ()))
            found[labels[CASE_ID_LABEL]] = (kind, (*ids, event_id(event)))
    return found


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
    assert min(sizes) >= 1024 and max(sizes) <= 3072


def test_events_have_their_sources_shapes() -> None:
    events = corpus(SEEDS[0])
    for event in events:
        category, types = event["event"]["category"], event["event"]["type"]
        if source_of(event) == DEFEND:
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
    assert {source_of(e) for e in embedding} == {DEFEND, WINLOGBEAT}


def test_corpus_covers_attacks_and_every_near_miss_in_both_shapes() -> None:
    events = corpus(SEEDS[0])
    by_id = {event_id(e): e for e in events}
    shapes: dict[str, set[str]] = {}
    for kind, ids in cases(events).values():
        assert len(ids) == 2
        shapes.setdefault(kind, set()).add(source_of(by_id[ids[0]]))
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
    started = factory.process_start(host, process, start).event
    inbound = functools.partial(Connection, True, "tcp", host.ip)
    first = factory.network(host, process, start + 5 * NS_PER_S, inbound(50001, peer.ip, 50002)).event
    second = factory.network(host, process, start + 9 * NS_PER_S, inbound(50003, peer.ip, 50004)).event
    expected = set(es_sequences(RULE, [started, first, second]))
    assert {ids for _, ids in expected} == {(event_id(started), event_id(first))}
    assert sequences(detect([started, first, second])) == expected
    assert sequences(detect([started, second, first])) == expected


# -- raw Winlogbeat 8 hosts: the product on the raw records, the oracle on their twins ----------

MIXED_SEEDS = (5, 23, 37)
SYSMON_UTC = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")


@functools.cache
def mixed(
    seed: int, raw_share: float = 1 / 3, attack_delay_s: tuple[float, float] = (0.05, 30.0)
) -> tuple[Shipped, ...]:
    """Like ``corpus``, from a fleet running all three sources (a third of the hosts each by default;
    ``raw_share=1`` is a fleet of raw Winlogbeat 8 hosts only)."""
    source_mix = (1 - raw_share) / 2
    return tuple(iter_corpus_with_twins(
        seed, EVENTS, attack_rate=2e-3, near_miss_rate=2e-2, source_mix=source_mix, raw_share=raw_share, rate=2.0,
        attack_delay_s=attack_delay_s,
    ))


def delivered(shipped: tuple[Shipped, ...], seed: int) -> list[Event]:
    """The shipped events as Kafka delivers them: out of order within 5 minutes, 2% delivered twice."""
    return list(arrival_order((s.event for s in shipped), seed, max_lateness_s=LATENESS_S, duplicate_rate=0.02))


def detect_named_by_twins(events: list[Event], shipped: tuple[Shipped, ...], rule: CompiledRule) -> set[Found]:
    """The product's sequences on the events' raw bytes, each event named by its twin's id.

    The product names a raw record by a hash of its normalized form (it has no event.id), the
    oracle a twin by a hash of the twin; the two differ by design (the normalizer keeps every raw
    field, the pipeline moves some). So each candidate's id is mapped to the id of the twin of the
    record it came from, found by the record's bytes: a re-delivery has the same bytes, hence the
    same twin. An ECS event is its own twin, so its id maps to itself. Mapping whole ids (rather
    than, say, timestamps) keeps the comparison exact: the same sequences of the same events.
    """
    twin_of = {orjson.dumps(s.event): s.twin for s in shipped}
    extractor = CandidateExtractor([rule])
    stage = SequenceStage([rule], Settings())
    twin_ids: dict[str, str] = {}
    alerts = []
    for event in events:
        raw = orjson.dumps(event)
        candidates, rejections = extractor.extract(raw)
        assert not rejections
        for candidate in candidates:
            twin_id = event_id(twin_of[raw])
            assert twin_ids.setdefault(candidate.event_id, twin_id) == twin_id, "two records, one product id"
            alerts += stage.process(candidate, NOW_NS)
    return {(key, tuple(twin_ids[eid] for eid in ids)) for key, ids in sequences(alerts)}


def twins_expected(shipped: tuple[Shipped, ...], rule: CompiledRule) -> set[Found]:
    """What Elasticsearch returns over the twins, the documents it would have indexed."""
    return set(es_sequences(rule, [s.twin for s in shipped]))


def test_raw_records_have_winlogbeat8s_shape_and_twins_the_pipelines() -> None:
    shipped = mixed(MIXED_SEEDS[0])
    raw = [s for s in shipped if source_of(s.event) == WINLOGBEAT8]
    assert {source_of(s.event) for s in shipped} == set(SHAPES)
    assert all(s.twin is s.event for s in shipped if source_of(s.event) != WINLOGBEAT8)
    assert [parse_timestamp(s.twin["@timestamp"]) for s in shipped] == sorted(event_time_ns(s.event) for s in shipped)
    event_ids = set()
    for record, twin in ((s.event, s.twin) for s in raw):
        event, winlog, data = record["event"], record["winlog"], record["winlog"]["event_data"]
        assert record["@metadata"] == {"beat": "winlogbeat", "type": "_doc", "version": "8.13.4"}
        assert record["host"]["id"] and record["agent"]["type"] == "winlogbeat"
        assert {"category", "type"}.isdisjoint(event) and {"process", "source", "user", "network"}.isdisjoint(record)
        assert type(winlog["event_id"]) is str and event["code"] == winlog["event_id"]
        assert all(type(value) is str for value in data.values())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", record["@timestamp"])
        event_ids.add(winlog["event_id"])
        if winlog["provider_name"] != "Microsoft-Windows-Sysmon":
            assert (winlog["channel"], winlog["event_id"]) == ("Security", "4624")
            assert twin["@timestamp"] == record["@timestamp"] and twin["event"]["category"] == ["authentication"]
            continue
        assert winlog["channel"] == "Microsoft-Windows-Sysmon/Operational"
        assert SYSMON_UTC.fullmatch(data["UtcTime"])
        written = parse_timestamp(record["@timestamp"]) - parse_timestamp(data["UtcTime"] + "Z")
        assert 0 <= written < 1.5 * NS_PER_S
        assert twin["@timestamp"] == data["UtcTime"].replace(" ", "T") + "Z"
        assert twin["process"]["entity_id"] == data["ProcessGuid"] and twin["process"]["pid"] == int(data["ProcessId"])
        assert twin["process"]["name"] == data["Image"].rsplit("\\", 1)[1]
        if winlog["event_id"] == "1":
            assert twin["event"]["category"] == ["process"] and twin["event"]["type"] == ["start"]
            assert " ".join(twin["process"]["args"]).replace('"', "") == data["CommandLine"].replace('"', "")
        if winlog["event_id"] == "3":
            assert twin["event"]["category"] == ["network"] and "start" in twin["event"]["type"]
            assert twin["network"]["direction"] == {"true": "egress", "false": "ingress"}[data["Initiated"]]
            assert twin["network"]["transport"] == data["Protocol"]
            source = {"domain": data["SourceHostname"], "ip": data["SourceIp"], "port": int(data["SourcePort"])}
            assert twin["source"] == source  # never a source.address
            assert twin["destination"] == {"ip": data["DestinationIp"], "port": int(data["DestinationPort"])}
    assert event_ids == {"1", "3", "11", "13", "22", "4624"}
    sizes = [len(orjson.dumps(s.event)) for s in raw if CASE_LABEL not in s.event["labels"]]
    assert min(sizes) >= 1024 and max(sizes) <= 3072


def test_mixed_fleet_covers_attacks_and_every_near_miss_in_every_source() -> None:
    shipped = mixed(MIXED_SEEDS[0])
    events = [s.event for s in shipped]
    by_id = {event_id(e): e for e in events}
    sources: dict[str, set[str]] = {}
    for kind, ids in cases(events).values():
        assert len(ids) == 2
        sources.setdefault(kind, set()).add(source_of(by_id[ids[0]]))
    for kind in (ATTACK, *NEAR_MISSES):
        assert sources[kind] == ({DEFEND} if kind in ("loopback_source", "network_not_start") else set(SHAPES)), kind


def test_twins_alert_exactly_on_attacks_and_boundary_near_misses() -> None:
    """The oracle on the twins sees what the labels promise: the twins are what Elasticsearch would index."""
    shipped = mixed(MIXED_SEEDS[0])
    found = {ids for _, ids in twins_expected(shipped, RULE)}
    expected = set()
    for kind, ids in cases([s.twin for s in shipped]).values():
        if kind == ATTACK or NEAR_MISSES[kind]:
            expected.add(ids)
    assert found == expected


def test_arrival_order_bounds_lateness_in_event_time() -> None:
    """Raw records are written after their UtcTime; the lateness that matters is in event time."""
    newest = None
    for event in delivered(mixed(MIXED_SEEDS[0]), MIXED_SEEDS[0]):
        ts = event_time_ns(event)
        if newest is not None:
            assert ts >= newest - int(LATENESS_S * NS_PER_S)
        newest = ts if newest is None else max(newest, ts)


@pytest.mark.parametrize("rule", [RULE, CURRENT_RULE], ids=["v4", "current"])
@pytest.mark.parametrize("seed", MIXED_SEEDS)
def test_raw_and_ecs_sources_give_elasticsearch_sequences_on_the_twins(seed: int, rule: CompiledRule) -> None:
    shipped = mixed(seed)
    expected = twins_expected(shipped, rule)
    raw_ids = {event_id(s.twin) for s in shipped if s.twin is not s.event}
    assert any(raw_ids.issuperset(ids) for _, ids in expected), "no sequence of raw records to check"
    assert detect_named_by_twins([s.event for s in shipped], shipped, rule) == expected
    assert detect_named_by_twins(delivered(shipped, seed), shipped, rule) == expected


@pytest.mark.parametrize("seed", MIXED_SEEDS[:2])
def test_all_raw_fleet_gives_elasticsearch_sequences_on_the_twins(seed: int) -> None:
    shipped = mixed(seed, raw_share=1.0)
    assert {source_of(s.event) for s in shipped} == {WINLOGBEAT8}
    expected = twins_expected(shipped, RULE)
    alerting = [kind for kind, _ in cases([s.twin for s in shipped]).values() if kind == ATTACK or NEAR_MISSES[kind]]
    assert len(expected) == len(alerting)
    assert detect_named_by_twins(delivered(shipped, seed), shipped, RULE) == expected


def test_raw_records_written_out_of_utc_order_are_ordered_by_utc_time() -> None:
    """Sysmon writes a record up to 1.5 s after its UtcTime, so two records of one attack can be
    written (and stamped) in the opposite order of their events; Elasticsearch orders by UtcTime."""
    shipped = mixed(MIXED_SEEDS[1], raw_share=1.0, attack_delay_s=(0.001, 1.0))
    stamped = {}
    for record in (s.event for s in shipped if s.event["labels"].get(CASE_LABEL) == ATTACK):
        stamped.setdefault(record["labels"][CASE_ID_LABEL], []).append(parse_timestamp(record["@timestamp"]))
    assert any(process > network for process, network in stamped.values()), "no attack written out of order"
    expected = twins_expected(shipped, RULE)
    assert len({ids for _, ids in expected}) >= len(stamped)
    assert detect_named_by_twins(delivered(shipped, MIXED_SEEDS[1]), shipped, RULE) == expected


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
