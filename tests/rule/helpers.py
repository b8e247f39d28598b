"""Compiling ad-hoc queries in rule tests."""

from __future__ import annotations

from app.rule import CompiledRule, RuleMeta, compile_rule


def rule_meta(query: str) -> RuleMeta:
    """Minimal valid metadata around ``query``."""
    return RuleMeta(
        name="test rule", rule_id="test-rule", version=1, description="test", severity="low", risk_score=1, query=query
    )


def compile_query(query: str) -> CompiledRule:
    """Compile ``query`` as if it came from ``rules/test.toml``."""
    return compile_rule(rule_meta(query), "rules/test.toml")
