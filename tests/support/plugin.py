"""The fixtures every test package may use (registered by tests/conftest.py as a pytest plugin).

* ``kafka_bootstrap`` (session): the Kafka of the broker tests, ``$KAFKA_BOOTSTRAP_SERVERS`` or one
  embedded broker started only if a test asks for it;
* ``unique_name``: topic and group names no other test uses;
* ``kafka_settings``: a test's own ``ServiceSettings`` (``tests.support.settings.service_settings``)
  against that broker, with its state under the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.settings import ServiceSettings
from tests.support import settings as test_settings
from tests.support.broker import broker_bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the Kafka the broker tests use."""
    with broker_bootstrap() as bootstrap:
        yield bootstrap


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("input")`` -> ``"input-<10 hex digits>"``."""
    return test_settings.unique_name


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, tmp_path: Path) -> ServiceSettings:
    """Settings for one test: its own topics and group, short timeouts, state in ``tmp_path/state``."""
    return test_settings.service_settings(kafka_bootstrap, tmp_path / "state")
