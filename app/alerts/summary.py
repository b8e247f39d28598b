"""A compact one-line description of an alert, for logs, the demo and the replay CLI."""

from __future__ import annotations

from app.alerts.builder import first_value
from app.engine.sequence import SequenceMatch
from app.rule.model import RuleMeta
from app.timeparse import NS_PER_S, format_timestamp


def summary_line(rule: RuleMeta, match: SequenceMatch, alert_id: str, latency_s: float | None = None) -> str:
    """``<first event time> <severity> <rule> host=… process=… src=… dst=… span=… id=…``."""
    first, last = match.events[0], match.events[-1]
    network = last.event
    host = first_value(first.event, "host.name") or first_value(first.event, "host.id")
    parts = [
        format_timestamp(first.timestamp_ns),
        rule.severity.upper(),
        repr(rule.name),
        f"host={host}",
        f"process={first_value(first.event, 'process.name')}",
        f"entity_id={first_value(first.event, 'process.entity_id')}",
        f"src={first_value(network, 'source.ip')}:{first_value(network, 'source.port')}",
        f"dst={first_value(network, 'destination.ip')}:{first_value(network, 'destination.port')}",
        f"span={(last.timestamp_ns - first.timestamp_ns) / NS_PER_S:.3f}s",
    ]
    if latency_s is not None:
        parts.append(f"latency={latency_s * 1000:.0f}ms")
    parts.append(f"id={alert_id}")
    return " ".join(parts)
