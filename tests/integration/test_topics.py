"""The topics the service owns (app.service.topics): created with explicit settings, checked when they exist.

A metadata request for an unknown topic auto-creates it with the broker's defaults on many brokers,
and the state is partitioned like the candidates topic, so the service creates every owned topic
before anything subscribes, and refuses at start an existing one whose settings would break it
(a changelog that is not compacted loses state; a compacted alerts topic keeps one document per
match), naming the fix.
"""

from __future__ import annotations

import gc
import weakref
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection

from app.service import topics
from app.service.kafka import KafkaConnection
from app.service.topics import (
    BrokersUnreachable,
    OwnedTopic,
    TopicAdmin,
    TopicError,
    changelog_topic,
    leader_topic,
    owned_topics,
)
from app.settings import ServiceSettings
from tests.support.broker import EXTERNAL, create_topics
from tests.support.settings import with_settings


def admin(settings: ServiceSettings) -> TopicAdmin:
    return TopicAdmin(KafkaConnection.from_settings(settings))


def names(settings: ServiceSettings) -> list[str]:
    return [topic.name for topic in owned_topics(settings)]


def test_the_owned_topics_and_their_settings(kafka_settings: ServiceSettings) -> None:
    """What docs/deploy.md lists: five topics, each with explicit settings, whatever the broker's defaults."""
    settings = kafka_settings
    by_name = {topic.name: topic for topic in owned_topics(settings)}
    limit = str(settings.max_record_bytes + 64 * 1024)
    assert list(by_name) == [
        settings.candidates_topic,
        changelog_topic(settings),
        leader_topic(settings),
        settings.alerts_topic,
        settings.dead_letter_topic,
    ]
    assert changelog_topic(settings) == f"{settings.consumer_group}-sequence-sequence-state-changelog"
    candidates, changelog, leader, alerts, dead = by_name.values()
    assert candidates.config == {
        "min.insync.replicas": "1",
        "max.message.bytes": limit,
        "cleanup.policy": "delete",
        "retention.ms": str(settings.candidates_retention),
    }
    assert (candidates.partitions, candidates.exact_partitions) == (4, True)
    assert changelog.config["cleanup.policy"] == "compact" and changelog.required == {"cleanup.policy": "compact"}
    assert (changelog.partitions, changelog.exact_partitions) == (4, True)
    assert leader.partitions == 1
    assert alerts.config["cleanup.policy"] == "delete" and alerts.forbidden == {"cleanup.policy": "compact"}
    assert alerts.config["retention.ms"] == str(7 * 24 * 3_600_000)
    assert dead.config["retention.ms"] == str(settings.dead_letter_retention)


def test_creates_missing_topics_with_their_settings_and_accepts_them_next_time(
    kafka_settings: ServiceSettings,
) -> None:
    settings = kafka_settings
    client = admin(settings)
    assert client.missing(names(settings)) == names(settings)
    client.ensure(settings, owned_topics(settings))
    assert client.partition_counts(names(settings)) == {
        topic.name: topic.partitions for topic in owned_topics(settings)
    }
    assert client.configs(changelog_topic(settings))["cleanup.policy"] == "compact"
    if not EXTERNAL:  # the development broker reports the cluster id the service recognises it by
        assert client.cluster_id().startswith("tansu")
    client.ensure(settings, owned_topics(settings))  # a restart: everything exists and is right


def test_a_candidates_topic_with_another_partition_count_is_refused(kafka_settings: ServiceSettings) -> None:
    create_topics(kafka_settings, {kafka_settings.candidates_topic: 3})
    with pytest.raises(TopicError, match=f"topic {kafka_settings.candidates_topic} has 3 partitions, 4 expected"):
        admin(kafka_settings).ensure(kafka_settings, owned_topics(kafka_settings))


def test_topics_not_partitioned_like_the_state_may_have_any_partition_count(kafka_settings: ServiceSettings) -> None:
    create_topics(kafka_settings, {kafka_settings.alerts_topic: 3, kafka_settings.dead_letter_topic: 1})
    admin(kafka_settings).ensure(kafka_settings, owned_topics(kafka_settings))


def test_an_existing_changelog_must_be_compacted(kafka_settings: ServiceSettings) -> None:
    settings = kafka_settings
    client = admin(settings)
    client.ensure(settings, [OwnedTopic(changelog_topic(settings), 4, {"cleanup.policy": "delete"})])
    with pytest.raises(TopicError) as raised:
        client.ensure(settings, owned_topics(settings))
    message = str(raised.value)
    assert f"topic {changelog_topic(settings)} has cleanup.policy=delete, compact required" in message
    assert "kafka-configs --alter" in message and "state is lost" in message


def test_an_existing_alerts_topic_must_not_be_compacted(kafka_settings: ServiceSettings) -> None:
    settings = kafka_settings
    client = admin(settings)
    client.ensure(settings, [OwnedTopic(settings.alerts_topic, 4, {"cleanup.policy": "compact"})])
    with pytest.raises(TopicError, match="has cleanup.policy=compact, which breaks the service .*only its shell"):
        client.ensure(settings, owned_topics(settings))


def test_without_create_topics_missing_topics_are_an_error_and_nothing_is_created(
    kafka_settings: ServiceSettings,
) -> None:
    settings = with_settings(kafka_settings, create_topics=False)
    client = admin(settings)
    with pytest.raises(TopicError, match=f"missing topics: {settings.candidates_topic} \\(4 partitions\\)"):
        client.ensure(settings, owned_topics(settings))
    assert client.partition_counts(names(settings)) == {}
    client.ensure(kafka_settings, owned_topics(kafka_settings))
    client.ensure(settings, owned_topics(settings))  # they exist now: only checked


class _RefusingAdmin:
    """An admin client of a cluster whose ACLs forbid creating topics (no broker here enforces ACLs)."""

    def __init__(self, _config: dict[str, Any]) -> None:
        pass

    def describe_topics(self, collection: TopicCollection, **_options: object) -> dict[str, Future[Any]]:
        return {name: _failed(KafkaError.UNKNOWN_TOPIC_OR_PART) for name in collection.topic_names}

    def create_topics(self, new_topics: list[Any], **_options: object) -> dict[str, Future[Any]]:
        return {topic.topic: _failed(KafkaError.TOPIC_AUTHORIZATION_FAILED) for topic in new_topics}

    def poll(self, _timeout: float) -> int:
        return 0


def _failed(code: int) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


def test_creation_not_permitted_names_the_topic_the_error_and_the_fix(
    kafka_settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(topics, "AdminClient", _RefusingAdmin)
    with pytest.raises(TopicError) as raised:
        admin(kafka_settings).ensure(kafka_settings, owned_topics(kafka_settings))
    message = str(raised.value)
    assert f"cannot create topic {kafka_settings.candidates_topic}" in message
    assert "TOPIC_AUTHORIZATION_FAILED" in message
    assert "docs/deploy.md" in message and "EQLSTREAM_CREATE_TOPICS=false" in message


def test_an_unreachable_cluster_is_worth_waiting_for_not_a_topic_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No answer is ``BrokersUnreachable`` (the service waits and says so), not a ``TopicError`` (it stops)."""
    monkeypatch.setattr(topics, "ADMIN_TIMEOUT_S", 1.0)
    monkeypatch.setattr(topics, "_ANSWER_MARGIN_S", 0.5)
    settings = ServiceSettings(
        kafka_bootstrap_servers="127.0.0.1:1", topic_replication_factor=1, topic_min_insync_replicas=1
    )
    with pytest.raises(BrokersUnreachable, match="127.0.0.1:1"):
        admin(settings).ensure(settings, owned_topics(settings))
    reports: list[str] = []
    attempt = admin(settings).cluster_id
    assert not topics.wait_for_brokers(attempt, reports.append, stop=lambda: len(reports) >= 2, interval_s=0.1)
    assert len(reports) == 2 and all("127.0.0.1:1" in report for report in reports)


def test_the_reason_a_broker_is_unreachable_outlives_the_brokers_down_count_after_it() -> None:
    """librdkafka reports a failed TLS handshake, then "1/1 brokers are down", often within one poll;
    the service's line must keep the first (what to fix), whichever order a poll delivers them in."""
    cause = KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed")
    reach = topics._Reachability()
    reach(cause)
    reach(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert reach.cause == cause.str()
    reach = topics._Reachability()
    reach(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    reach(cause)
    assert reach.cause == cause.str()


def test_the_admin_client_is_freed_as_soon_as_it_is_dropped(kafka_settings: ServiceSettings) -> None:
    """No reference cycle keeps the client (and its connections) alive until the garbage collector
    runs: neither its error callback nor a failed request's traceback held by its future."""
    admin = TopicAdmin(KafkaConnection.from_settings(kafka_settings))
    assert admin.partition_counts([f"{kafka_settings.candidates_topic}-absent"]) == {}
    client = weakref.ref(admin._admin)
    gc.disable()
    try:
        del admin
        assert client() is None
    finally:
        gc.enable()
