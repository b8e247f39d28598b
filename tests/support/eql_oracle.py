"""A deliberately plain interpreter of one EQL stage (``<category> where <condition>``) on an ECS document.

It states, node by node of the tree Elastic's ``eql`` library parses, what Elasticsearch answers for
a document it has indexed (docs/semantics.md, "Rules" and "Fields and values"), so that the
product's compiled predicates (``app.core.rule.predicates``) are checked against something that
shares none of their code: no field readers, no value coercions, no matchers, no type table of the
product. It borrows only the parser (``app.core.rule.eqlparse``: parsing is not what is checked),
the rule's metadata (its query text and ``[rule.field_types]``) and the test oracle's reading of
documents (``tests.support.oracle``: ``field_values``, ``keyword``, ``timestamp_ms``).

What it states:

* every field is multi-valued and a positive test holds if any value passes it; ``not`` and ``!=``
  are the negation of the positive test (``must_not``), so a missing field passes them;
* values are read by the field's mapping type (``FIELD_TYPES`` below, a rule's own
  ``[rule.field_types]`` over it, keyword otherwise): a keyword longer than 1,024 UTF-16 code units is
  no value; a long is ``Long.parseLong`` or else a ``BigDecimal`` truncated toward zero strictly
  inside the long range; an ip is its 128-bit address (IPv4 mapped into ``::ffff:0:0/96``, an IPv6
  scope id ignored); a date is a ``strict_date_optional_time||epoch_millis`` value (for null checks
  only); a malformed value is no value;
* ``==``, ``in``, ``like`` are case-sensitive; ``:``, ``in~``, ``like~`` and the ``~`` functions fold
  ASCII letters only; ``:``/``like`` patterns have ``*`` and ``?`` as wildcards and nothing escapes;
* ``startsWith`` is a prefix of the literal as written; ``endsWith`` and ``stringContains`` are
  Lucene wildcard patterns ``*literal`` and ``*literal*`` (``*``, ``?``, and a backslash quoting the
  next character); ``cidrMatch`` is a range of 128-bit addresses; function names in any case;
* ``<``, ``<=``, ``>``, ``>=`` compare longs as numbers, ips as addresses and keywords as UTF-8 bytes.

Anything else (other functions, field-to-field comparisons, arithmetic, ranges on dates or of a
keyword with a number, ...) raises ``UnsupportedNode``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from eql import ast

from app.core.rule.compiler import CompiledRule
from app.core.rule.eqlparse import parse_rule_query
from tests.support.oracle import field_values, keyword, timestamp_ms

KEYWORD = "keyword"
LONG = "long"
IP = "ip"
DATE = "date"

# ECS mapping types of the non-keyword fields the tests use (every other field is a keyword).
FIELD_TYPES: dict[str, str] = {
    "@timestamp": DATE,
    "event.created": DATE,
    "event.ingested": DATE,
    "event.start": DATE,
    "event.end": DATE,
    "process.pid": LONG,
    "process.parent.pid": LONG,
    "process.args_count": LONG,
    "source.port": LONG,
    "destination.port": LONG,
    "client.port": LONG,
    "server.port": LONG,
    "file.size": LONG,
    "source.ip": IP,
    "destination.ip": IP,
    "client.ip": IP,
    "server.ip": IP,
    "host.ip": IP,
    "related.ip": IP,
}

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
_LONG_TEXT = re.compile(r"[+-]?\d+")  # Long.parseLong; \d is any Unicode decimal digit, as Java's
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # new BigDecimal(String)
_IPV4_MAPPED = 0xFFFF << 32

Types = Mapping[str, str]


class UnsupportedNode(Exception):
    """A node of the EQL tree this evaluator does not state."""


# -- the interpreter ----------------------------------------------------------------------------


def evaluate(node: Any, doc: Any, types: Types | None = None) -> bool:
    """Whether Elasticsearch finds ``doc`` by ``node`` (an ``EventQuery`` or a condition)."""
    types = types or {}
    if isinstance(node, ast.EventQuery):
        if node.event_type != "any" and node.event_type not in keywords(doc, "event.category"):
            return False
        return evaluate(node.query, doc, types)
    if isinstance(node, ast.Boolean):
        return bool(node.value)
    if isinstance(node, ast.And):
        return all(evaluate(term, doc, types) for term in node.terms)
    if isinstance(node, ast.Or):
        return any(evaluate(term, doc, types) for term in node.terms)
    if isinstance(node, ast.Not):
        return not evaluate(node.term, doc, types)
    if isinstance(node, ast.IsNull):
        return not values(doc, field_name(node.expr), types)
    if isinstance(node, ast.IsNotNull):
        return bool(values(doc, field_name(node.expr), types))
    if isinstance(node, ast.InSet):
        name = field_name(node.expression)
        return any(equals(doc, name, literal(item), types) for item in node.container)
    if isinstance(node, ast.Comparison):
        return comparison(node, doc, types)
    if isinstance(node, ast.FunctionCall):
        return function(node, doc, types)
    raise UnsupportedNode(f"{type(node).__name__}: {node}")


def comparison(node: ast.Comparison, doc: Any, types: Types) -> bool:
    """``field <op> literal`` or ``literal <op> field``."""
    left, op, right = node.left, node.comparator, node.right
    if isinstance(left, ast.Literal) and isinstance(right, ast.Field):
        left, right = right, left
        op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
    if not isinstance(left, ast.Field) or not isinstance(right, ast.Literal) or isinstance(right, ast.Null):
        raise UnsupportedNode(f"not a comparison of a field with a literal: {node}")
    name, value = field_name(left), literal(right)
    if op == "==":
        return equals(doc, name, value, types)
    if op == "!=":
        return not equals(doc, name, value, types)
    return ordered(doc, name, op, value, types)


def function(node: ast.FunctionCall, doc: Any, types: Types) -> bool:
    """The functions and the operators the parser writes as calls (``:``, ``like``, ``like~``, ``in~``)."""
    args = node.arguments
    if not args:
        raise UnsupportedNode(f"a call without arguments: {node}")
    name = field_name(args[0])
    literals = [literal(arg) for arg in args[1:]]
    # eqlparse: ":" and "like~" are "wildcard", "like" is "like", "in~" is "in~"; a trailing "~" asks for folding.
    if node.name == "wildcard":
        return any(wildcard_equals(doc, name, pattern, True, types) for pattern in literals)
    if node.name == "like":
        return any(wildcard_equals(doc, name, pattern, False, types) for pattern in literals)
    if node.name == "in~":
        return any(equals(doc, name, value, types, insensitive=True) for value in literals)
    called = node.name.lower()
    insensitive = called.endswith("~")
    called = called.rstrip("~")
    if called in ("startswith", "endswith", "stringcontains"):
        if len(literals) != 1 or not isinstance(literals[0], str) or type_of(name, types) != KEYWORD:
            raise UnsupportedNode(f"{node.name} on a keyword field and one string only: {node}")
        text = literals[0]
        if called == "startswith":
            return any(fold(value, insensitive).startswith(fold(text, insensitive)) for value in keywords(doc, name))
        pattern = lucene_pattern("*" + text + ("*" if called == "stringcontains" else ""))
        return any(matches(pattern, value, insensitive) for value in keywords(doc, name))
    if called == "cidrmatch" and not insensitive:
        if type_of(name, types) != IP or not literals:
            raise UnsupportedNode(f"cidrMatch on an ip field and blocks only: {node}")
        blocks = [cidr_range(block) for block in literals]
        return any(low <= address <= high for address in values(doc, name, types) for low, high in blocks)
    raise UnsupportedNode(f"function {node.name}")


# -- the tests on one field ----------------------------------------------------------------------


def equals(doc: Any, name: str, value: Any, types: Types, *, insensitive: bool = False) -> bool:
    """A term query: any value of the field equals ``value`` read with the field's type."""
    kind = type_of(name, types)
    if kind == KEYWORD:
        term = keyword(value)
        return term is not None and any(fold(v, insensitive) == fold(term, insensitive) for v in keywords(doc, name))
    if kind == LONG:
        return long_literal(value) in values(doc, name, types)
    if kind == IP:
        return ip_literal(value) in values(doc, name, types)
    raise UnsupportedNode(f"equality on the {kind} field {name}")


def wildcard_equals(doc: Any, name: str, pattern: Any, insensitive: bool, types: Types) -> bool:
    """``:``/``like``/``like~``: a whole-value pattern whose only wildcards are ``*`` and ``?``."""
    if not isinstance(pattern, str):
        raise UnsupportedNode(f"a pattern must be a string: {pattern!r}")
    if type_of(name, types) != KEYWORD:
        if "*" in pattern or "?" in pattern:
            raise UnsupportedNode(f"wildcards on the non-keyword field {name}")
        return equals(doc, name, pattern, types, insensitive=insensitive)
    tokens = [ch if ch in "*?" else ("char", ch) for ch in pattern]
    return any(matches(tokens, value, insensitive) for value in keywords(doc, name))


def ordered(doc: Any, name: str, op: str, value: Any, types: Types) -> bool:
    """A range query: any value of the field is on the right side of ``value``."""
    kind = type_of(name, types)
    bound: Any
    if kind == LONG:
        bound, found = long_literal(value), values(doc, name, types)
    elif kind == IP:
        bound, found = ip_literal(value), values(doc, name, types)
    elif kind == KEYWORD:
        if not isinstance(value, str) and name not in types:
            raise UnsupportedNode(f"range of {name} with a number: its mapping type is unknown")
        term = keyword(value)
        if term is None:
            raise UnsupportedNode(f"range of {name} with {value!r}")
        bound, found = term.encode(), [v.encode() for v in keywords(doc, name)]
    else:
        raise UnsupportedNode(f"range on the {kind} field {name}")
    test: Callable[[Any], bool] = {
        "<": lambda v: v < bound,
        "<=": lambda v: v <= bound,
        ">": lambda v: v > bound,
        ">=": lambda v: v >= bound,
    }[op]
    return any(test(v) for v in found)


# -- values of a field, read by its mapping type --------------------------------------------------


def type_of(name: str, types: Types) -> str:
    """The mapping type of ``name``: the rule's declaration, the ECS table, or keyword."""
    return types.get(name) or FIELD_TYPES.get(name) or KEYWORD


def values(doc: Any, name: str, types: Types) -> list[Any]:
    """The indexed values of ``name`` (keywords, longs, 128-bit ips or epoch ms); malformed ones dropped."""
    read: Callable[[Any], Any] = {
        KEYWORD: keyword,
        LONG: long_number,
        IP: ip_number,
        DATE: date_value,
    }[type_of(name, types)]
    return [v for v in (read(raw) for raw in field_values(doc, name)) if v is not None]


def keywords(doc: Any, name: str) -> list[str]:
    """The keyword values of ``name`` (a string over ``ignore_above`` is none)."""
    return [v for v in (keyword(raw) for raw in field_values(doc, name)) if v is not None]


def date_value(raw: Any) -> int | None:
    return timestamp_ms(raw)


def long_number(raw: Any) -> int | None:
    """What a ``long`` field indexes for a JSON value (None: malformed)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if LONG_MIN <= raw <= LONG_MAX else None
    if isinstance(raw, float):
        if raw != raw or raw in (float("inf"), float("-inf")):
            return None
        return in_long_range(Decimal(raw))
    if not isinstance(raw, str):
        return None
    if _LONG_TEXT.fullmatch(raw):
        number = int(ascii_digits(raw))
        if LONG_MIN <= number <= LONG_MAX:
            return number
    if _DECIMAL_TEXT.fullmatch(raw):
        return in_long_range(Decimal(ascii_digits(raw)))
    return None


def in_long_range(number: Decimal) -> int | None:
    """Truncated toward zero if strictly between Long.MIN_VALUE - 1 and Long.MAX_VALUE + 1."""
    if not LONG_MIN - 1 < number < LONG_MAX + 1:
        return None
    return int(number)


def ascii_digits(text: str) -> str:
    """``text`` with every Unicode decimal digit written as its ASCII digit."""
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)


def ip_number(raw: Any) -> int | None:
    """The 128-bit address an ``ip`` field indexes (None: malformed)."""
    if not isinstance(raw, str) or not raw.isascii():
        return None
    text = raw
    if ":" in text and "%" in text:  # an IPv6 scope id: Elasticsearch's InetAddresses drops it
        text, _, scope = text.partition("%")
        if not scope:
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _IPV4_MAPPED | int(address) if address.version == 4 else int(address)


def cidr_range(block: Any) -> tuple[int, int]:
    """The lowest and highest 128-bit address of a CIDR block (host bits ignored) or of one address."""
    if not isinstance(block, str):
        raise UnsupportedNode(f"not a CIDR block: {block!r}")
    address_text, _, prefix_text = block.partition("/")
    address = ip_number(address_text)
    if address is None or "%" in address_text:
        raise UnsupportedNode(f"not a CIDR block: {block!r}")
    is_v4 = ":" not in address_text
    width = 32 if is_v4 else 128
    if not prefix_text:
        prefix = width  # a bare address is its own block
    elif prefix_text.isascii() and prefix_text.isdigit() and int(prefix_text) <= width:
        prefix = int(prefix_text)
    else:
        raise UnsupportedNode(f"not a CIDR block: {block!r}")
    host_bits = width - prefix
    low = address >> host_bits << host_bits
    return low, low + (1 << host_bits) - 1


def long_literal(value: Any) -> int:
    """A long in the query: an integer, or a string of ASCII digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    raise UnsupportedNode(f"not an integer for a long field: {value!r}")


def ip_literal(value: Any) -> int:
    address = ip_number(value)
    if address is None:
        raise UnsupportedNode(f"not an ip address: {value!r}")
    return address


# -- matching text --------------------------------------------------------------------------------


def fold(text: str, insensitive: bool) -> str:
    """ASCII letters in lower case when ``insensitive`` (Elasticsearch folds no other letter)."""
    if not insensitive:
        return text
    return "".join(chr(ord(ch) + 32) if "A" <= ch <= "Z" else ch for ch in text)


def lucene_pattern(pattern: str) -> list[Any]:
    """Lucene's ``WildcardQuery`` tokens: ``*``, ``?``, and a backslash taking the next character literally."""
    tokens: list[Any] = []
    index = 0
    while index < len(pattern):
        ch = pattern[index]
        if ch == "\\" and index + 1 < len(pattern):
            index += 1
            tokens.append(("char", pattern[index]))
        elif ch in "*?":
            tokens.append(ch)
        else:
            tokens.append(("char", ch))  # a trailing backslash is itself
        index += 1
    return tokens


def matches(tokens: list[Any], value: str, insensitive: bool) -> bool:
    """Whether the whole of ``value`` matches ``tokens`` (``*``: any run, ``?``: one code point)."""
    value = fold(value, insensitive)
    # reachable[j]: the tokens read so far can match value[:j]
    reachable = [True] + [False] * len(value)
    for token in tokens:
        if token == "*":
            for j in range(1, len(value) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        elif token == "?":
            reachable = [False] + reachable[:-1]
        else:
            ch = fold(token[1], insensitive)
            reachable = [False] + [reachable[j] and value[j] == ch for j in range(len(value))]
    return reachable[len(value)]


# -- the tree ---------------------------------------------------------------------------------------


def field_name(node: Any) -> str:
    if not isinstance(node, ast.Field) or any(not isinstance(part, str) for part in node.path):
        raise UnsupportedNode(f"expected a field, got {node}")
    return ".".join([node.base, *node.path])


def literal(node: Any) -> Any:
    if isinstance(node, (ast.String, ast.Number, ast.Boolean)):
        return node.value
    raise UnsupportedNode(f"expected a literal, got {node}")


@functools.lru_cache(maxsize=256)
def stage_queries(query: str) -> tuple[Any, ...]:
    """The ``EventQuery`` of each stage of a sequence query, in order (``runs=N`` repeats a stage)."""
    tree = parse_rule_query(query)
    if not isinstance(tree.first, ast.Sequence):
        raise UnsupportedNode("not a sequence query")
    return tuple(subquery.query for subquery in tree.first.queries)


def rule_types(rule: CompiledRule) -> dict[str, str]:
    """The types the rule declares in ``[rule.field_types]``."""
    return {name: kind.value for name, kind in rule.meta.field_types.items()}


def stage_test(rule: CompiledRule) -> Callable[[int, Any], bool]:
    """``test(index, doc)``: whether ``doc`` meets stage ``index`` of ``rule``, by this evaluator."""
    queries = stage_queries(rule.meta.query)
    types = rule_types(rule)
    return lambda index, doc: evaluate(queries[index], doc, types)
