"""From raw record bytes to candidates: prefilter, parse, normalize, evaluate the stages, join keys.

Nearly every record is noise. One prefilter scan covers a whole Kafka batch or file block; only
the records it keeps are parsed, mapped to ECS and evaluated. What cannot be evaluated comes back
as a ``Rejection`` with a stable reason, one per input record at most, never as an exception.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core.alerts.ids import event_id
from app.core.fields import compile_getter, keyword_value
from app.core.model import Candidate, Event, JoinKey, Rejection, RejectReason
from app.core.normalize import normalize, unmapped_windows_layout
from app.core.options import MAX_DEPTH, DetectionOptions
from app.core.rule import CompiledRule, Stage, TooManyJoinKeys
from app.core.rule.predicates import event_categories, reading_once
from app.core.rule.prefilter import Prefilter
from app.core.timeparse import parse_timestamp

_host_id = compile_getter("host.id")
_OBJECT_ENDS = (b"}", b"}\r", b"}\n", b"}\r\n")
_BOM = b"\xef\xbb\xbf"
# Bad lines of one multi-line record that its single dead letter lists by number.
MAX_LISTED_LINES = 20
# Distinct event.category value sets whose stage lists are kept (a forged event may invent any).
_PLAN_CACHE_SIZE = 64


class _Refused(Exception):
    """An event that cannot become a candidate; carries the rejection's reason and detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ExtractStats:
    """What the extractor saw."""

    records: int = 0
    parsed: int = 0
    candidates: int = 0
    no_join_key: int = 0
    missing_host_id: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


Extraction = tuple[list[Candidate], list[Rejection]]
_NOTHING: Extraction = ([], [])


class CandidateExtractor:
    """Prefilter, parse and evaluate each record against every rule's stages."""

    def __init__(self, rules: Sequence[CompiledRule], options: DetectionOptions) -> None:
        self.rules = tuple(rules)
        self.options = options
        self.prefilter = Prefilter(stage.requirement for rule in rules for stage in rule.stages)
        self._plans: dict[frozenset[str], list[tuple[CompiledRule, tuple[Stage, ...]]]] = {}
        self.stats = ExtractStats()
        fallback = options.host_id_fallback
        self._host_id_fallback = compile_getter(fallback) if fallback else None

    def extract(self, raw: bytes, origin: str = "") -> Extraction:
        """The candidates in one raw record (usually none) and what had to be rejected.

        The returned lists must not be modified (the common empty result is shared).
        """
        self.stats.records += 1
        if len(raw) > self.options.max_record_bytes:
            return [], [self._too_large(raw)]
        # Two byte checks send malformed records (truncated, plain text, arrays, a byte-order mark)
        # to the parser, which names the problem; well-formed-looking ones are dropped unparsed
        # unless the prefilter keeps them.
        if raw[:1] == b"{" and raw.endswith(_OBJECT_ENDS) and not self.prefilter(raw):
            return _NOTHING
        return self._parse_and_evaluate(raw, origin)

    def extract_block(self, block: bytes, origin: str = "", start: int = 0, end: int | None = None) -> Extraction:
        """Like ``extract`` for every line of ``block[start:end]``, newline-separated records (NDJSON).

        One prefilter scan covers the whole block (minus lines over the size limit, rejected
        unscanned); only lines with a hit are touched one by one. Blank lines are not records.
        """
        end = len(block) if end is None else end
        lines = block.count(b"\n", start, end) + (0 if start == end or block[end - 1] == 0x0A else 1)
        found: list[Candidate] = []
        rejected: list[Rejection] = []
        blank = 0
        segment_start = start
        for big_start, big_end in [*self._oversized_lines(block, start, end), (end, end)]:
            for line_start, line_end in self.prefilter.lines_to_check(block, segment_start, big_start):
                line = block[line_start:line_end]
                if not line.strip():
                    blank += 1
                elif line[:1] != b"{" or not line.endswith(_OBJECT_ENDS) or self.prefilter(line):
                    more, problems = self._parse_and_evaluate(line, origin)
                    found += more
                    rejected += problems
            if big_start < end:
                rejected.append(self._too_large(block[big_start:big_end]))
            segment_start = big_end + 1
        self.stats.records += lines - blank
        return found, rejected

    def _oversized_lines(self, block: bytes, start: int, end: int) -> list[tuple[int, int]]:
        """(start, end) of the lines of ``block[start:end]`` longer than ``max_record_bytes``.

        Each step looks for the last newline within ``max_record_bytes + 1`` bytes of a line start:
        every line before it is short enough, and there is no newline at all only at an oversized
        line. So a block costs a few ``rfind`` calls per ``max_record_bytes``, not one per line.
        """
        limit = self.options.max_record_bytes
        found = []
        position = start
        while end - position > limit:
            newline = block.rfind(b"\n", position, position + limit + 1)
            if newline >= 0:
                position = newline + 1
                continue
            stop = block.find(b"\n", position + limit + 1, end)
            stop = end if stop < 0 else stop
            found.append((position, stop))
            position = stop + 1
        return found

    def extract_many(self, records: Sequence[bytes], origins: Sequence[str]) -> list[tuple[int, Extraction]]:
        """``extract`` over a batch of records (a Kafka poll), with one prefilter scan for the batch.

        Returns (index, extraction) for the records that yielded candidates or rejections only.
        The records are joined with newlines so Hyperscan scans them in one call; a hit is mapped
        back to its record, which is then extracted on its own, exactly as ``extract`` would.
        Records over the size limit are left out of the scan and rejected.
        """
        self.stats.records += len(records)
        limit = self.options.max_record_bytes
        scanned: Sequence[int]
        if records and max(map(len, records)) > limit:
            scanned = [i for i, record in enumerate(records) if len(record) <= limit]
            hits = {i for i, record in enumerate(records) if len(record) > limit}
            kept = [records[i] for i in scanned]
        else:
            scanned = range(len(records))
            hits = set()
            kept = list(records)
        block = b"\n".join(kept)
        # The k-th scanned record starts at ends[k - 1] + k (its predecessors and their newlines). Only the
        # few hits are mapped back, by bisection on that, so no Python code runs per record.
        ends = list(itertools.accumulate(map(len, kept)))
        records_after_first = range(1, len(kept))
        hits.update(
            scanned[bisect.bisect_right(records_after_first, line_start, key=lambda k: ends[k - 1] + k)]
            for line_start, _ in self.prefilter.lines_to_check(block)
        )
        if b"" in records:  # an empty record is no line of the block: check it on its own
            hits.update(i for i, record in enumerate(records) if not record)
        results = []
        for index in sorted(hits):
            self.stats.records -= 1  # extract() counts it again
            extraction = self.extract(records[index], origins[index])
            if extraction[0] or extraction[1]:
                results.append((index, extraction))
        return results

    def _parse_and_evaluate(self, raw: bytes, origin: str) -> Extraction:
        text = raw[3:] if raw.startswith(_BOM) else raw
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if b"\n" in text.strip():
                return self._extract_lines(text, origin)
            return [], [self._parse_error(exc, raw)]
        return self._evaluate(doc, raw, origin)

    def _extract_lines(self, raw: bytes, origin: str) -> Extraction:
        """Logstash's json_lines codec may put several newline-separated objects in one record.

        However many of its lines are bad, the record gives one rejection, listing the first
        ``MAX_LISTED_LINES`` bad line numbers: one record must not become a flood of dead letters.
        """
        found: list[Candidate] = []
        bad: list[int] = []
        reasons: Counter[RejectReason] = Counter()
        for number, line in enumerate(raw.split(b"\n"), 1):
            if line.startswith(_BOM):
                line = line[3:]
            if not line.strip() or (line[:1] == b"{" and line.endswith(_OBJECT_ENDS) and not self.prefilter(line)):
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                bad.append(number)
                reasons[_parse_reason(exc)] += 1
                continue
            more, problems = self._evaluate(doc, line, origin, count=False)
            found += more
            if problems:
                bad.append(number)
                reasons[problems[0].reason] += 1
        if not bad:
            return found, []
        reason = reasons.most_common(1)[0][0]
        listed = ", ".join(map(str, bad[:MAX_LISTED_LINES])) + (", ..." if len(bad) > MAX_LISTED_LINES else "")
        detail = f"{len(bad)} bad line(s) of a multi-line record (lines {listed}); mostly {reason}"
        return found, [self._rejection(reason, detail, raw, lines=tuple(bad[:MAX_LISTED_LINES]), count=len(bad))]

    def _evaluate(self, doc: Any, raw: bytes, origin: str, count: bool = True) -> Extraction:
        if type(doc) is not dict:
            problem = (RejectReason.NOT_AN_OBJECT, f"a JSON {type(doc).__name__}, not an object")
        elif _nested_deeper_than(MAX_DEPTH, doc, raw):
            problem = (RejectReason.TOO_DEEP, f"objects and arrays nested deeper than {MAX_DEPTH} levels")
        else:
            self.stats.parsed += 1
            try:
                return self.candidates(doc, origin, raw), []
            except _Refused as exc:
                problem = (exc.reason, exc.detail)
        if not count:
            return [], [Rejection(problem[0], problem[1], raw)]
        return [], [self._rejection(problem[0], problem[1], raw)]

    def _with_fallback_host_id(self, doc: Event) -> Event:
        """Opt-in: join events without ``host.id`` on another field (Elasticsearch never joins them)."""
        assert self._host_id_fallback is not None
        value = next((v for v in map(keyword_value, self._host_id_fallback(doc)) if v), None)
        if value is None:
            return doc
        host = doc.get("host")
        return {**doc, "host": {**host, "id": value} if isinstance(host, dict) else {"id": value}}

    def _rejection(
        self, reason: RejectReason, detail: str, raw: bytes, lines: tuple[int, ...] = (), count: int = 1
    ) -> Rejection:
        self.stats.rejected[reason] += 1
        return Rejection(reason, detail, raw, lines, count)

    def _too_large(self, raw: bytes) -> Rejection:
        return self._rejection(
            RejectReason.RECORD_TOO_LARGE,
            f"{len(raw)} bytes, more than the limit of {self.options.max_record_bytes}",
            raw,
        )

    def _parse_error(self, exc: orjson.JSONDecodeError, raw: bytes) -> Rejection:
        reason = _parse_reason(exc)
        if reason is RejectReason.TOO_DEEP:
            return self._rejection(reason, f"objects and arrays nested deeper than {MAX_DEPTH} levels", raw)
        hint = " (is this NDJSON, one JSON object per line?)" if raw[:1] not in (b"{", b"[") else ""
        return self._rejection(reason, f"not JSON ({exc}){hint}", raw)

    def candidates(self, doc: Event, origin: str = "", raw: bytes | None = None) -> list[Candidate]:
        """Candidates of one parsed event (normalized to ECS first); raises ``_Refused``.

        Only the stages of the event's categories are looked at, and with ``raw`` (the bytes ``doc``
        was parsed from) only those whose literals the bytes contain: the rest cannot match. Each
        field is read once, however many stages read it.
        """
        with reading_once():
            return self._candidates(doc, origin, raw)

    def _candidates(self, doc: Event, origin: str, raw: bytes | None) -> list[Candidate]:
        mapped = normalize(doc)
        unmapped = mapped is doc
        if not any(keyword_value(v) for v in _host_id(mapped)):
            self.stats.missing_host_id += 1
            if self._host_id_fallback is not None:
                mapped = self._with_fallback_host_id(mapped)
        found: list[Candidate] = []
        identity: tuple[int, str, str, bytes] | None = None
        limit = self.options.max_join_keys
        met = self.prefilter.met(self.prefilter.present(raw)) if raw is not None else None
        for rule, stages in self._plan(mapped):
            by_key: dict[JoinKey, list[int]] = {}
            for stage in stages:
                if met is not None and stage.requirement and stage.requirement not in met:
                    continue  # the record lacks the literals this stage needs
                if not stage.condition(mapped):
                    continue
                try:
                    keys = stage.join_keys(mapped, limit)
                except TooManyJoinKeys as exc:
                    raise _Refused(
                        RejectReason.TOO_MANY_JOIN_KEYS, f"{exc} (the limit is EQLSTREAM_MAX_JOIN_KEYS)"
                    ) from None
                if not keys:
                    self.stats.no_join_key += 1
                for key in keys:
                    by_key.setdefault(key, []).append(stage.index)
            if len(by_key) > limit:
                raise _Refused(
                    RejectReason.TOO_MANY_JOIN_KEYS, f"the event gives {len(by_key)} join keys, more than {limit}"
                )
            if not by_key:
                continue
            if identity is None:
                identity = self._identity(mapped)
            timestamp, eid, host, event_json = identity
            for key, indexes in by_key.items():
                found.append(
                    Candidate(
                        rule_id=rule.meta.rule_id,
                        key=key,
                        stages=tuple(indexes),
                        timestamp_ms=timestamp,
                        event_id=eid,
                        event=mapped,
                        event_json=event_json,
                        watermark_host=host,
                        origin=origin,
                    )
                )
        if not found and unmapped and unmapped_windows_layout(doc):
            raise _Refused(
                RejectReason.UNKNOWN_LAYOUT,
                "a Windows event in a layout eqlstream does not map (accepted: Winlogbeat/Elastic Agent, "
                "Winlogbeat 6, NXLog im_msvistalog JSON, ECS); it cannot match any rule",
            )
        self.stats.candidates += len(found)
        return found

    def _plan(self, doc: Event) -> list[tuple[CompiledRule, tuple[Stage, ...]]]:
        """Each rule with the stages ``doc``'s categories leave possible, in order (rules left
        without one are omitted): one read of ``event.category`` instead of one per stage."""
        categories = frozenset(event_categories(doc))
        plan = self._plans.get(categories)
        if plan is None:
            plan = []
            for rule in self.rules:
                stages = tuple(s for s in rule.stages if s.category is None or s.category in categories)
                if stages:
                    plan.append((rule, stages))
            if len(self._plans) < _PLAN_CACHE_SIZE:
                self._plans[categories] = plan
        return plan

    def _identity(self, doc: Event) -> tuple[int, str, str, bytes]:
        """(@timestamp in ms, event id, watermark host, JSON) of an event that yields candidates."""
        value = doc.get("@timestamp")
        timestamp = parse_timestamp(value[0] if type(value) is list and len(value) == 1 else value)
        if timestamp is None:
            raise _Refused(
                RejectReason.INVALID_TIMESTAMP, f"@timestamp {str(value)[:80]!r} is not a date Elasticsearch accepts"
            )
        event_json = orjson.dumps(doc)
        if len(event_json) > self.options.max_event_bytes:
            raise _Refused(
                RejectReason.RECORD_TOO_LARGE,
                f"the event is {len(event_json)} bytes as a candidate, more than the {self.options.max_event_bytes} allowed",
            )
        hosts = [keyword_value(v) for v in _host_id(doc)]
        return timestamp, event_id(doc), next((h for h in hosts if h), ""), event_json


def _parse_reason(exc: orjson.JSONDecodeError) -> RejectReason:
    """orjson stops at 1024 levels of nesting, cheaply; that is the ``too_deep`` reason, not bad JSON."""
    return RejectReason.TOO_DEEP if str(exc).startswith("depth limit exceeded") else RejectReason.INVALID_JSON


def _nested_deeper_than(limit: int, doc: Event, raw: bytes) -> bool:
    """Whether ``doc`` (parsed from ``raw``) nests objects and arrays more than ``limit`` levels deep.

    Counting brackets in the raw bytes (C speed) settles nearly every record; only one with more
    brackets than ``limit`` is walked, iteratively, stopping at the first level too deep.
    """
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth == limit:
                    return True
                stack.append((child, depth + 1))
    return False
