"""The raw-bytes prefilter (app.core.rule.prefilter): it may only drop records no stage can match."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, find, given, settings
from hypothesis import strategies as st

from app.core import load_rules
from app.core.rule.prefilter import Prefilter
from tests.support.encoding import escaping_dumps

MSHTA = frozenset({frozenset({b"mshta.exe"})})


@pytest.fixture(scope="module")
def keep():
    return Prefilter([MSHTA])


# -- literal presence ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"process":{"name":"mshta.exe"}}',
        b'{"process":{"name":"MSHTA.EXE"}}',
        b'{"process":{"name":"MsHtA.eXe"}}',
        b'{"process":{"executable":"C:\\\\Windows\\\\System32\\\\MSHTA.exe"}}',
        b'{"process.name":"mshta.exe","event.category":"process"}',
        b"mshta.exe",
    ],
)
def test_literal_present_in_any_ascii_case_is_kept(keep, raw):
    assert keep(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"process":{"name":"cmd.exe"}}',
        b'{"process":{"name":"mshta.ex"}}',
        b'{"process":{"name":"mshta exe"}}',
        b'{"process":{"name":"msh","x":"ta.exe"}}',
        b"",
        b"{}",
    ],
)
def test_literal_absent_is_dropped(keep, raw):
    assert not keep(raw)


# -- \u escapes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"process":{"name":"m\\u0073hta.exe"}}',  # \u0073 = 's'
        b'{"process":{"name":"msht\\u0061.exe"}}',  # 'a'
        b'{"process":{"name":"mshta\\u002eexe"}}',  # '.'
        b'{"process":{"name":"\\u004DSHTA.EXE"}}',  # upper-case hex, 'M'
        b'{"process":{"name":"\\u0053"}}',  # 'S': lowercases into the literal's alphabet
        b'{"process":{"n\\u0061me":"x"}}',  # an escape in a key counts too
        b'{"a":"\\\\\\u0073"}',  # escaped backslash, then a real escape
    ],
)
def test_escape_of_a_literal_character_is_kept(keep, raw):
    assert keep(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"path":"C:\\\\users\\\\bob"}',  # JSON for C:\users\bob: no escape at all
        b'{"path":"C:\\\\u0073ers"}',  # JSON for C:\u0073ers: escaped backslash + letters
        b'{"path":"C:\\\\\\\\u0061"}',  # two escaped backslashes, then letters
        b'{"a":"\\u003c\\u003e"}',  # '<' and '>' are not in "mshta.exe"
        b'{"a":"\\u00e9t\\u00e9"}',  # non-ASCII escapes cannot spell an ASCII literal
        b'{"a":"\\u007a"}',  # 'z'
        b'{"a":"\\u00"}',  # truncated escape
    ],
)
def test_non_escapes_and_unrelated_escapes_are_dropped(keep, raw):
    assert not keep(raw)


# -- requirement shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{}", b'{"a":"anything"}', b"\xff\xfe"])
def test_empty_requirement_keeps_everything(raw):
    assert Prefilter([frozenset()])(raw)
    assert Prefilter([])(raw)


def test_conjunction_of_disjunctions():
    keep = Prefilter([frozenset({frozenset({b"abc.exe", b"xyz.exe"}), frozenset({b"needle"})})])
    assert keep(b'{"a":"ABC.EXE","b":"Needle"}')
    assert keep(b'{"a":"xyz.exe needle"}')
    assert not keep(b'{"a":"abc.exe"}')  # second clause missing
    assert not keep(b'{"b":"needle"}')  # first clause missing
    assert keep(b'{"a":"abc.exe","b":"n\\u0065edle"}')  # escaped, so parsed to be sure


def test_requirement_of_the_default_rule():
    (rule,) = load_rules()
    assert rule.requirement == MSHTA
    assert [stage.requirement for stage in rule.stages] == [MSHTA, MSHTA]


def test_a_record_must_meet_one_stage_requirement_whole():
    """Two stages: (abc.exe and needle) or (xyz.exe). The merged condition of the block scan is
    weaker ((abc.exe or xyz.exe) and (needle or xyz.exe)); the check of one record is exact."""
    first = frozenset({frozenset({b"abc.exe"}), frozenset({b"needle"})})
    second = frozenset({frozenset({b"xyz.exe"})})
    keep = Prefilter([first, second])
    assert keep(b'{"a":"abc.exe","b":"NEEDLE"}')
    assert keep(b'{"a":"xyz.exe"}')
    assert not keep(b'{"a":"abc.exe"}')
    assert not keep(b'{"b":"needle"}')
    assert keep.present(b'{"a":"ABC.exe","b":"xyz.exe"}') == {b"abc.exe", b"xyz.exe"}
    assert keep.present(b'{"a":"\\u0061bc.exe"}') is None  # an escape of a literal character: unknown


def test_block_scan_flags_lines_with_a_hit_once_and_in_order():
    keep = Prefilter([frozenset({frozenset({b"abc"})})])
    block = b'{"a":"abc abc abc"}\n{"b":"x"}\n{"c":"ABC"}\nnot json\n\n{"d":"y"}'
    lines = [block[start:end] for start, end in keep.lines_to_check(block)]
    assert lines == [b'{"a":"abc abc abc"}', b'{"c":"ABC"}', b"not json", b""]


# -- the key property: a record that any stage matches is never dropped -----------------------


@pytest.fixture(scope="module")
def v4():
    (rule,) = load_rules()
    return rule, Prefilter(stage.requirement for stage in rule.stages)


def random_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True))
    )


def one_or_many(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, st.lists(values, min_size=1, max_size=3))


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), TEXT)
EXTRA_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(TEXT, SCALARS, max_size=2))
EXTRAS = st.dictionaries(TEXT, EXTRA_VALUES, max_size=3)
MSHTA_NAME = random_case("mshta.exe")
OTHER_NAME = st.sampled_from(["cmd.exe", "mshta.exe.bak", "MSHTA", "mshta_exe"])


def condition(draw, broken: str | None, name: str, good: st.SearchStrategy, bad: st.SearchStrategy) -> Any:
    return draw(bad if broken == name else good)


@st.composite
def process_doc(draw) -> dict:
    broken = draw(st.sampled_from([None, None, None, "category", "type", "name", "args"]))
    return {
        "event": {
            "category": condition(
                draw,
                broken,
                "category",
                st.sampled_from(["process", ["process"], ["host", "process"]]),
                st.sampled_from(["network", ["host"], "Process"]),
            ),
            "type": condition(
                draw,
                broken,
                "type",
                st.sampled_from(["start", ["start"], "process_started", ["info", "process_started"]]),
                st.sampled_from(["end", ["Start"], "process_start"]),
            ),
        },
        "host": {"id": draw(TEXT)},
        "process": {
            "entity_id": draw(TEXT),
            "name": condition(draw, broken, "name", one_or_many(MSHTA_NAME), OTHER_NAME),
            "args": condition(
                draw,
                broken,
                "args",
                st.lists(st.one_of(TEXT, MSHTA_NAME), max_size=2).flatmap(
                    lambda rest: random_case("-Embedding").map(lambda arg: [*rest, arg])
                ),
                st.lists(st.one_of(TEXT, st.just("-Embedding:1")), max_size=2),
            ),
        },
    }


@st.composite
def network_doc(draw) -> dict:
    broken = draw(
        st.sampled_from(
            [None, None, None, "category", "type", "direction", "transport", "sport", "dport", "address", "name"]
        )
    )
    high_port = st.one_of(st.integers(49152, 65535), st.integers(49152, 65535).map(str))
    low_port = st.one_of(st.integers(0, 49151), st.integers(0, 49151).map(str), st.none())
    return {
        "event": {
            "category": condition(
                draw, broken, "category", st.sampled_from(["network", ["network"]]), st.just(["process"])
            ),
            "type": condition(
                draw, broken, "type", st.sampled_from(["start", ["connection", "start"]]), st.just(["end"])
            ),
        },
        "host": {"id": draw(TEXT)},
        "network": {
            "direction": condition(
                draw,
                broken,
                "direction",
                st.one_of(random_case("incoming"), random_case("ingress")),
                st.sampled_from(["egress", "outgoing", "inbound"]),
            ),
            "transport": condition(draw, broken, "transport", st.just("tcp"), st.sampled_from(["udp", "TCP"])),
        },
        "source": {
            "port": condition(draw, broken, "sport", high_port, low_port),
            "address": condition(
                draw,
                broken,
                "address",
                st.sampled_from([None, "10.0.0.1", "fe80::1", "0:0:0:0:0:0:0:1"]),
                st.sampled_from(["127.0.0.1", "::1", ["10.0.0.1", "::1"]]),
            ),
        },
        "destination": {"port": condition(draw, broken, "dport", high_port, low_port)},
        "process": {"entity_id": draw(TEXT), "name": condition(draw, broken, "name", MSHTA_NAME, OTHER_NAME)},
    }


def dotted(doc: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@st.composite
def v4_document(draw) -> dict:
    doc = draw(st.one_of(process_doc(), network_doc()))
    if draw(st.booleans()):
        doc = dotted(doc)
    extras = draw(EXTRAS)
    for key, value in extras.items():
        doc.setdefault(key, value)
    return doc


def encodings(doc: dict, rng: random.Random) -> dict[str, bytes]:
    return {
        "orjson": orjson.dumps(doc),
        "ensure_ascii": json.dumps(doc, ensure_ascii=True).encode(),
        "utf8-pretty": json.dumps(doc, ensure_ascii=False, indent=1).encode(),
        "escaped-some": escaping_dumps(doc, rng, 0.2).encode(),
        "escaped-all": escaping_dumps(doc, rng, 1.0).encode(),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v4_document(), st.integers(0, 2**32))
def test_prefilter_keeps_every_record_a_stage_accepts(v4, doc, seed):
    rule, keep = v4
    for name, raw in encodings(doc, random.Random(seed)).items():
        parsed = orjson.loads(raw)
        assert parsed == doc, name
        accepted = [stage.index for stage in rule.stages if stage.predicate(parsed)]
        if accepted:
            event(f"stage {accepted[0]} accepts")
            assert keep(raw), (name, raw)


@pytest.mark.parametrize("stage_index", [0, 1])
def test_the_document_strategy_reaches_both_stages(v4, stage_index):
    """The property above is not vacuous: its documents do satisfy each stage."""
    rule, _ = v4
    stage = rule.stages[stage_index]
    found = find(
        v4_document(),
        stage.predicate,
        settings=settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck)),
    )
    assert stage.predicate(found)


@pytest.mark.parametrize("seed", range(20))
def test_prefilter_keeps_fully_escaped_matching_events(v4, seed):
    rule, keep = v4
    rng = random.Random(seed)
    doc = {
        "event": {"category": ["process"], "type": ["start"]},
        "host": {"id": "h"},
        "process": {
            "entity_id": "e",
            "name": "".join(rng.choice((c.lower(), c.upper())) for c in "mshta.exe"),
            "args": ["C:\\Windows\\System32\\mshta.exe", "-EMBEDDING"],
        },
    }
    assert rule.stages[0].predicate(doc)
    raw = escaping_dumps(doc, rng, 1.0).encode()
    assert b"mshta" not in raw.lower()
    assert keep(raw)
