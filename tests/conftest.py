"""Fixtures shared by the test packages.

Broker tests run against ``$KAFKA_BOOTSTRAP_SERVERS`` when it is set (a real Kafka, PLAINTEXT),
else against one embedded Tansu broker started for the whole session, only if a test asks for it.
Every test names its own topics and groups (``unique_name``), so tests never see each other's
records, on a shared real cluster either.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from app.kafka.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the Kafka the broker tests use."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("input")`` -> ``"input-<10 hex digits>"``: a topic or group name no other test uses."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"
