"""A corpus: the fleet's noise and scenarios in event-time order, then as Kafka delivers it, then as NDJSON."""

from __future__ import annotations

import gzip
import heapq
import itertools
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from eqlstream_dev.synthetic.clock import NS_PER_S, iso, parse_ns
from eqlstream_dev.synthetic.ecs import Event, Shipped
from eqlstream_dev.synthetic.factory import EventFactory
from eqlstream_dev.synthetic.fleet import DEFEND, WINLOGBEAT, WINLOGBEAT8
from eqlstream_dev.synthetic.noise import NoiseWriter
from eqlstream_dev.synthetic.scenarios import (
    ATTACK,
    ATTACK_VARIANTS,
    MAXSPAN_NS,
    NEAR_MISSES,
    ScenarioWriter,
    with_decoys,
)
from eqlstream_dev.synthetic.winlogbeat8 import VERSION as WINLOGBEAT8_VERSION

DEFAULT_START = "2024-05-14T08:00:00Z"
_RESTART_NS = 5 * NS_PER_S  # from a Beat's stop to its first read after the restart


def iter_corpus_with_twins(
    seed: int,
    events: int,
    attack_rate: float = 1e-3,
    near_miss_rate: float = 5e-3,
    source_mix: float = 0.5,
    *,
    raw_share: float = 0.0,
    rate: float = 50.0,
    hosts: int | None = None,
    start: str = DEFAULT_START,
    attack_delay_s: tuple[float, float] = (0.05, 30.0),
    attack_kinds: Sequence[str] = (ATTACK, *ATTACK_VARIANTS),
    near_miss_kinds: Sequence[str] = tuple(NEAR_MISSES),
) -> Iterator[Shipped]:
    """Stream a corpus of ``events`` events with their twins, in event-time order (the twins'
    @timestamp order), in constant memory for big corpora.

    ``attack_rate`` and ``near_miss_rate`` are scenarios per event (each scenario is two of the
    events); ``source_mix`` is the share of hosts running Elastic Defend and ``raw_share`` the share
    running Winlogbeat 8 (raw records), the rest run Winlogbeat 7; ``rate`` is the fleet's events
    per second. Scenarios cycle through the shapes present, attacks through ``attack_kinds`` (plain
    attacks and ``ATTACK_VARIANTS``) and near misses through ``near_miss_kinds``, so small corpora
    still cover every case.
    """
    unknown = set(near_miss_kinds) - NEAR_MISSES.keys()
    if unknown:
        raise ValueError(f"unknown near-miss kinds: {sorted(unknown)}")
    unknown = set(attack_kinds) - {ATTACK, *ATTACK_VARIANTS}
    if unknown:
        raise ValueError(f"unknown attack kinds: {sorted(unknown)}")
    start_ns = parse_ns(start)
    if start_ns is None:
        raise ValueError(f"invalid start time {start!r}: use ISO 8601 UTC, e.g. {DEFAULT_START}")
    if hosts is not None and hosts < 2:
        raise ValueError("a fleet needs at least two hosts (lateral movement comes from another one)")
    rng = random.Random(seed)
    factory = EventFactory(rng)
    fleet = factory.fleet(hosts or min(max(events // 200, 6), 400), source_mix, start_ns, raw_share)

    span_ns = int(events / rate * NS_PER_S)
    # Scenarios start early enough for their second event to fall inside the corpus' time range,
    # but are spread over at least a minute even in a short corpus.
    window_ns = max(span_ns - 2 * MAXSPAN_NS, span_ns // 2, MAXSPAN_NS)
    attacks = round(events * attack_rate)
    near_misses = round(events * near_miss_rate) if near_miss_kinds else 0
    scenario, decoys = ScenarioWriter(factory, fleet).write_all(
        attacks, attack_kinds, near_misses, near_miss_kinds, attack_delay_s, start_ns, window_ns
    )
    noise = NoiseWriter(factory, fleet).stream(max(events - len(scenario), 0), start_ns, rate)
    for _, shipped in heapq.merge(with_decoys(noise, decoys), scenario, key=lambda pair: pair[0]):
        yield shipped


def iter_corpus(
    seed: int,
    events: int,
    attack_rate: float = 1e-3,
    near_miss_rate: float = 5e-3,
    source_mix: float = 0.5,
    **options: Any,
) -> Iterator[Event]:
    """The corpus' events as their sources ship them (see ``iter_corpus_with_twins`` for the parameters)."""
    for shipped in iter_corpus_with_twins(seed, events, attack_rate, near_miss_rate, source_mix, **options):
        yield shipped.event


def generate_corpus(
    seed: int,
    events: int,
    attack_rate: float = 1e-3,
    near_miss_rate: float = 5e-3,
    source_mix: float = 0.5,
    **options: Any,
) -> list[Event]:
    """A corpus as a list in event-time order (see ``iter_corpus_with_twins`` for the parameters)."""
    return list(iter_corpus(seed, events, attack_rate, near_miss_rate, source_mix, **options))


def source_of(event: Event) -> str:
    """Which of the generator's sources (``SHAPES``) wrote ``event``, told by its agent."""
    agent = event["agent"]
    if agent["type"] == "endpoint":
        return DEFEND
    return WINLOGBEAT8 if agent["version"] == WINLOGBEAT8_VERSION else WINLOGBEAT


def event_time_ns(event: Event) -> int | None:
    """When ``event`` happened, in the generator's nanoseconds (None if its time is not a date).

    That is the @timestamp, except for a raw Sysmon record: there the @timestamp is when the
    record was written, and the ingest pipeline dates the event by Sysmon's ``UtcTime`` instead.
    Elasticsearch orders by the millisecond this falls in, which the nanosecond order never contradicts.
    """
    data = event.get("winlog", {}).get("event_data", {})
    if "category" not in event["event"] and "UtcTime" in data:
        return parse_ns(data["UtcTime"])
    return parse_ns(event["@timestamp"])


def arrival_order(
    events: Iterable[Event],
    seed: int,
    max_lateness_s: float = 300.0,
    duplicate_rate: float = 0.0,
    restart_share: float = 0.5,
) -> Iterator[Event]:
    """Re-order an event-time-ordered stream the way Kafka delivers it, with Beats' re-deliveries.

    Beats writes each event to a random partition and process and network events come from
    different data streams, so consumers see events out of time order. Each event gets a random
    transport delay in [0, max_lateness_s] and events are delivered in order of event time plus
    delay; hence no event arrives more than ``max_lateness_s`` behind the largest event time
    already delivered (event time as ``event_time_ns``: what the detector's lateness is measured
    in). A ``duplicate_rate`` share of events is delivered a second time, later (at-least-once
    delivery): as an exact copy, except that a ``restart_share`` of the Winlogbeat 8 records among
    them are re-sent by their Beat after a restart (see ``_resent_after_restart``), the same event
    all the same. Works as a stream, holding only the lateness window.
    """
    rng = random.Random(f"{seed}:arrival")
    # Its own stream, so that whether a re-delivery follows a restart changes nothing else.
    restarts = random.Random(f"{seed}:restart")
    ephemeral_ids: dict[str, str] = {}  # agent.id -> agent.ephemeral_id after the agent's restart
    lateness = int(max_lateness_s * NS_PER_S)
    counter = itertools.count()
    queue: list[tuple[int, int, Event]] = []
    for event in events:
        ts = event_time_ns(event)
        if ts is None:
            raise ValueError(f"event without a valid time: {event.get('@timestamp')!r}")
        while queue and queue[0][0] <= ts:
            yield heapq.heappop(queue)[2]
        # Most events are delayed a little; some wait in a lagging partition up to the limit.
        delay = rng.randrange(lateness + 1) if rng.random() < 0.2 else rng.randrange(min(lateness, 2 * NS_PER_S) + 1)
        heapq.heappush(queue, (ts + delay, next(counter), event))
        if rng.random() < duplicate_rate:
            again = ts + rng.randrange(delay, lateness + 1)
            copy = _copy(event)
            if source_of(event) == WINLOGBEAT8 and restarts.random() < restart_share:
                _resent_after_restart(copy, again - ts, ephemeral_ids, restarts)
            heapq.heappush(queue, (again, next(counter), copy))
    while queue:
        yield heapq.heappop(queue)[2]


def _copy(event: Event) -> Event:
    return orjson.loads(orjson.dumps(event))


def _resent_after_restart(event: Event, wait_ns: int, ephemeral_ids: dict[str, str], rng: random.Random) -> None:
    """Make ``event`` (a copy of a Winlogbeat 8 record) what its Beat sends again after a restart.

    A Beat that restarts before its output acknowledged a batch reads the records again from its
    last checkpoint: the same records with the new run's ``agent.ephemeral_id`` and a new read
    time (``event.created``). The restart here applied a configuration that routes events through
    Winlogbeat's ingest pipeline, which Beats name in ``@metadata.pipeline``. Nothing else changes.
    """
    agent = event["agent"]
    if agent["id"] not in ephemeral_ids:
        ephemeral_ids[agent["id"]] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    agent["ephemeral_id"] = ephemeral_ids[agent["id"]]
    read_ns = parse_ns(event["event"]["created"])
    assert read_ns is not None, "the generator writes event.created as a timestamp"
    event["event"]["created"] = iso(read_ns + wait_ns + _RESTART_NS, 3)
    event["@metadata"]["pipeline"] = f"winlogbeat-{WINLOGBEAT8_VERSION}-routing"


def write_ndjson(events: Iterable[Event], path: Path) -> int:
    """Write events as NDJSON (gzip if the name ends in ``.gz``); returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
            count += 1
    return count
