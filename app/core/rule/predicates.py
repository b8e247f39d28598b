"""Compile an ``eql`` condition AST into a Python predicate with Elasticsearch semantics.

The PyPI ``eql`` engine is not used to evaluate: it disagrees with Elasticsearch on ECS data
(arrays, case rules, missing fields, numeric strings; see docs/semantics.md). The AST is compiled
into closures over typed field readers instead. Alongside each predicate the compiler derives the
literals an event's raw bytes must contain for it to match (see ``prefilter``).
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from eql import ast

from app.core.errors import UnsupportedQuery
from app.core.fields import (
    FieldType,
    compile_getter,
    field_type,
    ip_value,
    keyword_value,
    known_field_type,
    long_value,
    number_value,
)
from app.core.rule.eqlparse import CASE_INSENSITIVE_IN, CASE_SENSITIVE_LIKE
from app.core.timeparse import parse_timestamp

Predicate = Callable[[Any], bool]
# A necessary condition on raw bytes in conjunctive normal form: every clause must have one of its
# (lowercase ASCII) literals present. The empty set means "no condition".
Requirement = frozenset[frozenset[bytes]]
NO_REQUIREMENT: Requirement = frozenset()

_MIN_LITERAL = 3
_MAX_CLAUSES = 8
# Values nearly every event of a fleet carries somewhere (host.os.type, a path under C:\Windows,
# booleans, transports, outcomes): requiring one would keep every record yet cost a scan hit on
# each, and with many rules loaded it would crowd out the selective literals of the others.
_UBIQUITOUS = frozenset(
    {b"windows", b"linux", b"macos", b"darwin", b"true", b"false", b"tcp", b"udp", b"success", b"failure", b"info"}
)


@dataclass(frozen=True)
class CompiledCondition:
    """A predicate over a document and the raw-byte requirement it implies."""

    predicate: Predicate
    requirement: Requirement
    fields: frozenset[str]


class ValueReader:
    """Typed values of one field, coerced the way the index mapping would."""

    def __init__(self, name: str, ftype: FieldType) -> None:
        self.name = name
        self.type = ftype
        self._key = (name, ftype)
        self._get = compile_getter(name)
        self._coerce: Callable[[Any], Any] = {
            FieldType.KEYWORD: keyword_value,
            FieldType.LONG: long_value,
            FieldType.IP: ip_value,
            FieldType.DATE: _date_value,
        }[ftype]

    def __call__(self, doc: Any) -> list[Any]:
        memo = _READ_ONCE.get()
        if memo is not None:
            values = memo.get(self._key)
            if values is None:
                values = memo[self._key] = [value for value in map(self._coerce, self._get(doc)) if value is not None]
            return values
        coerce = self._coerce
        return [value for value in map(coerce, self._get(doc)) if value is not None]


# Set by ``reading_once``: the values of each (field, type) already read from the one document under evaluation.
_READ_ONCE: ContextVar[dict[tuple[str, FieldType], list[Any]] | None] = ContextVar("read_once", default=None)


@contextmanager
def reading_once() -> Iterator[None]:
    """Within it, every reader reads each field once: for evaluating many rules' stages on ONE document.

    With dozens of rules, the same fields (``host.os.type``, ``process.name``, ...) are read by
    many stages; reading them once halves the cost of an event. The values must not be modified.
    """
    token = _READ_ONCE.set({})
    try:
        yield
    finally:
        _READ_ONCE.reset(token)


def _date_value(value: Any) -> str | None:
    """A ``date`` field's value, if Elasticsearch would index it: a malformed date is no value
    (Elastic's ``logs-*`` templates set ``ignore_malformed``), so it is null to ``== null``."""
    return keyword_value(value) if parse_timestamp(value) is not None else None


_EVENT_CATEGORY = ValueReader("event.category", FieldType.KEYWORD)


def event_categories(doc: Any) -> list[Any]:
    """The values of ``event.category`` as indexed: ``<category> where`` means ``event.category == <category>``."""
    return _EVENT_CATEGORY(doc)


class ConditionCompiler:
    """Turns condition ASTs into ``CompiledCondition``s.

    ``field_types`` overrides the ECS type table for fields a rule declares (custom fields);
    ``derived_fields`` names fields a normalizer may compute rather than copy from the raw record,
    whose literals therefore cannot be required in the raw bytes.
    """

    def __init__(self, field_types: Mapping[str, FieldType], derived_fields: Iterable[str]) -> None:
        self._field_types = dict(field_types)
        self._derived = frozenset(derived_fields)
        self._readers: dict[str, ValueReader] = {}

    def reader(self, name: str) -> ValueReader:
        """A shared typed reader for ``name``."""
        reader = self._readers.get(name)
        if reader is None:
            reader = ValueReader(name, self._field_types.get(name) or field_type(name))
            self._readers[name] = reader
        return reader

    def compile(self, node: ast.Expression) -> CompiledCondition:
        """Compile a boolean condition."""
        if isinstance(node, ast.Boolean):
            return CompiledCondition(_always if node.value else _never, NO_REQUIREMENT, frozenset())
        if isinstance(node, ast.And):
            parts = [self.compile(term) for term in node.terms]
            return CompiledCondition(
                _all([p.predicate for p in parts]),
                and_requirements(p.requirement for p in parts),
                frozenset().union(*(p.fields for p in parts)),
            )
        if isinstance(node, ast.Or):
            parts = [self.compile(term) for term in node.terms]
            return CompiledCondition(
                _any([p.predicate for p in parts]),
                or_requirements([p.requirement for p in parts]),
                frozenset().union(*(p.fields for p in parts)),
            )
        if isinstance(node, ast.Not):
            inner = self.compile(node.term)
            predicate = inner.predicate
            return CompiledCondition(lambda doc: not predicate(doc), NO_REQUIREMENT, inner.fields)
        if isinstance(node, (ast.IsNull, ast.IsNotNull)):
            reader = self._field_reader(node.expr)
            if isinstance(node, ast.IsNull):
                return CompiledCondition(lambda doc: not reader(doc), NO_REQUIREMENT, frozenset([reader.name]))
            return CompiledCondition(lambda doc: bool(reader(doc)), NO_REQUIREMENT, frozenset([reader.name]))
        if isinstance(node, ast.InSet):
            return self._equals(node.expression, [self._literal(item) for item in node.container], insensitive=False)
        if isinstance(node, ast.Comparison):
            return self._comparison(node)
        if isinstance(node, ast.FunctionCall):
            return self._function(node)
        raise UnsupportedQuery(f"unsupported expression: {node}")

    # -- operators -------------------------------------------------------------------------

    def _comparison(self, node: ast.Comparison) -> CompiledCondition:
        left, op, right = node.left, node.comparator, node.right
        if isinstance(left, ast.Literal) and isinstance(right, ast.Field):
            left, right = right, left
            op = _FLIPPED[op]
        if not isinstance(left, ast.Field) or not isinstance(right, ast.Literal):
            raise UnsupportedQuery(f"only field-to-literal comparisons are supported: {node}")
        value = self._literal(right)
        if op == ast.Comparison.EQ:
            return self._equals(left, [value], insensitive=False)
        if op == ast.Comparison.NE:
            equal = self._equals(left, [value], insensitive=False)
            predicate = equal.predicate
            return CompiledCondition(lambda doc: not predicate(doc), NO_REQUIREMENT, equal.fields)
        return self._ordering(left, op, value)

    def _function(self, node: ast.FunctionCall) -> CompiledCondition:
        name, args = node.name, node.arguments
        if name in ("wildcard", CASE_SENSITIVE_LIKE, CASE_INSENSITIVE_IN):
            if not args or not isinstance(args[0], ast.Field):
                raise UnsupportedQuery(f"the left side of {name} must be a field: {node}")
            values = [self._literal(arg) for arg in args[1:]]
            if any(not isinstance(v, str) for v in values):
                raise UnsupportedQuery(f"{name} takes string patterns: {node}")
            if name == CASE_INSENSITIVE_IN:
                return self._equals(args[0], values, insensitive=True)
            return self._wildcard(args[0], values, insensitive=name == "wildcard")
        # Elasticsearch looks function names up in lower case; a trailing ~ asks for ASCII case folding.
        insensitive = name.endswith("~")
        canonical = name.rstrip("~").lower()
        if canonical in ("startswith", "endswith", "stringcontains"):
            return self._string_test(node, canonical, insensitive)
        if canonical == "cidrmatch" and not insensitive:
            return self._cidr_match(node)
        raise UnsupportedQuery(f"function {name}() is not supported")

    def _string_test(self, node: ast.FunctionCall, name: str, insensitive: bool) -> CompiledCondition:
        """``startsWith``/``endsWith``/``stringContains`` of a keyword field and a string literal.

        Elasticsearch runs them as queries on the field, so any value of a multi-valued field may
        match and ``~`` folds ASCII letters only (as for ``:``): ``startsWith`` as a prefix query (the
        literal is literal); ``endsWith`` and ``stringContains`` as Lucene wildcard queries of
        ``*literal`` and ``*literal*``, the literal not escaped (``QueryTranslator``), so a ``*`` or
        ``?`` in it is a wildcard and a backslash makes the next character literal.
        """
        args = node.arguments
        if len(args) != 2 or not isinstance(args[0], ast.Field) or not isinstance(args[1], ast.String):
            raise UnsupportedQuery(f"{node.name}() is supported on a field and a string literal only: {node}")
        reader = self._field_reader(args[0])
        if reader.type is not FieldType.KEYWORD:
            raise UnsupportedQuery(f"{node.name}() needs a keyword field; {reader.name} is {reader.type.value}")
        literal: str = args[1].value
        if name == "startswith":
            if insensitive:
                folded = literal.encode().lower()
                matcher: Callable[[str], bool] = lambda value: value.encode().lower().startswith(folded)  # noqa: E731
            else:
                matcher = lambda value: value.startswith(literal)  # noqa: E731
            requirement = self._literal_requirement(reader.name, [literal])
        else:
            pattern = "*" + literal + ("*" if name == "stringcontains" else "")
            matcher = _lucene_wildcard_matcher(pattern, insensitive)
            requirement = self._literal_requirement(reader.name, [max(re.split(r"[*?]", literal), key=len)])
        return CompiledCondition(_any_match(reader, [matcher]), requirement, frozenset([reader.name]))

    def _cidr_match(self, node: ast.FunctionCall) -> CompiledCondition:
        """``cidrMatch`` of an ip field and CIDR (or address) literals, as Elasticsearch's prefix queries.

        Elasticsearch indexes every address in 16 bytes, IPv4 as IPv4-mapped IPv6, and masks the
        host bits of a CIDR; comparing integer ranges in that space gives the same answers, for
        instance ``::/0`` matching IPv4 addresses too.
        """
        args = node.arguments
        if len(args) < 2 or not isinstance(args[0], ast.Field):
            raise UnsupportedQuery(f"cidrMatch() needs an ip field and at least one CIDR block: {node}")
        reader = self._field_reader(args[0])
        if reader.type is not FieldType.IP:
            raise UnsupportedQuery(f"cidrMatch() needs an ip field; {reader.name} is {reader.type.value}")
        ranges = []
        for arg in args[1:]:
            block = self._literal(arg)
            try:
                network = ipaddress.ip_network(block, strict=False) if isinstance(block, str) else None
            except ValueError:
                network = None
            if network is None:
                raise UnsupportedQuery(f"cidrMatch(): {block!r} is not a CIDR block or an IP address")
            low = _ip_int(network.network_address)
            ranges.append((low, low + network.num_addresses - 1))

        def predicate(doc: Any) -> bool:
            return any(low <= number <= high for number in map(_ip_int, reader(doc)) for low, high in ranges)

        return CompiledCondition(predicate, NO_REQUIREMENT, frozenset([reader.name]))

    def _equals(self, field_node: ast.Expression, values: list[Any], *, insensitive: bool) -> CompiledCondition:
        reader = self._field_reader(field_node)
        fields = frozenset([reader.name])
        if reader.type is FieldType.LONG:
            targets = {self._long_literal(reader.name, v) for v in values}
            return CompiledCondition(_any_in(reader, targets), NO_REQUIREMENT, fields)
        if reader.type is FieldType.IP:
            ips = set()
            for v in values:
                ip = ip_value(v)
                if ip is None:
                    raise UnsupportedQuery(f"{reader.name} is an ip field; {v!r} is not an IP address")
                ips.add(ip)
            return CompiledCondition(_any_in(reader, ips), NO_REQUIREMENT, fields)
        if reader.type is FieldType.DATE:
            raise UnsupportedQuery(f"comparisons on the date field {reader.name} are not supported")
        indexed = [keyword_value(v) for v in values]
        strings = [s for s in indexed if s is not None]
        if len(strings) != len(indexed):
            raise UnsupportedQuery(f"cannot compare the keyword field {reader.name} with {values!r}")
        requirement = self._literal_requirement(reader.name, strings)
        if not insensitive:
            return CompiledCondition(_any_in(reader, set(strings)), requirement, fields)
        return CompiledCondition(_any_match(reader, [_insensitive_matcher(s) for s in strings]), requirement, fields)

    def _wildcard(self, field_node: ast.Expression, patterns: list[str], *, insensitive: bool) -> CompiledCondition:
        reader = self._field_reader(field_node)
        has_wildcards = any("*" in p or "?" in p for p in patterns)
        if reader.type is not FieldType.KEYWORD:
            if has_wildcards:
                raise UnsupportedQuery(f"wildcards need a keyword field; {reader.name} is {reader.type.value}")
            return self._equals(field_node, patterns, insensitive=insensitive)
        matchers = [_wildcard_matcher(p, insensitive) for p in patterns]
        fragments = [max(re.split(r"[*?]", p), key=len) for p in patterns]
        requirement = self._literal_requirement(reader.name, fragments)
        return CompiledCondition(_any_match(reader, matchers), requirement, frozenset([reader.name]))

    def _ordering(self, field_node: ast.Field, op: str, value: Any) -> CompiledCondition:
        reader = self._field_reader(field_node)
        compare = _ORDERINGS[op]
        bound: int | str | None
        if reader.type is FieldType.LONG:
            bound = self._long_literal(reader.name, value)
        elif reader.type is FieldType.KEYWORD:
            declared = reader.name in self._field_types or known_field_type(reader.name) is not None
            if isinstance(value, (int, float)) and not declared:
                # Elastic's indices map such fields as numbers (file.Ext.entropy, the relative
                # times of Elastic Defend): comparing their text would give wrong answers.
                raise UnsupportedQuery(
                    f"range comparison of {reader.name} with a number: eqlstream does not know its mapping type "
                    "(declare it in the rule's [rule.field_types] table: keyword, long, ip or date)"
                )
            bound = keyword_value(value)
            if bound is None:
                raise UnsupportedQuery(f"cannot compare the keyword field {reader.name} with {value!r}")
        else:
            raise UnsupportedQuery(
                f"range comparisons on the {reader.type.value} field {reader.name} are not supported"
            )

        def predicate(doc: Any) -> bool:
            return any(compare(v, bound) for v in reader(doc))

        return CompiledCondition(predicate, NO_REQUIREMENT, frozenset([reader.name]))

    # -- helpers ---------------------------------------------------------------------------

    def _field_reader(self, node: ast.Expression) -> ValueReader:
        if not isinstance(node, ast.Field):
            raise UnsupportedQuery(f"expected a field, got {node}")
        if any(not isinstance(part, str) for part in node.path):
            raise UnsupportedQuery(f"array indexes in field names are not supported: {node}")
        return self.reader(".".join([node.base, *node.path]))

    @staticmethod
    def _literal(node: ast.Expression) -> Any:
        if isinstance(node, (ast.String, ast.Number, ast.Boolean)):
            return node.value
        raise UnsupportedQuery(f"expected a literal value, got {node}")

    @staticmethod
    def _long_literal(name: str, value: Any) -> int:
        number = None if isinstance(value, (bool, float)) else long_value(value)
        if number is None or (isinstance(value, str) and not value.strip().lstrip("-").isdigit()):
            raise UnsupportedQuery(f"{name} is a long field; {value!r} is not an integer")
        return number

    def _literal_requirement(self, name: str, literals: list[str]) -> Requirement:
        """One clause of raw-byte literals, if every alternative has a usable literal.

        A literal is usable when its bytes must appear (in some ASCII case) in any JSON encoding of
        a matching value: printable ASCII without ``"``, ``\\`` or ``/`` (which JSON may escape) and
        not number-like (a JSON number's keyword form need not appear verbatim), and not one of the
        values nearly every event carries (``_UBIQUITOUS``). ``\\uXXXX``
        escapes are the remaining way to hide it; the prefilter checks for those separately.
        """
        if name in self._derived:
            return NO_REQUIREMENT
        clause = set()
        for literal in literals:
            if (
                len(literal) < _MIN_LITERAL
                or not literal.isascii()
                or not literal.isprintable()
                or any(ch in literal for ch in '"\\/')
                or number_value(literal) is not None
                or literal.lower().encode() in _UBIQUITOUS
            ):
                return NO_REQUIREMENT
            clause.add(literal.lower().encode())
        return frozenset([frozenset(clause)])


def _always(doc: Any) -> bool:
    return True


def _never(doc: Any) -> bool:
    return False


def _all(predicates: list[Predicate]) -> Predicate:
    def predicate(doc: Any) -> bool:
        return all(p(doc) for p in predicates)

    return predicate


def _any(predicates: list[Predicate]) -> Predicate:
    def predicate(doc: Any) -> bool:
        return any(p(doc) for p in predicates)

    return predicate


def _any_in(reader: ValueReader, targets: set[Any]) -> Predicate:
    def predicate(doc: Any) -> bool:
        return any(v in targets for v in reader(doc))

    return predicate


def _any_match(reader: ValueReader, matchers: list[Callable[[str], bool]]) -> Predicate:
    def predicate(doc: Any) -> bool:
        return any(match(v) for v in reader(doc) for match in matchers)

    return predicate


def _insensitive_matcher(literal: str) -> Callable[[str], bool]:
    """Elasticsearch's case-insensitive term: ASCII letters match either case, other characters only themselves.

    (``AutomatonQueries.toCaseInsensitiveChar`` folds code points below 128 only.) ``bytes.lower``
    folds exactly the ASCII letters, so comparing UTF-8 encodings lowered that way is the same test.
    """
    folded = literal.encode().lower()
    return lambda value: value.encode().lower() == folded


def _wildcard_matcher(pattern: str, insensitive: bool) -> Callable[[str], bool]:
    """A whole-value matcher; ``*`` and ``?`` are wildcards and nothing escapes them, as in EQL."""
    parts = [".*" if ch == "*" else "." if ch == "?" else _char_regex(ch, insensitive) for ch in pattern]
    regex = re.compile("".join(parts), re.DOTALL)
    return lambda value: regex.fullmatch(value) is not None


def _lucene_wildcard_matcher(pattern: str, insensitive: bool) -> Callable[[str], bool]:
    """A whole-value matcher with Lucene's ``WildcardQuery`` rules: ``*`` and ``?`` are wildcards, a
    backslash makes the next character literal, and a trailing backslash is itself."""
    parts = []
    index = 0
    while index < len(pattern):
        ch = pattern[index]
        if ch == "\\" and index + 1 < len(pattern):
            index += 1
            parts.append(_char_regex(pattern[index], insensitive))
        else:
            parts.append(".*" if ch == "*" else "." if ch == "?" else _char_regex(ch, insensitive))
        index += 1
    regex = re.compile("".join(parts), re.DOTALL)
    return lambda value: regex.fullmatch(value) is not None


def _char_regex(ch: str, insensitive: bool) -> str:
    """One literal character, both ASCII cases of a letter when ``insensitive`` (Elasticsearch folds no other)."""
    if insensitive and ch.isascii() and ch.isalpha():
        return f"[{ch.lower()}{ch.upper()}]"
    return re.escape(ch)


def and_requirements(requirements: Iterable[Requirement]) -> Requirement:
    merged: set[frozenset[bytes]] = set()
    for requirement in requirements:
        merged |= requirement
    return _simplify(merged)


def or_requirements(requirements: list[Requirement]) -> Requirement:
    """(A1 and A2) or (B1) == (A1 or B1) and (A2 or B1): distribute, then drop subsumed clauses."""
    if any(not r for r in requirements):
        return NO_REQUIREMENT
    result: Requirement = _simplify(set(requirements[0]))
    for requirement in requirements[1:]:
        # Simplified at each step: the product would otherwise grow as clauses ** rules (a folder of
        # rules never finished compiling), and a weaker necessary condition is still a necessary one.
        result = _simplify({a | b for a in result for b in requirement})
    return result


def _simplify(clauses: set[frozenset[bytes]]) -> Requirement:
    """Drop clauses implied by a smaller one, and keep the few most selective (fewest, longest literals).

    Dropping a clause only weakens a necessary condition, so it can never change a result.
    """
    kept = [c for c in clauses if not any(other < c for other in clauses)]
    kept.sort(key=lambda c: (len(c), -min(len(lit) for lit in c)))
    return frozenset(kept[:_MAX_CLAUSES])


def _ip_int(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """The address as Elasticsearch indexes it: 128 bits, IPv4 mapped into ``::ffff:0:0/96``."""
    if isinstance(address, ipaddress.IPv4Address):
        return _IPV4_MAPPED | int(address)
    return int(address)


_IPV4_MAPPED = 0xFFFF << 32
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
