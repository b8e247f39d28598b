"""All configuration, from environment variables with documented defaults.

Every variable is ``EQLSTREAM_<NAME>``; command-line flags override them for one run. The README
lists them, and every Helm value maps to one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.rule.model import DEFAULT_RULE_PATH
from app.timeparse import parse_duration


class Settings(BaseSettings):
    """Detection settings shared by the replay CLI and the streaming service."""

    model_config = SettingsConfigDict(env_prefix="EQLSTREAM_", extra="ignore")

    rule_path: Path = Field(DEFAULT_RULE_PATH, description="A rule file or a directory of *.toml rule files.")
    allowed_lateness: str = Field(
        "5m",
        description="How far out of @timestamp order an event may arrive and still get the sorted-order answer.",
    )
    order_tolerance: str = Field(
        "0s",
        description="Opt-in: a later-stage event may precede the earlier stage by up to this much (0 = Elasticsearch semantics).",
    )
    watermark_quorum: int = Field(
        3, ge=1, description="Distinct hosts that must reach an event time before state expires by it."
    )
    max_entries_per_stage: int = Field(
        100, ge=1, description="Most events one join key holds per stage; a flood evicts the oldest."
    )
    host_id_fallback: str = Field(
        "",
        description="Opt-in: join events that lack host.id (Windows Event Forwarding, add_host_metadata off) "
        "on this field instead, e.g. host.name or winlog.computer_name. Elasticsearch never joins them. Empty = off.",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    # -- the streaming service ---------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("localhost:9092", description="Kafka bootstrap servers, comma-separated.")
    input_topics: str = Field(
        "eqlstream-events", description="Topics the ingest stage reads, comma-separated (several sources at once)."
    )
    input_topic_pattern: str = Field(
        "", description="A regular expression of input topics (e.g. ^winlogbeat-.*); replaces input_topics when set."
    )
    consumer_group: str = Field("eqlstream", description="Consumer group of the ingest and sequence stages.")
    instance_id: str = Field(
        "", description="Static group membership id (the pod name in Kubernetes): restarts do not rebalance."
    )
    candidates_topic: str = Field("eqlstream-candidates", description="Topic of candidates keyed by join key.")
    candidates_partitions: int = Field(8, ge=1, description="Partitions of the candidates topic (the parallelism).")
    alerts_topic: str = Field("eqlstream-alerts", description="Topic the alert documents are written to.")
    dead_letter_topic: str = Field("eqlstream-dead-letter", description="Topic of rejected input records.")
    create_topics: bool = Field(True, description="Create the topics the service owns when they are missing.")
    data_dir: Path = Field(Path("data"), description="Directory of the RocksDB state.")
    session_timeout: str = Field("10s", description="Consumer group session timeout.")
    fetch_max_wait: str = Field(
        "500ms",
        description="Longest a consumer's fetch waits at the broker for new records (both stages). Apache Kafka "
        "answers as soon as records arrive, so this only paces idle polling; the development broker (Tansu) holds "
        "a fetch on a quiet topic for the whole wait, so use 20ms with it.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (never logged).")
    kafka_ssl_ca_location: str = Field("", description="CA certificate file (PEM) to verify the brokers.")
    kafka_ssl_certificate_location: str = Field("", description="Client certificate file (PEM) for mutual TLS.")
    kafka_ssl_key_location: str = Field("", description="Client private key file (PEM) for mutual TLS.")
    kafka_ssl_key_password: SecretStr = Field(SecretStr(""), description="Password of the client key, if any.")
    role: Literal["all", "ingest", "sequence"] = Field(
        "all", description="Stages this process runs: all, or one of ingest and sequence to scale them apart."
    )
    web_host: str = Field("0.0.0.0", description="Address the health and metrics endpoints listen on.")
    web_port: int = Field(
        6066, ge=0, le=65535, description="Port of /metrics, /livez and /readyz (0 = a free port, logged at start)."
    )
    stall_timeout: str = Field(
        "120s", description="/livez fails when a stage's loop has not turned for this long (a stuck process)."
    )
    max_record_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Input records larger than this go to the dead-letter topic unparsed (reason record_too_large).",
    )
    standby_replicas: int = Field(1, ge=0, description="Standby copies of each state partition on other workers.")
    rocksdb_block_cache: int = Field(
        16 * 1024 * 1024, ge=0, description="RocksDB block cache per state partition, bytes (Faust's default is 2 GiB)."
    )
    rocksdb_write_buffer: int = Field(
        4 * 1024 * 1024,
        ge=1024 * 1024,
        description="RocksDB write buffer (memtable) per state partition, bytes; two per partition.",
    )
    alert_cap: int = Field(
        -1,
        ge=-1,
        description="Most alerts per rule per rule interval (Kibana's max_signals); -1 = the rule's max_signals, 0 = no cap.",
    )
    single_record_batches: bool = Field(
        False,
        description="Only for the embedded development broker (Tansu): write one record per batch, because it "
        "reports wrong end offsets after multi-record batches. Keep false for Apache Kafka.",
    )

    @field_validator("allowed_lateness", "order_tolerance", "session_timeout", "stall_timeout", "fetch_max_wait")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    def to_environment(self) -> dict[str, str]:
        """These settings as the EQLSTREAM_* variables that reproduce them (to start a child process)."""
        environment = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            environment[f"EQLSTREAM_{name.upper()}"] = str(value)
        return environment

    @property
    def allowed_lateness_ns(self) -> int:
        """``allowed_lateness`` in nanoseconds."""
        return parse_duration(self.allowed_lateness)

    @property
    def order_tolerance_ns(self) -> int:
        """``order_tolerance`` in nanoseconds."""
        return parse_duration(self.order_tolerance)
