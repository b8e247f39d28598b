"""Per-join-key sequence state and the small store interface the engine runs over.

The replay CLI keeps state in a dict; the streaming service keeps it in a RocksDB-backed Faust
Table. Both see the same ``KeyState`` values; ``encode_state`` and ``decode_state`` give the bytes
a persistent store and its changelog hold.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from app.core.model import Event

# The stored form: a magic, the length of a JSON header, the header, then each entry's event JSON
# as it arrived (never parsed and re-serialized). eqlstream 0.1 stored one JSON document with
# nanosecond timestamps; ``decode_state`` still reads that.
_MAGIC = b"EQS3"
_HEADER_LENGTH = struct.Struct(">I")


@dataclass(slots=True, eq=False)
class Entry:
    """A candidate event held for a key: when it happened, when it arrived, which stages it meets.

    The event is kept as its JSON bytes and parsed only when an alert needs it (most entries
    expire without one). Entries are compared by identity: the same only if the same object.
    """

    timestamp_ms: int
    arrival: int
    stages: tuple[int, ...]
    event_id: str
    event_json: bytes
    origin: str = ""
    parsed: Event | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """The event's JSON size in bytes (what the key's state budget counts)."""
        return len(self.event_json)

    @property
    def event(self) -> Event:
        """The event, parsed once."""
        if self.parsed is None:
            self.parsed = orjson.loads(self.event_json)
        return self.parsed


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


def encode_state(state: KeyState) -> bytes:
    """The bytes a persistent store and its changelog keep for ``state``."""
    header = orjson.dumps(
        {
            "entries": [[e.timestamp_ms, e.arrival, e.stages, e.event_id, e.origin, e.size] for e in state.entries],
            "emitted": state.emitted,
            "superseded": state.superseded,
            "next_arrival": state.next_arrival,
        }
    )
    return b"".join([_MAGIC, _HEADER_LENGTH.pack(len(header)), header, *(e.event_json for e in state.entries)])


def decode_state(raw: bytes) -> KeyState:
    """Inverse of ``encode_state``; also reads eqlstream 0.1's JSON state. ``ValueError`` if neither."""
    if not raw.startswith(_MAGIC):
        return _decode_json_state(orjson.loads(raw))
    start = len(_MAGIC) + _HEADER_LENGTH.size
    (length,) = _HEADER_LENGTH.unpack_from(raw, len(_MAGIC))
    data: dict[str, Any] = orjson.loads(raw[start : start + length])
    position = start + length
    entries = []
    for ts, arrival, stages, eid, origin, size in data["entries"]:
        entries.append(Entry(ts, arrival, tuple(stages), eid, raw[position : position + size], origin))
        position += size
    if position != len(raw):
        raise ValueError("state record has trailing or missing bytes")
    return KeyState(
        entries=entries,
        emitted={first: list(ids) for first, ids in data["emitted"].items()},
        superseded=list(data["superseded"]),
        next_arrival=int(data["next_arrival"]),
    )


def _decode_json_state(data: dict[str, Any]) -> KeyState:
    """eqlstream 0.1's state: one JSON document, nanosecond timestamps, parsed events."""
    return KeyState(
        entries=[
            Entry(ts // 1_000_000, arrival, tuple(stages), eid, orjson.dumps(event), origin, event)
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
