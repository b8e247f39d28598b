"""Parse rule text with Elastic's ``eql`` parser, keeping the case rules Elasticsearch applies.

``eql`` turns ``:``, ``like`` and ``like~`` into the same ``wildcard`` call and ``in~`` into a plain
``InSet``, dropping which ones are case-sensitive. Elasticsearch's ``like`` and ``in`` are
case-sensitive while ``:``, ``like~`` and ``in~`` are not, so this subclass of the library's tree
walker marks the case-sensitive ``like`` and the insensitive ``in~`` with their own function names.
It also keeps the ``~`` of a function call (``startsWith~``), which ``eql`` drops, in the call's
name, and looks function names up regardless of case, as Elasticsearch does (its registry
lower-cases them; Elastic's rules write both ``cidrMatch`` and ``cidrmatch``), and lets
``cidrMatch`` take a bare address as Elasticsearch does (a one-address block; ``eql`` wants a ``/``).
Everything else (grammar, type checks, error positions) is the library's.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from eql import ast
from eql.errors import EqlError, EqlSyntaxError
from eql.functions import CidrMatch
from eql.optimizer import Optimizer
from eql.parser import (
    LarkToEQL,
    NodeInfo,
    ParserConfig,
    elasticsearch_syntax,
    lark_parser,
)
from lark.exceptions import LarkError

CASE_SENSITIVE_LIKE = "like"
CASE_INSENSITIVE_IN = "in~"


class _CidrMatch(CidrMatch):  # type: ignore[misc]
    """``eql``'s ``cidrMatch`` signature, with a bare address read as its one-address block."""

    @classmethod
    def validate(cls, arguments: list[Any]) -> int | None:
        for argument in arguments[1:]:
            value = getattr(argument.node, "value", None)
            if isinstance(argument.node, ast.String) and isinstance(value, str) and "/" not in value:
                try:
                    address = ipaddress.ip_address(value.strip())
                except ValueError:
                    continue
                argument.node = ast.String(f"{address}/{address.max_prefixlen}")
        position: int | None = super().validate(arguments)
        return position


class _CaseInsensitiveLookup(dict[str, Any]):
    """``eql``'s function table, found by any spelling of a name's case."""

    def get(self, name: str, default: Any = None) -> Any:
        found = super().get(name)
        if found is not None:
            return found
        folded = name.lower()
        return next((value for key, value in self.items() if key.lower() == folded), default)


class _EsCaseWalker(LarkToEQL):  # type: ignore[misc]  # eql ships no type hints
    _function_lookup: dict[str, Any]

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._function_lookup = _CaseInsensitiveLookup(self._function_lookup)
        self._function_lookup[CidrMatch.name] = _CidrMatch

    def function_call(self, node: Any, prev_node: Any = None, prev_arg: Any = None) -> Any:
        info = super().function_call(node, prev_node, prev_arg)
        name_node = node["method_name"] if node.data == "method" else node.children[0]
        written = self.method_name(name_node) if node.data == "method" else self.name(name_node)
        if written.endswith("~") and isinstance(info.node, ast.FunctionCall):
            info.node = ast.FunctionCall(info.node.name + "~", info.node.arguments, info.node.as_method)
        return info

    def string_predicate(self, node: Any) -> Any:
        info = super().string_predicate(node)
        if node["STRING_PREDICATE"] == "like":
            call = info.node
            info.node = ast.FunctionCall(CASE_SENSITIVE_LIKE, call.arguments)
        return info

    def in_set(self, node: Any) -> Any:
        info = super().in_set(node)
        if node.get("IN") == "in~" and isinstance(info.node, ast.InSet):
            info.node = ast.FunctionCall(CASE_INSENSITIVE_IN, [info.node.expression, *info.node.container])
        return info


def parse_rule_query(text: str) -> ast.PipedQuery:
    """Parse an EQL query with Elasticsearch syntax; raises ``EqlError`` with line and column."""
    if not text.strip():
        raise EqlSyntaxError("No query text", 0, 0, text)
    if not text.endswith("\n"):
        text += "\n"
    # allow_runs: ``[...] with runs=N`` is N copies of the stage, in Elasticsearch and in the parser's tree.
    with elasticsearch_syntax, ParserConfig(allow_subqueries=True, allow_pipes=True, allow_runs=True):
        walker = _EsCaseWalker(text)
        try:
            tree = lark_parser.parse(text, start="piped_query")
        except LarkError as exc:
            line = getattr(exc, "line", 1) or 1
            column = getattr(exc, "column", 1) or 1
            raise EqlSyntaxError(
                "Invalid syntax", line=line - 1, column=column - 1, source="\n".join(walker.lines[line - 2 : line])
            ) from None
        node = walker.visit(tree)
        if isinstance(node, NodeInfo):
            node = node.node
        return Optimizer(recursive=True).walk(node)


__all__ = ["CASE_INSENSITIVE_IN", "CASE_SENSITIVE_LIKE", "EqlError", "parse_rule_query"]
