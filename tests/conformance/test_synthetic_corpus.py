"""Realistic corpora (eqlstream_dev.synthetic) through the detection path, checked against the oracle.

Hand-written cases test one rule at a time; these corpora mix Elastic Defend and Winlogbeat 7
events of real sizes, attacks (with variants on the edges of Elasticsearch's semantics: the
maxspan edge in 7 and 9 fractional digits, ``event.id`` shared with unrelated documents), every
kind of near miss, re-deliveries and Kafka-like arrival within the default allowed lateness, the
way the service will see them. The engine must find exactly the sequences Elasticsearch finds
over the same events, whatever the arrival order.

Corpora with raw Winlogbeat 8 hosts check the normalizer too: the product is fed the raw records,
the oracle their ECS twins, which the generator writes from its own model of each event (see
eqlstream_dev.synthetic), so both must agree without sharing any mapping code.
"""

from __future__ import annotations

import functools
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from eqlstream_dev.synthetic import (
    ATTACK,
    ATTACK_VARIANTS,
    CASE_ID_LABEL,
    CASE_KINDS,
    CASE_LABEL,
    DEFEND,
    DEFEND_ONLY,
    IMAGES,
    SHAPES,
    SHARED_EVENT_ID_LABEL,
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
from eqlstream_dev.synthetic.clock import NS_PER_MS, NS_PER_S, parse_ns

from app.core import CompiledRule
from tests.support import oracle
from tests.support.detection import CURRENT_RULE, RULE, Found, detect
from tests.support.paths import ROOT

DEMO = ROOT / "demo" / "scenario.ndjson"
SEEDS = (3, 17, 29, 41)
EVENTS = 3000
LATENESS_S = 300.0  # the default allowed lateness (DetectionOptions().allowed_lateness_ms)
# Volatile fields a Beat's re-send after its restart may change (and nothing else).
RESENT_FIELDS = {("agent", "ephemeral_id"), ("event", "created"), ("@metadata", "pipeline")}


@functools.cache
def corpus(seed: int) -> tuple[Event, ...]:
    """A few thousand events over 25 minutes: 6 attacks and variants, 60 near misses (every kind, both shapes)."""
    return tuple(generate_corpus(seed, EVENTS, attack_rate=2e-3, near_miss_rate=2e-2, source_mix=0.5, rate=2.0))


@functools.cache
def arrivals(seed: int) -> tuple[Event, ...]:
    """The same corpus as Kafka delivers it: out of order within 5 minutes, 2% delivered twice."""
    return tuple(arrival_order(corpus(seed), seed, max_lateness_s=LATENESS_S, duplicate_rate=0.02))


def es(rule: CompiledRule, events: Any) -> set[Found]:
    """(join key, event ids) of every sequence Elasticsearch returns over ``events``."""
    return {(sequence.key, sequence.event_ids) for sequence in oracle.es_sequences(rule, events)}


def cases(events: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """case id -> (kind, identities of its process event and its network event)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for event in events:
        labels = event["labels"]
        if CASE_ID_LABEL in labels:
            kind, ids = found.get(labels[CASE_ID_LABEL], (labels[CASE_LABEL], ()))
            found[labels[CASE_ID_LABEL]] = (kind, (*ids, oracle.identity(event)))
    return found


def alerting(events: Any) -> set[tuple[str, ...]]:
    """The event ids of every case Elasticsearch alerts on, as the labels promise."""
    return {ids for kind, ids in cases(events).values() if CASE_KINDS[kind]}


# -- the generator -----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_events() -> None:
    first = orjson.dumps(generate_corpus(5, 500))
    assert orjson.dumps(generate_corpus(5, 500)) == first
    assert orjson.dumps(generate_corpus(6, 500)) != first
    again = list(arrival_order(generate_corpus(5, 500), 5, 60, 0.05))
    assert orjson.dumps(list(arrival_order(generate_corpus(5, 500), 5, 60, 0.05))) == orjson.dumps(again)


def test_corpus_is_in_event_time_order_and_noise_is_one_to_three_kb() -> None:
    events = corpus(SEEDS[0])
    assert len(events) == EVENTS
    times = [event_time_ns(e) for e in events]
    assert times == sorted(times)
    assert [oracle.timestamp_ms(e["@timestamp"]) for e in events] == sorted(t // NS_PER_MS for t in times)
    sizes = [len(orjson.dumps(e)) for e in events if CASE_LABEL not in e["labels"]]
    assert min(sizes) >= 1024 and max(sizes) <= 3072


def test_events_have_their_sources_shapes() -> None:
    events = corpus(SEEDS[0])
    for event in events:
        category, types = event["event"]["category"], event["event"]["type"]
        if source_of(event) == DEFEND:
            # 7 digits as Defend writes them; 9 for the attack variant of a Defend-like shipper with another clock.
            digits = 9 if event["labels"].get(CASE_LABEL) == "maxspan_edge_9_digits" else 7
            assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{{digits}}}Z", event["@timestamp"])
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


def test_corpus_covers_attacks_variants_and_every_near_miss_in_both_shapes() -> None:
    events = corpus(SEEDS[0])
    by_id = {oracle.identity(e): e for e in events}
    shapes: dict[str, set[str]] = {}
    for kind, ids in cases(events).values():
        assert len(ids) == 2
        shapes.setdefault(kind, set()).add(source_of(by_id[ids[0]]))
    assert set(shapes) == set(CASE_KINDS)
    for kind in CASE_KINDS:
        assert shapes[kind] == ({DEFEND} if kind in DEFEND_ONLY else {DEFEND, WINLOGBEAT}), kind


def test_attack_variants_sit_on_the_edges_they_are_named_after() -> None:
    """The maxspan-edge attacks are more than 60 s apart in raw digits, exactly 60,000 ms once truncated;
    each event of a shared-id attack has its event.id on an unrelated document of the same host."""
    events = corpus(SEEDS[0])
    for case_id, (kind, _) in cases(events).items():
        pair = [e for e in events if e["labels"].get(CASE_ID_LABEL) == case_id]
        if kind.startswith("maxspan_edge_"):
            raw = [parse_ns(e["@timestamp"]) for e in pair]
            indexed = [oracle.timestamp_ms(e["@timestamp"]) for e in pair]
            assert raw[1] - raw[0] > 60 * NS_PER_S and indexed[1] - indexed[0] == 60_000, case_id
        if kind == "shared_event_id":
            for event in pair:
                twins = [
                    e
                    for e in events
                    if e["labels"].get(SHARED_EVENT_ID_LABEL) == case_id
                    and e["event"].get("id") == event["event"]["id"]
                ]
                assert len(twins) == 1 and twins[0]["host"]["id"] == event["host"]["id"], case_id


def test_arrival_order_stays_within_lateness_and_duplicates_exactly() -> None:
    events = corpus(SEEDS[0])
    delivered = arrivals(SEEDS[0])
    lateness_ns = int(LATENESS_S * NS_PER_S)
    newest = None
    out_of_order = 0
    for event in delivered:
        ts = event_time_ns(event)
        assert ts is not None
        if newest is not None:
            assert ts >= newest - lateness_ns
            out_of_order += ts < newest
        newest = ts if newest is None else max(newest, ts)
    assert out_of_order > len(events) // 20
    raw = [orjson.dumps(e) for e in delivered]
    assert sorted(set(raw)) == sorted(orjson.dumps(e) for e in events)  # without Winlogbeat 8: exact copies
    assert 0 < len(raw) - len(events) < len(events) // 20


# -- the engine against Elasticsearch's semantics ----------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_replay_gives_elasticsearch_sequences(seed: int) -> None:
    expected = es(RULE, corpus(seed))
    assert detect(corpus(seed)).sequences() == expected
    found = detect(arrivals(seed))
    assert not found.rejections
    assert found.sequences() == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_attacks_and_variants_alert_and_near_misses_do_not(seed: int) -> None:
    found = {ids for _, ids in detect(arrivals(seed)).sequences()}
    alerted_events = {eid for ids in found for eid in ids}
    for case_id, (kind, ids) in cases(corpus(seed)).items():
        if CASE_KINDS[kind]:
            assert ids in found, f"{case_id} ({kind}) did not alert"
        else:
            assert not alerted_events.intersection(ids), f"{case_id} ({kind}) alerted"
    assert found == alerting(corpus(seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_alert_ids_do_not_depend_on_arrival_order_or_duplicates(seed: int) -> None:
    in_order = sorted(detect(corpus(seed)).ids())
    assert in_order
    assert sorted(detect(arrivals(seed)).ids()) == in_order
    assert set(in_order) == set(oracle.es_alerts(RULE, corpus(seed)))


def test_second_inbound_connection_delivered_first_is_paired_like_elasticsearch() -> None:
    """A COM server may accept two connections; Elasticsearch pairs the process with the first one.

    When the second connection is delivered before the first (within the allowed lateness), the
    engine must still report the process with the first connection, as it does in @timestamp order.
    """
    factory = EventFactory(random.Random(7))
    start = parse_ns("2024-05-14T08:00:00Z")
    assert start is not None
    host, peer = factory.fleet(2, 1.0, start)
    mshta = IMAGES["mshta"]
    process = factory.process(host, mshta, (mshta.path, "-Embedding"), factory.domain_user(), None, start)
    started = factory.process_start(host, process, start).event
    inbound = functools.partial(Connection, True, "tcp", host.ip)
    first = factory.network(host, process, start + 5 * NS_PER_S, inbound(50001, peer.ip, 50002)).event
    second = factory.network(host, process, start + 9 * NS_PER_S, inbound(50003, peer.ip, 50004)).event
    expected = es(RULE, [started, first, second])
    assert {ids for _, ids in expected} == {(oracle.identity(started), oracle.identity(first))}
    assert detect([started, first, second]).sequences() == expected
    assert detect([started, second, first]).sequences() == expected


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
    return tuple(
        iter_corpus_with_twins(
            seed,
            EVENTS,
            attack_rate=2e-3,
            near_miss_rate=2e-2,
            source_mix=source_mix,
            raw_share=raw_share,
            rate=2.0,
            attack_delay_s=attack_delay_s,
        )
    )


def delivered(shipped: tuple[Shipped, ...], seed: int) -> list[Event]:
    """The shipped events as Kafka delivers them: out of order within 5 minutes, 2% delivered twice
    (half of Winlogbeat 8's duplicates as re-sends after a restart of the Beat)."""
    return list(arrival_order((s.event for s in shipped), seed, max_lateness_s=LATENESS_S, duplicate_rate=0.02))


def detect_named_by_twins(events: list[Event], shipped: tuple[Shipped, ...], rule: CompiledRule) -> set[Found]:
    """The product's sequences on the events' raw bytes, each event named by its twin's identity.

    The product names a raw record by the identity of its normalized form, the oracle a twin by the
    identity of the twin; the two differ by design (the normalizer keeps every raw field, the
    pipeline moves some). So each alert's events are mapped to the twins of the records they came
    from, found by the records' own identity (a re-delivery or a Beat's re-send has the same one,
    hence the same twin). An ECS event is its own twin. Mapping whole ids keeps the comparison
    exact: the same sequences of the same events.
    """
    twin_of = {oracle.identity(s.event): s.twin for s in shipped}
    found = detect(events, [rule])
    assert not found.rejections
    twin_id = {eid: oracle.identity(twin_of[oracle.identity(events[index])]) for eid, index in found.records.items()}
    return {(key, tuple(twin_id[eid] for eid in ids)) for key, ids in found.sequences()}


def test_raw_records_have_winlogbeat8s_shape_and_twins_the_pipelines() -> None:
    shipped = mixed(MIXED_SEEDS[0])
    raw = [s for s in shipped if source_of(s.event) == WINLOGBEAT8]
    assert {source_of(s.event) for s in shipped} == set(SHAPES)
    assert all(s.twin is s.event for s in shipped if source_of(s.event) != WINLOGBEAT8)
    twin_times = [oracle.timestamp_ms(s.twin["@timestamp"]) for s in shipped]
    assert twin_times == sorted(t // NS_PER_MS for t in (event_time_ns(s.event) for s in shipped))
    event_ids = set()
    for record, twin in ((s.event, s.twin) for s in raw):
        event, winlog, data = record["event"], record["winlog"], record["winlog"]["event_data"]
        assert record["@metadata"] == {"beat": "winlogbeat", "type": "_doc", "version": "8.13.4"}
        assert record["host"]["id"] and record["agent"]["type"] == "winlogbeat"
        assert {"category", "type"}.isdisjoint(event) and {"process", "source", "user", "network"}.isdisjoint(record)
        assert type(winlog["event_id"]) is str and event["code"] == winlog["event_id"]
        assert all(type(value) is str for value in data.values())
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", record["@timestamp"])
        assert twin["event"]["created"] == event["created"]  # the Beat's read time survives the pipeline
        event_ids.add(winlog["event_id"])
        if winlog["provider_name"] != "Microsoft-Windows-Sysmon":
            assert (winlog["channel"], winlog["event_id"]) == ("Security", "4624")
            assert twin["@timestamp"] == record["@timestamp"] and twin["event"]["category"] == ["authentication"]
            continue
        assert winlog["channel"] == "Microsoft-Windows-Sysmon/Operational"
        assert SYSMON_UTC.fullmatch(data["UtcTime"])
        written = parse_ns(record["@timestamp"]) - parse_ns(data["UtcTime"])  # type: ignore[operator]
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


def test_a_beats_resend_differs_only_in_what_a_restart_changes() -> None:
    """Winlogbeat 8's re-sends after a restart: a new run id, read time and envelope, the same event."""
    shipped = mixed(MIXED_SEEDS[0])
    originals = {oracle.identity(s.event): orjson.dumps(s.event) for s in shipped}
    resends = 0
    for event in delivered(shipped, MIXED_SEEDS[0]):
        original = originals[oracle.identity(event)]  # every delivery is one of the corpus' events
        if orjson.dumps(event) == original:
            continue
        resends += 1
        before = orjson.loads(original)
        assert source_of(event) == WINLOGBEAT8
        changed = {
            (name, field)
            for name, value in event.items()
            if isinstance(value, dict)
            for field in value.keys() | before[name].keys()
            if value.get(field) != before[name].get(field)
        }
        assert changed and changed <= RESENT_FIELDS, changed
        assert {k: v for k, v in event.items() if not isinstance(v, dict)} == {
            k: v for k, v in before.items() if not isinstance(v, dict)
        }
    assert resends > 0


def test_mixed_fleet_covers_attacks_and_every_near_miss_in_every_source() -> None:
    shipped = mixed(MIXED_SEEDS[0])
    events = [s.event for s in shipped]
    by_id = {oracle.identity(e): e for e in events}
    sources: dict[str, set[str]] = {}
    for kind, ids in cases(events).values():
        assert len(ids) == 2
        sources.setdefault(kind, set()).add(source_of(by_id[ids[0]]))
    for kind in CASE_KINDS:
        assert sources[kind] == ({DEFEND} if kind in DEFEND_ONLY else set(SHAPES)), kind


def test_twins_alert_exactly_on_attacks_and_boundary_near_misses() -> None:
    """The oracle on the twins sees what the labels promise: the twins are what Elasticsearch would index."""
    shipped = mixed(MIXED_SEEDS[0])
    twins = [s.twin for s in shipped]
    assert {ids for _, ids in es(RULE, twins)} == alerting(twins)
    assert {kind for kind, _ in cases(twins).values()} >= {ATTACK, *ATTACK_VARIANTS}


def test_arrival_order_bounds_lateness_in_event_time() -> None:
    """Raw records are written after their UtcTime; the lateness that matters is in event time."""
    newest = None
    for event in delivered(mixed(MIXED_SEEDS[0]), MIXED_SEEDS[0]):
        ts = event_time_ns(event)
        assert ts is not None
        if newest is not None:
            assert ts >= newest - int(LATENESS_S * NS_PER_S)
        newest = ts if newest is None else max(newest, ts)


@pytest.mark.parametrize("rule", [RULE, CURRENT_RULE], ids=["v4", "current"])
@pytest.mark.parametrize("seed", MIXED_SEEDS)
def test_raw_and_ecs_sources_give_elasticsearch_sequences_on_the_twins(seed: int, rule: CompiledRule) -> None:
    shipped = mixed(seed)
    expected = es(rule, [s.twin for s in shipped])
    raw_ids = {oracle.identity(s.twin) for s in shipped if s.twin is not s.event}
    assert any(raw_ids.issuperset(ids) for _, ids in expected), "no sequence of raw records to check"
    assert detect_named_by_twins([s.event for s in shipped], shipped, rule) == expected
    assert detect_named_by_twins(delivered(shipped, seed), shipped, rule) == expected


@pytest.mark.parametrize("seed", MIXED_SEEDS[:2])
def test_all_raw_fleet_gives_elasticsearch_sequences_on_the_twins(seed: int) -> None:
    shipped = mixed(seed, raw_share=1.0)
    assert {source_of(s.event) for s in shipped} == {WINLOGBEAT8}
    twins = [s.twin for s in shipped]
    expected = es(RULE, twins)
    assert len(expected) == len(alerting(twins))
    assert detect_named_by_twins(delivered(shipped, seed), shipped, RULE) == expected


def test_raw_records_written_out_of_utc_order_are_ordered_by_utc_time() -> None:
    """Sysmon writes a record up to 1.5 s after its UtcTime, so two records of one attack can be
    written (and stamped) in the opposite order of their events; Elasticsearch orders by UtcTime."""
    shipped = mixed(MIXED_SEEDS[1], raw_share=1.0, attack_delay_s=(0.001, 1.0))
    stamped: dict[str, list[int]] = {}
    for record in (s.event for s in shipped if s.event["labels"].get(CASE_LABEL) == ATTACK):
        stamped.setdefault(record["labels"][CASE_ID_LABEL], []).append(parse_ns(record["@timestamp"]) or 0)
    assert any(process > network for process, network in stamped.values()), "no attack written out of order"
    expected = es(RULE, [s.twin for s in shipped])
    assert len({ids for _, ids in expected}) >= len(stamped)
    assert detect_named_by_twins(delivered(shipped, MIXED_SEEDS[1]), shipped, RULE) == expected


# -- the demo ----------------------------------------------------------------------------------


def test_demo_scenario_is_what_its_readme_command_generates(tmp_path: Path) -> None:
    command = next(
        line.strip("`")
        for line in (ROOT / "demo" / "README.md").read_text().splitlines()
        if "eqlstream_dev.synthetic" in line and line.startswith("`")
    )
    argv = shlex.split(command)[3:]  # after ".venv/bin/python -m eqlstream_dev.synthetic"
    out = argv.index("--out") + 1
    argv[out] = str(tmp_path / "scenario.ndjson")
    assert main(argv) == 0
    assert (tmp_path / "scenario.ndjson").read_bytes() == DEMO.read_bytes()


def test_demo_prints_exactly_two_alert_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "replay", "--format", "summary", str(DEMO)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    alerts = result.stdout.splitlines()
    assert len(alerts) == 2
    assert any("entity_id={" in line for line in alerts) and any("entity_id={" not in line for line in alerts)
    assert "duplicates: 1" in result.stderr
