"""The topics eqlstream owns: created before anything subscribes, and checked.

Why explicitly: a metadata request for an unknown topic auto-creates it on many brokers with the
broker's default partition count (4 on the embedded Tansu broker, 1 on Apache Kafka), and the
sequence stage's state is partitioned like the candidates topic (Faust co-partitions a table's
changelog with its source topic and stops on a mismatch). So the candidates topic (and the state
changelog) must exist with exactly ``candidates_partitions`` partitions before the ingest stage
writes to it or Faust reads it.

The caller names the topics and their partition counts (``app.kafka.run.owned_topics``). Topics
whose count matters (``exact``: by default the candidates topic) are checked also when they already
exist; the others (alerts, dead letters) are accepted with any count, since nothing depends on it.
Topics are created with the broker's default replication factor and settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from app.kafka.config import client_config
from app.settings import Settings

log = logging.getLogger("eqlstream.admin")

ADMIN_TIMEOUT_S = 30.0  # each admin request's timeout; the wait for its answer gets a margin on top
_ANSWER_MARGIN_S = 5.0
# Errors that mean "you may not", as opposed to "it went wrong": the fix is an ACL or a topic
# created by an administrator, which the message says.
_NOT_PERMITTED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
    }
)


class TopicError(RuntimeError):
    """A topic the service needs is missing, cannot be created, or has the wrong partition count."""


def ensure_topics(settings: Settings, topics: dict[str, int], exact: Collection[str] | None = None) -> None:
    """Make sure every topic exists; create the missing ones with their partition count.

    With ``settings.create_topics`` false nothing is created and a missing topic is an error. The
    topics of ``exact`` (default: the candidates topic) must have exactly the count given, whether
    created now or before. Raises ``TopicError`` naming the topic and the broker's error.
    """
    admin = AdminClient({**client_config(settings), "logger": log})
    existing = _partition_counts(admin, list(topics))
    missing = {name: count for name, count in topics.items() if name not in existing}
    if missing and not settings.create_topics:
        wanted = ", ".join(f"{name} ({count} partitions)" for name, count in sorted(missing.items()))
        raise TopicError(f"missing topics: {wanted}; create them, or set EQLSTREAM_CREATE_TOPICS=true")
    if missing:
        raced = _create(admin, missing)
        # Right after creation a real cluster may not list the topic yet; its count is the one asked for.
        existing.update({name: count for name, count in missing.items() if name not in raced})
        existing.update(_partition_counts(admin, raced))
    for name in sorted({settings.candidates_topic} if exact is None else exact):
        if name in topics and existing.get(name) != topics[name]:
            raise TopicError(
                f"topic {name} has {existing.get(name)} partitions, {topics[name]} expected: the sequence state is "
                "partitioned like it (EQLSTREAM_CANDIDATES_PARTITIONS must equal the candidates topic's count; "
                "adding partitions to an existing topic would move join keys, so recreate it or change the setting)"
            )


def _partition_counts(admin: AdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each topic that exists (DescribeTopics never auto-creates, unlike metadata requests)."""
    counts: dict[str, int] = {}
    if not names:
        return counts
    futures = admin.describe_topics(TopicCollection(names), request_timeout=ADMIN_TIMEOUT_S)
    for name, future in futures.items():
        try:
            counts[name] = len(_result(admin, future).partitions)
        except TimeoutError as exc:
            raise TopicError(f"cannot describe topic {name}: no answer from the brokers") from exc
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicError(f"cannot describe topic {name}: {error.str()} ({error.name()})") from exc
    return counts


def _create(admin: AdminClient, topics: dict[str, int]) -> list[str]:
    """Create the topics; returns those that another client created first (their counts are unknown)."""
    new = [NewTopic(name, num_partitions=count) for name, count in topics.items()]
    raced = []
    futures = admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
    for name, future in futures.items():
        try:
            _result(admin, future)
        except TimeoutError as exc:
            raise TopicError(f"cannot create topic {name}: no answer from the brokers") from exc
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)  # another instance created it first
                continue
            hint = (
                f": create it beforehand with {topics[name]} partition(s), or grant the service's principal "
                "CREATE on it (or set EQLSTREAM_CREATE_TOPICS=false once it exists)"
                if error.code() in _NOT_PERMITTED
                else ""
            )
            raise TopicError(f"cannot create topic {name}: {error.str()} ({error.name()}){hint}") from exc
        log.info("topic created topic=%s partitions=%d", name, topics[name])
    return raced


def _result(admin: AdminClient, future: Future[Any]) -> Any:
    """The answer to an admin request, polling the client while waiting (``TimeoutError`` after the margin).

    librdkafka hands its log lines to the Python logger only when the client is polled: without
    this, a wrong CA or credentials ("SSL handshake failed: ... certificate verify failed") would
    show only as a timeout half a minute later.
    """
    deadline = time.monotonic() + ADMIN_TIMEOUT_S + _ANSWER_MARGIN_S
    while not future.done():
        if time.monotonic() >= deadline:
            raise TimeoutError
        admin.poll(0.2)
    return future.result()
