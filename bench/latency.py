"""Detection latency at a fixed offered load (20,000 events/s by default), the service as child processes.

The service runs as ``python -m app run`` on the embedded development broker: ``all`` (both stages in
one process) or ``split`` (``--role ingest`` and ``--role sequence`` side by side). A paced producer
in this process offers noise (a pool of the synthetic fleet's events, cycled) at the fixed rate,
with attacks sprinkled in: the first event of an attack, then its second event
``SECOND_EVENT_DELAY_S`` later. The latency of an attack is from the moment its second event is
handed to the producer to the moment a consumer of the alerts topic (a thread of this process,
polling continuously) reads the first alert document of that attack. The service first has to
answer one attack (consumer groups formed, partitions assigned) before the measured window starts.

Settings: the defaults, apart from the broker, the topic names, the state directory, no alert cap
(the benchmark sends more attacks than Kibana's max_signals) and ``EQLSTREAM_FETCH_MAX_WAIT=20ms``,
the setting for the embedded broker, which holds a fetch on a quiet topic for the consumer's whole
max wait (Apache Kafka answers as soon as records arrive); the ``-wait500`` variants keep the
default of 500 ms, to show what that broker behaviour costs.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from eqlstream_dev import synthetic

from bench.common import DEFEND_SHARE, INPUT_PARTITIONS, RAW_SHARE, Part, create_topic, log, produce
from bench.service import Service, bench_settings, start

SECOND_EVENT_DELAY_S = 0.2
ATTACKS_PER_S = 2.0
WARMUP_TIMEOUT_S = 180.0
DRAIN_S = 15.0  # after the window, how long late alerts are still awaited
DEVELOPMENT_FETCH_WAIT = "20ms"
_CASE_ID = re.compile(rb'synthetic_case_id"\s*:\s*"([^"]+)"')


@dataclass
class Material:
    """What the producer sends: a pool of noise lines and fresh attacks (two lines each)."""

    noise: list[bytes]
    attacks: list[tuple[str, bytes, bytes]]  # case id, first event, second event


def material(seed: int, noise_pool: int, attacks: int) -> Material:
    """Noise and attacks from one synthetic fleet, timed like a 20,000 events/s stream.

    The attacks' event times lie within the noise's span, so the watermark (driven by the cycled
    noise) never makes them late; each attack has its own process entity, so none is a duplicate.
    """
    events = synthetic.iter_corpus(
        seed,
        noise_pool + 2 * attacks,
        attacks / (noise_pool + 2 * attacks),
        0.0,
        DEFEND_SHARE,
        raw_share=RAW_SHARE,
        rate=20_000.0,
        attack_delay_s=(0.05, 1.0),
        near_miss_kinds=(),
    )
    noise: list[bytes] = []
    halves: dict[str, list[bytes]] = {}
    for event in events:
        line = orjson.dumps(event)
        case = event.get("labels", {}).get(synthetic.CASE_ID_LABEL)
        if case is None:
            noise.append(line)
        else:
            halves.setdefault(case, []).append(line)
    return Material(noise, [(case, pair[0], pair[1]) for case, pair in halves.items() if len(pair) == 2])


@dataclass
class AlertWatcher:
    """Reads the alerts topic from its end in a thread; records when each attack's first alert arrives.

    ``pattern``'s first group names the attack in an alert document's bytes.
    """

    bootstrap: str
    topic: str
    partitions: int
    pattern: re.Pattern[bytes] = _CASE_ID
    seen: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-alerts-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in range(self.partitions)])
        self._thread = threading.Thread(target=self._run, name="alert-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for message in self._consumer.consume(100, 0.01):
                    if message.error() is not None:
                        continue
                    arrived = time.perf_counter()
                    match = self.pattern.search(message.value() or b"")
                    if match is not None:
                        self.seen.setdefault(match.group(1).decode(), arrived)
        finally:
            self._consumer.close()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(10)


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in milliseconds."""
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1e3, p99 * 1e3, ordered[-1] * 1e3


def measure_latency(bootstrap: str, variant: str, rate: float, seconds: float, seed: int) -> Part:
    """Offer ``rate`` events/s for ``seconds`` (after a warm-up) to the service run as ``variant``:
    ``all`` or ``split``, with ``-wait500`` for the service's default fetch max wait."""
    roles, _, experiment = variant.partition("-")
    if roles == "all":
        title = "one process, `python -m app run` (role all)"
    else:
        title = "two processes, `python -m app run --role ingest` + `--role sequence`"
    fetch_wait = DEVELOPMENT_FETCH_WAIT
    if experiment == "wait500":
        title += "; fetch max wait 500 ms (the default, which this broker waits out on quiet topics)"
        fetch_wait = "500ms"
    elif experiment:
        raise ValueError(f"unknown latency variant {variant!r}")
    part = Part(f"latency_{variant}", f"Detection latency at {rate:,.0f} events/s: {title}")
    attacks_needed = int((seconds + WARMUP_TIMEOUT_S / 4) * ATTACKS_PER_S) + 20
    stuff = material(seed, noise_pool=min(100_000, int(rate * max(seconds, 5))), attacks=attacks_needed)
    name = f"bench-latency-{variant}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as data_dir:
        settings = bench_settings(bootstrap, name, data_dir=Path(data_dir), fetch_max_wait=fetch_wait, alert_cap=0)
        create_topic(bootstrap, settings.input_topics[0], INPUT_PARTITIONS)
        services = [start(role, settings, name) for role in (["all"] if roles == "all" else ["sequence", "ingest"])]
        watcher = AlertWatcher(bootstrap, settings.alerts_topic, settings.candidates_partitions)
        try:
            latencies, sent, offered, window = _offer(
                settings.input_topics[0], bootstrap, stuff, watcher, services, rate, seconds
            )
        finally:
            cpu = {service.role: service.cpu_seconds() for service in services if service.process.poll() is None}
            for service in services:
                service.stop()
            watcher.close()
    if not latencies:
        raise RuntimeError("no alert arrived in the measured window")
    p50, p99, worst = percentiles(latencies)
    part.figures.update(p50_ms=p50, p99_ms=p99, max_ms=worst, offered=offered, attacks=sent, alerted=len(latencies))
    part.row(
        "offered load",
        f"{offered:,.0f} events/s for {window:.0f} s (target {rate:,.0f}), {ATTACKS_PER_S:g} attacks/s, "
        f"second event {SECOND_EVENT_DELAY_S * 1000:.0f} ms after the first; development broker",
    )
    part.row("latency p50 / p99 / max", f"**{p50:,.0f} / {p99:,.0f} / {worst:,.0f} ms**")
    part.row(
        "attacks alerted",
        f"{len(latencies)} of {sent} sent in the window (the rest: no alert within {DRAIN_S:.0f} s after the window)",
    )
    part.row("service CPU (whole run, warm-up included)", ", ".join(f"{r}: {s:.0f} s" for r, s in cpu.items()))
    log(f"latency {variant}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms ({len(latencies)}/{sent})")
    return part


def _offer(
    topic: str,
    bootstrap: str,
    stuff: Material,
    watcher: AlertWatcher,
    services: list[Service],
    rate: float,
    seconds: float,
) -> tuple[list[float], int, float, float]:
    """Paced producing: warm-up until an alert arrives, then the measured window.

    Returns (latencies in seconds, attacks sent in the window, offered events/s, window seconds).
    """
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1, "queue.buffering.max.kbytes": 1_048_576}
    )
    attacks = deque(stuff.attacks)
    pending: deque[tuple[float, str, bytes]] = deque()  # second events, due time
    produced_second: dict[str, float] = {}
    noise_index = 0
    every = rate / ATTACKS_PER_S  # events between two attacks
    started = time.perf_counter()
    window_start: float | None = None
    sent = 0
    next_attack = 0.0
    first_warm_case: str | None = None
    last_check = started
    while True:
        now = time.perf_counter()
        if window_start is None:
            if first_warm_case is not None and first_warm_case in watcher.seen:
                window_start, sent = now, 0
                log("service answered; measuring")
            elif now - started > WARMUP_TIMEOUT_S:
                raise RuntimeError(f"no alert within {WARMUP_TIMEOUT_S:.0f} s of warm-up")
        elif now - window_start >= seconds:
            break
        if now - last_check > 2:
            for service in services:
                service.check()
            last_check = now
        due = int((now - started) * rate)
        while noise_index < due:
            if pending and pending[0][0] <= now:
                _, case, line = pending.popleft()
                produced_second[case] = time.perf_counter()
                produce(producer, topic, line)
            elif noise_index >= next_attack and attacks:
                case, first, second = attacks.popleft()
                produce(producer, topic, first)
                pending.append((now + SECOND_EVENT_DELAY_S, case, second))
                first_warm_case = first_warm_case or case
                next_attack += every
            else:
                produce(producer, topic, stuff.noise[noise_index % len(stuff.noise)])
            noise_index += 1
            if window_start is not None:
                sent += 1
        producer.poll(0)
        time.sleep(0.001)
    window = time.perf_counter() - window_start
    offered = sent / window
    while pending:
        _, case, line = pending.popleft()
        produced_second[case] = time.perf_counter()
        produce(producer, topic, line)
    producer.flush(30)
    in_window = {case: t for case, t in produced_second.items() if t >= window_start}
    wait_for_alerts(watcher, in_window, DRAIN_S)
    latencies = [watcher.seen[case] - t for case, t in in_window.items() if case in watcher.seen]
    return latencies, len(in_window), offered, window


def wait_for_alerts(watcher: AlertWatcher, attacks: dict[str, float], seconds: float) -> None:
    """Wait up to ``seconds`` for an alert of each of ``attacks``."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and not all(case in watcher.seen for case in attacks):
        time.sleep(0.1)
