"""The embedded broker: answers once started, gone once stopped, clear errors when it cannot start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from eqlstream_dev.broker import BrokerError, EmbeddedBroker


def test_start_answers_and_stop_ends_it() -> None:
    with EmbeddedBroker() as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        assert admin.list_topics(timeout=5).brokers
        log_path = broker.log_path
        assert "listening on" in broker.log_tail()
        del admin  # disconnects: the broker waits ~5 s for connected clients on SIGTERM
    assert not log_path.exists()
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0}).list_topics(timeout=1)


def _fake_binary(tmp_path: Path, script: str) -> str:
    path = tmp_path / "tansu"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_a_broker_that_exits_on_start_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", _fake_binary(tmp_path, "echo 'Error: address in use'; exit 3"))
    with pytest.raises(BrokerError, match=r"exited with status 3 on start; its log:\nError: address in use"):
        EmbeddedBroker().start()


def test_a_broker_that_never_answers_times_out_and_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ignores SIGTERM (the disposition survives exec), so only the SIGKILL after stop_timeout ends it.
    monkeypatch.setenv("CALF_TANSU_BIN", _fake_binary(tmp_path, "echo starting; trap '' TERM; exec sleep 60"))
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"did not answer a metadata request .* within 2 s; its log:\nstarting"):
        EmbeddedBroker(start_timeout=2, stop_timeout=0.5).start()
    assert time.monotonic() - started < 10
