"""Hostile input, evasion and exhaustion against the running service (``python -m app run``).

One worker gets, on random input partitions, every case of tests/test_hostile_input.py (each
keyed by its name) with real attack sequences mixed in, and, in order on one partition, three
evasion attempts: a forged far-future event on another host between the two events of a pending
sequence, a flood of stage-1 events on one key, and a flood of distinct stage-1 keys. Then:

* each rejected case is in the dead-letter topic under its own key with its reason, and nothing else is;
* the alert ids are exactly the replay's over the same records (attacks, the hostile pairs, the
  sequence the forged event did not blind, the flooded key's latest stage-1);
* the worker is alive and live, and its metrics show the per-key bound (evictions) and the state
  expiring under the distinct-key flood (``eqlstream_state_keys``, ``eqlstream_state_expired_keys``).

The same bounds are checked exactly on the engine at the end.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from app.detector import CandidateExtractor, SequenceStage
from app.engine.sequence import Candidate
from app.kafka.admin import ensure_topics
from app.kafka.records import (
    DEAD_LETTER_MAX_BYTES,
    ORIGINAL_SIZE_HEADER,
    REASON_HEADER,
    decode_candidate,
    header_map,
)
from app.kafka.run import owned_topics
from app.kafka.sequence import SequenceService
from app.rule import load_rules
from app.settings import Settings
from app.timeparse import format_timestamp
from tests.kafka.helpers import read_topic
from tests.reliability.faults_helpers import free_port, wait_for_port
from tests.test_hostile_input import CASES
from tests.test_schemas import ALERT, DEAD_LETTER

RULES = load_rules()
RULE_ID = RULES[0].meta.rule_id
ROOT = Path(__file__).resolve().parents[2]
INPUT_PARTITIONS = 4
S = 1_000_000_000
T0 = 1_714_557_600 * S  # 2024-05-01T10:00:00Z, the time of the hostile cases
ATTACKS = 6
ONE_KEY_FLOOD = 150  # stage-1 events on one key: 50 more than max_entries_per_stage
DISTINCT_KEY_FLOOD = 400  # distinct stage-1 keys over 40 minutes, before T0


def start_event(event_id: str, ts: int, host: str, entity: str) -> dict:
    return {
        "@timestamp": format_timestamp(ts),
        "event": {"id": event_id, "category": ["process"], "type": ["start"]},
        "host": {"id": host},
        "process": {"name": "mshta.exe", "entity_id": entity, "args": ["mshta.exe", "-Embedding"]},
    }


def inbound_event(event_id: str, ts: int, host: str, entity: str) -> dict:
    return {
        "@timestamp": format_timestamp(ts),
        "event": {"id": event_id, "category": ["network"], "type": ["start"]},
        "host": {"id": host},
        "process": {"name": "mshta.exe", "entity_id": entity},
        "network": {"direction": "ingress", "transport": "tcp"},
        "source": {"ip": "10.0.0.5", "port": 50000},
        "destination": {"ip": "10.0.0.9", "port": 55000},
    }


def candidates_partition(host: str, entity: str, partitions: int) -> int:
    """The candidates partition of a join key: librdkafka's default partitioner is CRC-32 of the key."""
    key = orjson.dumps([RULE_ID, host, entity])
    return zlib.crc32(key) % partitions


def forged_future_sequence(partitions: int) -> list[dict]:
    """Host A's stage 1, a 2099 stage-1 event on host B (same candidates partition), A's stage 2."""
    host_a, entity_a = "clock-a", "clock-a-entity"
    target = candidates_partition(host_a, entity_a, partitions)
    entity_b = next(
        f"forged-{i}" for i in range(1000) if candidates_partition("clock-b", f"forged-{i}", partitions) == target
    )
    return [
        start_event("clock-a-start", T0 + 200 * S, host_a, entity_a),
        start_event("clock-b-2099", 4_070_908_800 * S, "clock-b", entity_b),  # 2099-01-01
        inbound_event("clock-a-inbound", T0 + 230 * S, host_a, entity_a),
    ]


def one_key_flood() -> list[dict]:
    events = [
        start_event(f"flood-{i}", T0 + 300 * S + i * S // 10, "flood-host", "flood") for i in range(ONE_KEY_FLOOD)
    ]
    return [*events, inbound_event("flood-inbound", T0 + 300 * S + ONE_KEY_FLOOD * S // 10 + S, "flood-host", "flood")]


def distinct_key_flood(partitions: int) -> list[dict]:
    """Stage-1 events that never complete, one every 6 s of event time, ending 5 min before T0.

    Keys are spread so that every candidates partition sees four hosts in turn: each partition has its
    own engine and watermark, and a watermark moves once three hosts have reached a time.
    """
    first = T0 - (DISTINCT_KEY_FLOOD * 6 + 300) * S
    events = []
    for i in range(DISTINCT_KEY_FLOOD):
        host, target = f"fleet-{(i // partitions) % 4}", i % partitions
        entity = next(
            f"distinct-{i}-{j}"
            for j in range(1000)
            if candidates_partition(host, f"distinct-{i}-{j}", partitions) == target
        )
        events.append(start_event(f"distinct-{i}", first + i * 6 * S, host, entity))
    return events


def attacks() -> list[dict]:
    events = []
    for i in range(ATTACKS):
        host, entity = f"attack-{i % 3}", f"attack-{i}"
        events += [
            start_event(f"attack-{i}-start", T0 + i * S, host, entity),
            inbound_event(f"attack-{i}-inbound", T0 + (i + 20) * S, host, entity),
        ]
    return events


def replay_ids(records: list[bytes]) -> list[str]:
    """Alert ids the offline path gives over ``records`` in this order (the replay CLI's code)."""
    extractor = CandidateExtractor(RULES)
    stage = SequenceStage(RULES, Settings())
    ids = []
    for record in records:
        for candidate in extractor.extract(record)[0]:
            ids += [alert.id for alert in stage.process(candidate, 0)]
    return ids


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, int]]) -> None:
    """Like tests.kafka.helpers.produce, with room for the 10 MB case (librdkafka's default is 1 MB)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "message.max.bytes": 20 << 20})
    errors: list = []
    for key, value, partition in records:
        producer.produce(topic, value=value, key=key, partition=partition, on_delivery=lambda e, _m: errors.append(e))
    assert producer.flush(60) == 0
    assert not [e for e in errors if e is not None]


@contextmanager
def worker(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen]:
    """``python -m app run`` as a child process, stopped with SIGTERM on exit."""
    environment = {**os.environ, **settings.to_environment()}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "run"], env=environment, cwd=ROOT, stdout=log, stderr=log
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {"name{labels}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(eqlstream_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def total(samples: dict[str, float], prefix: str) -> float:
    """The sum of the samples of a metric (every label set), or of those whose labels start as given."""
    return sum(v for k, v in samples.items() if k == prefix or k.startswith(prefix if "{" in prefix else prefix + "{"))


@pytest.mark.timeout(300)
def test_hostile_input_evasion_and_floods_through_the_service(
    kafka_bootstrap: str, reliability_settings: Callable[..., Settings], tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Every hostile case dead-lettered with its reason or processed, the replay's alerts exactly, bounded state."""
    embedded = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
    web_port = free_port()
    settings = reliability_settings(kafka_bootstrap, embedded).model_copy(update={"web_port": web_port})
    partitions = settings.candidates_partitions
    topics = owned_topics(settings, SequenceService(settings, RULES))
    ensure_topics(settings, {settings.input_topics: INPUT_PARTITIONS, **topics})

    # Tansu takes records of any size; a stock Kafka refuses those over 1 MB (message.max.bytes) at the door.
    cases = [case for case in CASES if embedded or len(case.record) < 1_000_000]
    rng = random.Random(7)
    mixed: list[tuple[bytes | None, bytes]] = [(None, orjson.dumps(e)) for e in attacks()]
    for case in cases:
        mixed.append((case.name.encode(), case.record))
        if case.partner is not None:
            mixed.append((f"{case.name}-partner".encode(), case.partner))
    rng.shuffle(mixed)
    # The floods and the forged event go in order to partition 0: ingest keeps a partition's order, and a
    # join key has one candidates partition. The distinct-key flood goes first, on its own.
    flood = [orjson.dumps(e) for e in distinct_key_flood(partitions)]
    ordered = [orjson.dumps(e) for e in forged_future_sequence(partitions) + one_key_flood()]
    records = [(key, value, rng.randrange(1, INPUT_PARTITIONS)) for key, value in mixed]
    records += [(None, value, 0) for value in ordered]
    expected = replay_ids(flood + ordered + [value for _, value in mixed])
    attack_ids = set(replay_ids([orjson.dumps(e) for e in attacks()]))
    survived = set(replay_ids([orjson.dumps(e) for e in forged_future_sequence(partitions)[::2]]))
    flood_ids = replay_ids([orjson.dumps(e) for e in one_key_flood()])
    pairs = [case for case in cases if case.pair]
    assert len(attack_ids) == ATTACKS and len(survived) == 1 and len(flood_ids) == 1
    assert len(set(expected)) == len(expected) == ATTACKS + len(pairs) + 2
    assert attack_ids | survived | set(flood_ids) <= set(expected)

    started = time.monotonic()
    with worker(settings, tmp_path / "worker.log") as process:
        wait_for_port(web_port, 60, process)
        produce(settings.kafka_bootstrap_servers, settings.input_topics, [(None, value, 0) for value in flood])
        after_flood = wait_for_metric(web_port, "eqlstream_sequence_candidates_total", DISTINCT_KEY_FLOOD, 120)
        produce(settings.kafka_bootstrap_servers, settings.input_topics, records)

        rejected = {case.name: case for case in cases if case.reason}
        letters = read_topic(kafka_bootstrap, settings.dead_letter_topic, partitions, len(rejected), timeout=180)
        messages = read_topic(kafka_bootstrap, settings.alerts_topic, partitions, 3 * len(expected), timeout=180)
        elapsed = time.monotonic() - started
        samples = scrape(web_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/livez", timeout=10) as response:
            live = response.status
        alive = process.poll() is None

    got = Counter()
    for message in letters:
        name = (message.key() or b"").decode()
        headers = header_map(message.headers())
        DEAD_LETTER.validate(headers)
        case = rejected[name]
        assert headers[REASON_HEADER] == case.reason, name
        assert (message.value() or b"") == case.record[:DEAD_LETTER_MAX_BYTES], name
        assert headers.get(ORIGINAL_SIZE_HEADER) == (
            str(len(case.record)) if len(case.record) > DEAD_LETTER_MAX_BYTES else None
        )
        got[name] += 1
    assert set(got) == set(rejected)  # every rejected case, and nothing else
    documents = [orjson.loads(m.value()) for m in messages]
    for document in documents:
        ALERT.validate(document)
    shells = [d["kibana.alert.uuid"] for d in documents if d["kibana.alert.depth"] == 2]
    assert set(shells) == set(expected)  # repeats, if any, only as identical ids
    assert alive and live == 200

    # The forged event was on the pending sequence's candidates partition: it could have blinded it.
    candidates = read_topic(kafka_bootstrap, settings.candidates_topic, partitions, len(expected), timeout=60)
    where = {decode_candidate(m.value())[0].event_id: m.partition() for m in candidates}
    assert where["clock-a-start"] == where["clock-b-2099"] == where["clock-a-inbound"]

    # The one-key flood was cut to max_entries_per_stage; the distinct keys expired as event time moved on
    # (each candidates partition's engine keeps only the last lateness + maxspan of them).
    evicted = total(samples, "eqlstream_state_evicted_entries_total")
    flood_expired = total(after_flood, "eqlstream_state_expired_keys_total")
    flood_too_late = total(after_flood, 'eqlstream_sequence_candidates_total{outcome="too_late"')
    assert evicted >= ONE_KEY_FLOOD - settings.max_entries_per_stage
    assert flood_too_late == 0
    assert flood_expired >= DISTINCT_KEY_FLOOD * 0.6
    assert "eqlstream_state_keys" in after_flood and "eqlstream_state_keys" in samples
    figures.update(
        {
            "records produced": len(flood) + len(records),
            "hostile cases (rejected / processed)": f"{len(rejected)} / {len(cases) - len(rejected)}",
            "dead letters": sum(got.values()),
            "alerts (shells) expected = received": f"{len(expected)} = {len(set(shells))}",
            "one-key flood: events / evicted": f"{ONE_KEY_FLOOD} / {evicted:.0f}",
            "distinct-key flood: keys / keys expired by its end": f"{DISTINCT_KEY_FLOOD} / {flood_expired:.0f}",
            "eqlstream_state_keys (RocksDB estimate) after the flood / at the end": (
                f"{after_flood['eqlstream_state_keys']:.0f} / {samples['eqlstream_state_keys']:.0f}"
            ),
            "seconds from the worker's start to the last alert and dead letter": round(elapsed, 1),
        }
    )


def wait_for_metric(port: int, prefix: str, at_least: float, timeout: float) -> dict[str, float]:
    """Scrape until the samples under ``prefix`` add up to ``at_least``; returns that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if total(samples, prefix) >= at_least:
            return samples
        assert time.monotonic() < deadline, f"{prefix} at {total(samples, prefix)} after {timeout} s, not {at_least}"
        time.sleep(0.5)


def _candidate(event_id: str, ts: int, host: str, entity: str, stage: int) -> Candidate:
    return Candidate(RULE_ID, (host, entity), (stage,), ts, event_id, {"event": {"id": event_id}}, host)


def test_a_flood_on_one_key_keeps_its_state_bounded_and_the_latest_stage_1_pairs() -> None:
    stage = SequenceStage(RULES, Settings(max_entries_per_stage=100))
    engine = stage.engines[RULE_ID]
    for i in range(3_000):
        assert stage.process(_candidate(f"s{i}", T0 + i * 1000, "h", "e", 0), 0) == []
    state = stage.store.get(engine.state_key(("h", "e")))
    assert len(state.entries) == 100
    assert engine.stats.evicted == 2_900
    alerts = stage.process(_candidate("in", T0 + 3_000 * 1000, "h", "e", 1), 0)
    assert [tuple(e.event_id for e in a.match.events) for a in alerts] == [("s2999", "in")]


def test_a_flood_of_distinct_keys_is_bounded_by_event_time_expiry() -> None:
    """30,000 keys that never complete, over 5 hours of event time: the store holds only the last horizon's."""
    stage = SequenceStage(RULES, Settings())
    engine = stage.engines[RULE_ID]
    step = 600 * S // 1000  # 30,000 events over 5 hours, from 5 hosts in turn
    most = 0
    for i in range(30_000):
        stage.process(_candidate(f"k{i}", T0 + i * step, f"host-{i % 5}", f"e{i}", 0), 0)
        most = max(most, len(stage.store))
    horizon = engine.horizon_ns // step  # keys an in-lateness event could still pair with (600)
    assert most <= horizon + 5
    assert engine.stats.expired_keys >= 30_000 - horizon - 5
