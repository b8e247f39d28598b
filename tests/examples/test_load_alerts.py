"""``python -m app load-alerts``: alert documents into Elasticsearch, once each.

No Elasticsearch is installable here (the package indexes carry none), so these tests run the
loader against ``fake_elasticsearch``, a loopback server that answers ``_bulk`` with
Elasticsearch's per-item semantics, and assert the exact request bodies the loader sends.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.load_alerts import Elasticsearch, LoadReport, bulk_body, load, read_documents
from tests.examples.conftest import ROOT
from tests.examples.fake_elasticsearch import FakeElasticsearch

# load-alerts' default index: EQLSTREAM_ALERTS_INDEX's default, which the alerts' ancestors name.
INDEX = "eqlstream-alerts-default"


def _id(line: bytes) -> str:
    return json.loads(line)["kibana.alert.uuid"]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _pairs(body: bytes) -> list[tuple[dict, bytes]]:
    lines = body.split(b"\n")
    assert lines[-1] == b"", "a bulk body ends with a newline"
    lines = lines[:-1]
    return [(json.loads(action), source) for action, source in zip(lines[::2], lines[1::2], strict=True)]


def test_request_body_is_action_line_with_alert_id_then_the_document_unchanged(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts[:2])

    status = main(["load-alerts", "--elasticsearch", elasticsearch.url, "--api-key", "a2V5OnNlY3JldA==", str(alerts)])

    assert status == 0
    (request,) = elasticsearch.requests
    assert request.path == "/eqlstream-alerts-default/_bulk"
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert request.headers["Authorization"] == "ApiKey a2V5OnNlY3JldA=="
    expected = b"".join(
        b'{"create":{"_id":"' + _id(line).encode() + b'"}}\n' + line + b"\n" for line in demo_alerts[:2]
    )
    assert request.body == expected
    assert "created: 2, already present: 0, updated: 0, failed: 0" in capsys.readouterr().err


def test_every_replayed_document_is_stored_under_its_alert_id(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path
) -> None:
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)

    assert main(["load-alerts", "--elasticsearch", elasticsearch.url, str(alerts)]) == 0

    stored = elasticsearch.documents[INDEX]
    assert stored == {_id(line): json.loads(line) for line in demo_alerts}
    assert len(stored) == len(demo_alerts)  # every match: 2 building blocks + 1 shell


def test_chunks_by_document_count_in_input_order(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)

    assert main(["load-alerts", "--elasticsearch", elasticsearch.url, "--chunk-size", "4", str(alerts)]) == 0

    bodies = [_pairs(request.body) for request in elasticsearch.requests]
    assert [len(pairs) for pairs in bodies] == [
        min(4, len(demo_alerts) - start) for start in range(0, len(demo_alerts), 4)
    ]
    assert [source for pairs in bodies for _, source in pairs] == demo_alerts
    assert "bulk requests: 2" in capsys.readouterr().err


def test_chunks_by_bytes_and_an_oversize_document_goes_alone(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes]
) -> None:
    report = LoadReport()
    docs = list(read_documents(io.BytesIO(b"\n".join(demo_alerts)), "mem", report))
    limit = len(demo_alerts[0]) + len(demo_alerts[1])  # the first two fit exactly

    load(docs, Elasticsearch(elasticsearch.url), report, max_docs=100, max_bytes=limit)

    sizes = [len(_pairs(request.body)) for request in elasticsearch.requests]
    assert sum(sizes) == len(demo_alerts) and sizes[0] == 2
    assert all(len(request.body) < 2 * limit + 1000 for request in elasticsearch.requests)
    report_one = LoadReport()
    load(docs[:1], Elasticsearch(elasticsearch.url), report_one, max_docs=100, max_bytes=10)
    assert report_one.already_present == 1  # sent alone although larger than the limit


def test_loading_twice_stores_each_alert_once_and_keeps_what_is_there(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)
    assert main(["load-alerts", "--elasticsearch", elasticsearch.url, str(alerts)]) == 0
    first_id = _id(demo_alerts[0])
    elasticsearch.documents[INDEX][first_id]["kibana.alert.workflow_status"] = "acknowledged"
    capsys.readouterr()

    assert main(["load-alerts", "--elasticsearch", elasticsearch.url, str(alerts)]) == 0

    assert f"created: 0, already present: {len(demo_alerts)}, updated: 0, failed: 0" in capsys.readouterr().err
    stored = elasticsearch.documents[INDEX]
    assert len(stored) == len(demo_alerts)
    assert stored[first_id]["kibana.alert.workflow_status"] == "acknowledged"  # an analyst's change survives


def test_op_index_overwrites_existing_alerts(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)
    main(["load-alerts", "--elasticsearch", elasticsearch.url, str(alerts)])
    capsys.readouterr()

    assert main(["load-alerts", "--elasticsearch", elasticsearch.url, "--op", "index", str(alerts)]) == 0

    assert _pairs(elasticsearch.requests[-1].body)[0][0] == {"index": {"_id": _id(demo_alerts[0])}}
    assert f"created: 0, already present: 0, updated: {len(demo_alerts)}, failed: 0" in capsys.readouterr().err


def test_item_errors_are_reported_with_origin_and_id_and_the_rest_is_stored(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = _id(demo_alerts[1])
    elasticsearch.reject[bad] = {
        "type": "document_parsing_exception",
        "reason": "[1:42] failed to parse field [host] of type [object]",
        "caused_by": {"type": "illegal_argument_exception", "reason": "not an object"},
    }
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)

    status = main(["load-alerts", "--elasticsearch", elasticsearch.url, str(alerts)])

    err = capsys.readouterr().err
    assert status == 1
    assert (
        f"{alerts}:2 id={bad}: HTTP 400 document_parsing_exception: [1:42] failed to parse field [host] of type "
        "[object] (caused by illegal_argument_exception: not an object)"
    ) in err
    assert f"created: {len(demo_alerts) - 1}, already present: 0, updated: 0, failed: 1" in err
    assert set(elasticsearch.documents[INDEX]) == {_id(line) for line in demo_alerts} - {bad}


def test_items_the_cluster_was_too_busy_for_are_sent_again(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes]
) -> None:
    busy = _id(demo_alerts[2])
    elasticsearch.throttle[busy] = 2
    report = LoadReport()
    pauses: list[float] = []

    load(
        read_documents(io.BytesIO(b"\n".join(demo_alerts)), "mem", report),
        Elasticsearch(elasticsearch.url),
        report,
        sleep=pauses.append,
    )

    assert report.created == len(demo_alerts) and report.ok
    assert pauses == [1.0, 2.0]
    assert [len(_pairs(request.body)) for request in elasticsearch.requests] == [len(demo_alerts), 1, 1]
    assert _pairs(elasticsearch.requests[1].body)[0][0] == {"create": {"_id": busy}}


def test_a_request_the_cluster_could_not_take_is_sent_again(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes]
) -> None:
    elasticsearch.unavailable = 1
    report = LoadReport()
    pauses: list[float] = []

    load(
        read_documents(io.BytesIO(b"\n".join(demo_alerts)), "mem", report),
        Elasticsearch(elasticsearch.url),
        report,
        sleep=pauses.append,
    )

    assert report.created == len(demo_alerts) and report.ok
    assert pauses == [1.0]
    assert elasticsearch.requests[0].body == elasticsearch.requests[1].body


def test_an_item_still_throttled_after_the_retries_is_a_failure(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes]
) -> None:
    elasticsearch.throttle[_id(demo_alerts[0])] = 99
    report = LoadReport()

    load(
        read_documents(io.BytesIO(demo_alerts[0]), "mem", report),
        Elasticsearch(elasticsearch.url),
        report,
        retries=2,
        sleep=lambda _: None,
    )

    assert len(elasticsearch.requests) == 3
    assert report.failures == [f"mem:1 id={_id(demo_alerts[0])}: HTTP 429 es_rejected_execution_exception: queue full"]


def test_lines_that_are_not_alert_documents_are_reported_and_skipped(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    alerts = _write(tmp_path / "mixed.ndjson", [b"not json", demo_alerts[0], b"", b'{"kibana.alert": 1}', b"[1]"])

    status = main(["load-alerts", "--elasticsearch", elasticsearch.url, str(alerts)])

    err = capsys.readouterr().err
    assert status == 1
    assert f"{alerts}:1: not JSON" in err
    assert f"{alerts}:4: not an alert document (no string kibana.alert.uuid)" in err
    assert f"{alerts}:5: not an alert document" in err
    assert "documents read: 1 (invalid lines: 3)" in err
    assert list(elasticsearch.documents[INDEX]) == [_id(demo_alerts[0])]


def test_nested_alert_id_is_accepted() -> None:
    report = LoadReport()
    line = b'{"kibana": {"alert": {"uuid": "abc"}}, "@timestamp": "2024-01-01T00:00:00.000Z"}'

    (doc,) = read_documents(io.BytesIO(line + b"\r\n"), "mem", report)

    assert doc.id == "abc" and doc.source == line
    assert bulk_body([doc], "create") == b'{"create":{"_id":"abc"}}\n' + line + b"\n"


def test_reads_stdin_and_basic_auth_from_the_environment(
    elasticsearch: FakeElasticsearch,
    demo_alerts: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elasticsearch.authorization = "Basic " + base64.b64encode(b"analyst:s3cret").decode()
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "s3cret")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(demo_alerts))))

    status = main(["load-alerts", "--elasticsearch", elasticsearch.url, "--user", "analyst", "--index", "soc", "-"])

    assert status == 0
    assert len(elasticsearch.documents["soc"]) == len(demo_alerts)


def test_refused_credentials_stop_the_load(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    elasticsearch.authorization = "ApiKey right"
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)

    status = main(
        ["load-alerts", "--elasticsearch", elasticsearch.url, "--api-key", "wrong", "--chunk-size", "2", str(alerts)]
    )

    assert status == 2
    assert len(elasticsearch.requests) == 1  # not one refused request per chunk
    assert "refused the credentials (HTTP 401): security_exception: unable to authenticate" in capsys.readouterr().err


def test_unreachable_cluster_and_missing_file_are_errors(
    demo_alerts: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    alerts = _write(tmp_path / "alerts.ndjson", demo_alerts)
    # Port 9 (discard) on loopback: nothing listens there on a test machine.
    assert main(["load-alerts", "--elasticsearch", "http://127.0.0.1:9", str(alerts)]) == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["load-alerts", "--elasticsearch", "http://127.0.0.1:9", str(tmp_path / "missing.ndjson")]) == 2
    assert "missing.ndjson" in capsys.readouterr().err


def test_the_documented_pipe_from_replay_to_elasticsearch(
    elasticsearch: FakeElasticsearch, demo_alerts: list[bytes]
) -> None:
    """`python -m app replay FILE | python -m app load-alerts --elasticsearch URL -`, key from the environment."""
    replay = f"{sys.executable} -m app replay --no-progress demo/scenario.ndjson"
    pipe = f"{replay} | {sys.executable} -m app load-alerts --elasticsearch {elasticsearch.url} -"
    env = {**os.environ, "ELASTICSEARCH_API_KEY": "a2V5OnNlY3JldA=="}

    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )

    assert run.returncode == 0, run.stderr
    assert f"created: {len(demo_alerts)}, already present: 0, updated: 0, failed: 0" in run.stderr
    assert len(elasticsearch.documents[INDEX]) == len(demo_alerts)
    assert [request.headers["Authorization"] for request in elasticsearch.requests] == ["ApiKey a2V5OnNlY3JldA=="]
