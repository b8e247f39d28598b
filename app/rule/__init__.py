"""Rule files, their EQL compiled into predicates, and the raw-bytes prefilter derived from them."""

from app.rule.compiler import CompiledRule, JoinKey, Stage, combined_requirement, compile_rule, load_rules
from app.rule.model import DEFAULT_RULE_PATH, RuleError, RuleMeta

__all__ = [
    "DEFAULT_RULE_PATH",
    "CompiledRule",
    "JoinKey",
    "RuleError",
    "RuleMeta",
    "Stage",
    "combined_requirement",
    "compile_rule",
    "load_rules",
]
