"""Reading ECS fields the way an Elasticsearch index mapping would (app.core.fields)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.fields import (
    KEYWORD_IGNORE_ABOVE,
    FieldType,
    compile_getter,
    field_type,
    ip_value,
    keyword_value,
    long_value,
)

# -- field access ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"process": {"name": "mshta.exe"}},
        {"process.name": "mshta.exe"},
        {"process": {"name": ["mshta.exe"]}},
        {"process": [{"name": "mshta.exe"}]},
    ],
    ids=["nested", "dotted", "array-value", "array-of-objects"],
)
def test_nested_dotted_and_array_forms_name_the_same_field(doc):
    assert compile_getter("process.name")(doc) == ["mshta.exe"]


@pytest.mark.parametrize(
    "doc",
    [
        {"a": {"b": {"c": 1}}},
        {"a.b": {"c": 1}},
        {"a": {"b.c": 1}},
        {"a.b.c": 1},
    ],
    ids=["a/b/c", "a.b/c", "a/b.c", "a.b.c"],
)
def test_every_split_of_a_dotted_name_is_tried(doc):
    assert compile_getter("a.b.c")(doc) == [1]


def test_nested_and_dotted_spellings_in_one_document_are_merged():
    doc = {"a": {"b": {"c": 1}}, "a.b": {"c": 2}, "a.b.c": 3}
    assert sorted(compile_getter("a.b.c")(doc)) == [1, 2, 3]


def test_arrays_of_objects_flatten_into_one_multi_valued_field():
    doc = {"process": [{"args": ["a", "b"]}, {"args": "c"}, {"args": [["d"]]}]}
    assert compile_getter("process.args")(doc) == ["a", "b", "c", "d"]


def test_array_leaf_values_are_all_returned_in_order():
    doc = {"process": {"args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"]}}
    assert compile_getter("process.args")(doc) == ["C:\\Windows\\System32\\mshta.exe", "-Embedding"]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"process": None},
        {"process": {"name": None}},
        {"process.name": None},
        {"process": {"name": [None, None]}},
        {"process": "mshta.exe"},  # a scalar where an object is needed: no sub-field
        {"process": {"other": "mshta.exe"}},
    ],
)
def test_null_and_missing_are_the_same_no_value(doc):
    assert compile_getter("process.name")(doc) == []


def test_nulls_inside_an_array_are_dropped():
    assert compile_getter("process.args")({"process": {"args": [None, "-Embedding", None]}}) == ["-Embedding"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"process": {"name": {"text": "mshta.exe"}}}, []),
        ({"process": {"name": [{"text": "mshta.exe"}, "real"]}}, ["real"]),
    ],
)
def test_objects_are_not_values(doc, expected):
    assert compile_getter("process.name")(doc) == expected


def test_prefix_of_a_name_is_not_the_name():
    # "process" is an object; asking for "process" itself yields no leaf values
    assert compile_getter("process")({"process": {"name": "x"}}) == []
    # and a longer field is not a shorter one's value
    assert compile_getter("process.name")({"process": {"name_extra": "x"}}) == []


def test_getter_is_reusable_and_does_not_leak_between_documents():
    get = compile_getter("host.id")
    assert get({"host": {"id": "a"}}) == ["a"]
    assert get({"host": {"id": "b"}}) == ["b"]
    assert get({}) == []


@given(
    st.lists(st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none()), max_size=5),
    st.sampled_from(["nested", "dotted", "objects"]),
)
def test_leaf_values_survive_every_layout(values, layout):
    if layout == "nested":
        doc = {"a": {"b": values}}
    elif layout == "dotted":
        doc = {"a.b": values}
    else:
        doc = {"a": [{"b": v} for v in values]}
    assert compile_getter("a.b")(doc) == [v for v in values if v is not None]


# -- keyword coercion -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mshta.exe", "mshta.exe"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (50000, "50000"),
        (-3, "-3"),
        (1.5, "1.5"),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
        ({"a": 1}, None),
    ],
)
def test_keyword_value(raw, expected):
    assert keyword_value(raw) == expected


def test_keyword_ignore_above_is_1024():
    """A keyword longer than ``ignore_above`` is not indexed: no condition and no join key can see it."""
    assert KEYWORD_IGNORE_ABOVE == 1024
    assert keyword_value("x" * 1024) == "x" * 1024
    assert keyword_value("x" * 1025) is None


def test_keyword_ignore_above_counts_utf16_code_units_like_java():
    """Elasticsearch compares Java ``String.length()`` (UTF-16 code units) with ignore_above.

    513 astral characters (e.g. emoji) are 1026 UTF-16 units: Elasticsearch does not index the
    value, so no query can match it.
    """
    value = "\U0001f600" * 513
    assert keyword_value(value) is None
    assert keyword_value("\U0001f600" * 512) == "\U0001f600" * 512  # exactly 1024 units
    assert keyword_value("x" * 1023 + "\U0001f600") is None  # 1025 units in 1024 characters
    # a BMP non-ASCII string of 1024 characters is still indexed
    assert keyword_value("é" * 1024) == "é" * 1024


# -- long coercion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (50000, 50000),
        ("50000", 50000),
        ("-50000", -50000),
        ("0", 0),
        ("50000.9", 50000),  # decimals are truncated (coerce)
        ("-50000.9", -50000),
        (50000.9, 50000),
        (-1.9, -1),
        ("1e3", 1000),
        ("+49152", 49152),  # Long.parseLong takes a plus sign
        ("4.9152e4", 49152),  # BigDecimal, then truncated toward zero
        ("49152.7", 49152),
        ("-49152.7", -49152),
        (".5", 0),
        ("\uff14\uff19\uff11\uff15\uff12", 49152),  # Java's Character.digit takes any Unicode decimal digit
        ("9223372036854775807.9", 2**63 - 1),  # truncated into the range
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_long_value_coerces_like_elasticsearch(raw, expected):
    """Elasticsearch's ``Numbers.toLong``: ``Long.parseLong``, else ``BigDecimal`` truncated toward zero."""
    assert long_value(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        2**63,
        -(2**63) - 1,
        str(2**63),
        "99999999999999999999",
        1e20,
        True,
        False,
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "abc",
        "",
        "0x10",
        " 49152",  # no surrounding whitespace: Elasticsearch finds the value malformed
        "49152 ",
        "1_000",  # Python's int() takes underscores, Java does not
        "4.9152e",
        "1e999999",  # beyond the long range, refused before any big-number arithmetic
        "9.3e18",
        "+",
        "0x10",
        None,
        [1],
        {"a": 1},
    ],
)
def test_long_value_ignores_malformed_and_out_of_range(raw):
    assert long_value(raw) is None


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_long_value_of_int_and_its_string_agree(n):
    assert long_value(n) == n
    assert long_value(str(n)) == n


# -- ip -------------------------------------------------------------------------------------


def test_ipv4_mapped_ipv6_equals_ipv4():
    assert ip_value("::ffff:127.0.0.1") == ip_value("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert ip_value("::ffff:7f00:1") == ip_value("127.0.0.1")


@pytest.mark.parametrize("spelling", ["0:0:0:0:0:0:0:1", "0000:0000:0000:0000:0000:0000:0000:0001", "::0:1"])
def test_ipv6_spellings_are_one_address(spelling):
    assert ip_value(spelling) == ip_value("::1")


@pytest.mark.parametrize(
    ("scoped", "plain"), [("fe80::1%12", "fe80::1"), ("::1%eth0", "::1"), ("10.0.0.1%3", "10.0.0.1")]
)
def test_a_scope_id_is_ignored_as_elasticsearch_ignores_it(scoped, plain):
    """``InetAddresses.ipStringToBytes`` drops what follows ``%``; an empty scope is no address."""
    assert ip_value(scoped) == ip_value(plain) is not None
    assert ip_value(plain + "%") is None


def test_distinct_addresses_differ():
    assert ip_value("127.0.0.1") != ip_value("::1")
    assert ip_value("10.0.0.1") != ip_value("10.0.0.2")


@pytest.mark.parametrize(
    "raw", ["garbage", "", "256.0.0.1", "1.2.3", "::g", "10.0.0.1/8", 167772161, None, True, ["10.0.0.1"], "1" * 100]
)
def test_invalid_ip_is_none(raw):
    assert ip_value(raw) is None


# -- field types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ftype"),
    [
        ("@timestamp", FieldType.DATE),
        ("event.created", FieldType.DATE),
        ("event.ingested", FieldType.DATE),
        ("event.sequence", FieldType.LONG),
        ("event.duration", FieldType.LONG),
        ("process.args_count", FieldType.LONG),
        ("network.bytes", FieldType.LONG),
        ("source.port", FieldType.LONG),
        ("destination.port", FieldType.LONG),
        ("process.pid", FieldType.LONG),
        ("process.parent.pid", FieldType.LONG),
        ("process.ppid", FieldType.LONG),
        ("source.bytes", FieldType.LONG),
        ("destination.packets", FieldType.LONG),
        ("source.ip", FieldType.IP),
        ("destination.ip", FieldType.IP),
        ("host.ip", FieldType.IP),
        ("related.ip", FieldType.IP),
        ("source.address", FieldType.KEYWORD),
        ("process.name", FieldType.KEYWORD),
        ("process.args", FieldType.KEYWORD),
        ("event.category", FieldType.KEYWORD),
        ("network.direction", FieldType.KEYWORD),
        ("host.id", FieldType.KEYWORD),
        ("process.entity_id", FieldType.KEYWORD),
        ("custom.portal", FieldType.KEYWORD),  # suffix match is on a whole name segment
        ("custom.ipaddr", FieldType.KEYWORD),
    ],
)
def test_field_type_table(name, ftype):
    assert field_type(name) is ftype
