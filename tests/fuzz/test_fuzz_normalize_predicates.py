"""Fuzzing the normalizer and the compiled predicates with arbitrary JSON values where they look.

* ``normalize`` on raw-Sysmon and Winlogbeat 6 shaped events with arbitrary values: never raises,
  is idempotent, and what it returns can always be written as a candidate (orjson).
* ``split_command_line`` on arbitrary text: never raises; without quotes it is a split on blanks.
* Every stage predicate and join key of both bundled rules, on events whose fields the rule reads
  hold arbitrary JSON (nested, dotted, in arrays): never raises, and whenever a stage accepts the
  event, the prefilter keeps its raw bytes however they are encoded, so the prefilter can never
  change a result.
"""

from __future__ import annotations

import copy
import json
import re

import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.core.normalize import SYSMON_CHANNEL, SYSMON_PROVIDER, normalize, split_command_line
from app.core.rule import TooManyJoinKeys
from tests.fuzz.strategies import (
    FUZZ,
    REAL_EVENTS,
    RULES,
    json_scalars,
    json_values,
    new_extractor,
    outcome,
    unfiltered,
)
from tests.support.hostile import INBOUND, START

_EVENT_DATA_NAMES = [
    "UtcTime", "ProcessGuid", "ProcessId", "Image", "CommandLine", "ParentImage", "ParentCommandLine",
    "ParentProcessGuid", "ParentProcessId", "User", "Protocol", "Initiated", "SourceIsIpv6", "SourceIp",
    "SourcePort", "DestinationIp", "DestinationPort", "DestinationPortName", "SourcePortName", "OriginalFileName",
]  # fmt: skip
_PLAUSIBLE = st.sampled_from(
    ["2024-05-01 10:15:02.138", "C:\\Windows\\System32\\mshta.exe", "C:\\Windows\\System32\\mshta.exe -Embedding",
     '"C:\\a b\\mshta.exe" -Embedding "x\\"', "49168", "true", "false", "10.0.0.1", "::1", "CORP\\j.doe", "-", ""]
)  # fmt: skip
_RAW_EVENTS = [orjson.loads(e) for e in REAL_EVENTS if b"event_data" in e]


@st.composite
def windows_events(draw: st.DrawFn) -> dict:
    """A raw Sysmon or Winlogbeat 6 event, from a real one, with arbitrary values put where the mapping reads."""
    doc = copy.deepcopy(draw(st.sampled_from(_RAW_EVENTS)))
    data = doc["winlog"]["event_data"] if "winlog" in doc else doc["event_data"]
    for name in draw(st.lists(st.sampled_from(_EVENT_DATA_NAMES), max_size=6)):
        data[name] = draw(_PLAUSIBLE | json_values)
    if draw(st.booleans()):
        holder = doc.get("winlog", doc)
        key = draw(st.sampled_from(["event_id", "provider_name", "channel", "source_name", "user", "event_data"]))
        holder[key] = draw(st.sampled_from([1, "3", SYSMON_PROVIDER, SYSMON_CHANNEL]) | json_values)
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["event", "process", "@timestamp", "data_stream", "winlog"]))] = draw(json_values)
    return doc


@FUZZ
@given(windows_events())
def test_normalize_never_raises_is_idempotent_and_serializable(doc: dict) -> None:
    before = json.dumps(doc, sort_keys=True)
    mapped = normalize(doc)
    assert json.dumps(doc, sort_keys=True) == before  # the input is never modified
    assert normalize(mapped) == mapped
    if _orjson_can_hold(doc):  # as every parsed record can (orjson.loads made it)
        orjson.dumps(mapped)  # the candidate encoding: what the mapping adds must be writable too


def _orjson_can_hold(doc: dict) -> bool:
    try:
        orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits, which only generated input has
        return False
    return True


@FUZZ
@given(st.text(alphabet=st.sampled_from(' \t"\\ab-\u00e9\x00'), max_size=60) | st.text(max_size=60))
def test_split_command_line_never_raises(command_line: str) -> None:
    args = split_command_line(command_line)
    assert all(type(a) is str for a in args)
    if '"' not in command_line and command_line[:1] not in (" ", "\t"):
        assert args == [a for a in re.split("[ \t]+", command_line) if a]


_PATHS = sorted({field for rule in RULES for field in rule.fields})


@st.composite
def events_with_hostile_fields(draw: st.DrawFn) -> dict:
    """START or INBOUND with some fields the rules read replaced: nested, dotted, or in an array of objects."""
    doc = copy.deepcopy(draw(st.sampled_from([START, INBOUND])))
    for path in draw(st.lists(st.sampled_from(_PATHS), max_size=4)):
        value = draw(json_values | st.lists(json_scalars, max_size=3))
        head, _, rest = path.partition(".")
        form = draw(st.integers(0, 2)) if rest else 0
        if form == 0:  # nested objects
            node = doc
            *parents, leaf = path.split(".")
            for part in parents:
                node = node[part] if type(node.get(part)) is dict else node.setdefault(part, {})
                if type(node) is not dict:
                    break
            else:
                node[leaf] = value
        elif form == 1:  # a dotted key next to (or instead of) the object
            doc[path] = value
        else:  # an array of objects
            doc[head] = [doc.get(head) if type(doc.get(head)) is dict else {}, _nest(rest, value)]
    return doc


def _nest(path: str, value: object) -> dict:
    *parents, leaf = path.split(".")
    node: dict = {leaf: value}
    for part in reversed(parents):
        node = {part: node}
    return node


def _escaped(value: object) -> str:
    """JSON with every character of every key and string written as a ``\\uXXXX`` escape."""
    if type(value) is str:
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else json.dumps(c)[1:-1] for c in value) + '"'
    if type(value) is dict:
        return "{" + ",".join(f"{_escaped(k)}:{_escaped(v)}" for k, v in value.items()) + "}"
    if type(value) is list:
        return "[" + ",".join(map(_escaped, value)) + "]"
    return json.dumps(value)


_filtered = new_extractor()
_plain = unfiltered(new_extractor())


@FUZZ
@given(events_with_hostile_fields(), st.sampled_from(["utf-8", "ascii", "escaped"]))
def test_predicates_never_raise_and_the_prefilter_keeps_every_match(doc: dict, encoding: str) -> None:
    accepted = False
    for rule in RULES:
        for stage in rule.stages:
            matched = stage.predicate(doc)
            assert type(matched) is bool
            try:
                keys = stage.join_keys(doc, 64)
            except TooManyJoinKeys:
                continue
            assert all(type(k) is tuple for k in keys)
            accepted |= matched
    if encoding == "escaped":
        record = _escaped(doc).encode()
    else:
        record = json.dumps(doc, ensure_ascii=encoding == "ascii").encode()
    if accepted:
        assert _filtered.prefilter(record)
    filtered, plain = outcome(_filtered.extract(record)), outcome(_plain.extract(record))
    assert filtered[0] == plain[0]
    assert set(filtered[1]) <= {"invalid_timestamp", "invalid_json"}
