"""The whole service (``python -m app run`` as child processes) against the broker.

* A corpus streamed through Kafka yields exactly the alerts replay yields on the same events, and
  bad records land in the dead-letter topic while good ones around them are still detected.
* ``kill -9`` of a worker mid-sequence, then a restart: no sequence missed, repeats only with
  identical ids.
* Two workers in one group, a rebalance while sequences are half done: none missed.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from app import synthetic
from app.detector import CandidateExtractor, SequenceStage
from app.kafka.admin import ensure_topics
from app.kafka.records import header_map
from app.kafka.run import owned_topics
from app.kafka.sequence import SequenceService
from app.rule import load_rules
from app.settings import Settings
from app.timeparse import format_timestamp
from tests.kafka.helpers import produce, read_topic
from tests.test_schemas import ALERT, DEAD_LETTER

RULES = load_rules()
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
T0 = 1_714_557_600 * 1_000_000_000


def service_settings(settings: Settings, data_dir: Path) -> Settings:
    # One record per batch on the embedded broker, whose end offsets are wrong after bigger batches.
    embedded = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
    return settings.model_copy(update={"data_dir": data_dir, "single_record_batches": embedded})


@contextmanager
def worker(settings: Settings, instance: str) -> Iterator[subprocess.Popen]:
    """``python -m app run`` as a child process; stopped with SIGTERM (or killed) on exit."""
    environment = {**os.environ, **settings.to_environment(), "EQLSTREAM_INSTANCE_ID": instance}
    log = open(settings.data_dir.parent / f"{instance}.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "app", "run"], env=environment, cwd=ROOT, stdout=log, stderr=log)
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
        log.close()


def prepare_topics(settings: Settings) -> None:
    ensure_topics(
        settings, {settings.input_topics: PARTITIONS, **owned_topics(settings, SequenceService(settings, RULES))}
    )


def shell_ids(settings: Settings, expected: int, timeout: float = 90.0) -> list[str]:
    """Ids of the shell alerts on the alerts topic (waits for ``expected`` of them, then for quiet).

    Every document read must validate against schemas/alert.schema.json.
    """
    messages = read_topic(settings.kafka_bootstrap_servers, settings.alerts_topic, PARTITIONS, 3 * expected, timeout)
    documents = [orjson.loads(m.value()) for m in messages]
    for document in documents:
        ALERT.validate(document)
    return [d["kibana.alert.uuid"] for d in documents if d["kibana.alert.depth"] == 2]


def replay_ids(events: list[dict]) -> set[str]:
    extractor = CandidateExtractor(RULES)
    stage = SequenceStage(RULES, Settings())
    ids = set()
    for event in events:
        for candidate in extractor.extract(orjson.dumps(event))[0]:
            ids.update(alert.id for alert in stage.process(candidate, 0))
    return ids


def attack(index: int, host: str = "h1") -> tuple[dict, dict]:
    """An mshta -Embedding start and its inbound connection 10 s later, for entity ``e<index>``."""
    start_ns = T0 + index * 1_000_000_000
    start = {
        "@timestamp": format_timestamp(start_ns),
        "event": {"id": f"start-{index}", "category": ["process"], "type": ["start"]},
        "host": {"id": host, "name": host},
        "process": {"name": "mshta.exe", "entity_id": f"e{index}", "args": ["mshta.exe", "-Embedding"]},
    }
    inbound = {
        "@timestamp": format_timestamp(start_ns + 10_000_000_000),
        "event": {"id": f"inbound-{index}", "category": ["network"], "type": ["start"]},
        "host": {"id": host, "name": host},
        "process": {"name": "mshta.exe", "entity_id": f"e{index}"},
        "network": {"direction": "ingress", "transport": "tcp"},
        "source": {"ip": "10.0.0.5", "port": 50000 + index},
        "destination": {"ip": "10.0.0.9", "port": 55000},
    }
    return start, inbound


def send(settings: Settings, events: list[dict | bytes], rng: random.Random) -> None:
    """Produce to random partitions, as Beats does without a key."""
    records = [(None, e if isinstance(e, bytes) else orjson.dumps(e), rng.randrange(PARTITIONS)) for e in events]
    produce(settings.kafka_bootstrap_servers, settings.input_topics, records)


def wait_for_state(settings: Settings, service_records: int) -> None:
    """Until the state changelog holds ``service_records`` writes (the pending sequences are stored)."""
    changelog = SequenceService(settings, RULES).changelog_topic
    read_topic(settings.kafka_bootstrap_servers, changelog, PARTITIONS, service_records, timeout=60)


@pytest.mark.timeout(240)
def test_stream_gives_the_replay_alerts_and_dead_letters_bad_records(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = service_settings(kafka_settings, tmp_path / "state")
    prepare_topics(settings)
    events = synthetic.generate_corpus(11, 600, attack_rate=0.006, near_miss_rate=0.02, source_mix=0.4, raw_share=0.3)
    expected = replay_ids(events)
    assert len(expected) >= 3
    bad = [b"plain text mshta.exe", b'{"truncated": "mshta.exe', b'["mshta.exe"]']
    mixed: list[dict | bytes] = list(events)
    for index, record in enumerate(bad):
        mixed.insert(100 * (index + 1), record)
    with worker(settings, "w1"):
        send(settings, mixed, random.Random(1))
        assert set(shell_ids(settings, len(expected))) == expected
        letters = read_topic(settings.kafka_bootstrap_servers, settings.dead_letter_topic, PARTITIONS, len(bad))
    assert sorted(m.value() for m in letters) == sorted(bad)
    assert {dict(m.headers())["eqlstream.reason"] for m in letters} == {b"invalid_json", b"not_an_object"}
    for letter in letters:
        DEAD_LETTER.validate(header_map(letter.headers()))


@pytest.mark.timeout(300)
def test_kill_9_mid_sequence_then_restart_misses_nothing(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = service_settings(kafka_settings, tmp_path / "state")
    prepare_topics(settings)
    attacks = [attack(i) for i in range(6)]
    rng = random.Random(2)
    with worker(settings, "w1") as first:
        send(settings, [start for start, _ in attacks], rng)
        wait_for_state(settings, len(attacks))
        first.send_signal(signal.SIGKILL)
        first.wait()
    # Same instance id (static membership) and the same RocksDB directory; then a fresh directory
    # restored from the changelog alone.
    with worker(settings, "w1"):
        send(settings, [inbound for _, inbound in attacks[:3]], rng)
        ids = shell_ids(settings, 3)
    assert len(set(ids)) == 3
    fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    with worker(fresh, "w1"):
        send(settings, [inbound for _, inbound in attacks[3:]], rng)
        ids = shell_ids(settings, 6)
    assert set(ids) == replay_ids([e for pair in attacks for e in pair])


@pytest.mark.timeout(300)
def test_a_rebalance_while_sequences_are_pending_misses_nothing(kafka_settings: Settings, tmp_path: Path) -> None:
    first_settings = service_settings(kafka_settings, tmp_path / "a")
    second_settings = service_settings(kafka_settings, tmp_path / "b")
    prepare_topics(first_settings)
    attacks = [attack(i, host=f"h{i % 3}") for i in range(16)]
    rng = random.Random(3)
    with worker(first_settings, "wa"):
        send(first_settings, [start for start, _ in attacks], rng)
        wait_for_state(first_settings, len(attacks))
        with worker(second_settings, "wb"):
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
