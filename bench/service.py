"""Starting and stopping ``python -m app run`` subprocesses for the latency and memory parts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from app.settings import Settings
from bench.common import OUT, ROOT, log

STOP_TIMEOUT_S = 30.0


@dataclass
class Service:
    """One ``python -m app run --role ROLE`` process and its log file."""

    role: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        """Raise if the process has exited (with its log's tail)."""
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the {self.role} process exited with status {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


def service_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The service's environment for ``settings`` (EQLSTREAM_* variables), for the embedded broker."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EQLSTREAM_")}
    env.update(
        {
            "EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "EQLSTREAM_INPUT_TOPICS": settings.input_topics,
            "EQLSTREAM_CONSUMER_GROUP": settings.consumer_group,
            "EQLSTREAM_CANDIDATES_TOPIC": settings.candidates_topic,
            "EQLSTREAM_CANDIDATES_PARTITIONS": str(settings.candidates_partitions),
            "EQLSTREAM_ALERTS_TOPIC": settings.alerts_topic,
            "EQLSTREAM_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
            "EQLSTREAM_SESSION_TIMEOUT": settings.session_timeout,
            "EQLSTREAM_SINGLE_RECORD_BATCHES": "true" if settings.single_record_batches else "false",
            "EQLSTREAM_DATA_DIR": str(data_dir),
            "EQLSTREAM_WEB_PORT": "0",  # a free port: several service processes run at once
            "EQLSTREAM_ALERT_CAP": "0",  # the benchmark sends more attacks than Kibana's max_signals
            "EQLSTREAM_LOG_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    # The embedded broker holds a fetch on a quiet topic for the whole max wait (README, configuration).
    env["EQLSTREAM_FETCH_MAX_WAIT"] = "20ms"
    return env


def start(role: str, settings: Settings, data_dir: Path, name: str, extra_env: dict[str, str] | None = None) -> Service:
    """Start ``python -m app run --role ROLE`` with ``settings``; its output goes to bench/out/logs/."""
    env = {**service_env(settings, data_dir), **(extra_env or {})}
    log_path = OUT / "logs" / f"{name}-{role}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--role", role],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT,
        )
    log(f"started python -m app run --role {role} (pid {process.pid}, log {log_path.relative_to(ROOT)})")
    return Service(role, process, log_path)
