"""Health and metrics endpoints: /metrics, /livez, /readyz (docs/metrics.md).

A small stdlib HTTP server in a daemon thread, separate from both stages' loops: it keeps
answering while a stage is busy or stuck, which is what lets /livez report a stuck loop (every
stage records a heartbeat each time its loop turns). Faust's own web server stays off because
it serves table contents; this one serves only health and metrics, never event or state data.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from app.service.observer import Observer

log = logging.getLogger("eqlstream.web")


_STARTING = "starting"


@dataclass
class _StageHealth:
    ready: bool = False
    reason: str = _STARTING
    heartbeat: float = 0.0  # time.monotonic() of the last loop turn


class Health:
    """Liveness and readiness of the stages running in this process (thread-safe)."""

    def __init__(self, stall_timeout_s: float, observer: Observer) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.observer = observer
        self._stages: dict[str, _StageHealth] = {}
        self._lock = threading.Lock()

    def register(self, stage: str) -> None:
        """A stage of this process: not ready until it says so, alive from now on."""
        with self._lock:
            self._stages[stage] = _StageHealth(heartbeat=time.monotonic())
        self.observer.ready(stage, False)

    def beat(self, stage: str) -> None:
        """The stage's loop turned (cheap: called once per batch or timer tick)."""
        self._stages[stage].heartbeat = time.monotonic()

    def set_ready(self, stage: str, ready: bool, reason: str = "") -> None:
        """Readiness of one stage; a reason says why it is not ready (/readyz shows the latest).

        Logged when the readiness flips, or when the first reason is given: a reason that changes
        its wording while the stage stays unready (an outage's successive errors) is not repeated.
        """
        with self._lock:
            health = self._stages[stage]
            changed = health.ready != ready or (not ready and health.reason == _STARTING)
            was_ready = health.ready
            health.ready, health.reason = ready, reason
        self.observer.ready(stage, ready)
        if changed:
            if ready:
                log.info("stage ready stage=%s", stage)
            else:  # a warning only when a ready stage stops being ready; starting up is normal
                log.log(
                    logging.WARNING if was_ready else logging.INFO, "stage not ready stage=%s reason=%s", stage, reason
                )

    def live(self) -> tuple[bool, dict[str, str]]:
        """(alive, the stalled stages with how long their loop has been stuck)."""
        now = time.monotonic()
        with self._lock:
            stalled = {
                stage: f"loop stuck for {now - health.heartbeat:.0f}s"
                for stage, health in self._stages.items()
                if now - health.heartbeat > self.stall_timeout_s
            }
        return not stalled, stalled

    def ready(self) -> tuple[bool, dict[str, str]]:
        """(every stage ready, the reasons of those that are not)."""
        with self._lock:
            waiting = {stage: health.reason for stage, health in self._stages.items() if not health.ready}
        return bool(self._stages) and not waiting, waiting


def serve(health: Health, registry: CollectorRegistry, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoints in a daemon thread; returns the server (``server_address`` has the port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/livez":
                self._check(*health.live(), b"ok\n")
            elif path == "/readyz":
                self._check(*health.ready(), b"ready\n")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _check(self, ok: bool, problems: dict[str, str], body: bytes) -> None:
            if ok:
                self._send(200, "text/plain; charset=utf-8", body)
            else:
                self._send(503, "application/json", orjson.dumps({"problems": problems}) + b"\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
            """Probes and scrapes arrive every few seconds: not worth an INFO line each."""
            log.debug("http " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    log.info("health and metrics endpoints listening address=%s port=%d", host, server.server_address[1])
    return server
