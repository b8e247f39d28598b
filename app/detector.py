"""From raw record bytes to candidates, and from candidates to alerts.

The streaming service runs these two halves in different processes (ingest stage, sequence stage);
the replay CLI runs them back to back. Both use exactly this code.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.alerts.builder import build_alert_group
from app.alerts.ids import event_id
from app.engine.sequence import Candidate, SequenceEngine, SequenceMatch
from app.engine.state import MemoryStore, StateStore
from app.engine.watermark import Watermark
from app.fields import compile_getter, keyword_value
from app.normalize import normalize
from app.rule.compiler import CompiledRule, combined_requirement
from app.rule.prefilter import Prefilter
from app.settings import Settings
from app.timeparse import parse_timestamp

_host_id = compile_getter("host.id")
_OBJECT_ENDS = (b"}", b"}\r", b"}\n", b"}\r\n")
# Deepest nesting of objects and arrays a parsed record may have. Deeper records are rejected
# (``too_deep``) before evaluation: the field readers recurse once per level and orjson serializes
# at most 254 levels (event ids, candidates), so a deeper record would raise in the middle of a batch
# and be re-read forever. Elasticsearch itself refuses objects nested deeper than 20 levels
# (``index.mapping.depth.limit``), so no event it would alert on comes near this.
MAX_DEPTH = 100
# Nanosecond timestamps travel as signed 64-bit integers (candidates topic, state changelog): the
# instants between 1677-09-21 and 2262-04-11.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Room a candidate record needs beyond its event (metadata, key, Kafka's record overhead): the event
# of a candidate must fit in ``max_record_bytes`` minus this, so that the candidate itself fits in
# ``max_record_bytes``, under librdkafka's default message.max.bytes (1,000,000) for the default
# 1 MiB. Normalizing raw Sysmon can triple a record (the command line becomes process.args too).
CANDIDATE_HEADROOM = 64 * 1024


class RecordRejected(Exception):
    """A record that cannot be evaluated; ``reason`` is a short stable label (a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why (part of) a record was not evaluated, with the bytes concerned (for the dead-letter topic)."""

    reason: str
    detail: str
    raw: bytes


@dataclass
class ExtractStats:
    """What the extractor saw."""

    records: int = 0
    parsed: int = 0
    candidates: int = 0
    no_join_key: int = 0
    missing_host_id: int = 0
    rejected: Counter = field(default_factory=Counter)


Extraction = tuple[list[Candidate], list[Rejection]]
_NOTHING: Extraction = ([], [])


class CandidateExtractor:
    """Prefilter, parse and evaluate each record against every rule's stages."""

    def __init__(self, rules: list[CompiledRule], settings: Settings | None = None) -> None:
        self.rules = rules
        self.prefilter = Prefilter(combined_requirement(rules))
        self.stats = ExtractStats()
        settings = settings or Settings()
        fallback = settings.host_id_fallback
        self._host_id_fallback = compile_getter(fallback) if fallback else None
        self.max_record_bytes = settings.max_record_bytes
        self.max_event_bytes = max(self.max_record_bytes - CANDIDATE_HEADROOM, self.max_record_bytes // 2)

    def extract(self, raw: bytes, origin: str = "") -> Extraction:
        """The candidates in one raw record (usually none) and what had to be rejected.

        The returned lists must not be modified (the common empty result is shared).
        """
        self.stats.records += 1
        if len(raw) > self.max_record_bytes:
            return [], [self._too_large(raw)]
        # Two byte checks send malformed records (truncated, plain text, arrays) to the parser, which
        # names the problem; well-formed-looking ones are dropped unparsed unless the prefilter keeps them.
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
        limit = self.max_record_bytes
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

    def extract_many(self, records: list[bytes], origins: list[str]) -> list[tuple[int, Extraction]]:
        """``extract`` over a batch of records (a Kafka poll), with one prefilter scan for the batch.

        Returns (index, extraction) for the records that yielded candidates or rejections only.
        The records are joined with newlines so Hyperscan scans them in one call; a hit is mapped
        back to its record, which is then extracted on its own, exactly as ``extract`` would.
        Records over the size limit are left out of the scan and rejected.
        """
        self.stats.records += len(records)
        limit = self.max_record_bytes
        if records and max(map(len, records)) > limit:
            scanned = [i for i, record in enumerate(records) if len(record) <= limit]
            hits = {i for i, record in enumerate(records) if len(record) > limit}
            kept = [records[i] for i in scanned]
        else:
            scanned = range(len(records))
            hits = set()
            kept = records
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
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if b"\n" in raw.strip():
                return self._extract_lines(raw, origin)
            return [], [self._parse_error(exc, raw)]
        return self._evaluate(doc, raw, origin)

    def _extract_lines(self, raw: bytes, origin: str) -> Extraction:
        """Logstash's json_lines codec may put several newline-separated objects in one record."""
        found: list[Candidate] = []
        rejected: list[Rejection] = []
        for line in raw.split(b"\n"):
            if not line.strip() or (line[:1] == b"{" and line.endswith(_OBJECT_ENDS) and not self.prefilter(line)):
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                rejected.append(self._parse_error(exc, line, "a line of a multi-line record is not JSON"))
                continue
            more, problems = self._evaluate(doc, line, origin)
            found += more
            rejected += problems
        return found, rejected

    def _evaluate(self, doc: Any, raw: bytes, origin: str) -> Extraction:
        if type(doc) is not dict:
            return [], [self._rejection("not_an_object", f"a JSON {type(doc).__name__}, not an object", raw)]
        self.stats.parsed += 1
        if _nested_deeper_than(MAX_DEPTH, doc, raw):
            return [], [self._rejection("too_deep", f"objects and arrays nested deeper than {MAX_DEPTH} levels", raw)]
        try:
            return self.candidates(doc, origin), []
        except RecordRejected as exc:
            return [], [self._rejection(exc.reason, exc.detail, raw)]

    def _with_fallback_host_id(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Opt-in: join events without ``host.id`` on another field (Elasticsearch never joins them)."""
        value = next((v for v in map(keyword_value, self._host_id_fallback(doc)) if v), None)
        if value is None:
            return doc
        host = doc.get("host")
        return {**doc, "host": {**host, "id": value} if isinstance(host, dict) else {"id": value}}

    def _rejection(self, reason: str, detail: str, raw: bytes) -> Rejection:
        self.stats.rejected[reason] += 1
        return Rejection(reason, detail, raw)

    def _too_large(self, raw: bytes) -> Rejection:
        return self._rejection(
            "record_too_large",
            f"{len(raw)} bytes, more than the limit of {self.max_record_bytes} (EQLSTREAM_MAX_RECORD_BYTES)",
            raw,
        )

    def _parse_error(self, exc: orjson.JSONDecodeError, raw: bytes, what: str = "not JSON") -> Rejection:
        """orjson stops at 1024 levels of nesting, cheaply; that is the ``too_deep`` reason, not bad JSON."""
        if str(exc).startswith("depth limit exceeded"):
            return self._rejection("too_deep", f"objects and arrays nested deeper than {MAX_DEPTH} levels", raw)
        return self._rejection("invalid_json", f"{what} ({exc})", raw)

    def candidates(self, doc: dict[str, Any], origin: str = "") -> list[Candidate]:
        """Candidates of one parsed event (normalized to ECS first)."""
        doc = normalize(doc)
        if not any(keyword_value(v) for v in _host_id(doc)):
            self.stats.missing_host_id += 1
            if self._host_id_fallback is not None:
                doc = self._with_fallback_host_id(doc)
        found: list[Candidate] = []
        identity = None
        for rule in self.rules:
            by_key: dict[tuple, list[int]] = {}
            for stage in rule.stages:
                if not stage.predicate(doc):
                    continue
                keys = stage.join_keys(doc)
                if not keys:
                    self.stats.no_join_key += 1
                for key in keys:
                    by_key.setdefault(key, []).append(stage.index)
            if not by_key:
                continue
            if identity is None:
                timestamp = _timestamp_ns(doc.get("@timestamp"))
                if timestamp is None:
                    raise RecordRejected(
                        "invalid_timestamp", f"@timestamp {str(doc.get('@timestamp'))[:80]!r} is not a date"
                    )
                if not _INT64_MIN <= timestamp <= _INT64_MAX:
                    raise RecordRejected(
                        "invalid_timestamp",
                        f"@timestamp {str(doc.get('@timestamp'))[:80]!r} is outside 1677-09-21..2262-04-11, "
                        "the instants a 64-bit nanosecond count holds",
                    )
                size = len(orjson.dumps(doc))
                if size > self.max_event_bytes:
                    raise RecordRejected(
                        "record_too_large",
                        f"the event is {size} bytes as a candidate, more than the {self.max_event_bytes} a "
                        "candidate record has room for (EQLSTREAM_MAX_RECORD_BYTES less 64 KiB)",
                    )
                hosts = [keyword_value(v) for v in _host_id(doc)]
                identity = (timestamp, event_id(doc), next((h for h in hosts if h), ""))
            timestamp, eid, host = identity
            for key, stages in by_key.items():
                found.append(Candidate(rule.meta.rule_id, key, tuple(stages), timestamp, eid, doc, host, origin))
        self.stats.candidates += len(found)
        return found


def _nested_deeper_than(limit: int, doc: dict[str, Any], raw: bytes) -> bool:
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


def _timestamp_ns(value: Any) -> int | None:
    """``@timestamp`` in epoch nanoseconds, or None; it may arrive as a one-element array."""
    if type(value) is list and len(value) == 1:
        value = value[0]
    return parse_timestamp(value)


@dataclass
class Alert:
    """A completed sequence and its Kibana documents (building blocks, then the shell)."""

    rule: CompiledRule
    match: SequenceMatch
    documents: list[dict[str, Any]]

    @property
    def id(self) -> str:
        """The shell alert id."""
        return self.documents[-1]["kibana.alert.uuid"]


class SequenceStage:
    """One engine per rule over a shared store; turns candidates into alerts."""

    def __init__(
        self,
        rules: list[CompiledRule],
        settings: Settings,
        store: StateStore | None = None,
        repeat_alerts: bool = False,
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        self.rules = {rule.meta.rule_id: rule for rule in rules}
        self.engines = {
            rule.meta.rule_id: SequenceEngine(
                rule_id=rule.meta.rule_id,
                stage_count=len(rule.stages),
                maxspan_ns=rule.maxspan_ns,
                store=self.store,
                allowed_lateness_ns=settings.allowed_lateness_ns,
                order_tolerance_ns=settings.order_tolerance_ns,
                watermark=Watermark(settings.watermark_quorum),
                max_entries_per_stage=settings.max_entries_per_stage,
                repeat_alerts=repeat_alerts,
            )
            for rule in rules
        }

    def process(self, candidate: Candidate, now_ns: int) -> list[Alert]:
        """Feed one candidate; returns the alerts it completes."""
        rule = self.rules[candidate.rule_id]
        return [
            Alert(rule, match, build_alert_group(rule.meta, match, now_ns))
            for match in self.engines[candidate.rule_id].process(candidate)
        ]
