"""The sequence engine: Elasticsearch's EQL sequence semantics, evaluated as events stream in.

Semantics (docs/semantics.md has the full statement and the reasons):

* Per join key, events are ordered by ``@timestamp`` in milliseconds, ties by arrival. A stage-n
  event pairs with the latest stage-(n-1) partial sequence of its key that is before it; that
  partial sequence and all older ones at that stage are consumed. ``maxspan`` is inclusive, from
  the first event.
* Kafka does not deliver in ``@timestamp`` order, so each arrival re-evaluates its key's events in
  sorted order. Within the allowed lateness this gives exactly the sorted-order (Elasticsearch)
  answer. Alerts are emitted as soon as a sequence completes, never held back for the lateness.
  The alert id derives from the first event, so a key with one first-stage event (the normal
  case: an entity id names one process) alerts with the same id whatever the arrival order. If a
  late arrival changes the later events of an alerted sequence (an earlier connection of the same
  process turns up), the alert is emitted again under the same id with Elasticsearch's events
  (``revised``): the latest record per alert id is Elasticsearch's answer. An alert cannot be
  taken back: if a late, different first-stage event makes Elasticsearch pair differently, the new
  sequence is emitted too (a superset of Elasticsearch's answer) and the earlier alert is counted
  as ``superseded``.
* Re-delivered events (same event id) are one event, so duplicates never change which alerts
  exist, and never emit anything.
* State expires by event time: once the stream's watermark passes an entry by lateness + maxspan
  (+ order tolerance), no in-lateness event can pair with it and it is dropped, at most
  ``EXPIRE_PER_CALL`` keys per call so that a watermark jump is spread out. An event arriving
  even later than that is dropped too (``too_late``): what it would pair with is gone. Events
  later than the allowed lateness but not that late are still evaluated (``late``).
* What one key holds is bounded, by events per stage and by bytes; a flood evicts the oldest
  entries (``evicted``), so a key's state always fits in one changelog record.
* Opt-in order tolerance: later stages are ordered as if they happened ``order_tolerance_ms``
  later, so a stage-2 event up to that much before its stage-1 event still completes the sequence
  (Sysmon's network events can carry an earlier UtcTime than the process start they belong to).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from app.core.engine.expiry import ExpiryIndex
from app.core.engine.state import Entry, KeyState, StateStore
from app.core.engine.watermark import Watermark
from app.core.model import Candidate, JoinKey

# Keys one call of ``expire`` looks at, at most: the work (and memory) a candidate or a timer tick
# may spend on expiry.
EXPIRE_PER_CALL = 1_000


@dataclass(frozen=True, slots=True)
class SequenceMatch:
    """A completed sequence: its key and its events in stage order; ``revised`` if emitted before."""

    rule_id: str
    key: JoinKey
    events: tuple[Entry, ...]
    revised: bool = False


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
    evicted: int = 0
    expired_keys: int = 0
    expired_entries: int = 0

    def add(self, other: EngineStats) -> None:
        """Add ``other``'s counts to these (totals over engines that come and go)."""
        for name in EngineStats.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class SequenceEngine:
    """Evaluates one rule's sequences over a ``StateStore``.

    ``stage_count`` and ``maxspan_ms`` come from the compiled rule; durations are milliseconds.
    ``max_entries_per_stage`` and ``max_state_bytes`` bound what one key may hold.
    """

    rule_id: str
    stage_count: int
    maxspan_ms: int | None
    store: StateStore
    allowed_lateness_ms: int
    order_tolerance_ms: int = 0
    watermark: Watermark = field(default_factory=Watermark)
    max_entries_per_stage: int = 100
    max_state_bytes: int = 900 * 1024
    stats: EngineStats = field(default_factory=EngineStats)
    _expiry: ExpiryIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.stage_count < 2:
            raise ValueError("a sequence has at least two stages")
        # How far behind the watermark an entry can still take part in an in-lateness match.
        self.horizon_ms = self.allowed_lateness_ms + (self.maxspan_ms or 0) + self.order_tolerance_ms
        # Every state key of this rule starts with its id (see state_key): the index leaves that out.
        self._expiry = ExpiryIndex(prefix=orjson.dumps([self.rule_id]).decode()[:-1])

    def state_key(self, key: JoinKey) -> str:
        """The store key for a join key: rule-scoped, canonical JSON (values may contain any character)."""
        return orjson.dumps([self.rule_id, *key]).decode()

    def process(self, candidate: Candidate) -> list[SequenceMatch]:
        """Add one candidate; returns the sequences it completes or revises (usually none)."""
        self.stats.candidates += 1
        self.watermark.observe(candidate.watermark_host, candidate.timestamp_ms)
        now = self.watermark.value
        if now is not None and candidate.timestamp_ms < now - self.allowed_lateness_ms:
            if candidate.timestamp_ms < now - self.horizon_ms:
                # State it could pair with (or that would have consumed it) is already gone, so any
                # answer would be a guess: drop it, counted.
                self.stats.too_late += 1
                return []
            self.stats.late += 1
        skey = self.state_key(candidate.key)
        state = self.store.get(skey) or KeyState()
        indexed = _oldest(state)
        if candidate.event_id in map(_EVENT_ID, state.entries):
            self.stats.duplicates += 1
            self.expire()
            return []
        last = self._is_last(state, candidate)
        entry = Entry(
            candidate.timestamp_ms,
            state.next_arrival,
            candidate.stages,
            candidate.event_id,
            candidate.event_json,
            candidate.origin,
            candidate.event,
        )
        state.entries.append(entry)
        state.next_arrival += 1
        evicted = self._bound(state, entry)
        # A first-stage event that sorts after everything the key holds can complete nothing and
        # change no pairing: the sorted scan would only end with it waiting. Evicting the oldest
        # first-stage events cannot make a new pairing either (a later stage pairs with the latest
        # first-stage event before it, which eviction only ever removes with all older ones).
        quiet = last and candidate.stages == (0,) and all(e.stages == (0,) for e in evicted)
        matches = [] if quiet else self._evaluate(candidate.key, state)
        self._prune(state, now)
        self._save(skey, state, indexed)
        self.expire()
        return matches

    def expire(self, limit: int | None = EXPIRE_PER_CALL) -> int:
        """Drop state the watermark has left behind, at most ``limit`` keys (None: all); returns the
        number of keys deleted.

        Bounded because a watermark jump after a flood of distinct keys would otherwise expire
        every key at once: all of them read, deleted and written to the changelog in one batch,
        the memory of the flood a second time. The rest go on the next calls (each candidate, and
        the service's timer when no candidate comes); entries past the horizon that are still
        held can only add a late match Elasticsearch would also find.
        """
        now = self.watermark.value
        if now is None:
            return 0
        cutoff = now - self.horizon_ms
        deleted = 0
        for looked, (timestamp, skey) in enumerate(self._expiry.pop_before(cutoff), start=1):
            state = self.store.get(skey)
            if state is not None:
                oldest = _oldest(state)
                self._prune(state, now)
                # A stale record (the key's oldest entry is newer): the key's current record stays indexed.
                if not self._save(skey, state, oldest if timestamp != oldest else None):
                    self.stats.expired_keys += 1
                    deleted += 1
            if limit is not None and looked >= limit:
                break
        return deleted

    def rebuild_expiry_index(self, items: Iterable[tuple[str, KeyState]]) -> int:
        """After a restart, index the restored state of this rule so it expires like fresh state;
        returns the keys indexed (keys of other rules sharing the store are left to their engines)."""
        count = 0
        for skey, state in items:
            oldest = _oldest(state)
            if oldest is not None and self._expiry.owns(skey):
                self._expiry.add(oldest, skey)
                count += 1
        return count

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
            if self.maxspan_ms is not None and entry.timestamp_ms - partial[0].timestamp_ms > self.maxspan_ms:
                continue
            if stage == last:
                completed.append((*partial, entry))
            else:
                waiting[stage].append((*partial, entry))
        return completed

    # -- internals -------------------------------------------------------------------------

    def _save(self, skey: str, state: KeyState, indexed: int | None) -> bool:
        """Store the state, or delete the key if nothing is left; True if kept.

        ``indexed`` is the oldest timestamp the expiry index already holds for the key (None: none):
        the key is indexed again only when its oldest entry changed, so a busy key does not add a
        record per event.
        """
        oldest = _oldest(state)
        if oldest is None:
            self.store.delete(skey)
            return False
        self.store.set(skey, state)
        if oldest != indexed:
            self._expiry.add(oldest, skey)
        return True

    def _order(self, entry: Entry, stage: int) -> int:
        return entry.timestamp_ms + (self.order_tolerance_ms if stage else 0)

    def _is_last(self, state: KeyState, candidate: Candidate) -> bool:
        """Whether ``candidate`` sorts after every event the key holds, at every stage of each."""
        if not state.entries:
            return True
        position = min(self._order_of(candidate.timestamp_ms, stage) for stage in candidate.stages)
        if not self.order_tolerance_ms:  # every stage of an entry sorts at its timestamp: one C-level pass
            latest: int = max(map(_TIMESTAMP, state.entries))
            return latest <= position
        return all(self._order(e, max(e.stages)) <= position for e in state.entries)

    def _order_of(self, timestamp_ms: int, stage: int) -> int:
        return timestamp_ms + (self.order_tolerance_ms if stage else 0)

    def _bound(self, state: KeyState, added: Entry) -> list[Entry]:
        """Evict the oldest entries beyond the per-stage count and the key's byte budget (never ``added``);
        returns them."""
        entries = state.entries
        total = sum(map(len, map(_EVENT_JSON, entries)))  # Entry.size, without a property call each
        if len(entries) <= self.max_entries_per_stage and total <= self.max_state_bytes:
            return []  # within both bounds whatever the stages: nothing to look at
        evicted: list[Entry] = []
        for stage in added.stages:
            holding = [e for e in entries if stage in e.stages and e is not added]
            excess = len(holding) + 1 - self.max_entries_per_stage
            if excess == 1:  # the common case of a flooded key: one too many, found without sorting
                evicted.append(min(holding, key=_AGE))
            elif excess > 1:
                evicted += sorted(holding, key=_AGE)[:excess]
        evicted = list({id(e): e for e in evicted}.values())  # an entry of two stages may be picked twice
        total -= sum(map(len, map(_EVENT_JSON, evicted)))
        if total > self.max_state_bytes:
            for entry in sorted(entries, key=_AGE):
                if total <= self.max_state_bytes:
                    break
                if entry is not added and all(entry is not e for e in evicted):
                    evicted.append(entry)
                    total -= entry.size
        for entry in evicted:
            entries.remove(entry)  # by identity (entries compare so), in C
        self.stats.evicted += len(evicted)
        return evicted

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
            matches.append(SequenceMatch(self.rule_id, key, seq, revised=previous is not None))
        for first_id in state.emitted:
            if first_id not in found and first_id not in state.superseded:
                state.superseded.append(first_id)
                self.stats.superseded += 1
        return matches

    def _prune(self, state: KeyState, now: int | None) -> None:
        if now is None:
            return
        cutoff = now - self.horizon_ms
        if not state.entries or min(map(_TIMESTAMP, state.entries)) >= cutoff:
            return
        kept = [e for e in state.entries if e.timestamp_ms >= cutoff]
        if len(kept) != len(state.entries):
            self.stats.expired_entries += len(state.entries) - len(kept)
            state.entries = kept
            first_ids = {e.event_id for e in kept if 0 in e.stages}
            state.emitted = {i: ids for i, ids in state.emitted.items() if i in first_ids}
            state.superseded = [i for i in state.superseded if i in first_ids]


# C-level field readers: a flooded key holds a hundred entries, scanned a few times per candidate.
_TIMESTAMP = operator.attrgetter("timestamp_ms")
_EVENT_ID = operator.attrgetter("event_id")
_EVENT_JSON = operator.attrgetter("event_json")
_AGE = operator.attrgetter("timestamp_ms", "arrival")  # eviction order: oldest first, then earliest arrival


def _oldest(state: KeyState) -> int | None:
    """The timestamp of the key's oldest entry (what the expiry index is keyed by), None if empty."""
    return min(map(_TIMESTAMP, state.entries), default=None)
