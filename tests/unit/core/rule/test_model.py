"""Rule files: loading, metadata, warnings and error messages (app.core.rule.model, app.core.load_rules).

Rule files are Elastic's detection-rules TOML, unchanged: what upstream files carry must load, what
would change which events match in a way eqlstream cannot honour must be refused with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core import DEFAULT_RULE_PATH, RuleError, load_rules
from app.core.fields import FieldType

QUERY = """\
sequence with maxspan=1m
  [process where process.name : "a.exe"] by host.id
  [network where process.name : "a.exe"] by host.id
"""


def rule_text(
    *,
    rule_id: str = "11111111-2222-3333-4444-555555555555",
    severity: str = '"high"',
    query: str = QUERY,
    extra: str = "",
    drop: str | None = None,
    header: str = "",
) -> str:
    lines = [
        "[rule]",
        'name = "Test rule"',
        f'rule_id = "{rule_id}"',
        "version = 2",
        'description = "A test rule."',
        f"severity = {severity}",
        "risk_score = 21",
        'interval = "5m"',
        'from = "now-9m"',
        "query = '''",
        *query.rstrip("\n").split("\n"),
        "'''",
    ]
    if drop is not None:
        lines = [line for line in lines if not line.startswith(f"{drop} =")]
    return header + "\n".join(lines) + "\n" + extra


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> RuleError:
    with pytest.raises(RuleError) as info:
        load_rules(path)
    return info.value


def load_with_warnings(path: Path) -> tuple[list, list[str]]:
    warnings: list[str] = []
    return load_rules(path, warn=warnings.append), warnings


def line_of(text: str, needle: str) -> int:
    """1-based line number of the last line of ``text`` containing ``needle``."""
    return max(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# -- the bundled default ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_rule():
    rules = load_rules()
    assert len(rules) == 1
    return rules[0]


def test_default_path_is_the_bundled_v4_file(default_rule):
    assert DEFAULT_RULE_PATH.name == "incoming_dcom_lateral_movement_via_mshta_v4.toml"
    assert DEFAULT_RULE_PATH.is_file()
    assert Path(default_rule.path) == DEFAULT_RULE_PATH
    assert load_rules(DEFAULT_RULE_PATH)[0].meta == default_rule.meta


def test_default_metadata(default_rule):
    meta = default_rule.meta
    assert meta.name == "Incoming DCOM Lateral Movement via MSHTA"
    assert meta.rule_id == "622ecb68-fa81-4601-90b5-f8cd661e4520"
    assert meta.version == 4
    assert meta.type == "eql"
    assert meta.language == "eql"
    assert meta.severity == "high"
    assert meta.risk_score == 73
    assert meta.interval == "5m"
    assert meta.from_ == "now-9m"
    assert meta.max_signals == 100
    assert meta.author == ["Elastic"]
    assert meta.license == "Elastic License v2"
    assert meta.references == ["https://codewhitesec.blogspot.com/2018/07/lethalhta.html"]
    assert meta.tags == ["Elastic", "Host", "Windows", "Threat Detection", "Lateral Movement"]
    assert "DCOM" in meta.description or "Distributed Component Object Model" in meta.description
    assert meta.field_types == {}


def test_default_query_is_version_4(default_rule):
    query = default_rule.meta.query
    assert 'event.type in ("start", "process_started")' in query
    assert 'network.direction : ("incoming", "ingress")' in query
    assert 'not source.address in ("127.0.0.1", "::1")' in query
    assert "maxspan=1m" in query


def test_default_threat_mapping(default_rule):
    threat = default_rule.meta.threat
    assert len(threat) == 2
    assert all(entry.framework == "MITRE ATT&CK" for entry in threat)
    summary = [
        (
            entry.tactic.id,
            entry.tactic.name,
            [(t.id, t.name, [(s.id, s.name) for s in t.subtechnique]) for t in entry.technique],
        )
        for entry in threat
    ]
    assert summary == [
        (
            "TA0008",
            "Lateral Movement",
            [("T1021", "Remote Services", [("T1021.003", "Distributed Component Object Model")])],
        ),
        ("TA0005", "Defense Evasion", [("T1218", "Signed Binary Proxy Execution", [("T1218.005", "Mshta")])]),
    ]
    references = [entry.tactic.reference for entry in threat]
    assert references == ["https://attack.mitre.org/tactics/TA0008/", "https://attack.mitre.org/tactics/TA0005/"]
    assert threat[0].technique[0].subtechnique[0].reference == "https://attack.mitre.org/techniques/T1021/003/"
    assert threat[1].technique[0].subtechnique[0].reference == "https://attack.mitre.org/techniques/T1218/005/"


def test_rule_uuid_is_stable_and_version_specific(default_rule):
    again = load_rules()[0]
    assert default_rule.meta.uuid == again.meta.uuid
    other = default_rule.meta.model_copy(update={"version": 5})
    assert other.uuid != default_rule.meta.uuid


# -- loading files and directories -----------------------------------------------------------


def test_load_a_single_file(tmp_path):
    path = write(tmp_path / "one.toml", rule_text())
    (rule,) = load_rules(path)
    assert rule.path == str(path)
    assert rule.meta.rule_id == "11111111-2222-3333-4444-555555555555"
    assert rule.meta.version == 2
    assert rule.maxspan_ms == 60_000


def test_load_accepts_a_string_path(tmp_path):
    path = write(tmp_path / "one.toml", rule_text())
    assert load_rules(str(path))[0].path == str(path)


def test_load_a_directory_sorted_by_file_name(tmp_path):
    write(tmp_path / "c_rule.toml", rule_text(rule_id="c"))
    write(tmp_path / "a_rule.toml", rule_text(rule_id="a"))
    write(tmp_path / "b_rule.toml", rule_text(rule_id="b"))
    write(tmp_path / "notes.txt", "not a rule")
    write(tmp_path / "z_rule.toml.bak", "not a rule either [")
    rules = load_rules(tmp_path)
    assert [Path(r.path).name for r in rules] == ["a_rule.toml", "b_rule.toml", "c_rule.toml"]
    assert [r.meta.rule_id for r in rules] == ["a", "b", "c"]


def test_metadata_table_is_allowed(tmp_path):
    path = write(tmp_path / "r.toml", '[metadata]\ncreation_date = "2020/01/01"\n\n' + rule_text())
    assert load_rules(path)[0].meta.name == "Test rule"


def test_declared_field_types_change_how_a_custom_field_is_read(tmp_path):
    query = "sequence [any where custom.count > 5] [any where true]"
    path = write(tmp_path / "r.toml", rule_text(query=query, extra='\n[rule.field_types]\n"custom.count" = "long"\n'))
    (rule,) = load_rules(path)
    assert rule.meta.field_types == {"custom.count": FieldType.LONG}
    assert rule.stages[0].predicate({"custom": {"count": "7"}})
    # as a long 10 > 5; declared a keyword, "10" < "5" lexicographically, as Elasticsearch compares keywords
    assert rule.stages[0].predicate({"custom": {"count": "10"}})
    keyword = '\n[rule.field_types]\n"custom.count" = "keyword"\n'
    declared_keyword = write(tmp_path / "r2.toml", rule_text(query=query, extra=keyword))
    assert not load_rules(declared_keyword)[0].stages[0].predicate({"custom": {"count": "10"}})


def test_a_number_compared_with_a_field_of_unknown_type_is_refused_with_the_fix(tmp_path):
    """Undeclared, the field would be read as a keyword and compared as text ("10" < "5"), while
    Elastic's indices map such fields as numbers: wrong answers, so the rule is refused."""
    query = "sequence [any where custom.count > 5] [any where true]"
    message = str(load_error(write(tmp_path / "r.toml", rule_text(query=query))))
    assert "custom.count" in message and "[rule.field_types]" in message


def test_unknown_field_type_is_rejected(tmp_path):
    text = rule_text(extra='\n[rule.field_types]\n"custom.count" = "integer"\n')
    message = str(load_error(write(tmp_path / "r.toml", text)))
    assert "field_types" in message


# -- bad rule files --------------------------------------------------------------------------


def test_invalid_toml_names_file_line_and_column(tmp_path):
    text = rule_text().replace('name = "Test rule"', 'name = "Test rule')
    path = write(tmp_path / "broken.toml", text)
    error = load_error(path)
    message = str(error)
    assert str(path) in message
    assert "invalid TOML" in message
    assert error.line == 2
    assert error.column is not None
    assert re.search(rf"broken\.toml:2:{error.column}: ", message), message


def test_missing_rule_table(tmp_path):
    path = write(tmp_path / "norule.toml", '[other]\nname = "x"\n')
    message = str(load_error(path))
    assert str(path) in message
    assert "[rule]" in message


def test_an_unknown_top_level_table_is_a_warning(tmp_path):
    path = write(tmp_path / "extra.toml", rule_text() + "\n[surprise]\nx = 1\n")
    (rule,), warnings = load_with_warnings(path)
    assert rule.meta.name == "Test rule"
    assert warnings == [f"{path}: unknown table [surprise] ignored"]


def test_upstream_tables_and_keys_load_without_a_word(tmp_path):
    """Elastic's files carry [metadata], [transform], and rule keys eqlstream does not use."""
    metadata = '[metadata]\ncreation_date = "2020/01/01"\nmaturity = "production"\nintegrations = ["windows"]\n\n'
    extra = (
        'related_integrations = [{package = "windows", version = "^1.5.0"}]\n'
        'required_fields = [{name = "host.id", type = "keyword", ecs = true}]\n'
        'setup = "Enable Sysmon."\ntimestamp_override = "event.ingested"\n'
        '\n[transform]\n[[transform.osquery]]\nlabel = "Osquery"\nquery = "SELECT 1"\n'
    )
    text = rule_text(header=metadata).replace("version = 2\n", "version = 2\n" + extra.split("\n[transform]")[0] + "\n")
    text += "\n[transform]" + extra.split("\n[transform]")[1]
    (rule,), warnings = load_with_warnings(write(tmp_path / "upstream.toml", text))
    assert warnings == []
    assert rule.meta.metadata["maturity"] == "production"
    assert (rule.meta.setup, rule.meta.timestamp_override) == ("Enable Sysmon.", "event.ingested")


def test_version_is_optional_as_in_upstream_files(tmp_path):
    (rule,) = load_rules(write(tmp_path / "noversion.toml", rule_text(drop="version")))
    assert rule.meta.version == 1


@pytest.mark.parametrize("key", ["name", "rule_id", "description", "severity", "risk_score", "query"])
def test_missing_required_key(tmp_path, key):
    text = rule_text().split("query = '''")[0] if key == "query" else rule_text(drop=key)
    path = write(tmp_path / "missing.toml", text)
    error = load_error(path)
    message = str(error)
    assert str(path) in message
    assert f"rule.{key}" in message
    assert "required" in message.lower()


def test_wrong_severity_names_the_line_and_the_choices(tmp_path):
    text = rule_text(severity='"urgent"')
    path = write(tmp_path / "severity.toml", text)
    error = load_error(path)
    message = str(error)
    assert f"{path}:{line_of(text, 'severity =')}:" in message
    assert "rule.severity" in message
    for choice in ("low", "medium", "high", "critical"):
        assert choice in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("risk_score = 21", "risk_score = 101", "risk_score"),
        ("version = 2", "version = 0", "version"),
        ("version = 2", 'version = "two"', "version"),
        ('interval = "5m"', 'interval = "5 minutes"', "interval"),
        ('from = "now-9m"', 'from = "9m"', "from"),
        ('name = "Test rule"', 'name = ""', "name"),
    ],
)
def test_invalid_values_are_reported_with_key_and_line(tmp_path, old, new, key):
    text = rule_text().replace(old, new)
    path = write(tmp_path / "bad.toml", text)
    error = load_error(path)
    message = str(error)
    assert key in message
    assert error.line == line_of(text, new)
    assert f"{path}:{error.line}:" in message


def test_an_unknown_rule_key_is_a_warning_naming_its_line(tmp_path):
    text = rule_text().replace("version = 2", 'version = 2\nseverty = "low"')
    path = write(tmp_path / "typo.toml", text)
    (rule,), warnings = load_with_warnings(path)
    assert rule.meta.severity == "high"
    assert warnings == [f"{path}:{line_of(text, 'severty')}: unknown key rule.severty ignored"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('filters = [{query = {match_phrase = {"host.name" = "x"}}}]', ["filters", "not supported"]),
        ('event_category_override = "event.type"', ["event_category_override", "not supported"]),
        ('tiebreaker_field = "event.sequence"', ["tiebreaker_field", "not supported"]),
        ('timestamp_field = "event.created"', ["timestamp_field", "@timestamp"]),
        ('alert_suppression = {group_by = ["host.name"]}', ["alert_suppression", "not supported"]),
    ],
)
def test_options_that_change_what_matches_are_refused_with_the_reason(tmp_path, line, words):
    """Run without them, the rule would give answers Elasticsearch does not: refused, never ignored."""
    text = rule_text().replace("version = 2", f"version = 2\n{line}")
    path = write(tmp_path / "refused.toml", text)
    error = load_error(path)
    assert error.line == line_of(text, line.split(" =")[0] + " =")
    for word in words:
        assert word in str(error)


def test_the_default_timestamp_field_is_accepted(tmp_path):
    text = rule_text().replace("version = 2", 'version = 2\ntimestamp_field = "@timestamp"\nfilters = []')
    assert load_rules(write(tmp_path / "ts.toml", text))[0].meta.timestamp_field == "@timestamp"


def test_eql_syntax_error_points_into_the_query(tmp_path):
    query = QUERY.replace('[network where process.name : "a.exe"]', '[network where process.name : "a.exe" and ]')
    text = rule_text(query=query)
    path = write(tmp_path / "syntax.toml", text)
    error = load_error(path)
    message = str(error)
    expected_line = line_of(text, "[network where")
    assert error.line == expected_line
    assert message.startswith(f"{path}:{expected_line}:")
    assert "invalid EQL query" in message
    assert text.splitlines()[expected_line - 1][error.column - 1] == "]"


def test_eql_syntax_error_on_the_first_query_line(tmp_path):
    query = QUERY.replace("maxspan=1m", "maxspan=1x")
    text = rule_text(query=query)
    path = write(tmp_path / "maxspan.toml", text)
    error = load_error(path)
    assert error.line == line_of(text, "sequence with")
    assert str(path) in str(error)


def test_eql_error_line_is_right_when_the_query_start_also_appears_in_a_comment(tmp_path):
    """A commented-out older query above the [rule] table must not shift the reported line."""
    header = "# previous version:\n# sequence with maxspan=1m\n#   [process where true] by host.id\n\n"
    query = QUERY.replace('[network where process.name : "a.exe"]', '[network where process.name : "a.exe" and ]')
    text = rule_text(query=query, header=header)
    path = write(tmp_path / "commented.toml", text)
    error = load_error(path)
    assert error.line == line_of(text, "[network where")
    assert str(error).startswith(f"{path}:{line_of(text, '[network where')}:")


def test_unsupported_eql_in_a_file_names_the_file_and_the_query_line(tmp_path):
    text = rule_text(query=QUERY + "| head 5\n")
    path = write(tmp_path / "pipes.toml", text)
    error = load_error(path)
    message = str(error)
    assert str(path) in message
    assert "pipes" in message
    assert error.line is not None
    assert line_of(text, "sequence with") <= error.line <= line_of(text, "| head 5")


def test_duplicate_rule_id_in_a_directory_names_both_files(tmp_path):
    first = write(tmp_path / "a.toml", rule_text(rule_id="same-id"))
    second = write(tmp_path / "b.toml", rule_text(rule_id="same-id"))
    message = str(load_error(tmp_path))
    assert "same-id" in message
    assert str(first) in message
    assert str(second) in message


def test_one_bad_file_in_a_directory_is_reported(tmp_path):
    write(tmp_path / "a.toml", rule_text(rule_id="a"))
    bad = write(tmp_path / "b.toml", rule_text(rule_id="b", severity='"nope"'))
    message = str(load_error(tmp_path))
    assert str(bad) in message


def test_empty_directory(tmp_path):
    write(tmp_path / "readme.md", "no rules here")
    error = load_error(tmp_path)
    assert str(tmp_path) in str(error)
    assert "*.toml" in str(error)


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nope" / "rule.toml"
    error = load_error(missing)
    assert str(missing) in str(error)
    assert "no such" in str(error).lower()


def test_undecodable_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(rule_text().replace("A test rule.", "caf\u00e9").encode("latin-1"))
    error = load_error(path)
    assert str(path) in str(error)
    assert "read" in str(error)
