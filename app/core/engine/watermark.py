"""An event-time clock that one host with a wrong clock cannot push forward.

State expires by event time: a key is dropped once the stream's time has moved past its events by
the allowed lateness plus maxspan. If the stream's time were simply the largest ``@timestamp``
seen, one event dated 2099 (a broken clock, or an attacker who can write to the topic) would
expire every pending sequence at once and blind detection for every other host. So the clock is
the k-th largest of the per-source maxima: with k = 3, at least three sources must have reached a
time before the engine treats it as now. Fewer distinct sources than k give the smallest of their
maxima. Forging many source ids defeats it; that limit is documented.
"""

from __future__ import annotations


class Watermark:
    """The k-th largest per-source maximum timestamp, maintained in O(k) per observation."""

    def __init__(self, quorum: int = 3) -> None:
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.quorum = quorum
        self._top: dict[str, int] = {}  # at most `quorum` sources with the largest maxima
        self._value: int | None = None

    def observe(self, host: str, timestamp_ms: int) -> None:
        """Record that ``host`` reported an event at ``timestamp_ms``."""
        top = self._top
        current = top.get(host)
        if current is not None:
            if timestamp_ms <= current:
                return
            top[host] = timestamp_ms
        elif len(top) < self.quorum:
            top[host] = timestamp_ms
        else:
            lowest = min(top, key=top.__getitem__)
            if timestamp_ms <= top[lowest]:
                return
            del top[lowest]
            top[host] = timestamp_ms
        candidate = min(top.values())
        # Never moves back (a late-joining source with an old clock must not revive expired state).
        if self._value is None or candidate > self._value:
            self._value = candidate

    @property
    def value(self) -> int | None:
        """The stream's event time in epoch milliseconds, None before any observation."""
        return self._value
