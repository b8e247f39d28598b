"""The whole service (``python -m app run`` as child processes) against the broker.

* A synthetic corpus (every source shape, attack variants, near misses) delivered as Kafka does
  (out of order, re-delivered, Beats re-sending after a restart) yields exactly the alerts replay
  yields on the same records; bad records land in the dead-letter topic while good ones around them
  are still detected; every document of a match is keyed by its shell, blocks first.
* Lines on the candidates topic that the service did not write are dead letters one by one, and the
  valid lines beside them still count.
* ``kill -9`` of a worker mid-sequence, then a restart (same state directory, then a fresh one
  restored from the changelog): no sequence missed, repeats only with identical ids.
* Two workers in one group, a rebalance while sequences are half done: none missed.
* A sequence worker scraped from its first second stops cleanly and at once on SIGTERM.
* A folder of rules in the upstream layout (tests/support/wave/) runs whole: raw Sysmon, raw
  Security and Elastic Defend events amid fleet noise give exactly the replay's alerts.
"""

from __future__ import annotations

import random
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from eqlstream_dev import synthetic

from app.core import Detector, load_rules
from app.service.records import encode_candidate, header_map, partition_of
from app.settings import ServiceSettings
from tests.support.broker import prepare_topics, produce, read_topic, wait_for_state
from tests.support.detection import RULES, attack, replay_ids
from tests.support.schemas import ALERT, DEAD_LETTER
from tests.support.settings import input_topic, with_settings
from tests.support.wave import T0 as wave_t0
from tests.support.wave import WAVE, stream
from tests.support.worker import Worker

PARTITIONS = 4


def shell_ids(settings: ServiceSettings, expected: int, timeout: float = 120.0) -> list[str]:
    """Ids of the shell alerts on the alerts topic (waits for ``expected`` of them, then for quiet).

    Every document read must validate against schemas/alert.schema.json, be keyed by its shell's id,
    and come after its match's building blocks on their (shared) partition.
    """
    messages = read_topic(settings, settings.alerts_topic, PARTITIONS, 3 * expected, timeout)
    seen_blocks: dict[str, int] = {}
    shells = []
    for message in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        document = orjson.loads(message.value())
        ALERT.validate(document)
        group = document["kibana.alert.group.id"]
        assert message.key() == group.encode()
        if document["kibana.alert.depth"] == 2:
            assert seen_blocks.get(group, 0) >= 2, "a shell before its building blocks"
            shells.append(document["kibana.alert.uuid"])
        else:
            seen_blocks[group] = seen_blocks.get(group, 0) + 1
    return shells


def send(settings: ServiceSettings, events: list[dict[str, Any] | bytes | None], rng: random.Random) -> None:
    """Produce to random partitions, as Beats does without a key."""
    records = [
        (None, e if isinstance(e, bytes) or e is None else orjson.dumps(e), rng.randrange(PARTITIONS)) for e in events
    ]
    produce(settings, input_topic(settings), records)


def service(kafka_settings: ServiceSettings, data_dir: Path) -> ServiceSettings:
    settings = with_settings(kafka_settings, data_dir=data_dir)
    prepare_topics(settings, PARTITIONS)
    return settings


@pytest.mark.timeout(300)
def test_stream_gives_the_replay_alerts_and_dead_letters_bad_records(
    kafka_settings: ServiceSettings, tmp_path: Path
) -> None:
    settings = service(kafka_settings, tmp_path / "state")
    events = synthetic.generate_corpus(11, 700, attack_rate=0.012, near_miss_rate=0.02, source_mix=0.4, raw_share=0.3)
    kinds = {e["labels"].get(synthetic.CASE_LABEL) for e in events}
    assert {synthetic.ATTACK, *synthetic.ATTACK_VARIANTS} <= kinds  # the corpus has every attack variant
    delivered = list(synthetic.arrival_order(events, 11, max_lateness_s=60, duplicate_rate=0.03))
    expected = replay_ids(delivered)
    assert len(expected) >= 6
    bad = [b"plain text mshta.exe", b'{"truncated": "mshta.exe', b'["mshta.exe"]', None]  # None: a tombstone
    mixed: list[dict[str, Any] | bytes | None] = list(delivered)
    for index, record in enumerate(bad):
        mixed.insert(100 * (index + 1), record)
    with Worker(settings, "w1", tmp_path):
        send(settings, mixed, random.Random(1))
        assert sorted(shell_ids(settings, len(expected))) == sorted(expected)  # each exactly once
        letters = read_topic(settings, settings.dead_letter_topic, PARTITIONS, len(bad))
    assert sorted(m.value() or b"" for m in letters) == sorted(record or b"" for record in bad)
    reasons = sorted(header_map(m.headers())["eqlstream.reason"] for m in letters)
    assert reasons == ["invalid_json", "invalid_json", "invalid_json", "not_an_object"]
    for letter in letters:
        DEAD_LETTER.validate(header_map(letter.headers()))


@pytest.mark.timeout(300)
def test_a_folder_of_rules_gives_the_replay_alerts(kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    settings = with_settings(service(kafka_settings, tmp_path / "state"), rule_path=WAVE)
    noise = synthetic.generate_corpus(5, 600, attack_rate=0.01, near_miss_rate=0.02, source_mix=0.4, raw_share=0.3)
    # The wave's events within the noise's minutes, interleaved with it as a fleet's are.
    start = datetime.fromisoformat(noise[0]["@timestamp"][:19] + "+00:00")
    attacks, count = stream((start - wave_t0).total_seconds() + 20)
    delivered = list(synthetic.arrival_order(noise, 5, max_lateness_s=30, duplicate_rate=0.03))
    for index, event in enumerate(attacks):
        delivered.insert(10 + 15 * index, event)
    expected = replay_ids(delivered, load_rules(WAVE))
    assert len(expected) == count
    with Worker(settings, "w1", tmp_path):
        send(settings, delivered, random.Random(3))
        assert sorted(shell_ids(settings, len(expected))) == sorted(expected)


@pytest.mark.timeout(300)
def test_forged_candidate_lines_are_dead_letters_one_by_one(kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    """The candidates topic is an input too: each line is checked, a bad one is a dead letter on its own,
    a tombstone is one, and the valid lines packed with them are still detected."""
    settings = service(kafka_settings, tmp_path / "state")
    start, inbound = attack(0)
    (candidate,) = Detector(RULES).extractor.extract(orjson.dumps(start))[0]
    good = encode_candidate(candidate, received_ms=int(time.time() * 1000))
    meta = orjson.loads(good.partition(b"\t")[0])
    partition = partition_of(candidate.rule_id, candidate.key, settings.candidates_partitions)
    forged = [
        b"not a candidate line",
        orjson.dumps({**meta, "rule_id": "no-such-rule"}) + b"\t{}",
        orjson.dumps({**meta, "stages": [2]}) + b"\t{}",
        orjson.dumps({**meta, "key": ["only-one"]}) + b"\t{}",
    ]
    with Worker(settings, "w1", tmp_path):
        produce(
            settings,
            settings.candidates_topic,
            # On the join key's partition, where the engine holding the key's state reads.
            [(b"forged", b"\n".join([forged[0], good, *forged[1:]]), partition), (b"tombstone", None, 1)],
        )
        send(settings, [inbound], random.Random(2))
        assert shell_ids(settings, 1) == sorted(replay_ids([start, inbound]))
        letters = read_topic(settings, settings.dead_letter_topic, PARTITIONS, len(forged) + 1)
    details = {}
    for letter in letters:
        headers = header_map(letter.headers())
        DEAD_LETTER.validate(headers)
        assert headers["eqlstream.reason"] == "invalid_candidate"
        assert headers["eqlstream.topic"] == settings.candidates_topic
        details[letter.value() or b""] = (letter.key(), headers["eqlstream.detail"])
    assert set(details) == {*forged, b""}
    assert details[b""][0] == b"tombstone" and "tombstone" in details[b""][1]
    assert "not a rule this worker runs" in details[forged[1]][1]
    assert "beyond the rule's 2 stages" in details[forged[2]][1]
    assert all(key == b"forged" for key, _ in (details[line] for line in forged))


@pytest.mark.timeout(360)
def test_kill_9_mid_sequence_then_restart_misses_nothing(kafka_settings: ServiceSettings, tmp_path: Path) -> None:
    settings = service(kafka_settings, tmp_path / "state")
    attacks = [attack(i) for i in range(6)]
    rng = random.Random(2)
    first = Worker(settings, "w1", tmp_path).start()
    try:
        send(settings, [start for start, _ in attacks], rng)
        wait_for_state(settings, len(attacks))
    finally:
        first.kill()
    # Same instance id (static membership) and the same RocksDB directory; then a fresh directory
    # restored from the changelog alone.
    with Worker(settings, "w1", tmp_path):
        send(settings, [inbound for _, inbound in attacks[:3]], rng)
        ids = shell_ids(settings, 3)
    assert len(set(ids)) == 3
    fresh = with_settings(settings, data_dir=tmp_path / "fresh")
    with Worker(fresh, "w1", tmp_path):
        send(settings, [inbound for _, inbound in attacks[3:]], rng)
        ids = shell_ids(settings, 6)
    assert set(ids) == replay_ids([e for pair in attacks for e in pair])


@pytest.mark.timeout(360)
def test_a_rebalance_while_sequences_are_pending_misses_nothing(
    kafka_settings: ServiceSettings, tmp_path: Path
) -> None:
    first_settings = service(kafka_settings, tmp_path / "a")
    second_settings = with_settings(first_settings, data_dir=tmp_path / "b")
    attacks = [attack(i, host=f"h{i % 3}") for i in range(16)]
    rng = random.Random(3)
    with Worker(first_settings, "wa", tmp_path):
        send(first_settings, [start for start, _ in attacks], rng)
        wait_for_state(first_settings, len(attacks))
        with Worker(second_settings, "wb", tmp_path):
            # Half the completing events flow while the group rebalances (partitions and their state
            # move to the new worker), the rest once it has settled.
            send(first_settings, [inbound for _, inbound in attacks[:4]], rng)
            time.sleep(12)
            send(first_settings, [inbound for _, inbound in attacks[4:]], rng)
            ids = shell_ids(first_settings, len(attacks))
    assert set(ids) == replay_ids([e for pair in attacks for e in pair])
    # The new worker did take over partitions with pending state the first one had written.
    restored = re.findall(r"partition ready partition=\d+ restored_keys=(\d+)", (tmp_path / "wb.log").read_text())
    assert any(int(count) > 0 for count in restored)


@pytest.mark.timeout(120)
def test_a_sequence_worker_scraped_from_its_start_stops_cleanly_and_at_once(
    kafka_settings: ServiceSettings, tmp_path: Path
) -> None:
    # Prometheus may scrape before the state store exists; that first scrape once created the
    # store from the metrics thread, and every later SIGTERM hung until the 25 s watchdog (exit 75).
    settings = service(kafka_settings, tmp_path / "state")
    worker = Worker(settings, "scraped", tmp_path, environment={"EQLSTREAM_ROLE": "sequence"}).start()
    try:
        deadline = time.monotonic() + 60
        while worker.readyz()[0] != 200:
            assert time.monotonic() < deadline, worker.log_tail()
            assert worker.alive(), worker.log_tail()
            worker.get("/metrics")
        started = time.monotonic()
        status = worker.stop(timeout=60)
        assert (status, worker.log_tail()) == (0, worker.log_tail())
        assert time.monotonic() - started < 15
    finally:
        worker.stop()
