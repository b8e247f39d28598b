"""``python -m app run`` as child processes, configured as users configure it, and read from its /metrics.

Every service figure of the benchmark is read the way an operator reads it: from the process's own
Prometheus endpoint. The settings go to the child as the ``EQLSTREAM_*`` variables
``ServiceSettings.to_environment`` renders, so a part states exactly which settings differ from the
defaults (the broker address, the topic names and group, the state directory and a free web port;
the latency parts add the development broker's fetch max wait).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.settings import ServiceSettings
from bench.common import LOGS, ROOT, free_port, log, process_cpu_seconds

STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 180.0  # until the first record is handled: group forming on a busy machine
STALL_TIMEOUT_S = 60.0  # a counter that stops moving for this long fails the part
# Scrapes cost the measured process a little CPU: sparse while far from the target, dense near it
# (the window's end is then read within ``FINE_SCRAPE_S``).
SCRAPE_INTERVAL_S = 0.2
FINE_SCRAPE_S = 0.02
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN|[+-]Inf)$")


def bench_settings(bootstrap: str, name: str, **changes: object) -> ServiceSettings:
    """The service's default settings with this measurement's broker, topic names and group.

    ``name`` keeps measurements apart on one broker: each reads its topics from the start in its own
    consumer group. ``changes`` are the part's deliberate departures from the defaults.
    """
    values: dict[str, object] = {
        "kafka_bootstrap_servers": bootstrap,
        "input_topics": [f"{name}-input"],
        "consumer_group": name,
        "candidates_topic": f"{name}-candidates",
        "alerts_topic": f"{name}-alerts",
        "dead_letter_topic": f"{name}-dead-letter",
        **changes,
    }
    return ServiceSettings(**values)  # type: ignore[arg-type]


@dataclass
class Service:
    """One ``python -m app run --role ROLE`` process, its metrics port and its log file."""

    role: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        """Raise if the process has exited (with its log's tail)."""
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the {self.role} process exited with status {self.process.returncode}:\n{tail}")

    def metrics(self) -> dict[str, float]:
        """The process's /metrics as {series: value}; empty while the endpoint does not answer yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return {}
        samples = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match is not None:
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return samples

    def total(self, metric: str) -> float:
        """The sum of every series of ``metric`` (all labels)."""
        return sum(value for series, value in self.metrics().items() if series.partition("{")[0] == metric)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def stop(self, grace: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (a short one where a clean stop does not matter)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


def start(role: str, settings: ServiceSettings, name: str) -> Service:
    """Start ``python -m app run --role ROLE`` with ``settings``; its output goes to bench/out/logs/."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EQLSTREAM_")}
    env.update(settings.to_environment())
    env["EQLSTREAM_WEB_PORT"] = str(port)
    log_path = LOGS / f"{name}-{role}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--role", role],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    log(f"started python -m app run --role {role} (pid {process.pid}, log {log_path.relative_to(ROOT)})")
    return Service(role, process, port, log_path)


@dataclass(frozen=True)
class Window:
    """A counter of a service followed from its first movement to a target: the rate in between."""

    first: float  # the counter at the window's start (its first reading above zero)
    last: float  # the counter at its end (the first reading at or above the target)
    wall: float  # seconds between the two readings
    cpu: float  # the process's CPU seconds over the same span

    @property
    def counted(self) -> float:
        return self.last - self.first

    @property
    def rate(self) -> float:
        return self.counted / self.wall

    @property
    def per_core(self) -> float:
        return self.counted / self.cpu if self.cpu else 0.0


def follow(
    service: Service, read: Callable[[Service], float], target: float, on_start: Callable[[], None] | None = None
) -> Window:
    """Scrape ``read(service)`` until it reaches ``target``; the window runs from the first reading
    above zero (the first records handled: start-up and group forming are not throughput) to the
    first reading at the target. ``on_start`` is called once, when the window opens."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (first := read(service)) <= 0:
        service.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {service.role} process handled nothing within {START_TIMEOUT_S:.0f} s")
        time.sleep(FINE_SCRAPE_S)
    started, cpu_started = time.perf_counter(), service.cpu_seconds()
    if on_start is not None:
        on_start()
    value, moved = first, time.monotonic()
    while value < target:
        elapsed = time.perf_counter() - started
        rate = (value - first) / elapsed if elapsed > 0 else 0.0
        near = rate <= 0 or (target - value) / rate < 2 * SCRAPE_INTERVAL_S
        time.sleep(FINE_SCRAPE_S if near else SCRAPE_INTERVAL_S)
        service.check()
        latest = read(service)
        if latest > value:
            value, moved = latest, time.monotonic()
        elif time.monotonic() - moved > STALL_TIMEOUT_S:
            raise RuntimeError(f"the {service.role} process stalled at {value:,.0f} of {target:,.0f}")
    return Window(first, value, time.perf_counter() - started, service.cpu_seconds() - cpu_started)
