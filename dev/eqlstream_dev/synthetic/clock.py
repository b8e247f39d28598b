"""Time in the generator's model: integer nanoseconds since the epoch, written as each source writes it.

The model is finer than Elasticsearch, which keeps milliseconds of a ``date`` field, because the
sources are: Elastic Defend writes 7 fractional digits, other ECS shippers 9, and a scenario on
the maxspan boundary is only right if its raw digits are. The generator never imports the
product's time parsing (it is development code, independent of what it tests) and only ever
parses timestamps it wrote itself, so a small strict parser is enough.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
FILETIME_EPOCH_S = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01

# What the generator writes: ISO 8601 UTC (T, Z) or Sysmon's UtcTime (a space, no zone).
_TIMESTAMP_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z?")


def iso(ts_ns: int, digits: int) -> str:
    """ISO-8601 UTC with exactly ``digits`` fractional digits (truncated, as the sources do)."""
    seconds, nanos = divmod(ts_ns, NS_PER_S)
    base = _utc_seconds(seconds)
    return f"{base[:10]}T{base[11:]}.{nanos // 10 ** (9 - digits):0{digits}d}Z"


def sysmon_utc(ts_ns: int) -> str:
    """Sysmon's ``UtcTime``: ``YYYY-MM-DD hh:mm:ss.fff``."""
    seconds, nanos = divmod(ts_ns, NS_PER_S)
    return f"{_utc_seconds(seconds)}.{nanos // NS_PER_MS:03d}"


def parse_ns(text: str) -> int | None:
    """Epoch nanoseconds of a timestamp as ``iso`` or ``sysmon_utc`` write it, or None for anything else."""
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        return None
    *fields, fraction = match.groups()
    parts = tuple(int(field) for field in fields)
    try:
        datetime(*parts)  # validates the calendar (month 13, 30 February)
    except ValueError:
        return None
    return calendar.timegm(parts) * NS_PER_S + int((fraction or "").ljust(9, "0"))


def _utc_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
