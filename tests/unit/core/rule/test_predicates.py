"""Stage predicates compiled from EQL, checked against documents (Elasticsearch semantics).

The expected values follow docs/eql-semantics.md and, where it is silent, what Elasticsearch's
query translation does (cited in the test docstrings).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.core import RuleError, load_rules
from tests.support.detection import compile_query


def predicate(condition: str, category: str = "any"):
    """The predicate of ``[<category> where <condition>]`` as the first stage of a sequence."""
    return compile_query(f"sequence [{category} where {condition}] [any where true]").stages[0].predicate


def check(condition: str, doc: dict, expected: bool, category: str = "any") -> None:
    assert predicate(condition, category)(doc) is expected, (condition, doc)


# -- multi-valued fields --------------------------------------------------------------------

MSHTA_ARGS = {"process": {"args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"]}}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (MSHTA_ARGS, True),
        ({"process": {"args": "-Embedding"}}, True),
        ({"process": {"args": ["-embedding"]}}, True),
        ({"process": {"args": ["C:\\Windows\\System32\\mshta.exe"]}}, False),
        ({"process": {"args": ["-Embedding:1"]}}, False),  # whole value, not substring
        ({"process": {"args": ["x-Embedding"]}}, False),
        ({"process": {"args": "C:\\mshta.exe -Embedding"}}, False),
        ({"process": {"args": []}}, False),
        ({}, False),
    ],
)
def test_colon_matches_any_value_of_an_array_as_a_whole_value(doc, expected):
    check('process.args : "-Embedding"', doc, expected)


# -- ':' case-insensitive, wildcards ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("mshta.exe", "mshta.exe", True),
        ("mshta.exe", "MSHTA.EXE", True),
        ("MSHTA.exe", "mShTa.ExE", True),
        ("mshta.exe", "mshta.exe ", False),
        ("mshta.exe", "xmshta.exe", False),
        ("mshta.exe", "mshtaXexe", False),  # '.' is literal, not a regex dot
        ("a+b.(c)", "A+B.(C)", True),  # regex metacharacters are literal
        ("a+b.(c)", "aab.(c)", False),
        ("*.exe", "mshta.EXE", True),
        ("*.exe", ".exe", True),  # '*' matches the empty string
        ("*.exe", "mshta.exe.bak", False),
        ("mshta*", "MSHTA", True),
        ("*sht*", "mshta.exe", True),
        ("*", "", True),
        ("*-Embedding*", "x\n-embedding y", True),  # '*' crosses newlines
        ("ms?ta.exe", "mshta.exe", True),
        ("ms?ta.exe", "MSXTA.EXE", True),
        ("ms?ta.exe", "msta.exe", False),  # '?' is exactly one character...
        ("ms?ta.exe", "mshhta.exe", False),  # ...not two
        ("a?b", "a\U0001f600b", True),  # one code point, even outside the BMP
        ("??", "abc", False),
        ("C:\\\\Windows\\\\*", "c:\\windows\\System32\\mshta.exe", True),  # backslash is not an escape
        ("C:\\\\Windows\\\\*", "C:Windows*", False),
    ],
)
def test_colon_is_case_insensitive_whole_value_with_wildcards(pattern, value, expected):
    check(f'process.name : "{pattern}"', {"process": {"name": value}}, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("incoming", True), ("INGRESS", True), ("Ingress", True), ("egress", False), ("outgoing", False), ("in", False)],
)
def test_colon_with_a_list_is_any_of_them(value, expected):
    check('network.direction : ("incoming", "ingress")', {"network": {"direction": value}}, expected)


def test_colon_list_may_mix_wildcards_and_plain_values():
    pred = predicate('process.name : ("*.hta", "mshta.exe")')
    assert pred({"process": {"name": "EVIL.HTA"}})
    assert pred({"process": {"name": "MSHTA.exe"}})
    assert not pred({"process": {"name": "cmd.exe"}})


# -- case-sensitive operators ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ('process.name == "mshta.exe"', "mshta.exe", True),
        ('process.name == "mshta.exe"', "MSHTA.exe", False),
        ('process.name == "mshta.*"', "mshta.exe", False),  # no wildcards
        ('process.name == "mshta.*"', "mshta.*", True),
        ('process.name != "mshta.exe"', "MSHTA.exe", True),
        ('process.name != "mshta.exe"', "mshta.exe", False),
        ('process.name in ("mshta.exe", "cmd.exe")', "cmd.exe", True),
        ('process.name in ("mshta.exe", "cmd.exe")', "CMD.exe", False),
        ('process.name in~ ("mshta.exe", "cmd.exe")', "CMD.EXE", True),
        ('process.name in~ ("mshta.exe", "cmd.exe")', "cmd.ex", False),
        ('process.name in~ ("mshta.*")', "mshta.exe", False),  # in~ has no wildcards
        ('process.name like "mshta.*"', "mshta.exe", True),
        ('process.name like "mshta.*"', "MSHTA.exe", False),
        ('process.name like "ms?ta.exe"', "mshta.exe", True),
        ('process.name like "ms?ta.exe"', "msHta.exe", True),  # '?' is any character
        ('process.name like "ms?ta.exe"', "mshta.EXE", False),
        ('process.name like~ "mshta.*"', "MSHTA.EXE", True),
        ('process.name like~ "ms?ta.exe"', "MSXTA.EXE", True),
        ('process.name like~ "ms?ta.exe"', "msta.exe", False),
        ('process.name like~ ("a*", "b*")', "B.exe", True),
        ('process.name like ("a*", "b*")', "B.exe", False),
    ],
)
def test_case_rules_of_each_operator(condition, value, expected):
    check(condition, {"process": {"name": value}}, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("start", True), ("process_started", True), (["info", "start"], True), ("Start", False), (["end"], False)],
)
def test_in_matches_any_array_element_case_sensitively(value, expected):
    check('event.type in ("start", "process_started")', {"event": {"type": value}}, expected)


# -- negation is must_not --------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        'source.address != "127.0.0.1"',
        'not source.address in ("127.0.0.1", "::1")',
        'not source.address : "127.*"',
        'not source.address in~ ("LOCALHOST")',
        'not source.address like "127*"',
        'source.ip != "::1"',
        'not source.ip in ("127.0.0.1", "::1")',
        "source.port != 0",
    ],
)
def test_negations_pass_when_the_field_is_missing(condition):
    check(condition, {"event": {"category": "network"}}, True)
    check(condition, {"source": {"address": None, "ip": None, "port": None}}, True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.5", True),
        ("127.0.0.1", False),
        ("::1", False),
        (["10.0.0.5", "127.0.0.1"], False),  # any value equal -> the negation fails
        (["10.0.0.5", "10.0.0.6"], True),
        ("0:0:0:0:0:0:0:1", True),  # source.address is a keyword: a different string
    ],
)
def test_not_in_on_keyword_is_must_not_of_any_value(value, expected):
    check('not source.address in ("127.0.0.1", "::1")', {"source": {"address": value}}, expected)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, False),
        ({"source": {"port": 80}}, True),
        ({"source": {"port": 60000}}, False),
        ({"source": {"port": [80, 60000]}}, True),
    ],
)
def test_not_of_a_range_comparison_is_the_inverted_range(doc, expected):
    """Elasticsearch's optimizer (``BooleanSimplification.simplifyNot``) rewrites ``not a > x`` into
    ``a <= x`` (comparisons are ``Negatable``): a range query, which an event without the field fails
    and any value at or below the bound satisfies.
    """
    check("not source.port > 49151", doc, expected)


def test_not_equal_fails_when_any_value_of_a_multi_valued_field_equals():
    check('process.name != "x"', {"process": {"name": ["x", "y"]}}, False)
    check('process.name != "x"', {"process": {"name": ["y", "z"]}}, True)


def test_not_of_a_conjunction():
    pred = predicate('not (process.name : "a" and process.pid == 1)')
    assert pred({"process": {"name": "A", "pid": 2}})
    assert not pred({"process": {"name": "A", "pid": 1}})
    assert pred({})


# -- keywords beyond ignore_above -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-Embedding" + "x" * 1014, True),  # 1,024 UTF-16 units: indexed
        ("-Embedding" + "x" * 1015, False),  # 1,025: not indexed, so nothing matches it
        ("-Embedding" + "\U0001f600" * 507, True),  # 10 + 2 x 507 = 1,024 units
        ("-Embedding" + "\U0001f600" * 508, False),  # 1,026 units in 518 characters
    ],
)
def test_a_keyword_longer_than_ignore_above_has_no_value(value, expected):
    """Elasticsearch does not index a keyword longer than ``ignore_above`` (1,024 UTF-16 code units)."""
    check('process.args : "-Embedding*"', {"process": {"args": value}}, expected)
    check("process.args == null", {"process": {"args": value}}, not expected)


# -- numeric comparisons on long fields ------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ("source.port > 49151", 49152, True),
        ("source.port > 49151", 49151, False),
        ("source.port > 49151", "50000", True),  # numeric string in a long field
        ("source.port > 49151", "49151", False),
        ("source.port > 49151", "50000.7", True),
        ("source.port > 49151", 49151.9, False),  # truncated to 49151
        ("source.port > 49151", [80, 60000], True),  # any value
        ("source.port > 49151", [80, 443], False),
        ("source.port > 49151", "high", False),  # malformed: no value
        ("source.port > 49151", "+49152", True),  # Long.parseLong takes a plus sign
        ("source.port > 49151", "4.9152e4", True),  # BigDecimal, truncated toward zero
        ("source.port > 49151", "49152.7", True),
        ("source.port > 49151", " 49152", False),  # whitespace: malformed, no value
        ("source.port > 49151", "9223372036854775808", False),  # beyond the long range: no value
        ("source.port > 49151", ["9223372036854775808", 49152], True),  # the other value still counts
        ("source.port > 49151", True, False),
        ("source.port >= 49151", 49151, True),
        ("source.port >= 49151", "49150", False),
        ("source.port < 1024", "443", True),
        ("source.port < 1024", 1024, False),
        ("source.port <= 1024", 1024, True),
        ("source.port <= 1024", "-5", True),
        ("source.port == 50000", "50000", True),
        ("source.port == 50000", "50000.0", True),
        ("source.port == 50000", 50001, False),
        ('source.port == "50000"', 50000, True),
        ("source.port in (80, 443)", "443", True),
        ("source.port in (80, 443)", 8080, False),
        ("49151 < source.port", 50000, True),  # literal on the left
        ("49151 < source.port", 49151, False),
    ],
)
def test_long_comparisons(condition, value, expected):
    check(condition, {"source": {"port": value}}, expected)


@pytest.mark.parametrize(
    "condition", ["source.port > 49151", "source.port < 49151", "source.port == 1", "source.port >= 0"]
)
def test_missing_numeric_field_fails_the_comparison(condition):
    check(condition, {}, False)
    check(condition, {"source": {"port": None}}, False)


@pytest.mark.parametrize(
    ("condition", "value", "es_expected"),
    [
        ("source.port == 49151.5", 49151, False),  # a term with a decimal part matches nothing
        ("source.port >= 49151.5", 49151, False),  # inclusive lower bound rounds up to 49152
        ("source.port >= 49151.5", 49152, True),
        ("source.port < 49151.5", 49151, True),  # exclusive upper bound 49151.5 keeps 49151
        ("source.port > 49151.5", 49152, True),
    ],
)
def test_decimal_literal_against_long_field_is_refused_or_follows_elasticsearch(condition, value, es_expected):
    """Elasticsearch's ``NumberFieldMapper`` (LONG.termQuery / longRangeQuery) treats a decimal bound
    mathematically: ``== 49151.5`` matches nothing, ``>= 49151.5`` starts at 49152, ``< 49151.5``
    includes 49151. Truncating the literal to 49151 gives other answers. Refusing such a literal at
    load time is also acceptable.
    """
    try:
        pred = predicate(condition)
    except RuleError:
        return
    assert pred({"source": {"port": value}}) is es_expected


# -- keyword ordering ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ('process.name > "m"', "n", True),
        ('process.name > "m"', "m", False),
        ('process.name >= "m"', "m", True),
        ('process.name < "m"', "M", True),  # 'M' (0x4d) < 'm' (0x6d): byte order, case-sensitive
        ('process.name > "m"', "mshta.exe", True),
        ('process.name < "10"', "9", False),  # lexicographic, not numeric
        ('process.name < "b"', ["z", "a"], True),
        ('process.name > "\uffff"', "\U00010000", True),  # UTF-8 byte order (not UTF-16)
    ],
)
def test_keyword_comparisons_are_lexicographic(condition, value, expected):
    check(condition, {"process": {"name": value}}, expected)


def test_keyword_comparison_on_missing_field_fails():
    check('process.name > "a"', {}, False)


# -- event category --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category_value", "expected"),
    [
        ("process", True),
        (["process"], True),
        (["network", "process"], True),
        ("network", False),
        (["network"], False),
        ("Process", False),
        (None, False),
    ],
)
def test_process_where_requires_event_category_process(category_value, expected):
    doc = {"event": {"category": category_value}, "process": {"name": "mshta.exe"}}
    check('process.name : "mshta.exe"', doc, expected, category="process")


def test_category_may_be_a_dotted_key():
    check("true", {"event.category": "network"}, True, category="network")
    check("true", {"event.category": ["process"]}, False, category="network")


def test_missing_category_fails_a_typed_stage():
    check("true", {"process": {"name": "mshta.exe"}}, False, category="process")


def test_any_where_needs_no_category():
    check('process.name : "mshta.exe"', {"process": {"name": "mshta.exe"}}, True, category="any")
    check("true", {}, True, category="any")
    check("false", {"event": {"category": "process"}}, False, category="any")


# -- ip fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ('source.ip != "::1"', "0:0:0:0:0:0:0:1", False),
        ('source.ip != "::1"', "::1", False),
        ('source.ip != "::1"', "10.0.0.5", True),
        ('source.ip == "::1"', "0000:0000:0000:0000:0000:0000:0000:0001", True),
        ('source.ip == "127.0.0.1"', "::ffff:127.0.0.1", True),
        ('source.ip == "::ffff:127.0.0.1"', "127.0.0.1", True),
        ('source.ip in ("127.0.0.1", "::1")', "0:0:0:0:0:0:0:1", True),
        ('source.ip in ("127.0.0.1", "::1")', "127.0.0.2", False),
        ('source.ip : "::1"', "0:0:0:0:0:0:0:1", True),  # ':' without wildcards is equality
        ('source.ip == "10.0.0.1"', "garbage", False),
        ('source.ip != "10.0.0.1"', "garbage", True),
        ('source.ip != "10.0.0.1"', ["10.0.0.2", "10.0.0.1"], False),
    ],
)
def test_ip_equality_compares_addresses(condition, value, expected):
    check(condition, {"source": {"ip": value}}, expected)


def test_later_upstream_loopback_condition_on_source_ip():
    pred = predicate('source.ip != "127.0.0.1" and source.ip != "::1"', category="network")
    base = {"event": {"category": ["network"]}}
    assert pred({**base, "source": {"ip": "10.1.2.3"}})
    assert not pred({**base, "source": {"ip": "0:0:0:0:0:0:0:1"}})
    assert not pred({**base, "source": {"ip": "::ffff:127.0.0.1"}})
    assert pred(base)  # Sysmon sets no source.address and may set no source.ip: must_not passes


# -- null ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "is_null"),
    [
        ({}, True),
        ({"process": {"name": None}}, True),
        ({"process": {"name": []}}, True),
        ({"process": {"name": [None]}}, True),
        ({"process": {"name": "x"}}, False),
        ({"process.name": "x"}, False),
        ({"process": {"name": ["x", None]}}, False),
        ({"process": {"name": ""}}, False),
    ],
)
def test_null_comparisons(doc, is_null):
    check("process.name == null", doc, is_null)
    check("process.name != null", doc, not is_null)


# -- dotted keys and nesting -----------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"event": {"category": "process"}, "process": {"name": "MSHTA.EXE", "args": ["-Embedding"]}},
        {"event.category": "process", "process.name": "MSHTA.EXE", "process.args": ["-Embedding"]},
        {"event": {"category": ["process"]}, "process.name": "mshta.exe", "process": {"args": "-embedding"}},
        {"event": [{"category": "process"}], "process": [{"name": "mshta.exe"}, {"args": ["-Embedding"]}]},
    ],
)
def test_dotted_keys_nested_objects_and_arrays_of_objects_are_one_field(doc):
    check('process.name : "mshta.exe" and process.args : "-Embedding"', doc, True, category="process")


def test_and_or_and_parentheses():
    pred = predicate('(process.name : "a" or process.name : "b") and process.pid == 1')
    assert pred({"process": {"name": "B", "pid": 1}})
    assert not pred({"process": {"name": "B", "pid": 2}})
    assert not pred({"process": {"name": "c", "pid": 1}})


# -- non-ASCII case rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        # an ASCII pattern character matches itself or its other ASCII case only
        ('process.name : "k"', "\u212a", False),  # KELVIN SIGN lowercases to 'k', but is not 'k'/'K'
        ('process.name : "k"', "K", True),
        ('process.name : "s"', "\u017f", False),  # LATIN SMALL LETTER LONG S uppercases to 'S'
        ('process.name in~ ("k")', "\u212a", False),
        ('process.name like~ "k*"', "\u212a", False),
        ('process.name : "*k*"', "\u212a", False),
        ('process.name : "mshta.exe"', "MSHTA.EX\u0130", False),
        ('process.name : "ss"', "\u00df", False),  # no multi-character folding
        ('process.name : "\u00df"', "SS", False),
        # a non-ASCII pattern character matches itself
        ('process.name : "\u00e9"', "\u00e9", True),
        ('process.name : "caf\u00e9"', "CAF\u00e9", True),
    ],
)
def test_non_ascii_case_rule(condition, value, expected):
    check(condition, {"process": {"name": value}}, expected)


@pytest.mark.parametrize(
    ("condition", "value"),
    [
        ('process.name : "\u212a"', "k"),  # KELVIN SIGN pattern: only itself
        ('process.name : "\u00e9"', "\u00c9"),
        ('process.name : "caf\u00e9"', "CAF\u00c9"),
        ('process.name in~ ("\u00e9")', "\u00c9"),
        ('process.name like~ "\u00c9*"', "\u00e9t\u00e9"),
        ('process.name : "\u017f"', "S"),
    ],
)
def test_case_insensitivity_is_ascii_only_like_elasticsearch(condition, value):
    """Elasticsearch builds case-insensitive term and wildcard queries with
    ``AutomatonQueries.toCaseInsensitiveChar``, which returns the code point alone when it is
    above 128 ("ASCII case insensitive"): a non-ASCII pattern character matches only itself.
    """
    check(condition, {"process": {"name": value}}, False)


# -- the default v4 rule on realistic events -------------------------------------------------

HOST_ID = "8a4f0d5e-6c5b-4d0e-9c1e-2f3a4b5c6d7e"
ENTITY_ID = "NjZjN2E0ZDgtYjA4Ni00ZjNjLWE1YjgtZTZlZjQ1ZjAwMDAwLTQyNDItMTMzNTc"
MSHTA = "C:\\Windows\\SysWOW64\\mshta.exe"

DEFEND_PROCESS = {
    "@timestamp": "2024-05-01T10:00:00.1234567Z",
    "agent": {"type": "endpoint", "version": "8.13.2", "id": "f1e2d3c4"},
    "data_stream": {"type": "logs", "dataset": "endpoint.events.process", "namespace": "default"},
    "ecs": {"version": "8.10.0"},
    "event": {
        "action": "start",
        "category": ["process"],
        "type": ["start"],
        "kind": "event",
        "dataset": "endpoint.events.process",
        "module": "endpoint",
        "id": "NLyq1aVWHVXLqkq0++++++Ao",
        "created": "2024-05-01T10:00:00.1234567Z",
    },
    "host": {"id": HOST_ID, "name": "WS-0042", "hostname": "ws-0042", "os": {"type": "windows", "family": "windows"}},
    "process": {
        "entity_id": ENTITY_ID,
        "pid": 4242,
        "name": "mshta.exe",
        "executable": MSHTA,
        "args": [MSHTA, "-Embedding"],
        "args_count": 2,
        "command_line": MSHTA + " -Embedding",
        "working_directory": "C:\\Windows\\system32\\",
        "parent": {
            "entity_id": "cGFyZW50",
            "pid": 812,
            "name": "svchost.exe",
            "executable": "C:\\Windows\\System32\\svchost.exe",
            "args": ["C:\\Windows\\system32\\svchost.exe", "-k", "DcomLaunch", "-p"],
        },
        "code_signature": {"trusted": True, "subject_name": "Microsoft Windows", "exists": True},
    },
    "user": {"name": "alice", "domain": "CORP", "id": "S-1-5-21-1-2-3-1104"},
}

DEFEND_NETWORK = {
    "@timestamp": "2024-05-01T10:00:02.7654321Z",
    "agent": {"type": "endpoint", "version": "8.13.2", "id": "f1e2d3c4"},
    "event": {
        "action": "connection_accepted",
        "category": ["network"],
        "type": ["start"],
        "kind": "event",
        "dataset": "endpoint.events.network",
        "module": "endpoint",
    },
    "host": {"id": HOST_ID, "name": "WS-0042", "os": {"type": "windows"}},
    "network": {"direction": "ingress", "transport": "tcp", "type": "ipv4"},
    "source": {"address": "10.20.30.40", "ip": "10.20.30.40", "port": 52144},
    "destination": {"address": "10.20.30.42", "ip": "10.20.30.42", "port": 49702},
    "process": {"entity_id": ENTITY_ID, "pid": 4242, "name": "mshta.exe", "executable": MSHTA},
    "user": {"name": "alice", "domain": "CORP"},
}

WINLOGBEAT7_PROCESS = {
    "@timestamp": "2024-05-01T10:00:00.123Z",
    "agent": {"type": "winlogbeat", "version": "7.17.18"},
    "ecs": {"version": "1.12.0"},
    "event": {
        "category": ["process"],
        "type": ["start", "process_start"],
        "code": "1",
        "kind": "event",
        "module": "sysmon",
        "provider": "Microsoft-Windows-Sysmon",
        "created": "2024-05-01T10:00:01.003Z",
    },
    "host": {"id": HOST_ID, "name": "WS-0042.corp.local", "os": {"family": "windows", "platform": "windows"}},
    "process": {
        "entity_id": "{a8a3c7e4-6f1d-6632-8c01-000000001d00}",
        "pid": 4242,
        "name": "mshta.exe",
        "executable": "C:\\Windows\\System32\\mshta.exe",
        "args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"],
        "command_line": "C:\\Windows\\System32\\mshta.exe -Embedding",
        "parent": {"name": "svchost.exe", "pid": 812, "executable": "C:\\Windows\\System32\\svchost.exe"},
        "hash": {"sha256": "949f0d1d6f5a2e8e4a3fdbc4c9d0a5a0e1c7e6b1f7d2e6b7f1d2a3b4c5d6e7f8"},
    },
    "winlog": {
        "channel": "Microsoft-Windows-Sysmon/Operational",
        "event_id": "1",
        "computer_name": "WS-0042.corp.local",
        "event_data": {"Image": "C:\\Windows\\System32\\mshta.exe", "IntegrityLevel": "Medium"},
    },
}

WINLOGBEAT7_NETWORK = {
    "@timestamp": "2024-05-01T10:00:03.456Z",
    "agent": {"type": "winlogbeat", "version": "7.17.18"},
    "event": {
        "category": ["network"],
        "type": ["connection", "start", "protocol"],
        "code": "3",
        "module": "sysmon",
        "kind": "event",
    },
    "host": {"id": HOST_ID, "name": "WS-0042.corp.local"},
    "network": {"direction": "ingress", "transport": "tcp", "type": "ipv4", "protocol": "msrpc"},
    "source": {"ip": "10.20.30.40", "port": "52144", "domain": "attacker.corp.local"},
    "destination": {"ip": "10.20.30.42", "port": "49702"},
    "process": {
        "entity_id": "{a8a3c7e4-6f1d-6632-8c01-000000001d00}",
        "pid": 4242,
        "name": "mshta.exe",
        "executable": "C:\\Windows\\System32\\mshta.exe",
    },
    "winlog": {"channel": "Microsoft-Windows-Sysmon/Operational", "event_id": "3"},
}


def flatten(doc: dict, prefix: str = "") -> dict:
    """The same document with every nested object turned into dotted keys."""
    out: dict = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def changed(doc: dict, path: str, value: Any) -> dict:
    """A deep copy of ``doc`` with the nested field ``path`` set (or removed when value is ...)."""
    result = copy.deepcopy(doc)
    node = result
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return result


@pytest.fixture(scope="module")
def v4_stages():
    (rule,) = load_rules()
    assert len(rule.stages) == 2
    return rule.stages[0].predicate, rule.stages[1].predicate


PROCESS_EVENTS = {
    "defend": DEFEND_PROCESS,
    "winlogbeat7": WINLOGBEAT7_PROCESS,
    "defend-dotted": flatten(DEFEND_PROCESS),
    "process_started-string-category": changed(
        changed(WINLOGBEAT7_PROCESS, "event.type", "process_started"), "event.category", "process"
    ),
    "upper-case-name-and-arg": changed(
        changed(DEFEND_PROCESS, "process.name", "MSHTA.EXE"), "process.args", [MSHTA.upper(), "-EMBEDDING"]
    ),
}
NETWORK_EVENTS = {
    "defend": DEFEND_NETWORK,
    "winlogbeat7-string-ports": WINLOGBEAT7_NETWORK,
    "defend-dotted": flatten(DEFEND_NETWORK),
    "defend7-incoming": changed(DEFEND_NETWORK, "network.direction", "incoming"),
    "upper-case-direction": changed(DEFEND_NETWORK, "network.direction", "Ingress"),
    "ports-just-above": changed(changed(DEFEND_NETWORK, "source.port", 49152), "destination.port", "49152"),
    "ipv6-source": changed(DEFEND_NETWORK, "source.address", "fe80::1c2d:3e4f:5a6b:7c8d"),
    "loopback-spelled-long-in-keyword": changed(DEFEND_NETWORK, "source.address", "0:0:0:0:0:0:0:1"),
}


@pytest.mark.parametrize("name", list(PROCESS_EVENTS))
def test_v4_first_stage_accepts_realistic_process_events(v4_stages, name):
    first, second = v4_stages
    assert first(PROCESS_EVENTS[name])
    assert not second(PROCESS_EVENTS[name])


@pytest.mark.parametrize("name", list(NETWORK_EVENTS))
def test_v4_second_stage_accepts_realistic_network_events(v4_stages, name):
    first, second = v4_stages
    assert second(NETWORK_EVENTS[name])
    assert not first(NETWORK_EVENTS[name])


PROCESS_NEAR_MISSES = {
    "no-embedding-arg": ("process.args", [MSHTA]),
    "embedding-with-suffix": ("process.args", [MSHTA, "-Embedding:1"]),
    "embedding-only-in-command-line": ("process.args", ...),
    "other-process": ("process.name", "rundll32.exe"),
    "mshta-substring": ("process.name", "mshta.exe.bak"),
    "end-event": ("event.type", ["end"]),
    "event-type-wrong-case": ("event.type", ["Start"]),
    "network-category": ("event.category", ["network"]),
    "no-category": ("event.category", ...),
}


@pytest.mark.parametrize("name", list(PROCESS_NEAR_MISSES))
@pytest.mark.parametrize("base", ["defend", "winlogbeat7"])
def test_v4_first_stage_rejects_near_misses(v4_stages, base, name):
    first, _ = v4_stages
    path, value = PROCESS_NEAR_MISSES[name]
    doc = changed(PROCESS_EVENTS[base], path, value)
    assert not first(doc)
    assert not first(flatten(doc))


NETWORK_NEAR_MISSES = {
    "outbound-egress": ("network.direction", "egress"),
    "outbound-outgoing": ("network.direction", "outgoing"),
    "no-direction": ("network.direction", ...),
    "udp": ("network.transport", "udp"),
    "tcp-wrong-case": ("network.transport", "TCP"),  # '==' is case-sensitive
    "low-source-port": ("source.port", 49151),
    "low-source-port-string": ("source.port", "135"),
    "no-source-port": ("source.port", ...),
    "low-destination-port": ("destination.port", 49151),
    "low-destination-port-string": ("destination.port", "135"),
    "loopback-v4": ("source.address", "127.0.0.1"),
    "loopback-v6": ("source.address", "::1"),
    "loopback-among-values": ("source.address", ["10.20.30.40", "127.0.0.1"]),
    "other-process": ("process.name", "svchost.exe"),
    "end-event": ("event.type", ["end"]),
    "process-category": ("event.category", ["process"]),
}


@pytest.mark.parametrize("name", list(NETWORK_NEAR_MISSES))
@pytest.mark.parametrize("base", ["defend", "winlogbeat7-string-ports"])
def test_v4_second_stage_rejects_near_misses(v4_stages, base, name):
    _, second = v4_stages
    path, value = NETWORK_NEAR_MISSES[name]
    doc = changed(NETWORK_EVENTS[base], path, value)
    assert not second(doc)
    assert not second(flatten(doc))


def test_v4_second_stage_passes_without_source_address(v4_stages):
    """Sysmon never sets source.address: ``not source.address in (...)`` passes (must_not)."""
    _, second = v4_stages
    assert "address" not in WINLOGBEAT7_NETWORK["source"]
    assert second(WINLOGBEAT7_NETWORK)
    assert second(changed(DEFEND_NETWORK, "source.address", None))


# -- string functions and cidrMatch ----------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ('startsWith(process.name, "ms")', "mshta.exe", True),
        ('startsWith(process.name, "MS")', "mshta.exe", False),  # case-sensitive without ~
        ('startsWith~(process.name, "MS")', "mshta.exe", True),
        ('startswith~(process.name, "MS")', "mshta.exe", True),  # function names in any case
        ('STARTSWITH(process.name, "ms")', "mshta.exe", True),
        ('startsWith(process.name, "")', "mshta.exe", True),
        ('startsWith(process.name, "m*")', "mshta.exe", False),  # * is a plain character here
        ('startsWith(process.name, "m*")', "m*shta.exe", True),
        ('endsWith(process.name, ".exe")', "mshta.exe", True),
        ('endsWith(process.name, ".EXE")', "mshta.exe", False),
        ('endsWith~(process.name, ".EXE")', "mshta.exe", True),
        ('stringContains(process.name, "hta")', "mshta.exe", True),
        ('stringContains(process.name, "HTA")', "mshta.exe", False),
        ('stringContains~(process.name, "HTA")', "mshta.exe", True),
        ('stringContains~(process.name, "Ä")', "ä", False),  # ~ folds ASCII letters only
        ('stringContains~(process.name, "É")', "É", True),
        # endsWith and stringContains are Lucene wildcard queries of *literal and *literal*, the
        # literal unescaped: its * and ? are wildcards and a backslash quotes the next character.
        ('stringContains(process.name, "s*a")', "mshta.exe", True),
        ('endsWith(process.name, ".ex?")', "mshta.exe", True),
        ('endsWith(process.name, ".ex?")', "mshta.exe1", False),
        ('stringContains(process.name, "\\\\Windows\\\\")', "C:\\Windows\\System32", False),
        ('stringContains(process.name, "\\\\Windows\\\\")', "xWindows*", True),
        ('endsWith(process.name, "a\\\\")', "a\\", True),  # a trailing backslash is itself
    ],
)
def test_string_functions_are_prefix_and_wildcard_queries(condition, value, expected):
    check(condition, {"process": {"name": value}}, expected)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"process": {"args": ["C:\\x\\mshta.exe", "-Embedding"]}}, True),  # any value of an array
        ({"process": {"args": ["-Embedding"]}}, False),
        ({"process": {"args": "x" * 1025 + "mshta.exe"}}, False),  # over ignore_above: not indexed
        ({}, False),
    ],
)
def test_string_functions_test_each_value_of_a_multi_valued_field(doc, expected):
    check('endsWith~(process.args, "MSHTA.EXE")', doc, expected)


def test_a_negated_string_function_matches_events_without_the_field():
    check('not startsWith(process.name, "ms")', {}, True)


@pytest.mark.parametrize(
    ("blocks", "address", "expected"),
    [
        ('"10.0.0.0/8"', "10.1.2.3", True),
        ('"10.0.0.0/8"', "11.1.2.3", False),
        ('"10.0.0.0/8", "192.168.0.0/16"', "192.168.4.4", True),
        ('"10.1.2.3/8"', "10.200.0.1", True),  # host bits masked, as Elasticsearch's prefix query does
        ('"10.1.2.3"', "10.1.2.3", True),  # a bare address is its one-address block
        ('"10.1.2.3"', "10.1.2.4", False),
        ('"127.0.0.0/8", "::1"', "::1", True),
        ('"127.0.0.0/8"', "::ffff:127.0.0.1", True),  # IPv4-mapped IPv6 is the IPv4 address
        ('"::/0"', "10.1.2.3", True),  # IPv4 lives in ::ffff:0:0/96 of the 16-byte space
        ('"::1/128"', "::1", True),
        ('"fe80::/10"', "FE80::1", True),
        ('"fe80::/10"', "10.1.2.3", False),
        ('"10.0.0.0/8"', "not an ip", False),
    ],
)
def test_cidr_match_is_a_prefix_query_on_the_16_byte_address(blocks, address, expected):
    check(f"cidrMatch(source.ip, {blocks})", {"source": {"ip": address}}, expected)


def test_cidr_match_tests_each_value_and_is_false_without_one():
    check('cidrMatch(related.ip, "10.0.0.0/8")', {"related": {"ip": ["8.8.8.8", "10.0.0.1"]}}, True)
    check('cidrMatch(related.ip, "10.0.0.0/8")', {}, False)
    check('not cidrMatch(related.ip, "10.0.0.0/8")', {}, True)
