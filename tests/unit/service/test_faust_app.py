"""The Faust adapter's own timer (app.service.faust_app), with Faust's consumer replaced: no broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP

from app.service.faust_app import SequenceApp
from app.service.kafka import KafkaConnection
from app.service.observer import NullObserver
from app.service.web import Health
from tests.support.settings import service_settings


class LagObserver(NullObserver):
    def __init__(self) -> None:
        self.lags: list[int] = []

    def consumer_lag(self, stage: str, topic: str, records: int) -> None:
        self.lags.append(records)


class Stage:
    """What the timer uses of a ``SequenceStage``."""

    def __init__(self) -> None:
        self.observer = LagObserver()
        self.expiries = 0

    async def expire_idle(self) -> int:
        self.expiries += 1
        return 0


class Consumer:
    """Two candidates partitions assigned; ``revoked`` ones are gone by the time their position is asked."""

    def __init__(self, topic: str, revoked: set[int]) -> None:
        self.topic = topic
        self.revoked = revoked

    def assignment(self) -> set[TP]:
        return {TP(self.topic, 0), TP(self.topic, 1), TP("elsewhere", 0)}

    async def position(self, tp: TP) -> int:
        if tp.partition in self.revoked:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return 10

    def highwater(self, tp: TP) -> int:
        return 25


def sequence_app(tmp_path: Path, revoked: set[int]) -> tuple[SequenceApp, Stage]:
    settings = service_settings("127.0.0.1:9", tmp_path / "state")
    stage = Stage()
    health = Health(60, NullObserver())
    health.register("sequence")
    app = SequenceApp(settings, KafkaConnection.from_settings(settings), health, lambda store: stage, False)
    app.app.consumer = Consumer(settings.candidates_topic, revoked)  # type: ignore[assignment]
    app.app.tables.recovery.completed.set()  # type: ignore[attr-defined]
    return app, stage


def run_timer(app: SequenceApp) -> None:
    async def tick() -> Any:
        await app._check_health()

    asyncio.run(tick())


def test_the_timer_reports_the_candidates_lag_and_expires(tmp_path: Path) -> None:
    app, stage = sequence_app(tmp_path, revoked=set())
    run_timer(app)
    assert stage.observer.lags == [30]  # 2 partitions x (25 - 10); the other topic is not counted
    assert stage.expiries == 1


def test_a_partition_revoked_while_the_lag_is_read_does_not_end_the_worker(tmp_path: Path) -> None:
    # Seen in a 1 -> 3 -> 1 scaling test: the error escaped the timer and Faust ended the worker.
    app, stage = sequence_app(tmp_path, revoked={1})
    run_timer(app)
    assert stage.observer.lags == []  # left for the next tick
    assert stage.expiries == 1
