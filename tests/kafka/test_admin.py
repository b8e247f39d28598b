"""ensure_topics: created with their partition counts, checked when they exist, clear errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from app.kafka import admin
from app.kafka.admin import TopicError, ensure_topics
from app.settings import Settings


def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    client = AdminClient({"bootstrap.servers": bootstrap})
    counts = {}
    for name, future in client.describe_topics(TopicCollection(names)).items():
        with contextlib.suppress(KafkaException):  # it does not exist
            counts[name] = len(future.result(timeout=10).partitions)
    return counts


def owned(settings: Settings) -> dict[str, int]:
    return {
        settings.candidates_topic: settings.candidates_partitions,
        settings.alerts_topic: 1,
        settings.dead_letter_topic: 2,
    }


def test_creates_missing_topics_with_their_partition_counts_and_accepts_them_next_time(
    kafka_settings: Settings,
) -> None:
    topics = owned(kafka_settings)
    ensure_topics(kafka_settings, topics)
    assert partition_counts(kafka_settings.kafka_bootstrap_servers, list(topics)) == topics
    ensure_topics(kafka_settings, topics)  # a restart: everything exists and is right


def test_a_candidates_topic_with_another_partition_count_is_refused(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, {kafka_settings.candidates_topic: 3})
    with pytest.raises(TopicError, match=f"topic {kafka_settings.candidates_topic} has 3 partitions, 4 expected"):
        ensure_topics(kafka_settings, owned(kafka_settings))


def test_topics_not_named_exact_may_have_any_partition_count(kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, {kafka_settings.alerts_topic: 3})
    ensure_topics(kafka_settings, owned(kafka_settings))
    with pytest.raises(TopicError, match=f"topic {kafka_settings.alerts_topic} has 3 partitions, 1 expected"):
        ensure_topics(kafka_settings, owned(kafka_settings), exact=[kafka_settings.alerts_topic])


def test_without_create_topics_missing_topics_are_an_error_and_nothing_is_created(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"create_topics": False})
    topics = owned(settings)
    with pytest.raises(TopicError, match=f"missing topics: .*{settings.candidates_topic} \\(4 partitions\\)"):
        ensure_topics(settings, topics)
    assert partition_counts(settings.kafka_bootstrap_servers, list(topics)) == {}
    ensure_topics(kafka_settings, topics)
    ensure_topics(settings, topics)  # they exist now: only checked


class _RefusingAdmin:
    """An admin client of a cluster whose ACLs forbid creating topics (no broker here enforces ACLs)."""

    def __init__(self, _config: dict) -> None:
        pass

    def describe_topics(self, topics: TopicCollection, **_options: object) -> dict[str, Future]:
        return {name: _failed(KafkaError.UNKNOWN_TOPIC_OR_PART) for name in topics.topic_names}

    def create_topics(self, new_topics: list, **_options: object) -> dict[str, Future]:
        return {topic.topic: _failed(KafkaError.TOPIC_AUTHORIZATION_FAILED) for topic in new_topics}


def _failed(code: int) -> Future:
    future: Future = Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


def test_creation_not_permitted_names_the_topic_the_error_and_the_fix(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "AdminClient", _RefusingAdmin)
    with pytest.raises(TopicError) as raised:
        ensure_topics(kafka_settings, {kafka_settings.candidates_topic: 4})
    message = str(raised.value)
    assert f"cannot create topic {kafka_settings.candidates_topic}" in message
    assert "TOPIC_AUTHORIZATION_FAILED" in message
    assert "4 partition" in message and "EQLSTREAM_CREATE_TOPICS=false" in message


def test_an_unreachable_cluster_is_a_topic_error(
    unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "ADMIN_TIMEOUT_S", 1.0)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", candidates_topic=unique_name("candidates"))
    with pytest.raises(TopicError, match=f"cannot describe topic {settings.candidates_topic}"):
        ensure_topics(settings, {settings.candidates_topic: 4})
