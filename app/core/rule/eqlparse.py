"""Parse rule text with Elastic's ``eql`` parser, keeping the case rules Elasticsearch applies.

``eql`` turns ``:``, ``like`` and ``like~`` into the same ``wildcard`` call and ``in~`` into a plain
``InSet``, dropping which ones are case-sensitive. Elasticsearch's ``like`` and ``in`` are
case-sensitive while ``:``, ``like~`` and ``in~`` are not, so this subclass of the library's tree
walker marks the case-sensitive ``like`` and the insensitive ``in~`` with their own function names.
Everything else (grammar, type checks, error positions) is the library's.
"""

from __future__ import annotations

from typing import Any

from eql import ast
from eql.errors import EqlError, EqlSyntaxError
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


class _EsCaseWalker(LarkToEQL):  # type: ignore[misc]  # eql ships no type hints
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
    with elasticsearch_syntax, ParserConfig(allow_subqueries=True, allow_pipes=True):
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
