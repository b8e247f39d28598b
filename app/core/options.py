"""The knobs of detection, as one frozen value: no environment, no defaults read from anywhere else.

The replay CLI and the streaming service build one from their settings (``app.settings``); tests
build one directly. Durations are milliseconds, the unit Elasticsearch orders events in.
"""

from __future__ import annotations

from dataclasses import dataclass

# Elasticsearch refuses objects nested deeper than 20 levels (index.mapping.depth.limit), so no event
# it would alert on comes near this; deeper records are refused before the field readers (which
# recurse once per level) and orjson's serializer (254 levels) would meet them.
MAX_DEPTH = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionOptions:
    """How the detector treats records, time and state.

    * ``allowed_lateness_ms``: how far out of ``@timestamp`` order an event may arrive and still get
      the sorted-order (Elasticsearch) answer.
    * ``order_tolerance_ms``: opt-in; a later stage may precede the earlier one by this much
      (0: Elasticsearch's answer).
    * ``watermark_quorum``: distinct hosts that must reach an event time before state expires by it.
    * ``max_entries_per_stage``: most events one join key holds per stage (a flood evicts the oldest).
    * ``max_state_bytes``: most bytes of events one join key holds (a flood of large events evicts
      the oldest), so that a key's state always fits in one changelog record.
    * ``max_join_keys``: most join keys one event may yield (a multi-valued key field fans out).
    * ``host_id_fallback``: opt-in field to join events without ``host.id`` on ("" = off).
    * ``max_record_bytes``: larger input records are refused unparsed.
    * ``max_event_bytes``: larger events (as JSON, after normalization) are refused as candidates.
    * ``alert_cap``: most new alerts per rule per rule interval of event time (-1: the rule's
      ``max_signals``, 0: no cap).
    * ``alerts_index``: the Elasticsearch index the alert documents are loaded into, which the
      shell's ancestor entries for its building blocks name.
    """

    allowed_lateness_ms: int = 5 * 60_000
    order_tolerance_ms: int = 0
    watermark_quorum: int = 3
    max_entries_per_stage: int = 100
    max_state_bytes: int = 900 * 1024
    max_join_keys: int = 64
    host_id_fallback: str = ""
    max_record_bytes: int = 1024 * 1024
    max_event_bytes: int = 768 * 1024
    alert_cap: int = -1
    alerts_index: str = "eqlstream-alerts-default"

    def __post_init__(self) -> None:
        for name in ("allowed_lateness_ms", "order_tolerance_ms", "max_record_bytes", "max_event_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("watermark_quorum", "max_entries_per_stage", "max_join_keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.alert_cap < -1:
            raise ValueError("alert_cap must be -1 (the rule's max_signals), 0 (no cap) or a positive number")
        if self.max_state_bytes < self.max_event_bytes:
            raise ValueError("max_state_bytes must be at least max_event_bytes: one event must always fit")
