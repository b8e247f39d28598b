"""A compact one-line description of an alert, for logs, the demo and the replay CLI.

It reads only the alert documents, so it serves both an in-process alert and one read back from
the alerts topic.
"""

from __future__ import annotations

from app.core.alerts.builder import first_value
from app.core.model import Event
from app.core.timeparse import MS_PER_S, format_timestamp, parse_timestamp


def summary_line(documents: list[Event] | tuple[Event, ...], latency_s: float | None = None) -> str:
    """``<first event time> <SEVERITY> '<rule>' host=… process=… entity_id=… src=… dst=… span=… id=…``.

    ``documents`` are one match's building blocks (in stage order) followed by its shell.
    """
    *blocks, shell = documents
    first, last = blocks[0], blocks[-1]
    first_ms = parse_timestamp(first["kibana.alert.original_time"]) or 0
    last_ms = parse_timestamp(last["kibana.alert.original_time"]) or 0
    parts = [
        format_timestamp(first_ms),
        str(shell["kibana.alert.severity"]).upper(),
        repr(shell["kibana.alert.rule.name"]),
        f"host={first_value(first, 'host.name') or first_value(first, 'host.id')}",
        f"process={first_value(first, 'process.name')}",
        f"entity_id={first_value(first, 'process.entity_id')}",
        f"src={first_value(last, 'source.ip')}:{first_value(last, 'source.port')}",
        f"dst={first_value(last, 'destination.ip')}:{first_value(last, 'destination.port')}",
        f"span={(last_ms - first_ms) / MS_PER_S:.3f}s",
    ]
    if latency_s is not None:
        parts.append(f"latency={latency_s * 1000:.0f}ms")
    parts.append(f"id={shell['kibana.alert.uuid']}")
    return " ".join(parts)
