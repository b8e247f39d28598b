"""Instants and durations the way Elasticsearch reads them: milliseconds.

``@timestamp`` is mapped ``date`` (not ``date_nanos``) in every index Elastic's rules read, so
Elasticsearch keeps milliseconds and drops the digits after the third fractional one at index
time: ordering and ``maxspan`` work on millisecond instants. The accepted text is that of the
default format ``strict_date_optional_time||epoch_millis``, as Elasticsearch 8's ``Iso8601Parser``
and ``EpochTime`` read it: a four-digit year, then optionally ``-MM``, ``-dd``, ``T``, a time whose
minutes, seconds and fraction (1-9 digits, after ``.`` or ``,``) are each optional, and a zone: ``Z``, ``+hh[[:]mm[[:]ss]]``, ``UTC``/``GMT``/``UT`` with an optional offset, or
a region id such as ``Europe/Paris``; or epoch milliseconds, 1-19 digits with an optional fraction
of up to 6. JSON numbers are read as their text, so ``2024`` is the year 2024. Digits are ASCII only.
Hand-written because ``datetime.fromisoformat`` accepts more (a space for ``T``, non-ASCII digits)
and less (no ``,``, no fraction beyond 6 digits, no year alone, no region ids).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

MS_PER_S = 1000
MS_PER_MINUTE = 60 * MS_PER_S

DURATION_UNITS_MS = {"ms": 1, "s": MS_PER_S, "m": MS_PER_MINUTE, "h": 60 * MS_PER_MINUTE, "d": 24 * 60 * MS_PER_MINUTE}
DURATION_HELP = "a number and a unit (ms, s, m, h or d), e.g. '500ms', '90s', '4m'"
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")

# Elasticsearch tries its fast ``Iso8601Parser`` and then java.time's formatter; this is what either
# accepts: the java.time one also takes ``T`` after a year or a month, and a zone right after ``T``.
_ISO_RE = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?"
    r"(?:T(?:([0-9]{2})(?::([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?)?)?([A-Za-z+-].*)?)?",
    re.DOTALL,
)
_EPOCH_MILLIS_RE = re.compile(r"-?[0-9]{1,19}(?:\.[0-9]{0,6})?")
# After a bare sign Elasticsearch reads two-digit hours, then minutes and seconds sharing one
# separator style, and bounds only the total; after UTC/GMT/UT, java.time's ZoneOffset.of rules.
_FAST_OFFSET_RE = re.compile(r"([+-])([0-9]{2})(?:(:?)([0-9]{2})(?:\3([0-9]{2}))?)?")
_PREFIXED_OFFSET_RE = re.compile(r"([+-])(?:([0-9])|([0-9]{2})(?:(:?)([0-9]{2})(?:\4([0-9]{2}))?)?)")
_REGION_RE = re.compile(r"[A-Za-z][A-Za-z0-9~/._+-]+")
_MAX_OFFSET_S = 18 * 3600
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Years 1 to 9999: what the ISO format can write, and far beyond any real event. Bounding epoch
# numbers too keeps forged values (1e300) from becoming absurd ordering keys.
MIN_MS = calendar.timegm((1, 1, 1, 0, 0, 0)) * MS_PER_S
MAX_MS = calendar.timegm((9999, 12, 31, 23, 59, 59)) * MS_PER_S + 999


def parse_duration(text: str) -> int:
    """``"4m"``, ``"500ms"``, ``"1.5s"`` in milliseconds; ``ValueError`` naming the accepted units."""
    match = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use {DURATION_HELP}")
    quantity, unit = match.groups()
    ms = Decimal(quantity) * DURATION_UNITS_MS[unit]
    if ms != ms.to_integral_value():
        raise ValueError(f"invalid duration {text!r}: it must be a whole number of milliseconds")
    return int(ms)


def format_duration(ms: int) -> str:
    """Milliseconds with the largest unit that divides them exactly (``300000`` → ``5m``)."""
    for unit in ("d", "h", "m", "s"):
        size = DURATION_UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_timestamp(value: object) -> int | None:
    """Epoch milliseconds of an Elasticsearch ``date`` value, or None if Elasticsearch would not parse it."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):  # Elasticsearch parses a JSON number's text: four digits are a year
        return _parse_text(str(value)) if -(10**19) < value < 10**19 else None
    if isinstance(value, float):  # its text is gone; a float can only be epoch millis with a fraction
        return _bounded(math.floor(value)) if math.isfinite(value) else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _parse_text(value)


def _parse_text(text: str) -> int | None:
    match = _ISO_RE.fullmatch(text)
    if match is None:
        if text.startswith("-") and _ISO_RE.fullmatch(text, 1):  # "-1000": the year 1000 BC, before year 1
            return None
        return _epoch_millis(text) if _EPOCH_MILLIS_RE.fullmatch(text) else None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    parts = (int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    try:
        local = datetime(*parts)  # validates the calendar: month 13, 30 February, hour 24
    except ValueError:
        return None
    offset = _zone_offset_s(zone, local) if zone else 0
    if offset is None:
        return None
    millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
    return _bounded((calendar.timegm(parts) - offset) * MS_PER_S + millis)


def _zone_offset_s(zone: str, local: datetime) -> int | None:
    """Seconds east of UTC for the zone text after a time, as Elasticsearch resolves it at ``local``."""
    if zone == "Z":
        return 0
    if zone[0] in "+-":
        match = _FAST_OFFSET_RE.fullmatch(zone)
        if match is None:
            return None
        sign, hours, _, minutes, seconds = match.groups()
        total = int(hours) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)
        return None if total > _MAX_OFFSET_S else (-total if sign == "-" else total)
    prefix = 3 if zone.startswith(("UTC", "GMT")) else 2 if zone.startswith("UT") else 0
    if prefix and (len(zone) == prefix or zone[prefix] in "+-"):
        return _prefixed_offset_s(zone[prefix:])
    return _region_offset_s(zone, local)


def _prefixed_offset_s(text: str) -> int | None:
    """java.time's ``ZoneOffset.of`` after a ``UTC``/``GMT``/``UT`` prefix: each part in range."""
    if not text:
        return 0
    match = _PREFIXED_OFFSET_RE.fullmatch(text)
    if match is None:
        return None
    sign, short_hours, hours, _, minutes, seconds = match.groups()
    h, m, s = int(short_hours or hours), int(minutes or 0), int(seconds or 0)
    if h > _MAX_OFFSET_S // 3600 or m > 59 or s > 59 or (h == 18 and (m or s)):
        return None
    total = h * 3600 + m * 60 + s
    return -total if sign == "-" else total


def _region_offset_s(zone: str, local: datetime) -> int | None:
    """A tz database region (``Europe/Paris``) at ``local``; a gap or overlap resolves as java.time does
    (the offset before the transition, which ``fold=0`` gives)."""
    if not _REGION_RE.fullmatch(zone) or zone not in _regions():
        return None
    offset = local.replace(tzinfo=ZoneInfo(zone)).utcoffset()
    return None if offset is None else int(offset.total_seconds())


@functools.cache
def _regions() -> frozenset[str]:
    """The region ids of the IANA database Python carries (``tzdata``); read once, on first use."""
    return frozenset(zoneinfo.available_timezones())


def _epoch_millis(text: str) -> int | None:
    """``epoch_millis`` text: whole milliseconds, optionally with a fraction (dropped, toward the past)."""
    try:
        return _bounded(math.floor(Decimal(text)))
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return None


def _bounded(ms: int) -> int | None:
    return ms if MIN_MS <= ms <= MAX_MS else None


def format_timestamp(ms: int) -> str:
    """ISO-8601 UTC with milliseconds, as Kibana writes alert times (``Date.toISOString``)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
