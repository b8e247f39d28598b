"""Reading ECS fields the way Elasticsearch indexes them.

Every field is multi-valued; nested objects, dotted keys and arrays of objects all name the same
field; ``null`` and a missing field are the same. Values are coerced by the field's ECS type the
way the index mapping would (a numeric string in a ``long`` field is a number, a keyword longer
than ``ignore_above`` is not indexed, a malformed value is ignored as with ``ignore_malformed``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from typing import Any

KEYWORD_IGNORE_ABOVE = 1024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Java's Long.parseLong and BigDecimal grammars; like Java's Character.digit, \d takes any Unicode
# decimal digit, and neither allows surrounding whitespace or the underscores Python's int() takes.
_LONG_RE = re.compile(r"[+-]?\d+")
_BIG_DECIMAL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# Long.MAX_VALUE + 1 and Long.MIN_VALUE - 1: Elasticsearch refuses decimals at or beyond these.
_ABOVE_LONG = Decimal(2**63)
_BELOW_LONG = Decimal(-(2**63) - 1)
_NUMBER_RE = re.compile(r"-?[0-9]{1,19}(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,3})?")


class FieldType(Enum):
    """The mapping types the compiler distinguishes."""

    KEYWORD = "keyword"
    LONG = "long"
    IP = "ip"
    DATE = "date"


# ECS types of the non-keyword fields that detection rules commonly read. Anything not listed is
# a keyword, as the vast majority of ECS fields are.
_ECS_TYPES: dict[str, FieldType] = {
    "@timestamp": FieldType.DATE,
    "event.created": FieldType.DATE,
    "event.ingested": FieldType.DATE,
    "event.start": FieldType.DATE,
    "event.end": FieldType.DATE,
    "event.sequence": FieldType.LONG,
    "event.severity": FieldType.LONG,
    "event.duration": FieldType.LONG,
    "process.args_count": FieldType.LONG,
    "file.size": FieldType.LONG,
    "process.parent.args_count": FieldType.LONG,
    "network.bytes": FieldType.LONG,
    "network.packets": FieldType.LONG,
    "host.ip": FieldType.IP,
    "related.ip": FieldType.IP,
}
_SUFFIX_TYPES: tuple[tuple[str, FieldType], ...] = (
    (".port", FieldType.LONG),
    (".pid", FieldType.LONG),
    (".ppid", FieldType.LONG),
    (".bytes", FieldType.LONG),
    (".packets", FieldType.LONG),
    (".ip", FieldType.IP),
)


def field_type(name: str) -> FieldType:
    """ECS mapping type of a field name (keyword unless known otherwise)."""
    return known_field_type(name) or FieldType.KEYWORD


def known_field_type(name: str) -> FieldType | None:
    """The ECS mapping type of ``name`` if this table knows it, else None (most likely a keyword)."""
    known = _ECS_TYPES.get(name)
    if known is not None:
        return known
    for suffix, ftype in _SUFFIX_TYPES:
        if name.endswith(suffix):
            return ftype
    return None


Getter = Callable[[Any], list[Any]]


def compile_getter(name: str) -> Getter:
    """A function returning every raw leaf value of ``name`` in a document.

    For ``a.b.c`` each prefix may be a nested object or part of a dotted key (``{"a.b": {"c": 1}}``),
    and Elasticsearch merges them all, so every split is tried; the splits are precomputed once.
    """
    parts = name.split(".")
    count = len(parts)
    # steps[i]: the (key, next index) pairs that can consume parts[i:]
    steps = [[(".".join(parts[i:j]), j) for j in range(i + 1, count + 1)] for i in range(count)]

    def collect(node: Any, index: int, out: list[Any]) -> None:
        if type(node) is list:
            for item in node:
                collect(item, index, out)
            return
        if index == count:
            _leaves(node, out)
            return
        if type(node) is dict:
            for key, nxt in steps[index]:
                child = node.get(key)
                if child is not None:
                    collect(child, nxt, out)

    def get(doc: Any) -> list[Any]:
        out: list[Any] = []
        collect(doc, 0, out)
        return out

    return get


def _leaves(node: Any, out: list[Any]) -> None:
    if node is None or type(node) is dict:
        return
    if type(node) is list:
        for item in node:
            _leaves(item, out)
        return
    out.append(node)


def keyword_value(value: Any) -> str | None:
    """The indexed keyword form of a JSON scalar, or None if it is not indexed."""
    if type(value) is str:
        if len(value) <= KEYWORD_IGNORE_ABOVE // 2:
            return value
        # ignore_above counts Java chars (UTF-16 code units): characters outside the BMP count twice.
        return value if len(value.encode("utf-16-le")) // 2 <= KEYWORD_IGNORE_ABOVE else None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value) if value == value and abs(value) != float("inf") else None
    return None


def long_value(value: Any) -> int | None:
    """The value a ``long`` field indexes, or None where Elasticsearch finds it malformed.

    Elasticsearch's ``Numbers.toLong``: ``Long.parseLong``, else ``BigDecimal`` truncated toward
    zero when it lies strictly between Long.MIN_VALUE - 1 and Long.MAX_VALUE + 1. So ``"+49152"``,
    ``"4.9152e4"`` and ``"49152.7"`` are 49152, while ``" 49152"`` (whitespace) has no value.
    """
    if type(value) is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if type(value) is float:
        if not math.isfinite(value):
            return None
        return _truncated(Decimal(value))
    if type(value) is str:
        if _LONG_RE.fullmatch(value):
            number = int(value)
            if _INT64_MIN <= number <= _INT64_MAX:
                return number
        if _BIG_DECIMAL_RE.fullmatch(value):
            return _truncated(Decimal(value))
    return None


def _truncated(number: Decimal) -> int | None:
    # Compared before int(): a forged "1e999999" must not become a million-digit integer.
    if not _BELOW_LONG < number < _ABOVE_LONG:
        return None
    return int(number)


def number_value(value: Any) -> float | int | None:
    """A numeric value for fields of unknown numeric type (numbers and numeric strings)."""
    if type(value) is int:
        return value
    if type(value) is float:
        return value if value == value and abs(value) != float("inf") else None
    if type(value) is str and _NUMBER_RE.fullmatch(value):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return None


def ip_value(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An ``ip`` field's value; IPv4-mapped IPv6 equals its IPv4 form, and a scope ID (``%12``) is
    ignored, as in Elasticsearch (``InetAddresses``; an empty scope makes no address)."""
    if type(value) is not str or len(value) > 64:
        return None
    value, percent, scope = value.partition("%")
    if percent and not scope:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
