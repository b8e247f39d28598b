"""End to end through the extractor and engine for every input shape: envelopes, raw Sysmon, legacy, timing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.detector import CandidateExtractor, SequenceStage
from app.rule import DEFAULT_RULE_PATH, load_rules
from app.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "inputs"
V4 = load_rules()[0]
CURRENT = load_rules(DEFAULT_RULE_PATH.with_name("incoming_dcom_lateral_movement_via_mshta_current.toml"))[0]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


RAW_START = fixture("winlogbeat8_sysmon_1_mshta_embedding.json")
RAW_INBOUND = fixture("winlogbeat8_sysmon_3_mshta_inbound.json")


def run(records: list[bytes], rule: Any = V4, **settings: str) -> tuple[list[tuple[str, ...]], CandidateExtractor]:
    extractor = CandidateExtractor([rule], Settings(**settings))
    stage = SequenceStage([rule], Settings(**settings))
    pairs = []
    for record in records:
        candidates, _ = extractor.extract(record)
        for candidate in candidates:
            for alert in stage.process(candidate, 0):
                pairs.append(tuple(e.event["event"].get("code", e.event_id) for e in alert.match.events))
    return pairs, extractor


def raw(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def with_event_data(doc: dict[str, Any], **fields: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["winlog"]["event_data"].update(fields)
    return out


def test_raw_winlogbeat8_sysmon_attack_is_detected() -> None:
    pairs, _ = run([raw(RAW_START), raw(RAW_INBOUND)])
    assert pairs == [("1", "3")]


def test_raw_events_in_any_arrival_order() -> None:
    pairs, _ = run([raw(RAW_INBOUND), raw(RAW_START)])
    assert pairs == [("1", "3")]


def test_logstash_json_codec_without_metadata() -> None:
    records = []
    for doc in (RAW_START, RAW_INBOUND):
        logstash = {k: v for k, v in doc.items() if k != "@metadata"}
        logstash["@version"] = "1"
        records.append(raw(logstash))
    assert run(records)[0] == [("1", "3")]


def test_logstash_json_lines_record_with_several_objects() -> None:
    record = raw(RAW_START) + b"\n" + raw({"message": "noise"}) + b"\n" + raw(RAW_INBOUND) + b"\n"
    assert run([record])[0] == [("1", "3")]


def test_logstash_plain_codec_line_is_rejected_with_a_reason() -> None:
    plain = b"2024-05-01T10:15:02.140Z ws-fin-042 %{message} mshta.exe"
    extractor = CandidateExtractor([V4])
    candidates, rejections = extractor.extract(plain)
    assert candidates == []
    assert [r.reason for r in rejections] == ["invalid_json"]
    assert rejections[0].raw == plain
    assert "not JSON" in rejections[0].detail


@pytest.mark.parametrize("record", [b"[1, 2]", b'"mshta.exe"', b"42", b"null", b"true"])
def test_non_object_json_is_rejected(record: bytes) -> None:
    _, rejections = CandidateExtractor([V4]).extract(record)
    assert [r.reason for r in rejections] == ["not_an_object"]


def test_elastic_agent_raw_sysmon_is_detected() -> None:
    start = fixture("agent_sysmon_1_mshta_embedding.json")
    inbound = copy.deepcopy(RAW_INBOUND)
    inbound.pop("@metadata")
    inbound["data_stream"] = start.get("data_stream")
    inbound["host"] = start["host"]
    inbound["winlog"]["event_data"]["ProcessGuid"] = start["winlog"]["event_data"]["ProcessGuid"]
    inbound["winlog"]["event_data"]["UtcTime"] = "2024-05-01 10:15:30.000"
    assert run([raw(start), raw(inbound)])[0] == [("1", "3")]


def test_lethalhta_timing_is_silent_by_default_and_caught_with_an_order_tolerance() -> None:
    # The public capture: EID 3's UtcTime is 3.975 s before EID 1's, though written 1.2 s after it.
    start = with_event_data(RAW_START, UtcTime="2019-07-05 14:08:15.730")
    start["@timestamp"] = "2019-07-05T14:08:15.900Z"
    inbound = with_event_data(RAW_INBOUND, UtcTime="2019-07-05 14:08:11.755")
    inbound["@timestamp"] = "2019-07-05T14:08:17.100Z"
    records = [raw(start), raw(inbound)]
    assert run(records)[0] == []  # Elasticsearch parity: the rule stays silent on this capture
    assert run(records, order_tolerance="5s")[0] == [("1", "3")]
    assert run(records, order_tolerance="3s")[0] == []


def test_v4_does_not_filter_loopback_on_sysmon_data_but_current_version_does() -> None:
    loopback = with_event_data(RAW_INBOUND, SourceIp="127.0.0.1", DestinationIp="127.0.0.1")
    records = [raw(RAW_START), raw(loopback)]
    # v4 tests source.address, which the Sysmon mapping never sets: the loopback connection alerts.
    assert run(records, V4)[0] == [("1", "3")]
    assert run(records, CURRENT)[0] == []
    ipv6 = with_event_data(RAW_INBOUND, SourceIp="0:0:0:0:0:0:0:1", SourceIsIpv6="true")
    assert run([raw(RAW_START), raw(ipv6)], CURRENT)[0] == []
    assert run([raw(RAW_START), raw(RAW_INBOUND)], CURRENT)[0] == [("1", "3")]


def test_missing_host_id_never_joins_unless_a_fallback_is_chosen() -> None:
    # Windows Event Forwarding: the host fields describe the collector, host.id is absent.
    records = []
    for doc in (RAW_START, RAW_INBOUND):
        forwarded = copy.deepcopy(doc)
        forwarded["host"] = {"name": "wec-collector-01"}
        records.append(raw(forwarded))
    pairs, extractor = run(records)
    assert pairs == []
    assert extractor.stats.missing_host_id == 2
    assert extractor.stats.no_join_key == 2
    assert run(records, host_id_fallback="winlog.computer_name")[0] == [("1", "3")]


def test_winlogbeat6_legacy_events_match_but_cannot_join_without_host_id() -> None:
    start = fixture("winlogbeat6_sysmon_1_mshta_embedding.json")
    inbound = fixture("winlogbeat6_sysmon_3_mshta_inbound.json")
    pairs, extractor = run([raw(start), raw(inbound)])
    assert pairs == []
    assert extractor.stats.no_join_key == 2
    fallback, _ = run([raw(start), raw(inbound)], host_id_fallback="winlog.computer_name")
    assert len(fallback) == 1


def test_mapped_and_ecs_events_are_not_renormalized() -> None:
    mapped = fixture("winlogbeat7_sysmon_1_mapped.json")
    defend = fixture("defend_process_start.json")
    extractor = CandidateExtractor([V4])
    for doc in (mapped, defend):
        candidates, _ = extractor.extract(raw(doc))
        assert candidates and candidates[0].event == doc
