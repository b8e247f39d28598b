"""Per-join-key sequence state and the small store interface the engine runs over.

The replay CLI keeps state in a dict; the streaming service keeps it in a RocksDB-backed Faust
Table. Both see the same ``KeyState`` values, and ``to_json``/``from_json`` give the
serialized form a persistent store writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Entry:
    """A candidate event held for a key: when it happened, when it arrived, which stages it meets."""

    timestamp_ns: int
    arrival: int
    stages: tuple[int, ...]
    event_id: str
    event: dict[str, Any]
    origin: str = ""


@dataclass(slots=True)
class KeyState:
    """Everything the engine remembers about one join key.

    ``emitted`` maps the first event id of each alerted sequence to the event ids it was alerted
    with (so an unchanged sequence is not emitted again when the key is re-evaluated);
    ``superseded`` lists the first event ids that a later, out-of-order arrival showed
    Elasticsearch would not have paired at all (counted once).
    """

    entries: list[Entry] = field(default_factory=list)
    emitted: dict[str, list[str]] = field(default_factory=dict)
    superseded: list[str] = field(default_factory=list)
    next_arrival: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable form (for persistent stores and changelogs)."""
        return {
            "entries": [
                [e.timestamp_ns, e.arrival, list(e.stages), e.event_id, e.event, e.origin] for e in self.entries
            ],
            "emitted": self.emitted,
            "superseded": self.superseded,
            "next_arrival": self.next_arrival,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyState:
        """Inverse of ``to_json``."""
        return cls(
            entries=[
                Entry(ts, arrival, tuple(stages), eid, event, origin)
                for ts, arrival, stages, eid, event, origin in data["entries"]
            ],
            emitted={first: list(ids) for first, ids in data["emitted"].items()},
            superseded=list(data["superseded"]),
            next_arrival=int(data["next_arrival"]),
        )


class StateStore(Protocol):
    """Where the engine keeps ``KeyState`` per key."""

    def get(self, key: str) -> KeyState | None:
        """The state of ``key``, or None."""

    def set(self, key: str, state: KeyState) -> None:
        """Replace the state of ``key``."""

    def delete(self, key: str) -> None:
        """Forget ``key``."""

    def items(self) -> Iterator[tuple[str, KeyState]]:
        """Every key and its state (used to rebuild the expiry index after a restart)."""


class MemoryStore:
    """A dict-backed store for replay and tests."""

    def __init__(self) -> None:
        self._data: dict[str, KeyState] = {}

    def get(self, key: str) -> KeyState | None:
        return self._data.get(key)

    def set(self, key: str, state: KeyState) -> None:
        self._data[key] = state

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def items(self) -> Iterator[tuple[str, KeyState]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)
