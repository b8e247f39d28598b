"""The running service seen the way operators see it: /readyz, /metrics, promtool and a real Prometheus.

A worker (``python -m app run``) processes two attacks, noise, malformed input records and a record
that is not a candidate on its candidates topic; its exposition must count each exactly, pass
``promtool check metrics``, and a Prometheus server scraping it on loopback must answer PromQL
queries with the same figures and give data to every panel of the example Grafana dashboard.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from eqlstream_dev import synthetic
from prometheus_client.parser import text_string_to_metric_families

from app.service.records import header_map
from app.settings import ServiceSettings
from tests.support.broker import prepare_topics, produce, read_topic
from tests.support.dashboards import expressions, grafana_substituted
from tests.support.detection import RULE, attack
from tests.support.paths import ROOT
from tests.support.settings import input_topic, with_settings
from tests.support.worker import Worker, free_port

RULE_NAME = RULE.meta.name
PARTITIONS = 4


def tool(name: str) -> str:
    """A tool installed by ``make tools`` (scripts/install-tools.sh): .tools/bin first, then PATH."""
    found = shutil.which(name, path=f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{name} is missing: run `make tools`"
    return found


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def wait_for(check, timeout: float, what: str):  # noqa: ANN001, ANN201 - a polling helper
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def send(settings: ServiceSettings, events: list[dict[str, Any] | bytes], rng: random.Random) -> None:
    records = [(None, e if isinstance(e, bytes) else orjson.dumps(e), rng.randrange(PARTITIONS)) for e in events]
    produce(settings, input_topic(settings), records)


def shells(settings: ServiceSettings, expected: int) -> list[str]:
    messages = read_topic(settings, settings.alerts_topic, PARTITIONS, 3 * expected, timeout=120)
    documents = [orjson.loads(m.value()) for m in messages]
    return [d["kibana.alert.uuid"] for d in documents if d["kibana.alert.depth"] == 2]


@pytest.mark.timeout(300)
def test_metrics_count_what_happened_and_prometheus_scrapes_them(
    kafka_settings: ServiceSettings, tmp_path: Path
) -> None:
    settings = with_settings(kafka_settings, data_dir=tmp_path / "state")
    prepare_topics(settings, PARTITIONS)
    topic = input_topic(settings)
    rng = random.Random(5)
    attacks = [attack(1, "h1"), attack(2, "h2")]
    noise = synthetic.generate_corpus(3, 200, attack_rate=0.0, near_miss_rate=0.0)
    bad = [b"plain text mshta.exe", b'["mshta.exe"]']
    records: list[dict[str, Any] | bytes] = [*noise, *bad, *[event for pair in attacks for event in pair]]
    with Worker(settings, "observed", tmp_path) as worker:
        port = worker.web_port
        base = f"http://127.0.0.1:{port}"
        worker.wait_ready(90)
        send(settings, records, rng)
        # A record on the candidates topic that the service did not write: a dead letter, not a crash.
        produce(settings, settings.candidates_topic, [(b"k", b'{"rule_id": 1}', 0)])
        assert len(shells(settings, len(attacks))) == len(attacks)

        alerts = ("eqlstream_alerts_emitted_total", (("rule", RULE_NAME),))

        lag = ("eqlstream_consumer_lag_records", (("stage", "ingest"), ("topic", topic)))

        def scraped() -> dict | None:
            """The exposition once the alerts are counted and the lag was measured (every 5 s)."""
            status, body = http_get(f"{base}/metrics")
            values = samples(body) if status == 200 else {}
            return values if values.get(alerts) == len(attacks) and lag in values else None

        values = wait_for(scraped, 30, "the alerts counted in /metrics")
        assert values[("eqlstream_events_consumed_total", (("topic", topic),))] == len(records)
        for stage, reason in [
            ("ingest", "invalid_json"),
            ("ingest", "not_an_object"),
            ("sequence", "invalid_candidate"),
        ]:
            assert values[("eqlstream_events_rejected_total", (("reason", reason), ("stage", stage)))] == 1
        assert values[("eqlstream_dead_letter_records_total", (("stage", "ingest"),))] == 2
        assert values[("eqlstream_dead_letter_records_total", (("stage", "sequence"),))] == 1
        assert values[("eqlstream_candidates_total", (("rule", RULE_NAME),))] == 4
        accepted = ("eqlstream_sequence_candidates_total", (("outcome", "accepted"), ("rule", RULE_NAME)))
        assert values[accepted] == 4
        assert values[("eqlstream_sequences_total", (("outcome", "new"), ("rule", RULE_NAME)))] == 2
        assert values[("eqlstream_sequences_total", (("outcome", "revised"), ("rule", RULE_NAME)))] == 0
        assert not any(
            name == "eqlstream_sequences_total" and dict(labels)["outcome"] == "repeated" for name, labels in values
        )
        assert values[("eqlstream_alerts_suppressed_total", (("rule", RULE_NAME),))] == 0
        assert values[("eqlstream_detection_latency_seconds_count", (("rule", RULE_NAME),))] == 2
        # One histogram of batch processing time per stage (it replaced the ingest batch and sequence event ones).
        for stage in ("ingest", "sequence"):
            assert values[("eqlstream_batch_duration_seconds_count", (("stage", stage),))] >= 1
        assert values[("eqlstream_ready", (("stage", "ingest"),))] == 1
        assert values[("eqlstream_ready", (("stage", "sequence"),))] == 1
        assert values[("eqlstream_state_keys", ())] >= 1  # the two keys wait for event time to expire them
        assert values[("eqlstream_last_processed_timestamp_seconds", (("stage", "sequence"),))] > time.time() - 300
        assert values[lag] >= 0

        exposition = http_get(f"{base}/metrics")[1]
        check = subprocess.run([tool("promtool"), "check", "metrics"], input=exposition, capture_output=True)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

        with prometheus_scraping(port, tmp_path) as prometheus:
            consumed = f'eqlstream_events_consumed_total{{topic="{topic}"}}'
            assert wait_for(lambda: prometheus.value(consumed) == len(records), 60, "Prometheus to scrape the counter")
            assert prometheus.value("sum(eqlstream_alerts_emitted_total)") == len(attacks)
            assert prometheus.value("min(eqlstream_ready)") == 1

            # Every query of the Grafana dashboard shows data from the live service (rates need two scrapes).
            def empty_panels() -> list[str]:
                return [title for title, expr in expressions() if not prometheus.results(grafana_substituted(expr))]

            try:
                wait_for(lambda: not empty_panels(), 30, "data in every dashboard panel")
            except AssertionError:
                raise AssertionError(f"dashboard panels without data: {empty_panels()}") from None

    dead = read_topic(settings, settings.dead_letter_topic, PARTITIONS, 3)
    reasons = sorted(header_map(m.headers())["eqlstream.reason"] for m in dead)
    assert reasons == ["invalid_candidate", "invalid_json", "not_an_object"]


class prometheus_scraping:  # noqa: N801 - used as a context manager like a function
    """A real Prometheus server on loopback scraping the service every second; yields a query function."""

    def __init__(self, target_port: int, tmp_path: Path) -> None:
        self.port = free_port()
        self.directory = tmp_path / "prometheus"
        self.directory.mkdir()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "eqlstream", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (self.directory / "prometheus.yml").write_bytes(orjson.dumps(config))  # JSON is YAML

    def __enter__(self) -> prometheus_scraping:
        self.log = open(self.directory / "prometheus.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        return self

    def results(self, promql: str) -> list[dict]:
        """The series an instant query returns (none while Prometheus is starting or on an error)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url)
        return orjson.loads(body)["data"]["result"] if status == 200 else []

    def value(self, promql: str) -> float | None:
        """The single value of an instant query, or None while there is none."""
        result = self.results(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
