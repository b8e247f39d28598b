"""Logging: quiet at INFO, structured on request, and never a flood.

``EQLSTREAM_LOG_FORMAT=json`` writes one ECS JSON object per line with Elastic's ``ecs-logging``
formatter, for Kubernetes log pipelines; ``text`` writes ``time LEVEL logger message``. Lines that
a failing dependency repeats many times a second (librdkafka's and aiokafka's connection errors
while a broker is down) pass a ``RateLimiter``: the first of a kind is written, the next ones at
most once a minute with the count of those left out. The service's own repetitive lines (a
dead letter per record of a flood) use a ``RateLimiter`` directly.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

import ecs_logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Loggers of libraries that repeat themselves while a broker is unreachable.
NOISY_LOGGERS = ("aiokafka", "faust", "mode", "eqlstream.kafka")
QUIET_LIBRARIES = ("faust", "mode", "aiokafka")
# A library's repeats of one line: once a minute. The service's own line for an outage (which
# names the setting to check) is written every 10 s.
LIBRARY_REPEAT_INTERVAL_S = 60.0
# The message template confluent-kafka logs librdkafka's lines with: facility, client, text.
_LIBRDKAFKA_TEMPLATE = "%s [%s] %s"


def configure(level: str, fmt: str, text_format: str = TEXT_FORMAT) -> None:
    """Root logging to stderr at ``level``, as ``text`` or ``json``, with noisy libraries rate-limited."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(ecs_logging.StdlibFormatter())
    else:
        handler.setFormatter(logging.Formatter(text_format))
    handler.addFilter(RateLimitFilter(RateLimiter(LIBRARY_REPEAT_INTERVAL_S)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Faust, mode and aiokafka narrate every start, rebalance and stop at INFO: quiet unless debugging.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(level if level == "DEBUG" else "WARNING")


class RateLimiter:
    """Lets a kind of message through at most once per ``interval_s`` and counts the rest.

    Kinds are bounded by the caller (a reason and a topic, a logger and a message template), never
    taken from data.
    """

    def __init__(self, interval_s: float = 10.0, on_dropped: Callable[[int], None] | None = None) -> None:
        self.interval_s = interval_s
        self._on_dropped = on_dropped
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str) -> tuple[bool, int]:
        """(write this one?, how many of this kind were left out since the last one written)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                if self._on_dropped is not None:
                    self._on_dropped(1)
                return False, 0
            self._last[kind] = now
            return True, self._dropped.pop(kind, 0)


class RateLimitFilter(logging.Filter):
    """Rate-limits the records of ``NOISY_LOGGERS`` per logger and message template.

    For librdkafka's lines (one template for all) the facility takes the template's place.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(NOISY_LOGGERS):
            return True
        template = str(record.msg)
        if template == _LIBRDKAFKA_TEMPLATE and isinstance(record.args, tuple) and record.args:
            template = str(record.args[0])
        allowed, dropped = self._limiter.allow(f"{record.name}:{template}")
        if allowed and dropped:
            record.msg = f"{record.msg} (and {dropped} more like it)"
        return allowed


def kafka_logger(client: str) -> logging.Logger:
    """The logger a librdkafka client of the service writes to (rate-limited by ``configure``)."""
    return logging.getLogger(f"eqlstream.kafka.{client}")
