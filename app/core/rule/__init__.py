"""Rule files, their EQL compiled into predicates, and the raw-bytes prefilter derived from them."""

from app.core.rule.compiler import (
    CompiledRule,
    Stage,
    SurveyEntry,
    TooManyJoinKeys,
    compile_rule,
    load_rules,
    survey_rules,
)
from app.core.rule.model import DEFAULT_RULE_PATH, RuleMeta

__all__ = [
    "DEFAULT_RULE_PATH",
    "CompiledRule",
    "RuleMeta",
    "Stage",
    "TooManyJoinKeys",
    "compile_rule",
    "load_rules",
    "survey_rules",
    "SurveyEntry",
]
