"""The sequence engine: Elasticsearch's EQL sequence semantics, evaluated as events stream in.

Semantics (docs/semantics.md has the full statement and the reasons):

* Per join key, events are ordered by ``@timestamp``, ties by arrival. A stage-n event pairs with the
  latest stage-(n-1) partial sequence of its key that is before it; that partial sequence and all
  older ones at that stage are consumed. ``maxspan`` is inclusive, from the first event.
* Kafka does not deliver in ``@timestamp`` order, so each arrival re-evaluates its key's events in
  sorted order. Within the allowed lateness this gives exactly the sorted-order (Elasticsearch)
  answer. Alerts are emitted as soon as a sequence completes, never held back for the lateness.
  The alert id derives from the first event, so a key with one first-stage event (the normal
  case: an entity id names one process) alerts with the same id whatever the arrival order. If a
  late arrival changes the later events of an alerted sequence (an earlier connection of the same
  process turns up), the alert is emitted again under the same id with Elasticsearch's events
  (counted as ``revised``): the latest record per alert id is Elasticsearch's answer. An alert
  cannot be taken back: if a late, different first-stage event makes Elasticsearch pair
  differently, the new sequence is emitted too (a superset of Elasticsearch's answer) and the
  earlier alert is counted as ``superseded``.
* Re-delivered events (same event id) are one event, so duplicates never change which alerts
  exist. With ``repeat_alerts`` (the streaming service), a re-delivered event of an alerted
  sequence repeats that alert under the same ids (``repeated``), which closes the at-least-once gap
  where a worker stored the state of an alert it died before sending.
* State expires by event time: once the stream's watermark passes an entry by lateness + maxspan
  (+ order tolerance), no in-lateness event can pair with it and it is dropped. An event arriving
  even later than that is dropped too (counted as ``too_late``): what it would pair with is gone.
  Events later than the allowed lateness but not that late are still evaluated (``late``).
* Opt-in order tolerance: later stages are ordered as if they happened ``order_tolerance`` later,
  so a stage-2 event up to that much before its stage-1 event still completes the sequence
  (Sysmon's network events can carry an earlier UtcTime than the process start they belong to).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from app.engine.expiry import ExpiryIndex
from app.engine.state import Entry, KeyState, StateStore
from app.engine.watermark import Watermark
from app.rule.compiler import JoinKey


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event that satisfies at least one stage of a rule, with its join key."""

    rule_id: str
    key: JoinKey
    stages: tuple[int, ...]
    timestamp_ns: int
    event_id: str
    event: dict
    source: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class SequenceMatch:
    """A completed sequence: its key and its events in stage order."""

    rule_id: str
    key: JoinKey
    events: tuple[Entry, ...]


@dataclass
class EngineStats:
    """Counters the drivers report and export as metrics."""

    candidates: int = 0
    duplicates: int = 0
    late: int = 0
    too_late: int = 0
    sequences: int = 0
    superseded: int = 0
    revised: int = 0
    repeated: int = 0
    evicted: int = 0
    expired_keys: int = 0
    expired_entries: int = 0


@dataclass
class SequenceEngine:
    """Evaluates one rule's sequences over a ``StateStore``.

    ``stage_count`` and ``maxspan_ns`` come from the compiled rule; the durations are nanoseconds.
    ``repeat_alerts`` is for drivers that store state before their alerts are acknowledged (the
    streaming service): a re-delivered event of an alerted sequence then repeats that alert.
    ``max_entries_per_stage`` bounds what one key may hold (a flood on one key evicts its oldest
    entries of the flooded stage, counted as ``evicted``).
    """

    rule_id: str
    stage_count: int
    maxspan_ns: int | None
    store: StateStore
    allowed_lateness_ns: int
    order_tolerance_ns: int = 0
    watermark: Watermark = field(default_factory=Watermark)
    max_entries_per_stage: int = 100
    repeat_alerts: bool = False
    stats: EngineStats = field(default_factory=EngineStats)
    _expiry: ExpiryIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.stage_count < 2:
            raise ValueError("a sequence has at least two stages")
        # How far behind the watermark an entry can still take part in an in-lateness match.
        self.horizon_ns = self.allowed_lateness_ns + (self.maxspan_ns or 0) + self.order_tolerance_ns
        # Every state key of this rule starts with its id (see state_key): the index leaves that out.
        self._expiry = ExpiryIndex(prefix=orjson.dumps([self.rule_id]).decode()[:-1])

    def state_key(self, key: JoinKey) -> str:
        """The store key for a join key: rule-scoped, canonical JSON (values may contain any character)."""
        return orjson.dumps([self.rule_id, *key]).decode()

    def process(self, candidate: Candidate) -> list[SequenceMatch]:
        """Add one candidate; returns the sequences it newly completes (usually none)."""
        self.stats.candidates += 1
        self.watermark.observe(candidate.source, candidate.timestamp_ns)
        now = self.watermark.value
        if now is not None and candidate.timestamp_ns < now - self.allowed_lateness_ns:
            if candidate.timestamp_ns < now - self.horizon_ns:
                # State it could pair with (or that would have consumed it) is already gone, so any
                # answer would be a guess: drop it, counted.
                self.stats.too_late += 1
                return []
            self.stats.late += 1
        skey = self.state_key(candidate.key)
        state = self.store.get(skey) or KeyState()
        indexed = _oldest(state)
        if any(e.event_id == candidate.event_id for e in state.entries):
            self.stats.duplicates += 1
            self.expire()
            return self._repeat(candidate, state) if self.repeat_alerts else []
        state.entries.append(
            Entry(
                candidate.timestamp_ns,
                state.next_arrival,
                candidate.stages,
                candidate.event_id,
                candidate.event,
                candidate.origin,
            )
        )
        state.next_arrival += 1
        self._bound(state, candidate.stages)
        matches = self._evaluate(candidate.key, state)
        self._prune(state, now)
        self._save(skey, state, indexed)
        self.expire()
        return matches

    def expire(self) -> int:
        """Drop state the watermark has left behind; returns the number of keys deleted."""
        now = self.watermark.value
        if now is None:
            return 0
        cutoff = now - self.horizon_ns
        deleted = 0
        for timestamp, skey in self._expiry.pop_before(cutoff):
            state = self.store.get(skey)
            if state is None:
                continue
            oldest = _oldest(state)
            self._prune(state, now)
            # A stale record (the key's oldest entry is newer): the key's current record stays indexed.
            if not self._save(skey, state, oldest if timestamp != oldest else None):
                self.stats.expired_keys += 1
                deleted += 1
        return deleted

    def rebuild_expiry_index(self, items: Iterable[tuple[str, KeyState]]) -> int:
        """After a restart, index the restored state of this rule so it expires like fresh state;
        returns the keys indexed (keys of other rules sharing the store are left to their engines)."""
        count = 0
        for skey, state in items:
            if state.entries and self._expiry.owns(skey):
                self._expiry.add(_oldest(state), skey)
                count += 1
        return count

    # -- internals -------------------------------------------------------------------------

    def _save(self, skey: str, state: KeyState, indexed: int | None) -> bool:
        """Store the state, or delete the key if nothing is left; True if kept.

        ``indexed`` is the oldest timestamp the expiry index already holds for the key (None: none):
        the key is indexed again only when its oldest entry changed, so a busy key does not add a
        record per event.
        """
        if not state.entries:
            self.store.delete(skey)
            return False
        self.store.set(skey, state)
        oldest = _oldest(state)
        if oldest != indexed:
            self._expiry.add(oldest, skey)
        return True

    def _repeat(self, candidate: Candidate, state: KeyState) -> list[SequenceMatch]:
        """The alerted sequences a re-delivered event belongs to, again, under the same ids.

        Delivery is at-least-once, and a stream processor stores a key's state before the alerts
        it produced are acknowledged: a worker that dies in between comes back with state saying
        the sequence was alerted while the alert never left. The events are then read again, so
        repeating an alert when one of its events is re-delivered closes that gap; readers index
        alerts by id, so a repeat is harmless.
        """
        by_id = {e.event_id: e for e in state.entries}
        repeats = []
        for ids in state.emitted.values():
            if candidate.event_id in ids and all(i in by_id for i in ids):
                repeats.append(SequenceMatch(self.rule_id, candidate.key, tuple(by_id[i] for i in ids)))
        self.stats.repeated += len(repeats)
        return repeats

    def _order(self, entry: Entry, stage: int) -> int:
        return entry.timestamp_ns + (self.order_tolerance_ns if stage else 0)

    def _bound(self, state: KeyState, stages: tuple[int, ...]) -> None:
        limit = self.max_entries_per_stage
        for stage in stages:
            holding = [e for e in state.entries if stage in e.stages]
            if len(holding) > limit:
                holding.sort(key=lambda e: (e.timestamp_ns, e.arrival))
                evict = {id(e) for e in holding[: len(holding) - limit]}
                state.entries = [e for e in state.entries if id(e) not in evict]
                self.stats.evicted += len(evict)

    def _evaluate(self, key: JoinKey, state: KeyState) -> list[SequenceMatch]:
        """Run Elasticsearch's matcher over the key's events in sorted order; report new sequences."""
        completed = self.sequences(state.entries)
        found = {seq[0].event_id: seq for seq in completed}
        matches = []
        for first_id, seq in found.items():
            ids = [e.event_id for e in seq]
            previous = state.emitted.get(first_id)
            if previous == ids:
                continue
            if previous is None:
                self.stats.sequences += 1
            else:
                self.stats.revised += 1
            state.emitted[first_id] = ids
            matches.append(SequenceMatch(self.rule_id, key, seq))
        for first_id in state.emitted:
            if first_id not in found and first_id not in state.superseded:
                state.superseded.append(first_id)
                self.stats.superseded += 1
        return matches

    def sequences(self, entries: list[Entry]) -> list[tuple[Entry, ...]]:
        """The sequences Elasticsearch completes over ``entries`` (one key), in completion order."""
        last = self.stage_count - 1
        items = sorted(
            ((self._order(e, stage), e.arrival, -stage, stage, e) for e in entries for stage in e.stages),
            key=lambda item: item[:3],
        )
        waiting: list[list[tuple[Entry, ...]]] = [[] for _ in range(last)]
        completed = []
        for _, _, _, stage, entry in items:
            if stage == 0:
                waiting[0].append((entry,))
                continue
            group = waiting[stage - 1]
            if not group:
                continue
            partial = group[-1]
            if any(e is entry for e in partial):
                continue  # with an order tolerance an event may meet two stages; never pair it with itself
            group.clear()
            if self.maxspan_ns is not None and entry.timestamp_ns - partial[0].timestamp_ns > self.maxspan_ns:
                continue
            if stage == last:
                completed.append((*partial, entry))
            else:
                waiting[stage].append((*partial, entry))
        return completed

    def _prune(self, state: KeyState, now: int | None) -> None:
        if now is None:
            return
        cutoff = now - self.horizon_ns
        kept = [e for e in state.entries if e.timestamp_ns >= cutoff]
        if len(kept) != len(state.entries):
            self.stats.expired_entries += len(state.entries) - len(kept)
            state.entries = kept
            first_ids = {e.event_id for e in kept if 0 in e.stages}
            state.emitted = {i: ids for i, ids in state.emitted.items() if i in first_ids}
            state.superseded = [i for i in state.superseded if i in first_ids]


def _oldest(state: KeyState) -> int | None:
    """The timestamp of the key's oldest entry (what the expiry index is keyed by), None if empty."""
    return min((e.timestamp_ns for e in state.entries), default=None)
