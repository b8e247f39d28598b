"""Rule files as Elastic's detection-rules repository publishes them load unchanged.

The files here are written for these tests in that repository's layout (a ``[metadata]`` table, a
``[rule]`` table without ``version``, ``note``/``setup``/``references``, ``[[rule.threat]]``,
sometimes a ``[transform]`` table); eqlstream bundles no rule of Elastic's beyond its default.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core import Detector, RuleError, load_rules
from app.core.rule.model import DEFAULT_VERSION

QUERY = """
sequence by host.id with maxspan=30s
  [process where event.type == "start" and process.name : "wmiprvse.exe"]
  [network where event.type == "start" and process.name : "wmiprvse.exe" and destination.port == 135]
"""

UPSTREAM = f"""[metadata]
creation_date = "2024/01/02"
integration = ["endpoint", "windows"]
maturity = "production"
updated_date = "2024/06/07"

[rule]
author = ["Elastic"]
building_block_type = "default"
description = \"\"\"
Identifies a process start of the WMI provider host followed by an RPC connection.
\"\"\"
from = "now-9m"
index = ["logs-endpoint.events.*", "winlogbeat-*"]
language = "eql"
license = "Elastic License v2"
name = "Test: WMI host then RPC"
note = \"\"\"## Triage and analysis

Look at the parent of the WMI provider host.
\"\"\"
references = ["https://example.org/wmi"]
risk_score = 47
rule_id = "9f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a"
setup = "Requires Elastic Defend or Sysmon."
severity = "medium"
tags = ["Domain: Endpoint", "OS: Windows", "Tactic: Lateral Movement"]
timestamp_override = "event.ingested"
type = "eql"
query = '''{QUERY}'''

[[rule.threat]]
framework = "MITRE ATT&CK"

[rule.threat.tactic]
id = "TA0008"
name = "Lateral Movement"
reference = "https://attack.mitre.org/tactics/TA0008/"

[[transform.osquery]]
label = "Osquery - Retrieve running processes"
query = "SELECT * FROM processes"
"""


def write(tmp_path: Path, text: str, name: str = "rule.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def events() -> list[dict]:
    base = {"host": {"id": "h1", "name": "h1"}, "process": {"name": "WmiPrvSE.exe", "entity_id": "p1"}}
    start = {**base, "@timestamp": "2024-06-07T10:00:00.000Z", "event": {"category": ["process"], "type": ["start"]}}
    connect = {
        **base,
        "@timestamp": "2024-06-07T10:00:10.000Z",
        "event": {"category": ["network"], "type": ["start"]},
        "destination": {"port": 135},
    }
    return [start, connect]


def test_an_upstream_file_loads_with_its_metadata_and_default_version(tmp_path: Path) -> None:
    warnings: list[str] = []
    (rule,) = load_rules(write(tmp_path, UPSTREAM), warn=warnings.append)
    assert warnings == []
    meta = rule.meta
    assert meta.version == DEFAULT_VERSION
    assert meta.metadata["maturity"] == "production"
    assert meta.note is not None and meta.note.startswith("## Triage")
    assert meta.setup == "Requires Elastic Defend or Sysmon."
    assert meta.references == ["https://example.org/wmi"]
    assert meta.timestamp_override == "event.ingested"
    assert rule.maxspan_ms == 30_000


def test_note_setup_references_and_building_block_type_reach_the_alert_where_kibana_puts_them(
    tmp_path: Path,
) -> None:
    rules = load_rules(write(tmp_path, UPSTREAM))
    (alert,) = Detector(rules).detect(events()).alerts
    *blocks, shell = alert.documents
    for document in alert.documents:
        assert document["kibana.alert.rule.note"].startswith("## Triage")
        assert document["kibana.alert.rule.references"] == ["https://example.org/wmi"]
        assert document["kibana.alert.rule.timestamp_override"] == "event.ingested"
        parameters = document["kibana.alert.rule.parameters"]
        assert parameters["setup"] == "Requires Elastic Defend or Sysmon."
        assert parameters["building_block_type"] == "default"
        assert parameters["version"] == DEFAULT_VERSION
    # A building-block rule's alerts are building blocks themselves: the shell too.
    assert shell["kibana.alert.building_block_type"] == "default"
    assert all(block["kibana.alert.building_block_type"] == "default" for block in blocks)


def test_timestamp_override_does_not_change_the_order_events_are_matched_in(tmp_path: Path) -> None:
    """Kibana applies timestamp_override to the run's time range only; sequences stay ordered by @timestamp."""
    start, connect = events()
    connect = {**connect, "event": {**connect["event"], "ingested": "2024-06-07T09:00:00.000Z"}}
    (alert,) = Detector(load_rules(write(tmp_path, UPSTREAM))).detect([start, connect]).alerts
    assert alert.documents[-1]["kibana.alert.original_time"] == "2024-06-07T10:00:00.000Z"


def test_unknown_keys_and_tables_are_warnings_naming_the_file_and_line(tmp_path: Path) -> None:
    text = UPSTREAM.replace('severity = "medium"', 'severity = "medium"\nseverty_mapping = []') + "\n[extra]\nx = 1\n"
    path = write(tmp_path, text)
    warnings: list[str] = []
    load_rules(path, warn=warnings.append)
    line = text.splitlines().index("severty_mapping = []") + 1
    assert warnings == [
        f"{path}: unknown table [extra] ignored",
        f"{path}:{line}: unknown key rule.severty_mapping ignored",
    ]


def test_keys_of_elastics_schema_that_eqlstream_does_not_use_are_accepted_quietly(tmp_path: Path) -> None:
    extra = "required_fields = []\nrelated_integrations = []\nrisk_score_mapping = []\nexceptions_list = []\n"
    warnings: list[str] = []
    load_rules(write(tmp_path, UPSTREAM.replace("[rule]\n", "[rule]\n" + extra)), warn=warnings.append)
    assert warnings == []


@pytest.mark.parametrize(
    ("addition", "problem"),
    [
        ('filters = [{ query = { match_phrase = { "host.name" = "x" } } }]', "query filters"),
        ('event_category_override = "event.dataset"', "event_category_override is not supported"),
        ('tiebreaker_field = "event.sequence"', "tiebreaker_field is not supported"),
        ('timestamp_field = "event.created"', "timestamp_field is not supported"),
        ('alert_suppression = { group_by = ["host.name"] }', "alert_suppression is not supported"),
    ],
)
def test_options_that_would_change_the_answer_are_refused_with_the_reason(
    tmp_path: Path, addition: str, problem: str
) -> None:
    text = UPSTREAM.replace("[rule]\n", "[rule]\n" + addition + "\n")
    with pytest.raises(RuleError) as info:
        load_rules(write(tmp_path, text))
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'rule.toml'}:{text.splitlines().index(addition) + 1}:")


def test_a_directory_of_upstream_files_loads_every_rule_and_refuses_a_duplicate_rule_id(tmp_path: Path) -> None:
    write(tmp_path, UPSTREAM, "a.toml")
    write(tmp_path, UPSTREAM.replace("9f5b1a6e", "1f5b1a6e"), "b.toml")
    assert [rule.meta.rule_id[:8] for rule in load_rules(tmp_path)] == ["9f5b1a6e", "1f5b1a6e"]
    write(tmp_path, UPSTREAM, "c.toml")
    with pytest.raises(RuleError, match="also used by"):
        load_rules(tmp_path)


def test_the_bundled_rule_keeps_elastics_reference() -> None:
    (rule,) = load_rules()
    assert rule.meta.references == ["https://codewhitesec.blogspot.com/2018/07/lethalhta.html"]
    assert rule.meta.version == 4


# -- a folder of Elastic's rules: run what can run, say why the rest cannot -----------------------

MATCH_QUERY = """
sequence by host.id with maxspan=1m
  [process where match(process.name, "[a-z]+\\\\.exe")]
  [network where true]
"""
NOT_A_SEQUENCE = '// one stage only\nprocess where process.name : "wmic.exe"'
KUERY_RULE = UPSTREAM.replace('type = "eql"', 'type = "query"').replace('language = "eql"', 'language = "kuery"')


def upstream(query: str, rule_id: str, name: str) -> str:
    """An upstream-layout rule file with its own query, id and name."""
    return (
        UPSTREAM.replace(QUERY, query)
        .replace("9f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", rule_id)
        .replace("Test: WMI host then RPC", name)
    )


def upstream_folder(tmp_path: Path) -> Path:
    """A supported sequence rule, an unsupported one, a one-stage EQL rule and a KQL rule."""
    write(tmp_path, UPSTREAM, "a_supported.toml")
    write(tmp_path, upstream(MATCH_QUERY, "2f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", "Uses match"), "b_match.toml")
    write(tmp_path, upstream(NOT_A_SEQUENCE, "3f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", "One stage"), "c_one.toml")
    write(tmp_path, KUERY_RULE.replace("9f5b1a6e", "4f5b1a6e"), "d_kuery.toml")
    return tmp_path


def test_a_folder_runs_its_supported_rules_and_names_each_unsupported_sequence_rule(tmp_path: Path) -> None:
    warnings: list[str] = []
    (rule,) = load_rules(upstream_folder(tmp_path), warn=warnings.append)
    assert rule.meta.name == "Test: WMI host then RPC"
    skipped, summary = warnings
    assert skipped.startswith(f"{tmp_path / 'b_match.toml'}:") and "match() is not supported" in skipped
    assert "running 1 rules; skipped 1 unsupported sequence rules and 2 rules that are not EQL sequences" in summary


def test_a_single_unsupported_file_is_an_error_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"match\(\) is not supported"):
        load_rules(write(tmp_path, upstream(MATCH_QUERY, "2f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", "m")))
    with pytest.raises(RuleError, match="not an EQL rule"):
        load_rules(write(tmp_path, KUERY_RULE, "kuery.toml"))


def test_a_folder_with_nothing_to_run_is_an_error_pointing_at_coverage(tmp_path: Path) -> None:
    folder = upstream_folder(tmp_path)
    (folder / "a_supported.toml").unlink()
    with pytest.raises(RuleError, match="none of the 3 rule files is a rule eqlstream runs.*eqlstream coverage"):
        load_rules(folder)


def test_a_malformed_file_in_a_folder_is_still_an_error(tmp_path: Path) -> None:
    folder = upstream_folder(tmp_path)
    write(folder, UPSTREAM.replace('severity = "medium"', 'severity = "nope"'), "e_broken.toml")
    with pytest.raises(RuleError, match="e_broken.toml"):
        load_rules(folder)


RUNS_QUERY = """
sequence by host.id with maxspan=1m
  [process where event.type == "start" and process.name : "whoami.exe"] with runs=3
  [network where event.type == "start"]
"""


def test_with_runs_repeats_the_stage_as_elasticsearch_does(tmp_path: Path) -> None:
    """``[q] with runs=3`` is three copies of ``[q]``: three whoami starts, then a connection."""
    (rule,) = load_rules(write(tmp_path, upstream(RUNS_QUERY, "5f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", "Runs")))
    assert len(rule.stages) == 4

    def event(second: int, category: str, name: str = "whoami.exe") -> dict:
        return {
            "@timestamp": f"2024-06-07T10:00:{second:02d}.000Z",
            "event": {"category": [category], "type": ["start"], "id": f"e{second}"},
            "host": {"id": "h1"},
            "process": {"name": name, "entity_id": f"p{second}"},
        }

    two_starts = [event(0, "process"), event(1, "process"), event(5, "network", "x.exe")]
    assert Detector([rule]).detect(two_starts).alerts == []
    three_starts = [event(0, "process"), event(1, "process"), event(2, "process"), event(5, "network", "x.exe")]
    (alert,) = Detector([rule]).detect(three_starts).alerts
    assert [block["process"]["entity_id"] for block in alert.documents[:-1]] == ["p0", "p1", "p2", "p5"]


# -- Elastic's version lock -------------------------------------------------------------------


def test_the_version_lock_gives_versions_to_files_without_one(tmp_path: Path) -> None:
    """detection-rules keeps versions in detection_rules/etc/version.lock.json; a file's own version wins."""
    lock = tmp_path / "version.lock.json"
    lock.write_text(
        '{"9f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a": {"rule_name": "x", "sha256": "0", "type": "eql", "version": 212},'
        ' "2f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a": {"rule_name": "y", "version": 7}}'
    )
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write(rules_dir, UPSTREAM, "a.toml")
    write(
        rules_dir,
        upstream(QUERY, "2f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", "Own").replace("[rule]\n", "[rule]\nversion = 3\n"),
        "b.toml",
    )
    write(rules_dir, upstream(QUERY, "3f5b1a6e-5f2d-4c8e-9d0b-1f2e3d4c5b6a", "Unlocked"), "c.toml")
    versions = [rule.meta.version for rule in load_rules(rules_dir, version_lock=lock)]
    assert versions == [212, 3, DEFAULT_VERSION]
    (alert,) = Detector(load_rules(rules_dir / "a.toml", version_lock=lock)).detect(events()).alerts
    assert all(document["kibana.alert.rule.version"] == 212 for document in alert.documents)


@pytest.mark.parametrize(
    ("content", "problem"), [(None, "cannot read the version lock"), ("{", "not JSON"), ("[]", "not a JSON object")]
)
def test_an_unusable_version_lock_is_an_error_naming_it(tmp_path: Path, content: str | None, problem: str) -> None:
    lock = tmp_path / "version.lock.json"
    if content is not None:
        lock.write_text(content)
    with pytest.raises(RuleError, match=problem) as info:
        load_rules(write(tmp_path, UPSTREAM), version_lock=lock)
    assert str(info.value).startswith(str(lock))
