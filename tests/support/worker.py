"""``python -m app run`` as a child process, and the small network helpers of waiting for it.

A ``Worker`` runs the service with a test's settings (``ServiceSettings.to_environment``), its
own loopback web port and its own log file, so that several workers of one test can be told
apart, probed (``/readyz``) and killed independently. Every wait has a deadline and a failure
says what the worker logged last.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from app.settings import ServiceSettings
from tests.support.paths import ROOT


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts TCP connections on ``port`` (fails if ``process`` exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process {process.args!r} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        assert time.monotonic() < deadline, f"nothing listens on port {port} after {timeout} s"
        time.sleep(0.1)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int | None, str]:
    """(HTTP status, body) of a GET on loopback; (None, why) when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as exc:
        return None, str(exc)
    finally:
        connection.close()


class Worker:
    """``python -m app run`` as a child process with its own web port and log file (``<log_dir>/<name>.log``).

    ``static``: the worker's name is its static group membership id (``EQLSTREAM_INSTANCE_ID``), so a
    restart takes its partitions back without a rebalance. The embedded broker never expires a static
    member that left (measured: none in 40 s with a 6 s session timeout; Apache Kafka does after the
    session timeout), so workers that leave for good must be dynamic members there.
    ``environment`` adds or overrides variables. Usable as a context manager (stopped on exit).
    """

    def __init__(
        self,
        settings: ServiceSettings,
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
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "run"], env=environment, cwd=ROOT, stdout=log, stderr=log
            )
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

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

    def get(self, path: str) -> tuple[int | None, str]:
        """(HTTP status, body) of another endpoint (/livez, /metrics)."""
        return http_get(self.web_port, path, timeout=10)

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start until /readyz answered 200 (fails after ``timeout`` or if the process exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), f"worker {self.name} exited with {self.returncode}:\n{self.log_tail()}"
            if self.readyz()[0] == 200:
                return time.monotonic() - self.started_at
            time.sleep(0.25)
        raise AssertionError(f"worker {self.name} not ready after {timeout} s: {self.readyz()}\n{self.log_tail()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> Worker:
        return self if self.process is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
