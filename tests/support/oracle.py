"""A deliberately naive statement of Elasticsearch's EQL sequence semantics, for checking the engine.

It sees all events at once and walks them with the textbook rule, written here without any of the
engine's code (``app.core.engine``, ``app.core.timeparse``, ``app.core.fields``,
``app.core.alerts.ids``):

* time is what Elasticsearch indexes for a ``date`` field: milliseconds, the digits after the
  third fractional one dropped (toward the past), from ``strict_date_optional_time||epoch_millis``
  text or an epoch-millis number; an event whose ``@timestamp`` is not such a date is not indexed;
* events are sorted by that millisecond, ties by arrival; an event meeting two stages is taken as
  the later stage first (it completes before it starts anew);
* a stage-n event takes the latest stage-(n-1) partial sequence of its join key that is before it,
  consuming it and every older one at that stage; ``maxspan`` is inclusive, from the first event;
* an event is its content: documents equal except for what a shipper changes when it sends the
  same event again (``@metadata``, ``agent.ephemeral_id``, ``event.created``, ``event.ingested``)
  are one event (the first arrival counts); two documents sharing ``event.id`` are two events;
* a join key is the keyword values of the ``by`` fields: a string longer than 1,024 UTF-16 code
  units (``ignore_above``) has no value, a multi-valued field fans out, a missing one joins nothing.

It reads ECS documents (what Elasticsearch would have indexed): raw shipper layouts must be given
as their ECS twins. Which stage an event meets is decided by an independent interpreter of the
rule's EQL tree (``tests.support.eql_oracle``), not by the product's compiled stage predicates
(those are compared with it in tests/conformance/test_eql_oracle.py; ``product_stage_test`` still
offers them). It shares with the product only the EQL parser (the tree, not its evaluation) and
the rule's metadata (stages' join-key field names, maxspan, the uuid that names alerts).
"""

from __future__ import annotations

import calendar
import hashlib
import itertools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from app.core.rule.compiler import CompiledRule

IGNORE_ABOVE = 1024
_RESENT = {"@metadata": None, "agent.ephemeral_id": None, "event.created": None, "event.ingested": None}
_NESTED_RESENT = {"agent": {"ephemeral_id"}, "event": {"created", "ingested"}}
_ISO = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d\d)(?:-(?P<d>\d\d))?)?"
    r"(?:T(?:(?P<h>\d\d)(?::(?P<mi>\d\d)(?::(?P<s>\d\d)(?:[.,](?P<f>\d{1,9}))?)?)?)?(?P<z>[A-Za-z+-].*)?)?",
    re.ASCII | re.DOTALL,
)
_SIGNED = re.compile(r"(?P<sign>[+-])(?P<h>\d\d)(?:(?P<colon>:?)(?P<m>\d\d)(?:(?P=colon)(?P<s>\d\d))?)?", re.ASCII)
_EPOCH_TEXT = re.compile(r"-?\d{1,19}(?:\.\d{0,6})?", re.ASCII)
_FIRST = datetime(1, 1, 1, tzinfo=UTC)
_LAST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sequence:
    """A sequence Elasticsearch returns: its join key and its events' identities in stage order."""

    key: tuple[str, ...]
    event_ids: tuple[str, ...]


def timestamp_ms(value: Any) -> int | None:
    """What Elasticsearch indexes for a ``date`` value (epoch ms), or None if it refuses the value."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):  # a JSON number is parsed from its text
        value = str(value)
    if isinstance(value, float):
        return _in_range(math.floor(value)) if math.isfinite(value) else None
    if not isinstance(value, str) or len(value) > 100:
        return None
    if value.startswith("-") and _ISO.fullmatch(value[1:]):
        return None  # a negative year
    match = _ISO.fullmatch(value)
    if match is None:
        return _in_range(math.floor(Decimal(value.rstrip(".")))) if _EPOCH_TEXT.fullmatch(value) else None
    part = match.groupdict()
    try:
        local = datetime(
            int(part["y"]),
            int(part["mo"] or 1),
            int(part["d"] or 1),
            int(part["h"] or 0),
            int(part["mi"] or 0),
            int(part["s"] or 0),
        )
        zone = _zone(part["z"] or "Z")
        if zone is None:
            return None
        instant = local.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    millis = int((part["f"] or "0").ljust(9, "0")[:3])
    return _in_range(calendar.timegm(instant.timetuple()) * 1000 + millis)


def _zone(text: str) -> tzinfo | None:
    """``Z``, a signed offset bounded only in total, ``UTC``/``GMT``/``UT`` plus ``ZoneOffset.of``, or a region."""
    if text == "Z":
        return UTC
    for prefix in ("UTC", "GMT", "UT"):
        if text == prefix:
            return UTC
        if text.startswith(prefix) and text[len(prefix)] in "+-":
            rest = text[len(prefix) :]
            if re.fullmatch(r"[+-]\d", rest, re.ASCII):
                rest = f"{rest[0]}0{rest[1]}"
            signed = _SIGNED.fullmatch(rest)
            if signed is None or any(int(signed[k] or 0) > 59 for k in ("m", "s")):
                return None
            return _offset(signed, limit_hours=True)
    if text[0] in "+-":
        signed = _SIGNED.fullmatch(text)
        return None if signed is None else _offset(signed, limit_hours=False)
    try:
        return ZoneInfo(text) if "/" in text or text.isalpha() else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _offset(signed: re.Match[str], *, limit_hours: bool) -> tzinfo | None:
    delta = timedelta(hours=int(signed["h"]), minutes=int(signed["m"] or 0), seconds=int(signed["s"] or 0))
    if delta > timedelta(hours=18) or (limit_hours and int(signed["h"]) > 18):
        return None
    return timezone(-delta if signed["sign"] == "-" else delta)


def _in_range(ms: int) -> int | None:
    lowest = calendar.timegm(_FIRST.timetuple()) * 1000
    highest = calendar.timegm(_LAST.timetuple()) * 1000 + 999
    return ms if lowest <= ms <= highest else None


def identity(event: dict[str, Any]) -> str:
    """The event's identity: sha256 of its canonical JSON without the fields a re-send changes."""
    content = {name: value for name, value in event.items() if name not in _RESENT}
    for parent, children in _NESTED_RESENT.items():
        if isinstance(content.get(parent), dict):
            content[parent] = {name: value for name, value in content[parent].items() if name not in children}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def alert_id(rule: CompiledRule, sequence: Sequence) -> str:
    """The id the product gives the shell alert of ``sequence`` (rule uuid, join key, first event)."""
    material = orjson.dumps([rule.meta.uuid, list(sequence.key), sequence.event_ids[0]])
    return hashlib.sha256(material).hexdigest()


def field_values(doc: Any, name: str) -> list[Any]:
    """Every leaf value of ``name``: nested objects, dotted keys and arrays of objects all name it."""
    found: list[Any] = []
    if isinstance(doc, list):
        for item in doc:
            found += field_values(item, name)
        return found
    if not isinstance(doc, dict):
        return found
    for key, value in doc.items():
        if key == name:
            found += _leaves(value)
        elif name.startswith(key + "."):
            found += field_values(value, name[len(key) + 1 :])
    return found


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [] if value is None or isinstance(value, dict) else [value]


def keyword(value: Any) -> str | None:
    """The keyword Elasticsearch indexes for a JSON scalar (None: not indexed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value.encode("utf-16-le")) // 2 <= IGNORE_ABOVE else None
    return None


def join_keys(doc: dict[str, Any], fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The join keys of ``doc`` for the ``by`` fields (fan-out of multi-valued fields)."""
    columns = []
    for name in fields:
        values = [v for v in (keyword(value) for value in field_values(doc, name)) if v is not None]
        if not values:
            return []
        columns.append(list(dict.fromkeys(values)))
    return list(itertools.product(*columns))


StageTest = Callable[[int, dict[str, Any]], bool]


def product_stage_test(rule: CompiledRule) -> StageTest:
    """The product's compiled stage predicates, as a ``stage_test`` (for comparing the two)."""
    return lambda index, doc: rule.stages[index].predicate(doc)


def es_sequences(
    rule: CompiledRule, events: Iterable[dict[str, Any]], stage_test: StageTest | None = None
) -> list[Sequence]:
    """Every sequence Elasticsearch returns over ``events`` (in arrival order), in completion order.

    ``stage_test(index, doc)`` says whether ``doc`` meets stage ``index``: by default the independent
    EQL evaluator (``tests.support.eql_oracle``); ``product_stage_test(rule)`` uses the product's.
    """
    if stage_test is None:
        from tests.support import eql_oracle  # imported here: it reads documents with this module's functions

        stage_test = eql_oracle.stage_test(rule)
    seen: set[str] = set()
    hits = []  # (ms, arrival, -stage, stage, key, identity)
    for arrival, doc in enumerate(events):
        ms = timestamp_ms(doc.get("@timestamp"))
        if ms is None:
            continue
        eid = identity(doc)
        if eid in seen:
            continue
        seen.add(eid)
        for step in rule.stages:
            if stage_test(step.index, doc):
                for key in join_keys(doc, step.key_fields):
                    hits.append((ms, arrival, -step.index, step.index, key, eid))
    hits.sort(key=lambda hit: hit[:3])
    last = len(rule.stages) - 1
    waiting: dict[tuple[tuple[str, ...], int], list[tuple[int, tuple[str, ...]]]] = {}
    result = []
    for ms, _, _, stage, key, eid in hits:
        if stage == 0:
            waiting.setdefault((key, 0), []).append((ms, (eid,)))
            continue
        partials = waiting.get((key, stage - 1))
        if not partials:
            continue
        started, ids = partials[-1]
        if eid in ids:
            continue  # an event meeting two stages never pairs with itself
        partials.clear()
        if rule.maxspan_ms is not None and ms - started > rule.maxspan_ms:
            continue
        if stage == last:
            result.append(Sequence(key, (*ids, eid)))
        else:
            waiting.setdefault((key, stage), []).append((started, (*ids, eid)))
    return result


def es_alerts(
    rule: CompiledRule, events: Iterable[dict[str, Any]], stage_test: StageTest | None = None
) -> dict[str, tuple[str, ...]]:
    """alert id -> event ids of every sequence Elasticsearch returns (as the product names them)."""
    return {alert_id(rule, sequence): sequence.event_ids for sequence in es_sequences(rule, events, stage_test)}
