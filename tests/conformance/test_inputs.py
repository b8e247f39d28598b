"""End to end through the extractor and engine for every input shape: envelopes, raw Sysmon, NXLog, legacy, timing.

Each shipper puts its own layout on Kafka; the rule must alert on the same attack whichever one
carried it (or, where Elasticsearch itself never would, say so), and a layout nobody maps must be
a dead letter with its reason rather than silent noise.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from app.core import Alert, CompiledRule, DetectionOptions, Detector
from tests.support.detection import CURRENT_RULE, RULE, detect
from tests.support.paths import INPUTS

BOM = b"\xef\xbb\xbf"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((INPUTS / name).read_text())


RAW_START = fixture("winlogbeat8_sysmon_1_mshta_embedding.json")
RAW_INBOUND = fixture("winlogbeat8_sysmon_3_mshta_inbound.json")
NXLOG_START = fixture("nxlog_sysmon_1_mshta_embedding.json")
NXLOG_INBOUND = fixture("nxlog_sysmon_3_mshta_inbound.json")


def codes(alert: Alert) -> tuple[str, ...]:
    """The Sysmon event codes of an alert's events, read from its building blocks."""
    return tuple(block["kibana.alert.original_event.code"] for block in alert.documents[:-1])


def run(records: list[bytes], rule: CompiledRule = RULE, **options: Any) -> tuple[list[tuple[str, ...]], Any]:
    found = detect(records, [rule], DetectionOptions(**options))
    return [codes(alert) for alert in found.alerts], found


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


def test_a_json_lines_record_gives_one_rejection_listing_its_bad_lines() -> None:
    """However many lines are bad, one dead letter: a record must not become a flood of them."""
    bad = [b'{"truncated": "mshta.exe', b"plain mshta.exe", b"[1]"]
    record = b"\n".join([raw(RAW_START), *bad * 10, raw(RAW_INBOUND)])
    pairs, found = run([record])
    assert pairs == [("1", "3")]
    (rejection,) = found.rejections
    assert rejection.count == 30 and rejection.raw == record
    assert rejection.lines == tuple(range(2, 22))  # the first 20 bad lines, numbered from 1
    assert rejection.reason in ("invalid_json", "not_an_object")
    assert "30 bad line(s)" in rejection.detail and ", ..." in rejection.detail


def test_a_byte_order_mark_is_ignored_on_a_record_and_on_each_line() -> None:
    record = BOM + raw(RAW_START) + b"\n" + BOM + raw(RAW_INBOUND)
    assert run([record])[0] == [("1", "3")]
    pairs, found = run([BOM + raw(RAW_START), BOM + raw(RAW_INBOUND)])
    assert pairs == [("1", "3")] and not found.rejections


def test_logstash_plain_codec_line_is_rejected_with_a_reason() -> None:
    plain = b"2024-05-01T10:15:02.140Z ws-fin-042 %{message} mshta.exe"
    pairs, found = run([plain])
    assert pairs == []
    (rejection,) = found.rejections
    assert (rejection.reason, rejection.raw) == ("invalid_json", plain)
    assert "not JSON" in rejection.detail and "NDJSON" in rejection.detail


@pytest.mark.parametrize("record", [b"[1, 2]", b'"mshta.exe"', b"42", b"null", b"true"])
def test_non_object_json_is_rejected(record: bytes) -> None:
    assert run([record])[1].reasons() == ["not_an_object"]


def test_elastic_agent_raw_sysmon_is_detected() -> None:
    start = fixture("agent_sysmon_1_mshta_embedding.json")
    inbound = copy.deepcopy(RAW_INBOUND)
    inbound.pop("@metadata")
    inbound["data_stream"] = start.get("data_stream")
    inbound["host"] = start["host"]
    inbound["winlog"]["event_data"]["ProcessGuid"] = start["winlog"]["event_data"]["ProcessGuid"]
    inbound["winlog"]["event_data"]["UtcTime"] = "2024-05-01 10:15:30.000"
    assert run([raw(start), raw(inbound)])[0] == [("1", "3")]


def test_nxlog_sysmon_is_mapped_but_joins_only_with_a_host_id_fallback() -> None:
    """NXLog sends no host.id: in Elasticsearch these events would never join; host.name is opt-in."""
    records = [raw(NXLOG_START), raw(NXLOG_INBOUND)]
    pairs, found = run(records)
    assert pairs == [] and not found.rejections
    assert found.extract.no_join_key == 2 and found.extract.missing_host_id == 2
    assert run(records, host_id_fallback="host.name")[0] == [("1", "3")]
    assert run(records[::-1], host_id_fallback="winlog.computer_name")[0] == [("1", "3")]


def test_a_windows_event_in_an_unknown_layout_is_a_dead_letter_not_noise() -> None:
    splunk = {
        "EventCode": 1,
        "ComputerName": "ws-fin-042",
        "SourceName": "Microsoft-Windows-Sysmon",
        "Image": "C:\\Windows\\System32\\mshta.exe",
        "CommandLine": "mshta.exe -Embedding",
    }
    pairs, found = run([raw(splunk)])
    assert pairs == []
    (rejection,) = found.rejections
    assert rejection.reason == "unknown_layout" and "NXLog" in rejection.detail
    # An NXLog record of an event the rules do not read is a known layout: noise, not a dead letter.
    assert run([raw({**NXLOG_START, "EventID": 11})])[1].rejections == []


def test_lethalhta_timing_is_silent_by_default_and_caught_with_an_order_tolerance() -> None:
    # The public capture: EID 3's UtcTime is 3.975 s before EID 1's, though written 1.2 s after it.
    start = with_event_data(RAW_START, UtcTime="2019-07-05 14:08:15.730")
    start["@timestamp"] = "2019-07-05T14:08:15.900Z"
    inbound = with_event_data(RAW_INBOUND, UtcTime="2019-07-05 14:08:11.755")
    inbound["@timestamp"] = "2019-07-05T14:08:17.100Z"
    records = [raw(start), raw(inbound)]
    assert run(records)[0] == []  # Elasticsearch parity: the rule stays silent on this capture
    assert run(records, order_tolerance_ms=5000)[0] == [("1", "3")]
    assert run(records, order_tolerance_ms=3000)[0] == []


def test_v4_does_not_filter_loopback_on_sysmon_data_but_current_version_does() -> None:
    loopback = with_event_data(RAW_INBOUND, SourceIp="127.0.0.1", DestinationIp="127.0.0.1")
    records = [raw(RAW_START), raw(loopback)]
    # v4 tests source.address, which the Sysmon mapping never sets: the loopback connection alerts.
    assert run(records, RULE)[0] == [("1", "3")]
    assert run(records, CURRENT_RULE)[0] == []
    ipv6 = with_event_data(RAW_INBOUND, SourceIp="0:0:0:0:0:0:0:1", SourceIsIpv6="true")
    assert run([raw(RAW_START), raw(ipv6)], CURRENT_RULE)[0] == []
    assert run([raw(RAW_START), raw(RAW_INBOUND)], CURRENT_RULE)[0] == [("1", "3")]


def test_missing_host_id_never_joins_unless_a_fallback_is_chosen() -> None:
    # Windows Event Forwarding: the host fields describe the collector, host.id is absent.
    records = []
    for doc in (RAW_START, RAW_INBOUND):
        forwarded = copy.deepcopy(doc)
        forwarded["host"] = {"name": "wec-collector-01"}
        records.append(raw(forwarded))
    pairs, found = run(records)
    assert pairs == []
    assert found.extract.missing_host_id == 2
    assert found.extract.no_join_key == 2
    assert run(records, host_id_fallback="winlog.computer_name")[0] == [("1", "3")]


def test_winlogbeat6_legacy_events_match_but_cannot_join_without_host_id() -> None:
    start = fixture("winlogbeat6_sysmon_1_mshta_embedding.json")
    inbound = fixture("winlogbeat6_sysmon_3_mshta_inbound.json")
    pairs, found = run([raw(start), raw(inbound)])
    assert pairs == []
    assert found.extract.no_join_key == 2
    assert run([raw(start), raw(inbound)], host_id_fallback="winlog.computer_name")[0] == [("1", "3")]


def test_mapped_and_ecs_events_are_not_renormalized() -> None:
    """An event already in ECS travels as it came: its candidate carries the very bytes it was read as."""
    extractor = Detector([RULE]).extractor
    for name in ("winlogbeat7_sysmon_1_mapped.json", "defend_process_start.json"):
        doc = fixture(name)
        candidates, rejections = extractor.extract(raw(doc))
        assert len(candidates) == 1 and not rejections
        assert candidates[0].event == doc and candidates[0].event_json == raw(doc)
