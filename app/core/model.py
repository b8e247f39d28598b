"""The values that travel between the stages: join keys, candidates, rejections, alerts.

Every other module imports these and this module imports nothing of the project (nor any
third-party library), so the flow of the code runs one way: rule → extraction → engine → alerts,
with the service and the CLI on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JoinKeyValue = str | int
# The values of a stage's ``by`` fields for one event, in order (host.id, process.entity_id).
JoinKey = tuple[JoinKeyValue, ...]
Event = dict[str, Any]


class RejectReason(StrEnum):
    """Why a record was not evaluated: a stable label for metrics, logs and the dead-letter header.

    ``schemas/dead-letter.schema.json`` lists the same values.
    """

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_TIMESTAMP = "invalid_timestamp"
    RECORD_TOO_LARGE = "record_too_large"
    TOO_DEEP = "too_deep"
    TOO_MANY_JOIN_KEYS = "too_many_join_keys"
    UNKNOWN_LAYOUT = "unknown_layout"
    INVALID_CANDIDATE = "invalid_candidate"
    PRODUCE_REFUSED = "produce_refused"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record (or a line of one) that could not be evaluated, with the bytes concerned.

    ``lines`` numbers the bad lines of a multi-line record (Logstash ``json_lines``), when only
    some of its lines were bad; ``count`` is how many were bad in all.
    """

    reason: RejectReason
    detail: str
    raw: bytes
    lines: tuple[int, ...] = ()
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """An event that meets at least one stage of a rule, with the join key it meets it under.

    ``timestamp_ms`` is ``@timestamp`` as Elasticsearch indexes it (milliseconds); ``watermark_host``
    is the host whose clock the event reports, for the stream's event-time watermark. The event
    travels as its JSON (``event_json``), made once: the candidates topic and the state store hold
    those bytes as they are, and their length is what bounds what one join key may hold. ``event``
    is the parsed event where the extractor has it; a candidate read back from the candidates topic
    carries only the bytes (None), parsed again only if an alert needs the event.
    """

    rule_id: str
    key: JoinKey
    stages: tuple[int, ...]
    timestamp_ms: int
    event_id: str
    event: Event | None
    event_json: bytes
    watermark_host: str = ""
    origin: str = ""


class AlertKind(StrEnum):
    """What an emitted alert is, relative to what was emitted before under the same ids."""

    NEW = "new"
    # The same sequence emitted again with Elasticsearch's events after an out-of-order arrival.
    REVISED = "revised"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One completed sequence as Kibana alert documents: the building blocks, then the shell."""

    rule_id: str
    rule_name: str
    kind: AlertKind
    documents: tuple[Event, ...]
    # @timestamp of the sequence's last event, in milliseconds: the record time on the alerts topic.
    last_event_ms: int
    event_ids: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        """The shell alert's id (``kibana.alert.uuid``), which also keys every document of the match."""
        shell_id: str = self.documents[-1]["kibana.alert.uuid"]
        return shell_id
