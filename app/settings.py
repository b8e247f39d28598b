"""All configuration, from environment variables with documented defaults.

Every variable is ``EQLSTREAM_<NAME>``; command-line flags override them for one run. The README
lists them, and every Helm value maps to one of them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
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

    @field_validator("allowed_lateness", "order_tolerance")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def allowed_lateness_ns(self) -> int:
        """``allowed_lateness`` in nanoseconds."""
        return parse_duration(self.allowed_lateness)

    @property
    def order_tolerance_ns(self) -> int:
        """``order_tolerance`` in nanoseconds."""
        return parse_duration(self.order_tolerance)
