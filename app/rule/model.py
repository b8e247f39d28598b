"""Rule files: Elastic detection-rule metadata and EQL query text in TOML.

A rule file has one ``[rule]`` table in the layout of Elastic's detection-rules repository (name,
rule_id, version, severity, risk_score, interval, from, max_signals, index, author, license,
references, tags, threat, query). eqlstream adds one optional table, ``[rule.field_types]``, to
declare the mapping type (keyword, long, ip, date) of non-ECS fields the query reads.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.fields import FieldType
from app.timeparse import parse_duration

DEFAULT_RULE_PATH = Path(__file__).parent / "files" / "incoming_dcom_lateral_movement_via_mshta_v4.toml"
# Rule uuids are derived, not random, so that alerts from every worker and every replay agree.
_RULE_UUID_NAMESPACE = uuid.UUID("0b6f3a2e-8d47-4f57-9a56-3c1c7f1d2a90")


class RuleError(Exception):
    """A rule file that cannot be used; the message names the file, the position and the problem."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None, column: int | None = None) -> None:
        where = str(path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {problem}")
        self.path, self.problem, self.line, self.column = str(path), problem, line, column


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ThreatEntry(_Strict):
    """An ATT&CK tactic, technique or sub-technique."""

    id: str
    name: str
    reference: str


class ThreatTechnique(ThreatEntry):
    """A technique with its sub-techniques."""

    subtechnique: list[ThreatEntry] = []


class Threat(_Strict):
    """One entry of the rule's MITRE ATT&CK mapping, as Kibana stores it."""

    framework: str
    tactic: ThreatEntry
    technique: list[ThreatTechnique] = []


class RuleMeta(_Strict):
    """A detection rule's metadata and query text."""

    name: str = Field(min_length=1)
    rule_id: str = Field(min_length=1)
    version: int = Field(ge=1)
    description: str
    type: Literal["eql"] = "eql"
    language: Literal["eql"] = "eql"
    severity: Literal["low", "medium", "high", "critical"]
    risk_score: int = Field(ge=0, le=100)
    interval: str = "5m"
    from_: str = Field(default="now-6m", alias="from")
    max_signals: int = Field(default=100, ge=1)
    index: list[str] = []
    author: list[str] = []
    license: str = ""
    references: list[str] = []
    tags: list[str] = []
    threat: list[Threat] = []
    query: str = Field(min_length=1)
    field_types: dict[str, FieldType] = {}

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


def read_rule_meta(path: Path) -> tuple[RuleMeta, str]:
    """Read and validate one rule file; returns the metadata and the file text."""
    try:
        text = path.read_text(encoding="utf-8")
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
        raise RuleError(path, "missing the [rule] table")
    unknown = set(document) - {"rule", "metadata"}
    if unknown:
        raise RuleError(path, f"unknown top-level tables: {', '.join(sorted(unknown))}")
    try:
        return RuleMeta.model_validate(table), text
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        key = str(error["loc"][0]) if error["loc"] else ""
        found = re.search(rf"^\s*{re.escape(key)}\s*=", text, re.MULTILINE) if key else None
        line = text.count("\n", 0, found.start()) + 1 if found else None
        problem = f"rule.{location}: {error['msg']}"
        if len(exc.errors()) > 1:
            problem += f" (and {len(exc.errors()) - 1} more problems)"
        raise RuleError(path, problem, line) from None
