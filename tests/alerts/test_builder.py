"""Kibana-style alert documents and their deterministic ids."""

from __future__ import annotations

import copy

from app.alerts.builder import ALERTS_INDEX, build_alert_group, reason
from app.alerts.ids import building_block_id, event_id, sequence_alert_id
from app.engine.sequence import SequenceMatch
from app.engine.state import Entry
from app.rule import load_rules

RULE = load_rules()[0].meta
S = 1_000_000_000
T0 = 1_714_557_600 * S

PROCESS = {
    "@timestamp": "2024-05-01T10:00:00.0000001Z",
    "event": {"id": "ev-1", "kind": "event", "category": ["process"], "type": ["start"], "action": "start"},
    "host": {"id": "h-1", "name": "ws-0012", "os": {"type": "windows"}},
    "process": {"name": "mshta.exe", "entity_id": "ent-1", "args": ["mshta.exe", "-Embedding"], "pid": 4242},
    "labels": {"site": "paris"},
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
}
MATCH = SequenceMatch(
    RULE.rule_id,
    ("h-1", "ent-1"),
    (
        Entry(T0 + 100, 0, (0,), "ev-1", PROCESS, "logs-endpoint"),
        Entry(T0 + 30 * S, 1, (1,), "ev-2", NETWORK, "logs-endpoint"),
    ),
)


def test_three_documents_with_deterministic_ids() -> None:
    docs = build_alert_group(RULE, MATCH, now_ns=T0 + 31 * S)
    assert len(docs) == 3
    shell_id = sequence_alert_id(RULE.uuid, ("h-1", "ent-1"), "ev-1")
    assert [d["kibana.alert.uuid"] for d in docs] == [
        building_block_id(shell_id, 0),
        building_block_id(shell_id, 1),
        shell_id,
    ]
    again = build_alert_group(RULE, MATCH, now_ns=T0 + 99 * S)
    assert [d["kibana.alert.uuid"] for d in again] == [d["kibana.alert.uuid"] for d in docs]
    assert len({d["kibana.alert.uuid"] for d in docs}) == 3


def test_building_blocks_carry_every_source_field() -> None:
    block, network_block, _ = build_alert_group(RULE, MATCH, now_ns=T0 + 31 * S)
    assert block["labels"] == {"site": "paris"}
    assert block["process"] == PROCESS["process"]
    assert block["host"] == PROCESS["host"]
    assert block["event"]["kind"] == "signal"
    assert block["event"]["action"] == "start"
    assert block["kibana.alert.original_event.kind"] == "event"
    assert block["kibana.alert.original_event.action"] == "start"
    assert block["kibana.alert.building_block_type"] == "default"
    assert block["kibana.alert.group.index"] == 0
    assert network_block["kibana.alert.group.index"] == 1
    assert block["kibana.alert.depth"] == 1
    assert block["kibana.alert.ancestors"] == [{"id": "ev-1", "index": "logs-endpoint", "type": "event", "depth": 0}]
    assert block["kibana.alert.original_time"] == "2024-05-01T10:00:00.000000100Z"
    assert block["@timestamp"] == "2024-05-01T10:00:31.000Z"


def test_source_event_is_not_modified() -> None:
    before = copy.deepcopy(PROCESS)
    build_alert_group(RULE, MATCH, now_ns=T0)
    assert before == PROCESS


def test_dotted_event_keys_move_too() -> None:
    flat = {"@timestamp": "2024-05-01T10:00:00Z", "event.kind": "event", "event.category": "process"}
    match = SequenceMatch(RULE.rule_id, ("h", "e"), (Entry(T0, 0, (0,), "x", flat), Entry(T0 + S, 1, (1,), "y", flat)))
    block = build_alert_group(RULE, match, now_ns=T0)[0]
    assert "event.kind" not in block
    assert block["event"] == {"kind": "signal", "category": "process"}
    assert block["kibana.alert.original_event.kind"] == "event"


def test_shell_ties_the_group_together() -> None:
    docs = build_alert_group(RULE, MATCH, now_ns=T0 + 31 * S)
    shell = docs[2]
    shell_id = shell["kibana.alert.uuid"]
    assert shell["kibana.alert.group.id"] == shell_id
    assert all(d["kibana.alert.group.id"] == shell_id for d in docs)
    assert "kibana.alert.group.index" not in shell
    assert "kibana.alert.building_block_type" not in shell
    assert shell["kibana.alert.depth"] == 2
    assert shell["kibana.alert.ancestors"] == [
        {"id": "ev-1", "index": "logs-endpoint", "type": "event", "depth": 0},
        {"id": docs[0]["kibana.alert.uuid"], "index": ALERTS_INDEX, "type": "signal", "depth": 1},
        {"id": "ev-2", "index": "logs-endpoint", "type": "event", "depth": 0},
        {"id": docs[1]["kibana.alert.uuid"], "index": ALERTS_INDEX, "type": "signal", "depth": 1},
    ]
    # Shared fields only: what both events agree on.
    assert shell["host"] == {"id": "h-1", "name": "ws-0012", "os": {"type": "windows"}}
    assert shell["process"] == {"name": "mshta.exe", "entity_id": "ent-1", "pid": 4242}
    assert "source" not in shell and "labels" not in shell
    assert shell["event"] == {"kind": "signal"}


def test_rule_fields_on_every_document() -> None:
    for doc in build_alert_group(RULE, MATCH, now_ns=T0):
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
        assert doc["kibana.alert.rule.interval"] == "5m"
        assert doc["kibana.alert.rule.max_signals"] == 100
        assert doc["kibana.alert.rule.parameters"]["language"] == "eql"
        assert "maxspan=1m" in doc["kibana.alert.rule.parameters"]["query"]
        techniques = [
            t["subtechnique"][0]["id"] for threat in doc["kibana.alert.rule.threat"] for t in threat["technique"]
        ]
        assert techniques == ["T1021.003", "T1218.005"]
        assert doc["tags"] == RULE.tags
        assert doc["kibana.space_ids"] == ["default"]


def test_reason_sentence() -> None:
    assert reason(RULE, NETWORK) == (
        "network event with process mshta.exe, source 10.1.2.3:50123, destination 10.1.2.9:55683 on ws-0012 "
        "created high alert Incoming DCOM Lateral Movement via MSHTA."
    )


def test_event_id_prefers_event_id_then_content_hash() -> None:
    assert event_id(PROCESS) == "ev-1"
    anonymous = {"@timestamp": "2024-05-01T10:00:00Z", "b": 1, "a": [1, 2]}
    reordered = {"a": [1, 2], "b": 1, "@timestamp": "2024-05-01T10:00:00Z"}
    assert event_id(anonymous) == event_id(reordered)
    assert event_id(anonymous) != event_id({**anonymous, "b": 2})
    assert len(event_id(anonymous)) == 64


def test_alert_id_depends_on_rule_key_and_first_event() -> None:
    base = sequence_alert_id("rule", ("h", "e"), "ev")
    assert base == sequence_alert_id("rule", ("h", "e"), "ev")
    assert (
        len(
            {
                base,
                sequence_alert_id("rule2", ("h", "e"), "ev"),
                sequence_alert_id("rule", ("h", "e2"), "ev"),
                sequence_alert_id("rule", ("h", "e"), "ev2"),
            }
        )
        == 4
    )
