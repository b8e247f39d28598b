"""The extractor (app.core.extract) with many rules: passing stages over changes no candidate.

With many rules loaded, the extractor evaluates only the stages of an event's categories whose
literals the raw bytes contain. The property checked here: for any event and several encodings
of it (plain, some or all string characters ``\\u``-escaped), the candidates equal those of the
naive evaluation of every stage of every rule on the mapped event.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core import Detector
from app.core.normalize import normalize
from app.core.rule import CompiledRule
from tests.support.detection import compile_query
from tests.support.encoding import escaping_dumps

# Rules that share literals, categories and join fields, with an ``any`` stage, a stage with no
# literal at all (every network event), and a 3-stage rule with per-stage keys.
QUERIES = {
    "shared-literal": """sequence by host.id with maxspan=1m
        [process where event.type == "start" and process.name : "cmd.exe"]
        [network where process.name : "cmd.exe" and destination.port == 445]""",
    "two-literals": """sequence by host.id, process.entity_id with maxspan=1m
        [process where process.name : "rundll32.exe" and process.parent.name : "cmd.exe"]
        [file where file.extension : "dll" and file.path : "*\\\\Temp\\\\*"]""",
    "broad-stage": """sequence by process.entity_id with maxspan=30s
        [process where event.type == "start" and process.name : "psexec.exe"]
        [network where host.os.type == "windows"]""",
    "any-stage": """sequence by host.id with maxspan=5m
        [any where process.name : ("wmic.exe", "cmd.exe")]
        [registry where registry.path : "HKLM\\\\*\\\\Run\\\\*" and registry.value : "updater*" and
         not process.name : "explorer.exe"]""",
    "three-stages": """sequence with maxspan=2m
        [authentication where event.action == "logged-in" and user.name : "admin*"] by user.name
        [process where process.name : "sc.exe" and process.args : "create"] by user.name
        [iam where event.action : "added-user-account" and user.target.name : "eve"] by user.target.name""",
}

_NAMES = ["cmd.exe", "CMD.EXE", "rundll32.exe", "psexec.exe", "wmic.exe", "explorer.exe", "sc.exe", "svchost.exe"]
_CATEGORIES = ["process", "network", "file", "registry", "authentication", "iam", "dns"]


RULES = [compile_query(query, rule_id=rule_id, name=rule_id) for rule_id, query in QUERIES.items()]
# Without the broad stage every stage names a literal, so records are checked literal by literal;
# with it, every record is parsed and only the categories pass stages over.
SELECTIVE = [rule for rule in RULES if rule.meta.rule_id != "broad-stage"]


def _event(some: Callable[[list[Any]], Any]) -> dict[str, Any]:
    """An ECS event near the rules above; ``some(values)`` picks a field's value: none, one, or several."""
    return {
        "@timestamp": "2026-12-06T10:00:00.000Z",
        "host": {"id": some(["h1", "h2"]), "os": {"type": some(["windows", "linux"])}},
        "event": {
            "category": some(_CATEGORIES),
            "type": some(["start", "end", "creation", "change"]),
            "action": some(["logged-in", "added-user-account", "load"]),
        },
        "process": {
            "name": some(_NAMES),
            "entity_id": some(["p1", "p2"]),
            "parent": {"name": some(_NAMES)},
            "args": some(["create", "start", "/c"]),
        },
        "destination": {"port": some([445, "445", 80])},
        "file": {"extension": some(["dll", "DLL", "exe"]), "path": some(["C:\\Temp\\x.dll", "C:\\x.dll"])},
        "registry": {
            "value": some(["Updater", "updater.exe", "other"]),
            "path": some(["HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\x", "HKCU\\x"]),
        },
        "user": {"name": some(["administrator", "Admin", "bob"]), "target": {"name": some(["eve", "bob"])}},
    }


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    return _event(
        lambda values: draw(st.none() | st.sampled_from(values) | st.lists(st.sampled_from(values), max_size=2))
    )


def _naive(rules: list[CompiledRule], doc: dict[str, Any]) -> list[tuple[str, tuple[Any, ...], tuple[int, ...]]]:
    """Every stage of every rule evaluated on the mapped event: what the extractor must give."""
    mapped = normalize(doc)
    found = []
    for rule in rules:
        by_key: dict[tuple[Any, ...], list[int]] = {}
        for stage in rule.stages:
            if stage.predicate(mapped):
                for key in stage.join_keys(mapped, 64):
                    by_key.setdefault(key, []).append(stage.index)
        found += [(rule.meta.rule_id, key, tuple(stages)) for key, stages in by_key.items()]
    return found


@pytest.mark.parametrize("rules", [SELECTIVE, RULES], ids=["selective", "with-a-broad-stage"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=events(), seed=st.integers(0, 2**32))
def test_candidates_equal_the_naive_evaluation_of_every_stage(rules, doc, seed):
    extractor = Detector(rules).extractor
    expected = _naive(rules, doc)
    rng = random.Random(seed)
    for raw in (orjson.dumps(doc), escaping_dumps(doc, rng, 0.1).encode(), escaping_dumps(doc, rng, 1.0).encode()):
        candidates, rejections = extractor.extract(raw)
        assert not rejections
        assert [(c.rule_id, c.key, c.stages) for c in candidates] == expected, raw


def test_only_the_broad_stage_makes_every_record_parsed():
    assert not Detector(SELECTIVE).extractor.prefilter.keeps_everything
    assert Detector(RULES).extractor.prefilter.keeps_everything


def test_the_property_is_not_vacuous():
    """Every stage of every rule is met by events of the kind generated, so the comparison has substance."""
    rng = random.Random(7)

    def some(values: list[Any]) -> Any:
        pick = rng.random()
        return None if pick < 0.3 else rng.choice(values) if pick < 0.8 else rng.sample(values, k=2)

    met = set()
    for _ in range(3000):
        mapped = normalize(_event(some))
        met |= {(rule.meta.rule_id, stage.index) for rule in RULES for stage in rule.stages if stage.predicate(mapped)}
    assert met == {(rule.meta.rule_id, stage.index) for rule in RULES for stage in rule.stages}
