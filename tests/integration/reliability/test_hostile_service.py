"""Hostile input, evasion and exhaustion against the running service (``python -m app run``).

One worker gets, on random input partitions, every case of the hostile-input table
(``tests.support.hostile.CASES``, each keyed by its name) with real attack sequences mixed in, and,
in order on one partition, three evasion attempts: a forged far-future event on another host
between the two events of a pending sequence, a flood of stage-1 events on one key, and a flood of
distinct stage-1 keys. Then:

* each rejected case is in the dead-letter topic under its own key with its reason, and nothing else is;
* the alert ids are exactly the replay's over the same records (attacks, the hostile pairs, the
  sequence the forged event did not blind, the flooded key's latest stage-1);
* the worker is alive and live, and its metrics show the per-key bound (evictions) and the state
  expiring under the distinct-key flood (``eqlstream_state_keys``, ``eqlstream_state_expired_keys``).

The same bounds are checked exactly on the detector in tests/unit/core/test_detector.py.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.service.records import (
    DEAD_LETTER_MAX_BYTES,
    LINES_HEADER,
    ORIGINAL_SIZE_HEADER,
    REASON_HEADER,
    decode_candidate,
    header_map,
    partition_of,
)
from tests.support.broker import EXTERNAL, prepare_topics, produce, read_topic
from tests.support.detection import RULE_ID, T0, S, detect, mshta_inbound, mshta_start
from tests.support.hostile import CASES
from tests.support.schemas import ALERT, DEAD_LETTER
from tests.support.settings import input_topic, service_settings
from tests.support.worker import Worker

INPUT_PARTITIONS = 4
ATTACKS = 6
ONE_KEY_FLOOD = 150  # stage-1 events on one key: 50 more than max_entries_per_stage
DISTINCT_KEY_FLOOD = 400  # distinct stage-1 keys over 40 minutes, before T0


def start_event(event_id: str, ts: int, host: str, entity: str) -> dict[str, Any]:
    return mshta_start(event_id, ts, host, entity)


def inbound_event(event_id: str, ts: int, host: str, entity: str) -> dict[str, Any]:
    return mshta_inbound(event_id, ts, host, entity)


def candidates_partition(host: str, entity: str, partitions: int) -> int:
    return partition_of(RULE_ID, (host, entity), partitions)


def forged_future_sequence(partitions: int) -> list[dict[str, Any]]:
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


def one_key_flood() -> list[dict[str, Any]]:
    events = [
        start_event(f"flood-{i}", T0 + 300 * S + i * S // 10, "flood-host", "flood") for i in range(ONE_KEY_FLOOD)
    ]
    return [*events, inbound_event("flood-inbound", T0 + 300 * S + ONE_KEY_FLOOD * S // 10 + S, "flood-host", "flood")]


def distinct_key_flood(partitions: int) -> list[dict[str, Any]]:
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


def attacks() -> list[dict[str, Any]]:
    events = []
    for i in range(ATTACKS):
        host, entity = f"attack-{i % 3}", f"attack-{i}"
        events += [
            start_event(f"attack-{i}-start", T0 + i * S, host, entity),
            inbound_event(f"attack-{i}-inbound", T0 + (i + 20) * S, host, entity),
        ]
    return events


def event_label(event_json: bytes) -> Any:
    """``event.id`` of a candidate's event, if it has one as an object (hostile cases may not)."""
    nested = orjson.loads(event_json).get("event")
    return nested.get("id") if isinstance(nested, dict) else None


def dumped(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


def scrape(worker: Worker) -> dict[str, float]:
    """The worker's /metrics as {"name{labels}": value}."""
    status, text = worker.get("/metrics")
    assert status == 200, text
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(eqlstream_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def total(samples: dict[str, float], prefix: str) -> float:
    """The sum of the samples of a metric (every label set), or of those whose labels start as given."""
    return sum(v for k, v in samples.items() if k == prefix or k.startswith(prefix if "{" in prefix else prefix + "{"))


def wait_for_metric(worker: Worker, prefix: str, at_least: float, timeout: float) -> dict[str, float]:
    """Scrape until the samples under ``prefix`` add up to ``at_least``; returns that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(worker)
        if total(samples, prefix) >= at_least:
            return samples
        assert time.monotonic() < deadline, f"{prefix} at {total(samples, prefix)} after {timeout} s, not {at_least}"
        time.sleep(0.5)


@pytest.mark.timeout(360)
def test_hostile_input_evasion_and_floods_through_the_service(
    kafka_bootstrap: str, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Every hostile case dead-lettered with its reason or processed, the replay's alerts exactly, bounded state."""
    settings = service_settings(kafka_bootstrap, tmp_path / "state")
    partitions = settings.candidates_partitions
    prepare_topics(settings, INPUT_PARTITIONS)

    # Tansu takes records of any size; a stock Kafka refuses those over 1 MB (message.max.bytes) at the door.
    cases = [case for case in CASES if not EXTERNAL or len(case.record) < 1_000_000]
    rng = random.Random(7)
    mixed: list[tuple[bytes | None, bytes]] = [(None, value) for value in dumped(attacks())]
    for case in cases:
        mixed.append((case.name.encode(), case.record))
        if case.partner is not None:
            mixed.append((f"{case.name}-partner".encode(), case.partner))
    rng.shuffle(mixed)
    # The floods and the forged event go in order to partition 0: ingest keeps a partition's order, and a
    # join key has one candidates partition. The distinct-key flood goes first, on its own.
    flood = dumped(distinct_key_flood(partitions))
    ordered = dumped(forged_future_sequence(partitions) + one_key_flood())
    records = [(key, value, rng.randrange(1, INPUT_PARTITIONS)) for key, value in mixed]
    records += [(None, value, 0) for value in ordered]
    expected = detect(flood + ordered + [value for _, value in mixed]).ids()
    attack_ids = set(detect(dumped(attacks())).ids())
    survived = set(detect(dumped(forged_future_sequence(partitions)[::2])).ids())
    flood_ids = detect(dumped(one_key_flood())).ids()
    pairs = [case for case in cases if case.pair]
    assert len(attack_ids) == ATTACKS and len(survived) == 1 and len(flood_ids) == 1
    assert len(set(expected)) == len(expected) == ATTACKS + len(pairs) + 2
    assert attack_ids | survived | set(flood_ids) <= set(expected)

    started = time.monotonic()
    big = {"message.max.bytes": 20 << 20}  # room for the 10 MB case (librdkafka's default is 1 MB)
    with Worker(settings, "worker", tmp_path) as worker:
        worker.wait_ready(120)
        produce(settings, input_topic(settings), [(None, value, 0) for value in flood], **big)
        after_flood = wait_for_metric(worker, "eqlstream_sequence_candidates_total", DISTINCT_KEY_FLOOD, 120)
        produce(settings, input_topic(settings), records, **big)

        rejected = {case.name: case for case in cases if case.reason}
        letters = read_topic(settings, settings.dead_letter_topic, partitions, len(rejected), timeout=180)
        messages = read_topic(settings, settings.alerts_topic, partitions, 3 * len(expected), timeout=180)
        elapsed = time.monotonic() - started
        samples = scrape(worker)
        live = worker.get("/livez")[0]
        alive = worker.alive()

    got: Counter[str] = Counter()
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
        assert headers.get(LINES_HEADER) == (",".join(map(str, case.lines)) if case.lines else None), name
        got[name] += 1
    assert set(got) == set(rejected)  # every rejected case, and nothing else
    documents = [orjson.loads(m.value()) for m in messages]
    for document in documents:
        ALERT.validate(document)
    shells = [d["kibana.alert.uuid"] for d in documents if d["kibana.alert.depth"] == 2]
    assert set(shells) == set(expected)  # repeats, if any, only as identical ids
    assert alive and live == 200

    # The forged event was on the pending sequence's candidates partition: it could have blinded it.
    candidates = read_topic(settings, settings.candidates_topic, partitions, 1, timeout=60)
    where = {
        event_label(received.candidate.event_json): message.partition()
        for message in candidates
        for received in (decode_candidate(line, 1 << 20) for line in message.value().split(b"\n"))
    }
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
