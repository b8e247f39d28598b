"""Settings of the broker tests: their own topics and group, and a short session timeout."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.settings import Settings


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Settings:
    """Settings for one test. A 6 s session timeout lets a consumer group form in ~3 s (~23 s with the defaults)."""
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        input_topics=unique_name("input"),
        consumer_group=unique_name("group"),
        candidates_topic=unique_name("candidates"),
        candidates_partitions=4,
        alerts_topic=unique_name("alerts"),
        dead_letter_topic=unique_name("dead-letter"),
        session_timeout="6s",
        web_port=0,  # a free port each: tests run several workers at once
        fetch_max_wait="20ms",  # the embedded broker waits out the whole fetch wait on quiet topics
    )
