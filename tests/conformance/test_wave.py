"""Rules in Elastic's upstream layout, written for these tests (tests/support/wave/): each fires on its
attack and not on its near misses, through the product and the oracle alike, one by one and all
together in one stream with the whole folder loaded.

The events are what the shippers send (Elastic Defend, raw Sysmon, raw Windows Security); the
oracle reads their ECS twins (what Elasticsearch would have indexed after its ingest pipeline).
"""

from __future__ import annotations

import pytest

from app.core import load_rules, survey_rules
from app.core.normalize import normalize
from tests.support import oracle
from tests.support.detection import detect
from tests.support.wave import SCENARIOS, WAVE, Scenario, stream

RULES = {rule.path.rsplit("/", 1)[-1]: rule for rule in load_rules(WAVE)}


def test_the_folder_runs_every_rule():
    assert sorted(RULES) == sorted(scenario.rule_file for scenario in SCENARIOS)
    assert all(entry.rule is not None for entry in survey_rules(WAVE))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.rule_file for s in SCENARIOS])
def test_the_attack_is_one_alert_with_every_event_in_order(scenario: Scenario):
    rule = RULES[scenario.rule_file]
    found = detect(scenario.attack, [rule])
    expected = oracle.es_alerts(rule, [normalize(event) for event in scenario.attack])
    assert len(expected) == 1
    ((alert_id, event_ids),) = expected.items()
    assert found.ids() == [alert_id]
    assert found.alerts[0].event_ids == event_ids
    assert not found.rejections


@pytest.mark.parametrize(
    ("scenario", "miss"),
    [(s, miss) for s in SCENARIOS for miss in s.near_misses],
    ids=[f"{s.rule_file}-{miss}" for s in SCENARIOS for miss in s.near_misses],
)
def test_a_near_miss_is_no_alert(scenario: Scenario, miss: str):
    rule = RULES[scenario.rule_file]
    events = scenario.near_misses[miss]
    assert oracle.es_alerts(rule, [normalize(event) for event in events]) == {}
    assert detect(events, [rule]).ids() == []


def test_all_scenarios_in_one_stream_with_the_whole_folder():
    events, attacks = stream()
    found = detect(events, list(RULES.values()))
    expected = {
        alert: ids for rule in RULES.values() for alert, ids in oracle.es_alerts(rule, map(normalize, events)).items()
    }
    assert len(expected) == attacks
    assert sorted(found.ids()) == sorted(expected)
    assert {alert.id: alert.event_ids for alert in found.alerts} == expected
