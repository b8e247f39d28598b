"""All configuration, from ``EQLSTREAM_*`` environment variables with documented defaults, parsed once.

Two tiers: ``DetectionSettings`` (what the replay CLI reads: rules, time, limits) and
``ServiceSettings`` (those plus Kafka, topics, state and endpoints, for ``run``). Durations are
parsed at load into milliseconds. Command-line flags override variables for one run. Mistakes
are reported as ``SettingsError`` naming the variable (or the flag) and what it accepts; unknown
``EQLSTREAM_*`` variables are reported with the closest known name. The README lists every
variable and every Helm value maps to one of them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core import DEFAULT_RULE_PATH, DetectionOptions
from app.core.timeparse import DURATION_HELP, format_duration, parse_duration

PREFIX = "EQLSTREAM_"
# Room a candidate record needs beyond its event on the candidates topic (its other fields, the
# record key and Kafka's record overhead); normalizing raw Sysmon can triple a record.
CANDIDATE_HEADROOM = 64 * 1024


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


Duration = Annotated[int, BeforeValidator(_duration), Field(ge=0)]
Topics = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)]


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each variable or flag and what it accepts."""


class DetectionSettings(BaseSettings):
    """What detection needs, shared by the replay CLI and the service."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", validate_default=True)

    rule_path: Path = Field(DEFAULT_RULE_PATH, description="A rule file or a directory of *.toml rule files.")
    rule_version_lock: Path | None = Field(
        None,
        description="Elastic's version.lock.json (detection_rules/etc/ in detection-rules): the version of each "
        "rule file that carries none (else 1).",
    )
    allowed_lateness: Duration = Field(
        parse_duration("5m"),
        description="How far out of @timestamp order an event may arrive and still get the sorted-order answer.",
    )
    order_tolerance: Duration = Field(
        parse_duration("0s"),
        description="Opt-in: a later stage may precede the earlier one by this much (0s = Elasticsearch).",
    )
    watermark_quorum: int = Field(
        3, ge=1, description="Distinct hosts that must reach an event time before state expires by it."
    )
    max_entries_per_stage: int = Field(
        100, ge=1, description="Most events one join key holds per stage; a flood evicts the oldest."
    )
    max_join_keys: int = Field(
        64,
        ge=1,
        description="Most join keys one event may give (multi-valued join fields fan out); more is a dead letter.",
    )
    host_id_fallback: str = Field(
        "",
        description="Opt-in: join events that lack host.id on this field instead, e.g. host.name (empty = off).",
    )
    alert_cap: int = Field(
        -1,
        ge=-1,
        description="Most new alerts per rule per rule interval of event time; -1 = the rule's max_signals, 0 = no cap.",
    )
    alerts_index: str = Field(
        "eqlstream-alerts-default",
        min_length=1,
        description="Elasticsearch index the alerts are loaded into (their ancestor links).",
    )
    max_record_bytes: int = Field(
        1024 * 1024, ge=64 * 1024, description="Larger input records are dead letters (record_too_large), never parsed."
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: Annotated[
        Literal["text", "json"], BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)
    ] = Field("text", description="text, or json: one ECS JSON object per line (ecs-logging), for log pipelines.")

    def detection_options(self) -> DetectionOptions:
        """The frozen options the detection core runs with."""
        max_event = max(self.max_record_bytes - CANDIDATE_HEADROOM, self.max_record_bytes // 2)
        return DetectionOptions(
            allowed_lateness_ms=self.allowed_lateness,
            order_tolerance_ms=self.order_tolerance,
            watermark_quorum=self.watermark_quorum,
            max_entries_per_stage=self.max_entries_per_stage,
            max_state_bytes=max(self.max_record_bytes - CANDIDATE_HEADROOM, max_event),
            max_join_keys=self.max_join_keys,
            host_id_fallback=self.host_id_fallback,
            max_record_bytes=self.max_record_bytes,
            max_event_bytes=max_event,
            alert_cap=self.alert_cap,
            alerts_index=self.alerts_index,
        )

    def to_environment(self) -> dict[str, str]:
        """These settings as the EQLSTREAM_* variables that reproduce them (to start a child process)."""
        environment = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:  # unset: the variable's absence says so
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list):
                value = ",".join(value)
            elif _is_duration(info):
                value = format_duration(value)
            environment[f"{PREFIX}{name.upper()}"] = str(value)
        return environment


def _is_duration(info: Any) -> bool:
    return any(getattr(m, "func", None) is _duration for m in info.metadata)


class ServiceSettings(DetectionSettings):
    """Everything ``python -m app run`` reads: detection plus Kafka, topics, state and endpoints."""

    role: Literal["all", "ingest", "sequence"] = Field(
        "all", description="Stages this process runs: all, or one of ingest and sequence to scale them apart."
    )
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", min_length=1, description="Kafka bootstrap servers, comma-separated."
    )
    input_topics: Topics = Field(["eqlstream-events"], description="Topics the ingest stage reads, comma-separated.")
    input_topic_pattern: str = Field(
        "", description="A regular expression of input topics; replaces input_topics when set."
    )
    consumer_group: str = Field(
        "eqlstream", min_length=1, description="Consumer group (the sequence stage uses <group>-sequence)."
    )
    instance_id: str = Field("", description="Static group membership id (the pod name): restarts do not rebalance.")
    candidates_topic: str = Field(
        "eqlstream-candidates", min_length=1, description="Topic of candidates, partitioned by join key."
    )
    candidates_partitions: int = Field(
        8, ge=1, description="Partitions of the candidates topic and the state (the parallelism)."
    )
    alerts_topic: str = Field("eqlstream-alerts", min_length=1, description="Topic the alert documents are written to.")
    dead_letter_topic: str = Field(
        "eqlstream-dead-letter", min_length=1, description="Topic of records that could not be evaluated."
    )
    create_topics: bool = Field(True, description="Create the topics the service owns when they are missing.")
    topic_replication_factor: int = Field(3, ge=1, description="Replication factor of the topics the service creates.")
    topic_min_insync_replicas: int = Field(
        2, ge=1, description="min.insync.replicas of the topics the service creates."
    )
    candidates_retention: Duration = Field(
        parse_duration("1h"), description="Retention of the candidates topic (a few times the allowed lateness)."
    )
    alerts_retention: Duration = Field(parse_duration("7d"), description="Retention of the alerts topic.")
    dead_letter_retention: Duration = Field(parse_duration("7d"), description="Retention of the dead-letter topic.")
    data_dir: Path = Field(Path("data"), description="Directory of the RocksDB state.")
    session_timeout: Duration = Field(parse_duration("10s"), description="Consumer group session timeout.")
    fetch_max_wait: Duration = Field(
        parse_duration("500ms"),
        description="Longest a consumer's fetch waits at the broker for new records (both stages); 20ms with Tansu.",
    )
    kafka_security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)
    ] = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(_upper)] = (
        Field("SCRAM-SHA-512", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol).")
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (never logged).")
    kafka_ssl_ca_location: str = Field("", description="CA certificate file (PEM) to verify the brokers.")
    kafka_ssl_certificate_location: str = Field("", description="Client certificate file (PEM) for mutual TLS.")
    kafka_ssl_key_location: str = Field("", description="Client private key file (PEM) for mutual TLS.")
    kafka_ssl_key_password: SecretStr = Field(SecretStr(""), description="Password of the client key, if any.")
    web_host: str = Field("0.0.0.0", description="Address of the health and metrics endpoints.")
    web_port: int = Field(
        6066, ge=0, le=65535, description="Port of /metrics, /livez and /readyz (0 = a free port, logged)."
    )
    stall_timeout: Duration = Field(
        parse_duration("120s"), description="/livez fails when a stage's loop has not turned for this long."
    )
    standby_replicas: int = Field(1, ge=0, description="Standby copies of each state partition on other workers.")
    rocksdb_block_cache: int = Field(
        16 * 1024 * 1024, ge=0, description="RocksDB block cache per state partition, bytes."
    )
    rocksdb_write_buffer: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        description="RocksDB write buffer per state partition, bytes; two per partition (with 4 MiB a flood of new "
        "keys stalled on memtable flushes at a quarter of the rate).",
    )

    @field_validator("input_topic_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if self.role != "sequence" and not self.input_topics and not self.input_topic_pattern:
            raise ValueError(
                "EQLSTREAM_INPUT_TOPICS is empty and EQLSTREAM_INPUT_TOPIC_PATTERN is not set: the ingest stage "
                "would read nothing; name the topics your shippers write to"
            )
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"EQLSTREAM_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) is more than "
                f"EQLSTREAM_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): no write could succeed"
            )
        return self


S = TypeVar("S", bound="DetectionSettings")


def load_settings(kind: type[S], flags: Mapping[str, tuple[str, Any]] | None = None) -> S:
    """Settings of ``kind`` from the environment, with ``flags`` (field -> (flag name, value)) on top.

    Raises ``SettingsError`` naming the variable or flag of every problem.
    """
    flags = {name: given for name, given in (flags or {}).items() if given[1] is not None}
    try:
        return kind(**{name: value for name, (_flag, value) in flags.items()})
    except ValidationError as exc:
        raise SettingsError(_describe(exc, kind, flags)) from None


def _describe(exc: ValidationError, kind: type[DetectionSettings], flags: Mapping[str, tuple[str, Any]]) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if not field:  # a check across settings: its message names the variables itself
            problems.append(message)
            continue
        where = flags[field][0] if field in flags else f"{PREFIX}{field.upper()}"
        given = error.get("input")
        info = kind.model_fields.get(field)
        if info is not None and _is_duration(info):
            message = f"{message.split(':')[0]}: use {DURATION_HELP}" if "duration" not in message else message
        shown = "" if isinstance(given, SecretStr) or "password" in field else f" (got {str(given)[:80]!r})"
        problems.append(f"invalid {where}{shown}: {message}")
    return "; ".join(problems)


def unknown_variables(environ: Mapping[str, str], kind: type[DetectionSettings] = ServiceSettings) -> list[str]:
    """A warning for each ``EQLSTREAM_*`` variable no setting reads, with the closest known name."""
    known = [f"{PREFIX}{name.upper()}" for name in kind.model_fields]
    warnings = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"{name} is not an eqlstream setting and is ignored{hint}")
    return warnings
