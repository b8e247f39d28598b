"""The one settings factory of the broker tests: a ``ServiceSettings`` of their own per test.

Every test names its own topics and group (``unique_name``), so tests never see each other's
records, on a shared real cluster either. The values suit a single test broker on loopback: a
6 s session timeout lets a consumer group form in ~3 s (~23 s with the defaults), a 20 ms fetch
max wait (the embedded broker holds a fetch on a quiet topic for the whole wait), replication
factor and min.insync.replicas 1 (one broker), web port 0 (a free port each: tests run several
workers at once), 4 candidates partitions.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from app.settings import ServiceSettings

CANDIDATES_PARTITIONS = 4


def unique_name(prefix: str) -> str:
    """``unique_name("input")`` -> ``"input-<10 hex digits>"``: a topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def service_settings(bootstrap: str, data_dir: Path | None = None, **overrides: Any) -> ServiceSettings:
    """Settings for one test against ``bootstrap``: unique names, the values above, then ``overrides``.

    ``overrides`` are validated like environment variables (durations as text, e.g. ``"5s"``).
    """
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "input_topics": [unique_name("input")],
        "consumer_group": unique_name("group"),
        "candidates_topic": unique_name("candidates"),
        "candidates_partitions": CANDIDATES_PARTITIONS,
        "alerts_topic": unique_name("alerts"),
        "dead_letter_topic": unique_name("dead-letter"),
        "session_timeout": "6s",
        "fetch_max_wait": "20ms",
        "web_port": 0,
        "topic_replication_factor": 1,
        "topic_min_insync_replicas": 1,
    }
    if data_dir is not None:
        values["data_dir"] = data_dir
    return ServiceSettings(**(values | overrides))


def with_settings(settings: ServiceSettings, **overrides: Any) -> ServiceSettings:
    """``settings`` with ``overrides``, validated again (``model_copy`` would store ``"5s"`` as text)."""
    values = {name: getattr(settings, name) for name in type(settings).model_fields}
    return type(settings)(**(values | overrides))


def input_topic(settings: ServiceSettings) -> str:
    """The (single) input topic of a test's settings."""
    (topic,) = settings.input_topics
    return topic
