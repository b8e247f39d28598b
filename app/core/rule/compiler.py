"""From a rule file to a ``CompiledRule``: stage predicates, join-key readers, maxspan, prefilter literals."""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eql import ast

from app.core.errors import RuleError, UnsupportedQuery, UnsupportedRule
from app.core.model import JoinKey, JoinKeyValue
from app.core.rule.eqlparse import EqlError, parse_rule_query
from app.core.rule.model import DEFAULT_RULE_PATH, NotASequenceRule, RuleMeta, read_rule_meta
from app.core.rule.predicates import (
    ConditionCompiler,
    Predicate,
    Requirement,
    ValueReader,
    event_categories,
    or_requirements,
)

# The eql parser accepts "sequence with maxspan=1m by x"; Elasticsearch requires "by" first.
_WITH_BEFORE_BY = re.compile(r"\bsequence\s+with\s+maxspan\s*=\s*\S+\s+by\b", re.IGNORECASE)


@dataclass(frozen=True)
class Stage:
    """One bracketed query of the sequence and the fields that join it to the others.

    The query is kept in three parts so that an extractor running many rules can pass over most
    stages without evaluating them: the ``category`` (None for ``any``), which one read of
    ``event.category`` settles for every stage at once; the raw-byte ``requirement``, which one
    literal scan of the record settles; and the ``condition``, evaluated only when both allow it.
    """

    index: int
    category: str | None
    condition: Predicate
    requirement: Requirement
    key_readers: tuple[ValueReader, ...]

    def predicate(self, doc: Any) -> bool:
        """Whether ``doc`` meets the stage's query (``<category> where <condition>``)."""
        return (self.category is None or self.category in event_categories(doc)) and self.condition(doc)

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Names of the join-key fields, in order."""
        return tuple(reader.name for reader in self.key_readers)

    def join_keys(self, doc: Any, limit: int) -> list[JoinKey]:
        """Every join key of ``doc``: a multi-valued key field fans out; a missing one gives none.

        Raises ``TooManyJoinKeys`` before building more than ``limit`` keys: Elasticsearch would
        fan out without bound, but one forged event must not cost unbounded memory here.
        """
        columns: list[list[JoinKeyValue]] = []
        count = 1
        for reader in self.key_readers:
            values = reader(doc)
            if not values:
                return []
            column = list(dict.fromkeys(v if isinstance(v, (str, int)) else str(v) for v in values))
            count *= len(column)
            if count > limit:
                raise TooManyJoinKeys(self.key_fields, limit)
            columns.append(column)
        return list(itertools.product(*columns))


class TooManyJoinKeys(Exception):
    """An event whose multi-valued join fields give more join keys than allowed."""

    def __init__(self, fields: tuple[str, ...], limit: int) -> None:
        super().__init__(f"the values of {', '.join(fields)} give more than {limit} join keys")


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: metadata plus compiled stages."""

    meta: RuleMeta
    path: str
    stages: tuple[Stage, ...]
    maxspan_ms: int  # the query's maxspan, or the rule's lookback (``from``) when it has none
    requirement: Requirement
    fields: frozenset[str]


def compile_rule(
    meta: RuleMeta, derived_fields: Collection[str], path: str = "<rule>", text: str | None = None
) -> CompiledRule:
    """Compile a rule's query; errors name the file and the position within it.

    ``derived_fields`` are the fields a normalizer computes rather than copies from the raw record:
    their literals are never required of the raw bytes by the prefilter.
    """
    query_line = _query_line(text) if text else 0
    misplaced_by = _WITH_BEFORE_BY.search(meta.query)
    if misplaced_by:
        raise RuleError(
            path,
            "invalid EQL query: specify sequence [by] before [with], not after (Elasticsearch refuses this order)",
            query_line + meta.query.count("\n", 0, misplaced_by.start()) + 1 if text else None,
        )
    try:
        node = parse_rule_query(meta.query)
    except EqlError as exc:
        problem = str(exc).splitlines()
        message = problem[1] if len(problem) > 1 else str(exc)
        line = getattr(exc, "line", None)
        column = getattr(exc, "column", None)
        # Unsupported rather than malformed: Elasticsearch may accept syntax the eql library does not know.
        raise UnsupportedRule(
            path,
            f"invalid EQL query: {message}",
            None if line is None else query_line + line + 1,
            None if column is None else column + 1,
        ) from None
    if not isinstance(node.first, ast.Sequence):
        raise NotASequenceRule(path, "only sequence queries are supported", query_line + 1 if text else None)
    try:
        return _compile_sequence(meta, path, node, derived_fields)
    except UnsupportedQuery as exc:
        raise UnsupportedRule(path, f"unsupported EQL: {exc}", query_line + 1 if text else None) from None


def _compile_sequence(meta: RuleMeta, path: str, node: ast.PipedQuery, derived_fields: Collection[str]) -> CompiledRule:
    if node.pipes:
        raise UnsupportedQuery("pipes (| head, | tail, ...) are not supported")
    sequence = node.first
    if sequence.close is not None:
        raise UnsupportedQuery("'until' is not supported")
    if len(sequence.queries) < 2:
        raise UnsupportedQuery("a sequence needs at least two stages")
    compiler = ConditionCompiler(meta.field_types, derived_fields)
    stages = []
    requirements = []
    fields: set[str] = set()
    key_width = None
    for index, subquery in enumerate(sequence.queries):
        if subquery.data.get("is_negated"):
            raise UnsupportedQuery("missing-event stages (![...]) are not supported")
        event_query = subquery.query
        category = None if event_query.event_type == "any" else event_query.event_type
        condition = compiler.compile(event_query.query)
        readers = []
        for join_value in subquery.join_values:
            if not isinstance(join_value, ast.Field):
                raise UnsupportedQuery(f"join keys must be fields: {join_value}")
            readers.append(compiler.reader(".".join([join_value.base, *join_value.path])))
        if key_width is not None and len(readers) != key_width:
            raise UnsupportedQuery("every stage must join on the same number of fields")
        key_width = len(readers)
        # event.category is computed by the mappings (a derived field): it adds no raw-byte requirement.
        stages.append(Stage(index, category, condition.predicate, condition.requirement, tuple(readers)))
        requirements.append(condition.requirement)
        fields |= condition.fields | {r.name for r in readers} | ({"event.category"} if category else set())
    # Without maxspan, Elasticsearch matches any span within the events searched, and Kibana
    # searches the rule's lookback on each run: no longer sequence can ever be alerted on.
    maxspan = meta.lookback_ms
    if sequence.max_span is not None:
        maxspan = int(sequence.max_span.quantity * sequence.max_span.unit.as_milliseconds())
    return CompiledRule(
        meta=meta,
        path=path,
        stages=tuple(stages),
        maxspan_ms=maxspan,
        requirement=or_requirements(requirements),
        fields=frozenset(fields | {"@timestamp"}),
    )


def _query_line(text: str) -> int:
    """Zero-based line of the file holding the query's first line (0 if it cannot be located)."""
    key = re.search(r"^[ \t]*query[ \t]*=[ \t]*(\'\'\'|\"\"\"|\'|\")(.*)$", text, re.MULTILINE)
    if key is None:
        return 0
    line = text.count("\n", 0, key.start())
    # TOML drops a newline right after an opening triple quote: the query then starts on the next line.
    return line + 1 if len(key.group(1)) == 3 and not key.group(2).strip() else line


@dataclass(frozen=True)
class SurveyEntry:
    """One rule file: the rule compiled, or why eqlstream does not run it."""

    path: str
    name: str | None
    rule: CompiledRule | None = None
    refusal: UnsupportedRule | None = None

    @property
    def sequence(self) -> bool:
        """An EQL sequence rule (what eqlstream is for), or a query it cannot even parse."""
        return not isinstance(self.refusal, NotASequenceRule)


def survey_rules(
    path: Path | str | None,
    derived_fields: Collection[str],
    warn: Callable[[str], None] | None = None,
    versions: Mapping[str, int] | None = None,
) -> list[SurveyEntry]:
    """Compile one rule file, or every ``*.toml`` file of a directory (sorted by name).

    Malformed files (TOML, metadata) and duplicate rule ids raise ``RuleError``; a query the
    parser cannot read is a refusal (Elasticsearch may know syntax the parser does not). ``warn``
    receives what is odd but harmless (unknown keys and tables). ``versions`` (Elastic's version
    lock) gives the version of each file that carries none.
    """
    path = Path(path) if path is not None else DEFAULT_RULE_PATH
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise RuleError(path, "no *.toml rule files in this directory")
    elif path.exists():
        files = [path]
    else:
        raise RuleError(path, "no such rule file or directory")
    entries = []
    for file in files:
        meta: RuleMeta | None = None
        try:
            meta, text, warnings = read_rule_meta(file, versions)
            for warning in warnings:
                if warn is not None:
                    warn(warning)
            entries.append(SurveyEntry(str(file), meta.name, rule=compile_rule(meta, derived_fields, str(file), text)))
        except UnsupportedRule as exc:
            name = meta.name if meta is not None else _rule_name(file)
            entries.append(SurveyEntry(str(file), name, refusal=exc))
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.rule is not None:
            if entry.rule.meta.rule_id in seen:
                raise RuleError(
                    entry.path, f"rule_id {entry.rule.meta.rule_id} is also used by {seen[entry.rule.meta.rule_id]}"
                )
            seen[entry.rule.meta.rule_id] = entry.path
    return entries


def _rule_name(file: Path) -> str | None:
    """The rule's name, if the file is TOML with one: for a rule refused before its metadata is read."""
    try:
        table = tomllib.loads(file.read_text(encoding="utf-8")).get("rule")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    name = table.get("name") if isinstance(table, dict) else None
    return name if isinstance(name, str) else None


def load_rules(
    path: Path | str | None,
    derived_fields: Collection[str],
    warn: Callable[[str], None] | None = None,
    versions: Mapping[str, int] | None = None,
) -> list[CompiledRule]:
    """The rules to run from one rule file or a directory of them.

    A file on its own must be a rule eqlstream runs. A directory (a copy of one of Elastic's rule
    folders, say) runs every rule it can: each unsupported one is skipped with a warning naming
    the reason, other rule types silently; it is an error only if nothing in it can run.
    """
    entries = survey_rules(path, derived_fields, warn, versions)
    rules = [entry.rule for entry in entries if entry.rule is not None]
    refused = [entry for entry in entries if entry.refusal is not None]
    unsupported = [entry for entry in refused if entry.sequence]
    if not rules:
        if len(refused) == 1 and refused[0].refusal is not None:
            raise refused[0].refusal
        raise RuleError(
            path or DEFAULT_RULE_PATH,
            f"none of the {len(refused)} rule files is a rule eqlstream runs ({len(unsupported)} unsupported "
            f"sequence rules, {len(refused) - len(unsupported)} other rules): `eqlstream coverage` lists why",
        )
    if warn is not None and refused:
        for entry in unsupported:
            warn(f"{entry.refusal} (rule skipped)")
        warn(
            f"{path}: running {len(rules)} rules; skipped {len(unsupported)} unsupported sequence rules and "
            f"{len(refused) - len(unsupported)} rules that are not EQL sequences"
        )
    return rules
