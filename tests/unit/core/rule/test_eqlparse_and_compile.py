"""Parsing EQL with Elasticsearch's case rules and compiling sequences (app.core.rule.eqlparse, compiler)."""

from __future__ import annotations

import pytest
from eql import ast

from app.core import RuleError, load_rules
from app.core.rule.compiler import TooManyJoinKeys
from app.core.rule.eqlparse import CASE_INSENSITIVE_IN, CASE_SENSITIVE_LIKE, EqlError, parse_rule_query
from tests.support.detection import compile_query


def first_condition(query: str) -> ast.Expression:
    return parse_rule_query(query).first.queries[0].query.query


# -- the parser keeps Elasticsearch's case rules ---------------------------------------------


def test_like_is_marked_case_sensitive():
    node = first_condition('sequence [any where process.name like "a*"] [any where true]')
    assert isinstance(node, ast.FunctionCall)
    assert node.name == CASE_SENSITIVE_LIKE


@pytest.mark.parametrize("operator", [":", "like~"])
def test_colon_and_like_tilde_are_insensitive_wildcards(operator):
    node = first_condition(f'sequence [any where process.name {operator} "a*"] [any where true]')
    assert isinstance(node, ast.FunctionCall)
    assert node.name == "wildcard"


def test_in_tilde_is_marked_insensitive():
    node = first_condition('sequence [any where process.name in~ ("a", "b")] [any where true]')
    assert isinstance(node, ast.FunctionCall)
    assert node.name == CASE_INSENSITIVE_IN
    assert [arg.value for arg in node.arguments[1:]] == ["a", "b"]


def test_plain_in_stays_a_set():
    node = first_condition('sequence [any where process.name in ("a", "b")] [any where true]')
    assert isinstance(node, ast.InSet)


@pytest.mark.parametrize("text", ["", "   \n  ", "sequence [", "sequence [any where ] [any where true]"])
def test_parse_errors_raise_eql_error(text):
    with pytest.raises(EqlError):
        parse_rule_query(text)


def test_parse_error_carries_the_line():
    with pytest.raises(EqlError) as info:
        parse_rule_query('sequence\n  [any where true]\n  [any where process.name : "a" and ]\n')
    assert info.value.line == 2  # zero-based


# -- unsupported constructs are refused at load time -----------------------------------------


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("sequence [any where true] [any where true] until [any where true]", ["until"]),
        ("sequence [any where true] [any where true] | head 5", ["pipe"]),
        ("sequence [any where true] [any where true] | tail 1", ["pipe"]),
        ('process where process.name : "mshta.exe"', ["sequence"]),
        ("join [any where true] [any where true]", ["sequence"]),
        ("sequence [any where length(process.name) > 3] [any where true]", ["length"]),
        (
            "sequence [any where startsWith(process.name, process.executable)] [any where true]",
            ["startsWith", "literal"],
        ),
        ('sequence [any where cidrMatch(process.name, "10.0.0.0/8")] [any where true]', ["cidrMatch", "ip field"]),
        ('sequence [any where cidrMatch(source.ip, "10.0.0.0/88")] [any where true]', ["CIDR"]),
        ('sequence [any where endsWith(source.port, "1")] [any where true]', ["keyword field"]),
        ('sequence [any where process.name regex "ms.*"] [any where true]', ["not supported"]),
        ('sequence [any where process.name regex~ "MS.*"] [any where true]', ["not supported"]),
        ("sequence [any where process.name == process.executable] [any where true]", ["field"]),
        ("sequence [any where process.name : process.executable] [any where true]", ["1:36"]),
        ('sequence [any where source.ip : "10.*"] [any where true]', ["wildcard", "source.ip"]),
        ('sequence [any where source.ip like "10.0.0.?"] [any where true]', ["wildcard", "source.ip"]),
        ('sequence [any where source.ip == "not-an-ip"] [any where true]', ["source.ip", "not-an-ip"]),
        ('sequence [any where source.port > "high"] [any where true]', ["source.port", "high"]),
        ('sequence [any where source.port == "abc"] [any where true]', ["source.port", "abc"]),
        ('sequence [any where source.port in ("80", "x")] [any where true]', ["source.port"]),
        ('sequence [any where source.port : "*"] [any where true]', ["wildcard", "source.port"]),
        ('sequence [any where process.args[0] : "mshta.exe"] [any where true]', ["array"]),
        ('sequence [any where event.created > "2024-01-01"] [any where true]', ["date", "event.created"]),
        ('sequence [any where event.created == "2024-01-01"] [any where true]', ["date", "event.created"]),
        ("sequence [any where true] by host.id [any where true] by host.id, process.pid", ["1:67"]),
    ],
)
def test_unsupported_constructs_are_refused_with_a_clear_rule_error(query, words):
    with pytest.raises(RuleError) as info:
        compile_query(query)
    message = str(info.value)
    assert message.startswith("rules/test.toml"), message
    assert info.value.path == "rules/test.toml"
    for word in words:
        assert word.lower() in message.lower(), (word, message)


def test_a_sequence_needs_at_least_two_stages():
    """Elasticsearch's grammar is ``SEQUENCE ... sequenceTerm sequenceTerm+``: one stage is a syntax error."""
    with pytest.raises(RuleError):
        compile_query('sequence [process where process.name : "mshta.exe"]')


def test_sequence_by_must_come_before_with():
    """Elasticsearch: "Please specify sequence [by] before [with] not after"."""
    with pytest.raises(RuleError):
        compile_query("sequence with maxspan=1m by host.id [any where true] [any where true]")


@pytest.mark.parametrize(
    "query",
    [
        "sequence with maxspan=1000 [any where true] [any where true]",  # no unit
        "sequence with maxspan=1w [any where true] [any where true]",  # unknown unit
        "sequence with maxspan=1.5s [any where true] [any where true]",  # not an integer
    ],
)
def test_bad_maxspan_is_refused(query):
    with pytest.raises(RuleError, match="maxspan|unit"):
        compile_query(query)


# -- maxspan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maxspan", "ms"),
    [
        ("500ms", 500),
        ("1ms", 1),
        ("30s", 30_000),
        ("1m", 60_000),
        ("90m", 5_400_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
    ],
)
def test_maxspan_units_to_milliseconds(maxspan, ms):
    rule = compile_query(f"sequence with maxspan={maxspan} [any where true] [any where true]")
    assert rule.maxspan_ms == ms


def test_without_maxspan_the_rules_lookback_bounds_the_span():
    """A Kibana run searches ``from`` back from now: no longer sequence is ever alerted on."""
    assert compile_query("sequence [any where true] [any where true]").maxspan_ms == 6 * 60_000  # now-6m, the default
    assert compile_query("sequence [any where true] [any where true]", **{"from": "now-9m"}).maxspan_ms == 9 * 60_000
    assert (
        compile_query("sequence with maxspan=1m [any where true] [any where true]", **{"from": "now-9m"}).maxspan_ms
        == 60_000
    )


# -- join keys -------------------------------------------------------------------------------


def test_sequence_by_is_merged_before_stage_by():
    rule = compile_query(
        "sequence by host.id with maxspan=1m"
        " [process where true] by process.entity_id"
        " [network where true] by process.entity_id"
    )
    assert [stage.key_fields for stage in rule.stages] == [("host.id", "process.entity_id")] * 2
    assert [stage.index for stage in rule.stages] == [0, 1]


def test_stage_keys_may_name_different_fields_in_the_same_position():
    rule = compile_query(
        "sequence [process where true] by process.entity_id [network where true] by process.parent.entity_id"
    )
    assert rule.stages[0].key_fields == ("process.entity_id",)
    assert rule.stages[1].key_fields == ("process.parent.entity_id",)


def test_no_keys():
    rule = compile_query("sequence [any where true] [any where true]")
    assert all(stage.key_fields == () for stage in rule.stages)


def test_join_keys_are_exact_and_fan_out():
    rule = compile_query("sequence by host.id, process.entity_id [any where true] [any where true]")
    stage = rule.stages[0]
    assert stage.join_keys({"host": {"id": "H"}, "process": {"entity_id": "E"}}, 64) == [("H", "E")]
    assert stage.join_keys({"host": {"id": "H"}, "process": {"entity_id": "e"}}, 64) != stage.join_keys(
        {"host": {"id": "H"}, "process": {"entity_id": "E"}}, 64
    )
    assert sorted(stage.join_keys({"host": {"id": ["H1", "H2"]}, "process": {"entity_id": ["E1", "E2"]}}, 64)) == [
        ("H1", "E1"),
        ("H1", "E2"),
        ("H2", "E1"),
        ("H2", "E2"),
    ]
    assert stage.join_keys({"host": {"id": "H"}}, 64) == []
    assert stage.join_keys({"host": {"id": None}, "process": {"entity_id": "E"}}, 64) == []


def test_join_key_values_are_keywords_within_ignore_above():
    """A value longer than 1,024 UTF-16 units is not indexed, so it joins nothing; a number joins as text."""
    stage = compile_query("sequence by host.id [any where true] [any where true]").stages[0]
    assert stage.join_keys({"host": {"id": "x" * 1024}}, 64) == [("x" * 1024,)]
    assert stage.join_keys({"host": {"id": "x" * 1025}}, 64) == []
    assert stage.join_keys({"host": {"id": "\U0001f600" * 513}}, 64) == []  # 1,026 UTF-16 units
    assert stage.join_keys({"host": {"id": ["x" * 1025, "short"]}}, 64) == [("short",)]
    assert stage.join_keys({"host": {"id": 12345}}, 64) == [("12345",)]


def test_join_keys_fanning_out_beyond_the_limit_are_refused_before_they_are_built():
    stage = compile_query("sequence by host.id, process.entity_id [any where true] [any where true]").stages[0]
    doc = {"host": {"id": [f"h{i}" for i in range(8)]}, "process": {"entity_id": [f"e{i}" for i in range(8)]}}
    assert len(stage.join_keys(doc, 64)) == 64
    with pytest.raises(TooManyJoinKeys, match="host.id, process.entity_id give more than 63 join keys"):
        stage.join_keys(doc, 63)


# -- compiled rule bookkeeping ---------------------------------------------------------------


def test_default_rule_shape():
    (rule,) = load_rules()
    assert len(rule.stages) == 2
    assert rule.maxspan_ms == 60_000
    assert [stage.key_fields for stage in rule.stages] == [("host.id", "process.entity_id")] * 2
    assert {
        "@timestamp",
        "event.category",
        "event.type",
        "process.name",
        "process.args",
        "network.direction",
        "network.transport",
        "source.port",
        "destination.port",
        "source.address",
        "host.id",
        "process.entity_id",
    } == set(rule.fields)


def test_default_rule_requirement_is_exactly_mshta_exe():
    (rule,) = load_rules()
    assert rule.requirement == frozenset({frozenset({b"mshta.exe"})})


@pytest.mark.parametrize(
    ("query", "requirement"),
    [
        (
            'sequence [any where process.name : "abc.exe"] [any where process.name : "xyz.exe"]',
            {frozenset({b"abc.exe", b"xyz.exe"})},
        ),
        (
            'sequence [any where process.name == "ABC.exe"] [any where process.name : "ABC.EXE"]',
            {frozenset({b"abc.exe"})},
        ),
        ('sequence [any where process.name : "abc.exe"] [any where true]', set()),
        (
            'sequence [any where process.name : "*longest*x"] [any where process.name : "longest"]',
            {frozenset({b"longest"})},
        ),
        # derived fields (computed by the normalizer) never become raw-byte literals
        ('sequence [any where event.type == "start"] [any where event.type == "start"]', set()),
        # short, numeric-looking and escapable literals are not usable
        ('sequence [any where process.name == "ab"] [any where process.name == "ab"]', set()),
        ('sequence [any where process.name == "12345"] [any where process.name == "12345"]', set()),
        ('sequence [any where process.name == "a/b/c"] [any where process.name == "a/b/c"]', set()),
        ('sequence [any where process.name : "\u00e9t\u00e9s"] [any where process.name : "\u00e9t\u00e9s"]', set()),
        ('sequence [any where not process.name : "abc.exe"] [any where not process.name : "abc.exe"]', set()),
        # values nearly every event carries are no literal: they would keep every record
        (
            'sequence [any where host.os.type == "windows" and process.name : "abc.exe"] '
            '[any where network.transport == "tcp" and process.name : "abc.exe"]',
            {frozenset({b"abc.exe"})},
        ),
        ('sequence [any where host.os.type == "Windows"] [any where process.code_signature.trusted == true]', set()),
    ],
)
def test_requirements(query, requirement):
    assert compile_query(query).requirement == frozenset(requirement)
