"""Fixtures of the example tests: alert documents as the replay CLI writes them, and a fake cluster."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples.fake_elasticsearch import FakeElasticsearch, serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _replay(*args: str, cwd: Path) -> list[bytes]:
    result = subprocess.run(
        [sys.executable, "-m", "app", "replay", "--no-progress", *args],
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return result.stdout.splitlines()


@pytest.fixture(scope="session")
def demo_alerts() -> list[bytes]:
    """The alert documents (NDJSON lines) of the bundled demo scenario: for each match two building
    blocks, then the shell."""
    alerts = _replay("demo/scenario.ndjson", cwd=ROOT)
    assert len(alerts) >= 6 and len(alerts) % 3 == 0, "the demo scenario should give at least two matches"
    return alerts


@pytest.fixture(scope="session")
def fleet_alerts(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Alerts from a synthetic fleet of every source shape (Defend, Winlogbeat 7, raw Winlogbeat 8)."""
    corpus = tmp_path_factory.mktemp("fleet") / "events.ndjson"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "eqlstream_dev.synthetic",
            "--seed",
            "7",
            "--events",
            "3000",
            "--attack-rate",
            "0.01",
            "--source-mix",
            "0.34",
            "--raw-share",
            "0.5",
            "--out",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
    )
    return _replay(str(corpus), cwd=ROOT)


@pytest.fixture
def elasticsearch() -> Iterator[FakeElasticsearch]:
    """A fake cluster on a loopback port, stopped after the test."""
    fake = FakeElasticsearch()
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()
