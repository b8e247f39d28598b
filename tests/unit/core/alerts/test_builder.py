"""Kibana-style alert documents and their deterministic ids (app.core.alerts)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import orjson
import pytest

from app.core.alerts.builder import build_alert_group, event_index, reason
from app.core.alerts.ids import building_block_id, event_id, sequence_alert_id
from app.core.engine.sequence import SequenceMatch
from app.core.engine.state import Entry
from app.core.rule import RuleMeta
from tests.support.detection import RULE, T0, S, rule_meta

META = RULE.meta
INDEX = "eqlstream-alerts-default"

PROCESS = {
    "@timestamp": "2024-05-01T10:00:00.0001234Z",
    "event": {"id": "ev-1", "kind": "event", "category": ["process"], "type": ["start"], "action": "start"},
    "host": {"id": "h-1", "name": "ws-0012", "os": {"type": "windows"}},
    "process": {"name": "mshta.exe", "entity_id": "ent-1", "args": ["mshta.exe", "-Embedding"], "pid": 4242},
    "labels": {"site": "paris"},
    "data_stream": {"type": "logs", "dataset": "endpoint.events.process", "namespace": "default"},
}
NETWORK = {
    "@timestamp": "2024-05-01T10:00:30Z",
    "event": {
        "id": "ev-2",
        "kind": "event",
        "category": ["network"],
        "type": ["start"],
        "action": "connection_accepted",
    },
    "host": {"id": "h-1", "name": "ws-0012", "os": {"type": "windows"}},
    "process": {"name": "mshta.exe", "entity_id": "ent-1", "pid": 4242},
    "network": {"direction": "ingress", "transport": "tcp"},
    "source": {"ip": "10.1.2.3", "port": 50123},
    "destination": {"ip": "10.1.2.9", "port": 55683},
    "@metadata": {"beat": "winlogbeat", "version": "8.13.4"},
}


def entry(event: dict[str, Any], at_ms: int, arrival: int, stage: int, origin: str = "winlogbeat/3") -> Entry:
    return Entry(at_ms, arrival, (stage,), event_id(event), orjson.dumps(event), origin)


def match(*events: tuple[dict[str, Any], int], key: tuple[str, ...] = ("h-1", "ent-1")) -> SequenceMatch:
    return SequenceMatch(META.rule_id, key, tuple(entry(ev, at, i, i) for i, (ev, at) in enumerate(events)))


MATCH = match((PROCESS, T0), (NETWORK, T0 + 30 * S))


def build(m: SequenceMatch = MATCH, rule: RuleMeta = META, now_ms: int = T0 + 31 * S) -> list[dict[str, Any]]:
    return build_alert_group(rule, m, now_ms, INDEX)


def test_three_documents_with_deterministic_ids() -> None:
    docs = build()
    assert len(docs) == 3
    shell_id = sequence_alert_id(META.uuid, ("h-1", "ent-1"), event_id(PROCESS))
    assert [d["kibana.alert.uuid"] for d in docs] == [
        building_block_id(shell_id, 0),
        building_block_id(shell_id, 1),
        shell_id,
    ]
    again = build(now_ms=T0 + 99 * S)
    assert [d["kibana.alert.uuid"] for d in again] == [d["kibana.alert.uuid"] for d in docs]
    assert len({d["kibana.alert.uuid"] for d in docs}) == 3


def test_building_blocks_carry_every_source_field() -> None:
    block, network_block, _ = build()
    assert block["labels"] == {"site": "paris"}
    assert block["process"] == PROCESS["process"]
    assert block["host"] == PROCESS["host"]
    assert block["event"]["kind"] == "signal"
    assert block["event"]["action"] == "start"
    assert block["kibana.alert.original_event.kind"] == "event"
    assert block["kibana.alert.original_event.action"] == "start"
    assert block["kibana.alert.original_event.id"] == "ev-1"
    assert block["kibana.alert.building_block_type"] == "default"
    assert block["kibana.alert.group.index"] == 0
    assert network_block["kibana.alert.group.index"] == 1
    assert block["kibana.alert.depth"] == 1
    assert block["@timestamp"] == "2024-05-01T10:00:31.000Z"


def test_original_time_is_the_indexed_millisecond_in_iso() -> None:
    """Elasticsearch indexes @timestamp in milliseconds; Kibana writes original_time with toISOString."""
    block, network_block, shell = build(match((PROCESS, T0), (NETWORK, T0 + 30 * S)))
    assert block["kibana.alert.original_time"] == "2024-05-01T10:00:00.000Z"
    assert network_block["kibana.alert.original_time"] == "2024-05-01T10:00:30.000Z"
    assert shell["kibana.alert.original_time"] == "2024-05-01T10:00:00.000Z"


def test_ancestors_name_the_events_indices_and_the_alerts_index() -> None:
    """An event's index is its data stream, else ``<beat>-<version>`` from @metadata, else where it was read."""
    docs = build()
    process_ancestor = {
        "id": event_id(PROCESS),
        "index": "logs-endpoint.events.process-default",
        "type": "event",
        "depth": 0,
    }
    network_ancestor = {"id": event_id(NETWORK), "index": "winlogbeat-8.13.4", "type": "event", "depth": 0}
    assert docs[0]["kibana.alert.ancestors"] == [process_ancestor]
    assert docs[1]["kibana.alert.ancestors"] == [network_ancestor]
    assert docs[2]["kibana.alert.ancestors"] == [
        process_ancestor,
        {"id": docs[0]["kibana.alert.uuid"], "index": INDEX, "type": "signal", "depth": 1, "rule": META.uuid},
        network_ancestor,
        {"id": docs[1]["kibana.alert.uuid"], "index": INDEX, "type": "signal", "depth": 1, "rule": META.uuid},
    ]


@pytest.mark.parametrize(
    ("event", "index"),
    [
        ({"data_stream": {"type": "logs", "dataset": "windows.sysmon_operational", "namespace": "prod"}}, None),
        ({"data_stream": {"type": "logs", "dataset": "", "namespace": "prod"}}, "topic/1"),
        ({"data_stream": "logs-x-y"}, "topic/1"),
        ({"@metadata": {"beat": "winlogbeat", "version": 8}}, "topic/1"),
        ({}, "topic/1"),
    ],
)
def test_event_index_falls_back_to_the_origin(event: dict[str, Any], index: str | None) -> None:
    assert event_index(event, "topic/1") == (index or "logs-windows.sysmon_operational-prod")


def test_source_event_is_not_modified() -> None:
    before = copy.deepcopy(PROCESS)
    m = match((PROCESS, T0), (NETWORK, T0 + S))
    build(m)
    assert before == PROCESS and m.events[0].event == PROCESS


def test_dotted_event_keys_move_too() -> None:
    flat = {"@timestamp": "2024-05-01T10:00:00Z", "event.kind": "event", "event.category": "process"}
    block = build(match((flat, T0), ({**flat, "x": 1}, T0 + S)))[0]
    assert "event.kind" not in block
    assert block["event"] == {"kind": "signal", "category": "process"}
    assert block["kibana.alert.original_event.kind"] == "event"


def test_an_event_cannot_set_its_alerts_fields() -> None:
    """The source's ``kibana`` object, dotted ``kibana.*`` keys, ``signal`` and ``threshold_result`` are
    dropped before building: an event must not mark its own alert closed, acknowledged or hidden."""
    forged = {
        **PROCESS,
        "kibana": {"alert": {"workflow_status": "closed", "building_block_type": "default"}},
        "kibana.alert.workflow_status": "closed",
        "kibana.alert.status": "untracked",
        "kibana.alert.building_block_type": "default",
        "kibana.alert.risk_score": 0,
        "signal": {"status": "closed"},
        "threshold_result": {"count": 1},
    }
    for doc in build(match((forged, T0), ({**NETWORK, "kibana.alert.workflow_status": "closed"}, T0 + S))):
        assert doc["kibana.alert.workflow_status"] == "open"
        assert doc["kibana.alert.status"] == "active"
        assert doc["kibana.alert.risk_score"] == 73
        assert not {"kibana", "signal", "threshold_result"} & set(doc)
    shell = build(match((forged, T0), (forged | {"event": NETWORK["event"]}, T0 + S)))[-1]
    assert "kibana.alert.building_block_type" not in shell  # only the rule makes a shell a building block


def test_a_building_block_rule_marks_its_shell() -> None:
    docs = build(rule=META.model_copy(update={"building_block_type": "default"}))
    assert docs[-1]["kibana.alert.building_block_type"] == "default"
    assert docs[-1]["kibana.alert.rule.parameters"]["building_block_type"] == "default"


def test_shell_ties_the_group_together() -> None:
    docs = build()
    shell = docs[2]
    shell_id = shell["kibana.alert.uuid"]
    assert shell["kibana.alert.group.id"] == shell_id
    assert all(d["kibana.alert.group.id"] == shell_id for d in docs)
    assert "kibana.alert.group.index" not in shell
    assert "kibana.alert.building_block_type" not in shell
    assert shell["kibana.alert.depth"] == 2
    # Shared fields only: what both events agree on.
    assert shell["host"] == {"id": "h-1", "name": "ws-0012", "os": {"type": "windows"}}
    assert shell["process"] == {"name": "mshta.exe", "entity_id": "ent-1", "pid": 4242}
    assert "source" not in shell and "labels" not in shell
    assert shell["event"] == {"kind": "signal"}


def test_rule_fields_on_every_document() -> None:
    for doc in build(now_ms=T0):
        assert doc["kibana.alert.rule.name"] == "Incoming DCOM Lateral Movement via MSHTA"
        assert doc["kibana.alert.rule.rule_id"] == "622ecb68-fa81-4601-90b5-f8cd661e4520"
        assert doc["kibana.alert.rule.version"] == 4
        assert doc["kibana.alert.rule.type"] == "eql"
        assert doc["kibana.alert.rule.rule_type_id"] == "siem.eqlRule"
        assert doc["kibana.alert.severity"] == "high"
        assert doc["kibana.alert.risk_score"] == 73
        assert doc["kibana.alert.status"] == "active"
        assert doc["kibana.alert.workflow_status"] == "open"
        assert doc["kibana.alert.rule.from"] == "now-9m"
        assert doc["kibana.alert.rule.to"] == "now"
        assert doc["kibana.alert.rule.interval"] == "5m"
        assert doc["kibana.alert.rule.max_signals"] == 100
        assert doc["kibana.alert.rule.false_positives"] == []
        assert doc["kibana.alert.rule.parameters"] == META.parameters()
        assert "maxspan=1m" in doc["kibana.alert.rule.parameters"]["query"]
        techniques = [
            t["subtechnique"][0]["id"] for threat in doc["kibana.alert.rule.threat"] for t in threat["technique"]
        ]
        assert techniques == ["T1021.003", "T1218.005"]
        assert doc["tags"] == META.tags
        assert doc["kibana.space_ids"] == ["default"]
        assert "kibana.alert.rule.note" not in doc and "kibana.alert.rule.timestamp_override" not in doc


def test_optional_rule_fields_reach_the_documents() -> None:
    rule = rule_meta(
        META.query,
        note="## Triage\nCheck the parent.",
        setup="Enable Sysmon event 3.",
        false_positives=["Admin tools"],
        to="now-1m",
        timestamp_override="event.ingested",
        index=["logs-*"],
    )
    for doc in build(rule=rule):
        assert doc["kibana.alert.rule.note"] == "## Triage\nCheck the parent."
        assert doc["kibana.alert.rule.false_positives"] == ["Admin tools"]
        assert doc["kibana.alert.rule.to"] == "now-1m"
        assert doc["kibana.alert.rule.timestamp_override"] == "event.ingested"
        parameters = doc["kibana.alert.rule.parameters"]
        assert (parameters["note"], parameters["setup"], parameters["timestamp_override"]) == (
            "## Triage\nCheck the parent.",
            "Enable Sysmon event 3.",
            "event.ingested",
        )
        assert (parameters["false_positives"], parameters["to"], parameters["index"]) == (
            ["Admin tools"],
            "now-1m",
            ["logs-*"],
        )


def test_reason_sentence() -> None:
    assert reason(META, NETWORK) == (
        "network event with process mshta.exe, source 10.1.2.3:50123, destination 10.1.2.9:55683 on ws-0012 "
        "created high alert Incoming DCOM Lateral Movement via MSHTA."
    )


# -- event identity ------------------------------------------------------------------------


def test_event_id_is_the_content_hash_in_canonical_json() -> None:
    anonymous = {"@timestamp": "2024-05-01T10:00:00Z", "b": 1, "a": [1, 2]}
    reordered = {"a": [1, 2], "b": 1, "@timestamp": "2024-05-01T10:00:00Z"}
    assert event_id(anonymous) == event_id(reordered)
    assert event_id(anonymous) == hashlib.sha256(orjson.dumps(anonymous, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert event_id(anonymous) != event_id({**anonymous, "b": 2})


def test_event_id_is_not_an_identity() -> None:
    """Two documents sharing ``event.id`` are two events, as in Elasticsearch (the id is a plain keyword)."""
    assert event_id(PROCESS) != "ev-1"
    assert event_id(PROCESS) != event_id({**PROCESS, "labels": {"site": "lyon"}})


@pytest.mark.parametrize(
    "resent",
    [
        {"@metadata": {"beat": "winlogbeat", "version": "8.13.4", "pipeline": "routing"}},
        {"agent": {"ephemeral_id": "after-restart", "id": "a1"}},
        {"event": {**PROCESS["event"], "created": "2024-05-01T10:00:05.000Z", "ingested": "2024-05-01T10:00:06Z"}},
        {"agent.ephemeral_id": "dotted", "event.created": "x", "event.ingested": "y"},
    ],
)
def test_a_beats_resend_is_the_same_event(resent: dict[str, Any]) -> None:
    """What a shipper changes when it sends an event again (its run id, read time, envelope) is left out."""
    original = {**PROCESS, "agent": {"ephemeral_id": "before-restart", "id": "a1"}}
    assert event_id({**original, **resent}) == event_id(original)
    assert event_id({**original, "agent": {"ephemeral_id": "x", "id": "a2"}}) != event_id(original)


def test_alert_id_depends_on_rule_key_and_first_event() -> None:
    base = sequence_alert_id("rule", ("h", "e"), "ev")
    assert base == sequence_alert_id("rule", ("h", "e"), "ev")
    others = {
        sequence_alert_id("rule2", ("h", "e"), "ev"),
        sequence_alert_id("rule", ("h", "e2"), "ev"),
        sequence_alert_id("rule", ("h", "e"), "ev2"),
    }
    assert len({base, *others}) == 4
