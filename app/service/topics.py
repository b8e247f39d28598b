"""The topics eqlstream owns: their names, their settings, and making sure they exist as needed.

Why explicitly: a metadata request for an unknown topic auto-creates it on many brokers with the
broker's defaults (4 partitions on the development broker, 1 on Apache Kafka, never compacted),
and the sequence stage's state is partitioned like the candidates topic (Faust co-partitions a
table's changelog with its source topic and stops on a mismatch). So every owned topic is created
before anything subscribes, with explicit settings, and an existing one whose settings would break
the service is refused at start with the fix. docs/deploy.md lists them and the ACLs each role
needs, for clusters where the service may not create topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from app.service.kafka import KafkaConnection
from app.settings import ServiceSettings

log = logging.getLogger("eqlstream.topics")

STATE_TABLE = "sequence-state"
ADMIN_TIMEOUT_S = 30.0  # each admin request's timeout; the wait for its answer gets a margin on top
_ANSWER_MARGIN_S = 5.0
# Record limit of the owned topics, above the service's own largest record (a candidate, a state
# record or an alert document is at most EQLSTREAM_MAX_RECORD_BYTES plus this).
RECORD_OVERHEAD_BYTES = 64 * 1024
# Errors that mean "you may not", as opposed to "it went wrong": the fix is an ACL or a topic
# created by an administrator, which the message says.
_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
    }
)
_NOT_PERMITTED = frozenset(
    {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.POLICY_VIOLATION}
)


class TopicError(RuntimeError):
    """An owned topic is missing, cannot be created, or has settings that would break the service."""


class BrokersUnreachable(RuntimeError):
    """No answer from the brokers (yet): worth waiting for, unlike a ``TopicError``."""


def sequence_app_id(settings: ServiceSettings) -> str:
    """The Faust app id of the sequence stage (its consumer group)."""
    return f"{settings.consumer_group}-sequence"


def changelog_topic(settings: ServiceSettings) -> str:
    """The state changelog's name, by Faust's convention ``<app id>-<table>-changelog``."""
    return f"{sequence_app_id(settings)}-{STATE_TABLE}-changelog"


def leader_topic(settings: ServiceSettings) -> str:
    """The one-partition topic through which Faust's partition assignor elects a leader."""
    return f"{sequence_app_id(settings)}-__assignor-__leader"


@dataclass(frozen=True)
class OwnedTopic:
    """A topic the service creates, with the settings it needs, and the ones it cannot work without."""

    name: str
    partitions: int
    config: dict[str, str]
    exact_partitions: bool = False
    required: dict[str, str] = field(default_factory=dict)
    forbidden: dict[str, str] = field(default_factory=dict)
    why: str = ""


def owned_topics(settings: ServiceSettings) -> list[OwnedTopic]:
    """Every topic the service writes, with its partition count and settings."""
    partitions = settings.candidates_partitions
    record_limit = str(settings.max_record_bytes + RECORD_OVERHEAD_BYTES)
    common = {"min.insync.replicas": str(settings.topic_min_insync_replicas), "max.message.bytes": record_limit}
    return [
        OwnedTopic(
            settings.candidates_topic,
            partitions,
            {**common, "cleanup.policy": "delete", "retention.ms": str(settings.candidates_retention)},
            exact_partitions=True,
            why="the sequence state is partitioned like it",
        ),
        OwnedTopic(
            changelog_topic(settings),
            partitions,
            {**common, "cleanup.policy": "compact"},
            exact_partitions=True,
            required={"cleanup.policy": "compact"},
            why="the state changelog: with delete, state is lost after its retention",
        ),
        OwnedTopic(leader_topic(settings), 1, {"min.insync.replicas": common["min.insync.replicas"]}),
        OwnedTopic(
            settings.alerts_topic,
            partitions,
            {**common, "cleanup.policy": "delete", "retention.ms": str(settings.alerts_retention)},
            forbidden={"cleanup.policy": "compact"},
            why="one match's documents share a key: compaction would keep only its shell",
        ),
        OwnedTopic(
            settings.dead_letter_topic,
            partitions,
            {**common, "cleanup.policy": "delete", "retention.ms": str(settings.dead_letter_retention)},
        ),
    ]


class _Reachability:
    """The admin client's error callback: why the brokers cannot be reached, if they cannot.

    A separate object, not a method of ``TopicAdmin``: a client holding its owner's method would
    form a cycle that only the garbage collector breaks, keeping the client's connections open
    until it runs.
    """

    def __init__(self) -> None:
        self.cause: str | None = None

    def __call__(self, error: KafkaError) -> None:
        # librdkafka follows the error that says why (a certificate, a password, a name) with "1/1
        # brokers are down", often within one poll: keep the why, which is what the user must fix.
        relevant = error.code() in _UNREACHABLE or error.fatal()
        if relevant and (self.cause is None or error.code() != KafkaError._ALL_BROKERS_DOWN):
            self.cause = error.str()


class TopicAdmin:
    """The admin client of the service's start-up checks."""

    def __init__(self, connection: KafkaConnection) -> None:
        self.connection = connection
        self._reach = _Reachability()
        # librdkafka's own lines about the connection attempts are left out: the errors reach
        # ``_Reachability`` and become one line of the service's, with the setting to check.
        config: dict[str, Any] = {**connection.librdkafka(), "error_cb": self._reach, "log_level": 0}
        self._admin = AdminClient(config)

    def cluster_id(self) -> str:
        """The cluster's id (the development broker is recognised by it); ``BrokersUnreachable`` if none answers."""
        try:
            return str(self._result(self._admin.describe_cluster(request_timeout=ADMIN_TIMEOUT_S)).cluster_id or "")
        except KafkaException as exc:
            raise BrokersUnreachable(_describe(exc.args[0])) from None

    def missing(self, names: list[str]) -> list[str]:
        """The topics of ``names`` that do not exist (DescribeTopics never auto-creates)."""
        return [name for name in names if name not in self.partition_counts(names)]

    def partition_counts(self, names: list[str]) -> dict[str, int]:
        """Partition count of each topic of ``names`` that exists."""
        counts: dict[str, int] = {}
        if not names:
            return counts
        futures = self._admin.describe_topics(TopicCollection(names), request_timeout=ADMIN_TIMEOUT_S)
        for name, future in futures.items():
            try:
                counts[name] = len(self._result(future).partitions)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                if error.code() in _NOT_PERMITTED:
                    raise TopicError(
                        f"cannot describe topic {name}: {_describe(error)}; grant the service's principal DESCRIBE on it"
                    ) from None
                raise BrokersUnreachable(f"cannot describe topic {name}: {_describe(error)}") from None
        return counts

    def configs(self, name: str) -> dict[str, str]:
        """The topic's settings as the broker reports them."""
        future = self._admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)])
        try:
            entries = self._result(next(iter(future.values())))
        except KafkaException as exc:
            raise TopicError(f"cannot read the settings of topic {name}: {_describe(exc.args[0])}") from None
        return {key: entry.value for key, entry in entries.items() if entry.value is not None}

    def ensure(self, settings: ServiceSettings, topics: list[OwnedTopic]) -> None:
        """Create the missing topics; check the existing ones. ``TopicError`` says what is wrong and the fix."""
        existing = self.partition_counts([topic.name for topic in topics])
        missing = [topic for topic in topics if topic.name not in existing]
        if missing and not settings.create_topics:
            wanted = ", ".join(f"{topic.name} ({topic.partitions} partitions)" for topic in missing)
            raise TopicError(
                f"missing topics: {wanted}; create them as docs/deploy.md lists, or set EQLSTREAM_CREATE_TOPICS=true"
            )
        if missing:
            raced = self._create(settings, missing)
            existing.update({topic.name: topic.partitions for topic in missing if topic.name not in raced})
            existing.update(self.partition_counts(raced))
        for topic in topics:
            self._check(topic, existing.get(topic.name), created=topic in missing)

    def _check(self, topic: OwnedTopic, partitions: int | None, created: bool) -> None:
        if topic.exact_partitions and partitions != topic.partitions:
            raise TopicError(
                f"topic {topic.name} has {partitions} partitions, {topic.partitions} expected ({topic.why}): set "
                "EQLSTREAM_CANDIDATES_PARTITIONS to the candidates topic's count, or recreate the topics (adding "
                "partitions to an existing topic would move join keys and lose pending sequences)"
            )
        if created or not (topic.required or topic.forbidden):
            return
        actual = self.configs(topic.name)
        for key, value in topic.required.items():
            if actual.get(key) != value:
                raise TopicError(
                    f"topic {topic.name} has {key}={actual.get(key)}, {value} required ({topic.why}); change it with "
                    f"kafka-configs --alter --entity-type topics --entity-name {topic.name} --add-config {key}={value}"
                )
        for key, value in topic.forbidden.items():
            if actual.get(key) == value:
                raise TopicError(f"topic {topic.name} has {key}={value}, which breaks the service ({topic.why})")

    def _create(self, settings: ServiceSettings, topics: list[OwnedTopic]) -> list[str]:
        """Create the topics; returns those another client created first (their counts are unknown)."""
        new = [
            NewTopic(
                topic.name,
                num_partitions=topic.partitions,
                replication_factor=settings.topic_replication_factor,
                config=topic.config,
            )
            for topic in topics
        ]
        raced = []
        futures = self._admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
        for name, future in futures.items():
            try:
                self._result(future)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    raced.append(name)  # another instance created it first
                    continue
                raise TopicError(
                    f"cannot create topic {name}: {_describe(error)}{_creation_hint(error, settings)}"
                ) from None
            log.info("topic created topic=%s", name)
        return raced

    def _result(self, future: Future[Any]) -> Any:
        """The answer to an admin request, polling the client while waiting.

        librdkafka hands its log lines to the Python logger only when the client is polled: without
        this, a wrong CA or credentials would show only as a timeout half a minute later.
        """
        deadline = time.monotonic() + ADMIN_TIMEOUT_S + _ANSWER_MARGIN_S
        self._reach.cause = None
        while not future.done():
            if self._reach.cause is not None:
                raise BrokersUnreachable(self._unreachable_message(self._reach.cause))
            if time.monotonic() >= deadline:
                raise BrokersUnreachable(self._unreachable_message("no answer"))
            self._admin.poll(0.2)
        error = future.exception()
        if error is not None:
            # A new exception, not the future's: raising the future's own would tie its traceback
            # (these frames, their futures, the client) into a cycle that only the garbage collector
            # breaks, keeping the client and its connections alive until then.
            raise KafkaException(*error.args)
        return future.result()

    def _unreachable_message(self, cause: str) -> str:
        return (
            f"cannot reach the Kafka brokers at {self.connection.bootstrap_servers} "
            f"(EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS): {cause}"
        )


def _creation_hint(error: KafkaError, settings: ServiceSettings) -> str:
    if error.code() in _NOT_PERMITTED:
        return (
            ": create it beforehand as docs/deploy.md lists, or grant the service's principal CREATE on it "
            "(then EQLSTREAM_CREATE_TOPICS=false once it exists)"
        )
    if error.code() == KafkaError.INVALID_REPLICATION_FACTOR:
        return f": the cluster has fewer brokers than EQLSTREAM_TOPIC_REPLICATION_FACTOR={settings.topic_replication_factor}"
    if error.code() == KafkaError.INVALID_CONFIG:
        return ": the broker refuses one of the topic settings (docs/deploy.md lists them)"
    return ""


def _describe(error: KafkaError) -> str:
    return f"{error.str()} ({error.name()})"


def wait_for_brokers(
    attempt: Callable[[], None], report: Callable[[str], None], stop: Callable[[], bool], interval_s: float = 10.0
) -> bool:
    """Call ``attempt`` until it does not raise ``BrokersUnreachable`` (then True) or ``stop`` says so (False).

    ``report`` gets the reason each time an attempt fails (the caller logs it and marks the stage
    not ready); attempts are ``interval_s`` apart, so an outage gives one line per attempt, not a flood.
    """
    while True:
        try:
            attempt()
            return True
        except BrokersUnreachable as exc:
            report(str(exc))
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline:
            if stop():
                return False
            time.sleep(0.2)
