"""The health and metrics endpoints: liveness by heartbeat, readiness by stage, nothing else served."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.service.metrics import PrometheusObserver
from app.service.web import Health, serve


@pytest.fixture
def endpoint() -> Iterator[tuple[Health, str]]:
    observer = PrometheusObserver()  # a registry of its own: tests never share metrics
    health = Health(stall_timeout_s=0.2, observer=observer)
    server = serve(health, observer.registry, "127.0.0.1", 0)
    yield health, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_not_ready_until_every_stage_is(endpoint: tuple[Health, str]) -> None:
    health, url = endpoint
    assert get(f"{url}/readyz")[0] == 503  # no stage registered yet: nothing to be ready
    health.register("ingest")
    health.register("sequence")
    health.set_ready("ingest", True)
    status, body = get(f"{url}/readyz")
    assert status == 503
    assert orjson.loads(body) == {"problems": {"sequence": "starting"}}
    health.set_ready("sequence", False, "state directory '/x' is not writable: Read-only file system")
    assert orjson.loads(get(f"{url}/readyz")[1])["problems"]["sequence"].startswith("state directory")
    health.set_ready("sequence", True)
    assert get(f"{url}/readyz") == (200, b"ready\n")


def test_liveness_fails_when_a_loop_stops_turning(endpoint: tuple[Health, str]) -> None:
    health, url = endpoint
    health.register("ingest")
    assert get(f"{url}/livez") == (200, b"ok\n")
    time.sleep(0.3)
    status, body = get(f"{url}/livez")
    assert status == 503
    assert "ingest" in orjson.loads(body)["problems"]
    health.beat("ingest")
    assert get(f"{url}/livez")[0] == 200


def test_readiness_is_a_metric_too(endpoint: tuple[Health, str]) -> None:
    health, url = endpoint
    health.register("ingest")
    health.set_ready("ingest", True)
    families = {f.name: f for f in text_string_to_metric_families(get(f"{url}/metrics")[1].decode())}
    ready = {s.labels["stage"]: s.value for s in families["eqlstream_ready"].samples}
    assert ready["ingest"] == 1.0
    health.set_ready("ingest", False, "brokers unreachable")
    families = {f.name: f for f in text_string_to_metric_families(get(f"{url}/metrics")[1].decode())}
    assert {s.labels["stage"]: s.value for s in families["eqlstream_ready"].samples}["ingest"] == 0.0
    assert "eqlstream_build_info" in families
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


@pytest.mark.parametrize("path", ["/", "/table/sequence-state/", "/router/", "/metrics/../table", "/livez/x"])
def test_nothing_else_is_served(endpoint: tuple[Health, str], path: str) -> None:
    _, url = endpoint
    assert get(f"{url}{path}")[0] == 404
