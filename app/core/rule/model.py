"""Rule files: Elastic detection-rule metadata and EQL query text in TOML, as Elastic publishes them.

A rule file is a file of Elastic's detection-rules repository, unchanged: a ``[metadata]`` table
(creation and update dates, maturity, integrations), a ``[rule]`` table (name, rule_id, severity,
risk_score, interval, from, index, author, license, references, note, setup, tags, threat, query,
...) and sometimes a ``[transform]`` table. Upstream files carry no ``version`` (Elastic keeps
versions in a lock file), so it is optional here. Keys Elastic's schema knows but eqlstream does
not use are accepted silently; keys nobody knows (a typo) and rule options that would change
which events match in a way the stream cannot honour are reported: the first as warnings, the
second as errors. eqlstream adds one optional table, ``[rule.field_types]``, to declare the
mapping type (keyword, long, ip, date) of non-ECS fields a query reads.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.core.errors import RuleError, UnsupportedRule
from app.core.fields import FieldType
from app.core.timeparse import parse_duration

DEFAULT_RULE_PATH = Path(__file__).parent / "files" / "incoming_dcom_lateral_movement_via_mshta_v4.toml"
# Rule uuids are derived, not random, so that alerts from every worker and every replay agree.
_RULE_UUID_NAMESPACE = uuid.UUID("0b6f3a2e-8d47-4f57-9a56-3c1c7f1d2a90")
DEFAULT_VERSION = 1

# [rule] keys of Elastic's rule schema that eqlstream reads nothing from: accepted without a word.
_KNOWN_UNUSED_KEYS = frozenset(
    {
        "actions",
        "data_view_id",
        "enabled",
        "exceptions_list",
        "investigation_fields",
        "meta",
        "namespace",
        "output_index",
        "related_integrations",
        "required_fields",
        "risk_score_mapping",
        "rule_name_override",
        "severity_mapping",
        "throttle",
        "timeline_id",
        "timeline_title",
        "timestamp_override_fallback_disabled",
    }
)
# [rule] keys that change which events match, or how they are ordered, in ways not implemented:
# running the rule without them would give answers Elasticsearch does not.
_REFUSED_KEYS = {
    "filters": "query filters beside the EQL (the 'filters' key) are not supported",
    "event_category_override": "event_category_override is not supported (event.category is the category field)",
    "tiebreaker_field": "tiebreaker_field is not supported (equal timestamps are ordered by arrival)",
    "alert_suppression": "alert_suppression is not supported",
}
_KNOWN_TABLES = frozenset({"rule", "metadata", "transform"})


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ThreatEntry(_Entry):
    """An ATT&CK tactic, technique or sub-technique."""

    id: str
    name: str
    reference: str


class ThreatTechnique(ThreatEntry):
    """A technique with its sub-techniques."""

    subtechnique: list[ThreatEntry] = []


class Threat(_Entry):
    """One entry of the rule's MITRE ATT&CK mapping, as Kibana stores it."""

    framework: str
    tactic: ThreatEntry
    technique: list[ThreatTechnique] = []


class RuleMeta(_Entry):
    """A detection rule's metadata and query text."""

    name: str = Field(min_length=1)
    rule_id: str = Field(min_length=1)
    version: int = Field(default=DEFAULT_VERSION, ge=1)
    description: str
    type: Literal["eql"] = "eql"
    language: Literal["eql"] = "eql"
    severity: Literal["low", "medium", "high", "critical"]
    risk_score: int = Field(ge=0, le=100)
    interval: str = "5m"
    from_: str = Field(default="now-6m", alias="from")
    to: str = "now"
    max_signals: int = Field(default=100, ge=1)
    index: list[str] = []
    author: list[str] = []
    license: str = ""
    references: list[str] = []
    false_positives: list[str] = []
    note: str | None = None
    setup: str | None = None
    building_block_type: Literal["default"] | None = None
    timestamp_override: str | None = None
    timestamp_field: Literal["@timestamp"] = "@timestamp"
    tags: list[str] = []
    threat: list[Threat] = []
    query: str = Field(min_length=1)
    field_types: dict[str, FieldType] = {}
    metadata: dict[str, Any] = {}

    @field_validator("interval")
    @classmethod
    def _interval_is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("from_")
    @classmethod
    def _from_is_relative(cls, value: str) -> str:
        if not re.fullmatch(r"now-\d+[smhd]", value):
            raise ValueError("expected 'now-<number><s|m|h|d>', e.g. 'now-9m'")
        return value

    @property
    def uuid(self) -> str:
        """The rule's id in alerts (``kibana.alert.rule.uuid``), stable across processes."""
        return str(uuid.uuid5(_RULE_UUID_NAMESPACE, f"{self.rule_id}:{self.version}"))

    @property
    def interval_ms(self) -> int:
        """The rule's schedule in milliseconds (the window of ``max_signals``)."""
        return parse_duration(self.interval)

    @property
    def lookback_ms(self) -> int:
        """How far back each Kibana run looks (``from = "now-9m"``: 9 minutes), in milliseconds."""
        return parse_duration(self.from_.removeprefix("now-"))

    def parameters(self) -> dict[str, Any]:
        """The rule's parameters as Kibana copies them into ``kibana.alert.rule.parameters``."""
        parameters: dict[str, Any] = {
            "description": self.description,
            "risk_score": self.risk_score,
            "severity": self.severity,
            "license": self.license,
            "author": self.author,
            "false_positives": self.false_positives,
            "from": self.from_,
            "rule_id": self.rule_id,
            "max_signals": self.max_signals,
            "to": self.to,
            "references": self.references,
            "version": self.version,
            "threat": [threat.model_dump() for threat in self.threat],
            "type": self.type,
            "language": self.language,
            "index": self.index,
            "query": self.query,
        }
        for name in ("note", "setup", "building_block_type", "timestamp_override"):
            value = getattr(self, name)
            if value is not None:
                parameters[name] = value
        return parameters


class NotASequenceRule(UnsupportedRule):
    """A detection rule that is not an EQL sequence: another type (query, threshold, ES|QL, ...), or
    an EQL query of single events. Nothing to report about it in a folder of Elastic's rules."""


def read_version_lock(path: Path | str) -> dict[str, int]:
    """rule_id -> version from detection-rules' ``detection_rules/etc/version.lock.json``.

    Elastic keeps rule versions there, not in the rule files; an entry's ``version`` is the one
    Elastic publishes the rule under (``stack_emit`` variants for other stacks are left aside).
    """
    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise RuleError(path, f"cannot read the version lock: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise RuleError(path, f"the version lock is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RuleError(path, "the version lock is not a JSON object of rule_id -> entry")
    return {
        rule_id: entry["version"]
        for rule_id, entry in document.items()
        if isinstance(entry, dict) and type(entry.get("version")) is int and entry["version"] >= 1
    }


def read_rule_meta(path: Path, versions: Mapping[str, int] | None = None) -> tuple[RuleMeta, str, list[str]]:
    """Read and validate one rule file; returns the metadata, the file text and warnings to log.

    ``versions`` (a version lock) gives the version of a file that carries none.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(path, f"cannot read the rule file: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, column = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        message = re.sub(r" \(at line.*", "", str(exc))
        raise RuleError(path, f"invalid TOML: {message}", line, column) from None
    table = document.get("rule")
    if not isinstance(table, dict):
        raise RuleError(path, "missing the [rule] table (is this a detection rule file?)")
    warnings = [f"{path}: unknown table [{name}] ignored" for name in sorted(set(document) - _KNOWN_TABLES)]
    if table.get("type", "eql") != "eql":
        raise NotASequenceRule(path, f"a {table.get('type')!r} rule, not an EQL rule", _line_of(text, "type"))
    for key, problem in _REFUSED_KEYS.items():
        if table.get(key):
            raise UnsupportedRule(path, problem, _line_of(text, key))
    if table.get("timestamp_field", "@timestamp") != "@timestamp":
        raise UnsupportedRule(
            path,
            "timestamp_field is not supported: sequences are ordered by @timestamp",
            _line_of(text, "timestamp_field"),
        )
    known = set(RuleMeta.model_fields) | {"from"} | _KNOWN_UNUSED_KEYS | set(_REFUSED_KEYS)
    warnings += [
        f"{path}:{_line_of(text, key) or '?'}: unknown key rule.{key} ignored" for key in sorted(set(table) - known)
    ]
    metadata = document.get("metadata")
    try:
        meta = RuleMeta.model_validate({**table, "metadata": metadata if isinstance(metadata, dict) else {}})
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        key = str(error["loc"][0]) if error["loc"] else ""
        problem = f"rule.{location}: {error['msg']}"
        if len(exc.errors()) > 1:
            problem += f" (and {len(exc.errors()) - 1} more problems)"
        raise RuleError(path, problem, _line_of(text, "from" if key == "from_" else key)) from None
    if "version" not in table and versions and meta.rule_id in versions:
        meta = meta.model_copy(update={"version": versions[meta.rule_id]})
    return meta, text, warnings


def _line_of(text: str, key: str) -> int | None:
    """1-based line of ``key = ...`` in the file, if it is there."""
    found = re.search(rf"^\s*{re.escape(key)}\s*=", text, re.MULTILINE) if key else None
    return text.count("\n", 0, found.start()) + 1 if found else None
