"""Instants and durations at nanosecond precision.

Hand-written because ``datetime`` stops at microseconds and ``fromisoformat`` rejects 7-9
fractional digits, while Elastic Defend writes 7 and Elasticsearch compares ``date_nanos``-style
instants exactly: two events 100 ns apart must stay ordered.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": NS_PER_MS,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h|d)?\s*$")

# strict_date_optional_time: date, optional time with optional fraction, optional offset.
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MILLIS_RE = re.compile(r"^-?\d+(?:\.\d+)?$")

# Elasticsearch dates live between years 1 and 9999 in practice; bounding them keeps
# arithmetic on forged values (1e300) from producing absurd ordering keys.
_MIN_NS = calendar.timegm((1, 1, 1, 0, 0, 0)) * NS_PER_S
_MAX_NS = calendar.timegm((9999, 12, 31, 23, 59, 59)) * NS_PER_S + NS_PER_S - 1


def parse_duration(text: str | int | float) -> int:
    """Parse ``"4m"``, ``"500ms"``, ``"1.5s"`` or a bare number of seconds into nanoseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return int(Decimal(str(text)) * NS_PER_S)
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d), e.g. '4m'")
    quantity, unit = match.groups()
    return int(Decimal(quantity) * _DURATION_UNITS_NS[unit or "s"])


def format_duration(ns: int) -> str:
    """Render nanoseconds with the largest unit that divides them exactly."""
    for unit in ("d", "h", "m", "s", "ms", "us"):
        size = _DURATION_UNITS_NS[unit]
        if ns and ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def parse_timestamp(value: object) -> int | None:
    """Return epoch nanoseconds for an Elasticsearch ``date`` value, or None if it is not one.

    Accepts ISO-8601 with ``Z`` or ``±hh:mm`` offsets (no offset means UTC) and 0-9 fractional
    digits, and epoch milliseconds as a number or numeric string, like the default
    ``strict_date_optional_time||epoch_millis`` format.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return _bounded(value * NS_PER_MS)
    if isinstance(value, float):
        ns = value * NS_PER_MS  # infinite for milliseconds near the largest float
        if ns != ns or ns in (float("inf"), float("-inf")):
            return None
        return _bounded(round(ns))
    if not isinstance(value, str) or len(value) > 64:
        return None
    match = _ISO_RE.match(value)
    if match is None:
        if _EPOCH_MILLIS_RE.match(value):
            whole, _, frac = value.partition(".")
            ns = int(whole) * NS_PER_MS
            if frac:
                frac_ns = int(frac[:6].ljust(6, "0"))
                ns += -frac_ns if whole.startswith("-") else frac_ns
            return _bounded(ns)
        return None
    year, month, day, hour, minute, second, frac, offset = match.groups()
    try:
        # datetime validates the calendar (month 13, Feb 30); it is not used for precision.
        datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)))
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        off_h, off_m = int(digits[:2]), int(digits[2:4] or 0)
        if off_h > 18 or off_m > 59:
            return None
        seconds -= sign * (off_h * 3600 + off_m * 60)
    nanos = int(frac.ljust(9, "0")) if frac else 0
    return _bounded(seconds * NS_PER_S + nanos)


def _bounded(ns: int) -> int | None:
    return ns if _MIN_NS <= ns <= _MAX_NS else None


def format_timestamp(ns: int) -> str:
    """ISO-8601 UTC with as many fractional digits as needed (3, 6 or 9), like Elasticsearch."""
    seconds, nanos = divmod(ns, NS_PER_S)
    moment = _EPOCH + timedelta(seconds=seconds)
    base = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"
