"""Edge cases of Elasticsearch parity, each run through the engine and the oracle with its expected alerts.

Every row is a few events in arrival order and the sequences Elasticsearch returns over them
(named by each event's ``labels.name``), plus the records that must be rejected. The product
(``tests.support.detection.detect``: extractor, engine, alert builder) must give exactly those
alerts and rejections; the oracle (``tests.support.oracle``, written without the engine's code)
must give the same sequences over what Elasticsearch would have indexed (the ECS twins of raw
layouts), and, where both read the same documents, the same alert ids.

The rows cover where a detector most easily drifts from Elasticsearch: how ``@timestamp`` text
becomes a millisecond (fraction digits, offsets, epoch millis, what is not a date), how a ``long``
field reads text, keywords beyond ``ignore_above``, what one event is (content, not ``event.id``),
how ``process.args`` is split from a command line, and which shipper layouts are mapped.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from app.core import Alert, DetectionOptions
from tests.support import oracle
from tests.support.detection import RULE, detect, mshta_inbound, mshta_start
from tests.support.paths import INPUTS

BOM = b"\xef\xbb\xbf"
Record = bytes | dict[str, Any]


@dataclass(frozen=True)
class Row:
    """Events in arrival order, the sequences Elasticsearch returns (by ``labels.name``), rejections.

    ``indexed``: what Elasticsearch would have indexed, for the oracle, when it is not ``records``
    themselves (raw layouts: their ECS twins); ``None`` when the row is an opt-in departure from
    Elasticsearch that the oracle cannot state. ``options``: detection options of the row.
    """

    name: str
    records: list[Record]
    expected: list[tuple[str, ...]]
    rejected: list[str] = field(default_factory=list)
    indexed: list[dict[str, Any]] | None | bool = True  # True: the records themselves
    options: dict[str, Any] = field(default_factory=dict)


def start(name: str, timestamp: Any, entity: str = "e1", **fields: Any) -> dict[str, Any]:
    """An mshta.exe COM server start named ``name``, at ``timestamp`` written as given."""
    event = mshta_start(f"id-{name}", entity=entity, **fields)
    return {**event, "@timestamp": timestamp, "labels": {"name": name}}


def inbound(name: str, timestamp: Any, entity: str = "e1", **fields: Any) -> dict[str, Any]:
    """An inbound TCP connection of mshta.exe between dynamic ports, named ``name``."""
    event = mshta_inbound(f"id-{name}", entity=entity, **fields)
    return {**event, "@timestamp": timestamp, "labels": {"name": name}}


def resent(event: dict[str, Any], run: str) -> dict[str, Any]:
    """``event`` as its Beat sends it again after a restart: new run id, read time, envelope; same event."""
    again = copy.deepcopy(event)
    again["agent"] = {**again.get("agent", {}), "ephemeral_id": run}
    again["event"]["created"] = "2024-05-14T09:00:00.000Z"
    again["event"]["ingested"] = "2024-05-14T09:00:01.000Z"
    again["@metadata"] = {"beat": "winlogbeat", "version": "8.13.4", "pipeline": f"routing-{run}"}
    return again


def with_agent(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "agent": {"id": "beat-1", "ephemeral_id": "run-1"}}


# -- raw Sysmon records (Winlogbeat 8) and NXLog, with their ECS twins -------------------------

HOST_ID = "7c0e5d2a-91b4-4f36-a8e1-3b5f0d9c6e21"
MSHTA_GUID = "{5b8e21c4-1a36-6632-b402-000000002c00}"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((INPUTS / f"{name}.json").read_text())


def raw_start(name: str, command_line: str) -> dict[str, Any]:
    record = fixture("winlogbeat8_sysmon_1_mshta_embedding")
    record["winlog"]["event_data"]["CommandLine"] = command_line
    return {**record, "labels": {"name": name}}


def raw_inbound(name: str) -> dict[str, Any]:
    return {**fixture("winlogbeat8_sysmon_3_mshta_inbound"), "labels": {"name": name}}


def twin_start(name: str, args: list[str]) -> dict[str, Any]:
    """What the Sysmon pipeline indexes for the fixture's process start, ``process.args`` as given."""
    return {
        "@timestamp": "2024-05-01T10:15:02.138Z",
        "event": {"category": ["process"], "type": ["start"], "code": "1"},
        "host": {"id": HOST_ID},
        "process": {"name": "mshta.exe", "entity_id": MSHTA_GUID, "args": args},
        "labels": {"name": name},
    }


def twin_inbound(name: str) -> dict[str, Any]:
    return {
        "@timestamp": "2024-05-01T10:15:03.407Z",
        "event": {"category": ["network"], "type": ["start", "connection", "protocol"], "code": "3"},
        "host": {"id": HOST_ID},
        "process": {"name": "mshta.exe", "entity_id": MSHTA_GUID},
        "network": {"direction": "ingress", "transport": "tcp"},
        "source": {"ip": "10.20.30.42", "port": 49168},
        "destination": {"ip": "10.20.30.7", "port": 55683},
        "labels": {"name": name},
    }


def args_row(name: str, command_line: str, args: list[str], alerts: bool) -> Row:
    return Row(
        f"args: {name}",
        [raw_start("s", command_line), raw_inbound("n")],
        [("s", "n")] if alerts else [],
        indexed=[twin_start("s", args), twin_inbound("n")],
    )


def nxlog(name: str, fixture_name: str) -> dict[str, Any]:
    return {**fixture(fixture_name), "labels": {"name": name}}


MSHTA = "C:\\Windows\\System32\\mshta.exe"

ROWS = [
    # -- dates: milliseconds, as Elasticsearch indexes a `date` ---------------------------------
    Row(
        "date: 7 digits, 60,000.9999 ms raw is 60,000 ms indexed: matches",
        [start("s", "2024-05-14T08:00:00.0000000Z"), inbound("n", "2024-05-14T08:01:00.0009999Z")],
        [("s", "n")],
    ),
    Row(
        "date: 7 digits, 60,000.0001 ms raw is 60,001 ms indexed: no match",
        [start("s", "2024-05-14T08:00:00.0009999Z"), inbound("n", "2024-05-14T08:01:00.0010000Z")],
        [],
    ),
    Row(
        "date: 9 digits at the maxspan edge: matches",
        [start("s", "2024-05-14T08:00:00.000000000Z"), inbound("n", "2024-05-14T08:01:00.000999999Z")],
        [("s", "n")],
    ),
    Row(
        "date: 9 digits one nanosecond over a minute, one millisecond over once truncated: no match",
        [start("s", "2024-05-14T08:00:00.000999999Z"), inbound("n", "2024-05-14T08:01:00.001000000Z")],
        [],
    ),
    Row(
        "date: in one millisecond, arrival orders (the later raw digits arriving first do not pair)",
        [inbound("n", "2024-05-14T08:00:00.0009Z"), start("s", "2024-05-14T08:00:00.0001Z")],
        [],
    ),
    Row(
        "date: in one millisecond, the start arriving first pairs",
        [start("s", "2024-05-14T08:00:00.0009Z"), inbound("n", "2024-05-14T08:00:00.0001Z")],
        [("s", "n")],
    ),
    Row(
        "date: a space instead of T is not a date",
        [start("s", "2024-05-14 08:00:00Z"), inbound("n", "2024-05-14T08:00:10Z")],
        [],
        ["invalid_timestamp"],
    ),
    Row(
        "date: offsets +hh, +hhmm and +hh:mm name the same instants",
        [
            start("s", "2024-05-14T10:00:00+02"),
            inbound("n", "2024-05-14T09:00:30+0100"),
            start("s2", "2024-05-14T08:05:00+00:00", entity="e2"),
            inbound("n2", "2024-05-14T03:36:00-04:30", entity="e2"),
        ],
        [("s", "n"), ("s2", "n2")],
    ),
    Row(
        "date: an offset puts the connection before the start",
        [start("s", "2024-05-14T08:00:00-00:30"), inbound("n", "2024-05-14T08:00:30Z")],
        [],
    ),
    Row(
        "date: an offset beyond 18 hours is not a date",
        [start("s", "2024-05-14T08:00:00+19:00"), inbound("n", "2024-05-14T08:00:30Z")],
        [],
        ["invalid_timestamp"],
    ),
    Row(
        "date: epoch millis as a number and as digits, the fraction dropped",
        [
            start("s", 1715673600000),
            inbound("n", "1715673660000.9"),
            start("s2", "1715673600000", entity="e2"),
            inbound("n2", 1715673660001, entity="e2"),
        ],
        [("s", "n")],
    ),
    Row(
        "date: fullwidth digits are not a date",
        [start("s", "\uff12\uff10\uff12\uff14-05-14T08:00:00Z"), inbound("n", "2024-05-14T08:00:10Z")],
        [],
        ["invalid_timestamp"],
    ),
    Row(
        "date: seconds and fraction are optional (08:00 to 08:01 is exactly the maxspan)",
        [start("s", "2024-05-14T08:00Z"), inbound("n", "2024-05-14T08:01Z")],
        [("s", "n")],
    ),
    Row(
        "date: a comma separates the fraction too",
        [start("s", "2024-05-14T08:00:00,999Z"), inbound("n", "2024-05-14T08:01:00,999Z")],
        [("s", "n")],
    ),
    Row(
        "date: a year alone and a year-month are dates (midnight UTC of their first day)",
        [start("s", "2024"), inbound("n", "2024-01-01T00:00:30Z"), start("s2", "2024-05", entity="e2")]
        + [inbound("n2", "2024-05-01T00:01:00.001Z", entity="e2")],
        [("s", "n")],
    ),
    Row(
        "date: a four-digit JSON number is a year, not epoch milliseconds",
        [start("s", 2024), inbound("n", "2024-01-01T00:00:45Z"), start("s2", 1500, entity="e2")]
        + [inbound("n2", "1970-01-01T00:00:02Z", entity="e2")],
        [("s", "n")],
    ),
    Row(
        "date: region ids and prefixed offsets as zones",
        [start("s", "2024-07-01T10:00:00Europe/Paris"), inbound("n", "2024-07-01T08:00:59.999UTC")]
        + [
            start("s2", "2024-07-01T10:00:00GMT+2", entity="e2"),
            inbound("n2", "2024-07-01T08:01:00.001Z", entity="e2"),
        ],
        [("s", "n")],
    ),
    # -- long fields: Long.parseLong, else BigDecimal truncated toward zero ---------------------
    *(
        Row(
            f"long: source.port {port!r} {'is 49152' if alerts else 'has no value'}",
            [start("s", "2024-05-14T08:00:00Z"), inbound("n", "2024-05-14T08:00:10Z", source__port=port)],
            [("s", "n")] if alerts else [],
        )
        for port, alerts in [
            ("+49152", True),
            ("4.9152e4", True),
            ("49152.7", True),
            (49152.7, True),
            (" 49152", False),
            ("49152 ", False),
            ("49151.9", False),
            ("9223372036854775808", False),
            ("1e19", False),
            ("0x C000", False),
        ]
    ),
    # -- keywords beyond ignore_above (1,024 UTF-16 code units) have no value ------------------
    *(
        Row(
            f"keyword: a join key of {name} {'joins' if alerts else 'has no value, joins nothing'}",
            [start("s", "2024-05-14T08:00:00Z", entity=value), inbound("n", "2024-05-14T08:00:10Z", entity=value)],
            [("s", "n")] if alerts else [],
        )
        for name, value, alerts in [
            ("1,024 units", "e" * 1024, True),
            ("1,025 units", "e" * 1025, False),
            ("512 astral characters (1,024 units)", "\U0001f600" * 512, True),
            ("513 astral characters (1,026 units)", "\U0001f600" * 513, False),
            ("1,024 characters with one astral (1,025 units)", "e" * 1023 + "\U0001f600", False),
        ]
    ),
    Row(
        "keyword: an argument beyond ignore_above is no value, the others still are",
        [
            start("s", "2024-05-14T08:00:00Z", process__args=["mshta.exe", "x" * 1025, "-Embedding"]),
            inbound("n", "2024-05-14T08:00:10Z"),
        ],
        [("s", "n")],
    ),
    # -- what one event is: its content, not event.id -------------------------------------------
    Row(
        "ids: two documents sharing event.id are two events (the later start pairs)",
        [
            start("s1", "2024-05-14T08:00:00Z", event__id="shared"),
            start("s2", "2024-05-14T08:00:05Z", event__id="shared"),
            inbound("n", "2024-05-14T08:00:10Z", event__id="shared"),
        ],
        [("s2", "n")],
    ),
    Row(
        "ids: a re-delivered copy is the same event, before or after its alert",
        [
            start("s", "2024-05-14T08:00:00Z"),
            start("s", "2024-05-14T08:00:00Z"),
            inbound("n", "2024-05-14T08:00:10Z"),
            start("s", "2024-05-14T08:00:00Z"),
            inbound("n", "2024-05-14T08:00:10Z"),
        ],
        [("s", "n")],
    ),
    Row(
        "ids: a Beat's re-send after its restart is the same event (it does not take the connection)",
        [
            with_agent(start("s", "2024-05-14T08:00:00Z")),
            with_agent(inbound("n", "2024-05-14T08:00:10Z")),
            resent(with_agent(start("s", "2024-05-14T08:00:00Z")), "run-2"),
            with_agent(inbound("n2", "2024-05-14T08:00:20Z")),
        ],
        [("s", "n")],
    ),
    # -- process.args as Elastic's Sysmon pipeline splits the command line ----------------------
    args_row("plain", f"{MSHTA} -Embedding", [MSHTA, "-Embedding"], True),
    args_row("quoted program", f'"{MSHTA}" -Embedding', [MSHTA, "-Embedding"], True),
    args_row("quote ends no argument", f'"{MSHTA}"-Embedding', [f"{MSHTA}-Embedding"], False),
    args_row("leading blanks skipped", f"  \t{MSHTA} -Embedding", [MSHTA, "-Embedding"], True),
    args_row("quoted argument", f'{MSHTA} "-Embedding"', [MSHTA, "-Embedding"], True),
    args_row("doubled quote inside quotes", f'{MSHTA} "-Embedding""x', [MSHTA, '-Embedding"x'], False),
    args_row("escaped quotes are literal", f'{MSHTA} \\"-Embedding\\"', [MSHTA, '"-Embedding"'], False),
    args_row("tab separates", f"{MSHTA}\t-Embedding", [MSHTA, "-Embedding"], True),
    # -- layouts -----------------------------------------------------------------------------
    Row(
        "layout: NXLog Sysmon 1 and 3 are mapped, but carry no host.id: no join, as in Elasticsearch",
        [nxlog("s", "nxlog_sysmon_1_mshta_embedding"), nxlog("n", "nxlog_sysmon_3_mshta_inbound")],
        [],
        indexed=[{**twin_start("s", [MSHTA, "-Embedding"]), "host": {}}, {**twin_inbound("n"), "host": {}}],
    ),
    Row(
        "layout: NXLog joins on host.name with the opt-in fallback (a departure from Elasticsearch)",
        [nxlog("s", "nxlog_sysmon_1_mshta_embedding"), nxlog("n", "nxlog_sysmon_3_mshta_inbound")],
        [("s", "n")],
        indexed=None,
        options={"host_id_fallback": "host.name"},
    ),
    Row(
        "layout: a Windows event in an unknown layout is rejected, not silently unmatched",
        [
            {"EventCode": 1, "Image": MSHTA, "CommandLine": f"{MSHTA} -Embedding", "labels": {"name": "s"}},
            raw_inbound("n"),
        ],
        [],
        ["unknown_layout"],
        indexed=[twin_inbound("n")],
    ),
    Row(
        "layout: a byte-order mark before a record is ignored",
        [BOM + orjson.dumps(raw_start("s", f"{MSHTA} -Embedding")), BOM + orjson.dumps(raw_inbound("n"))],
        [("s", "n")],
        indexed=[twin_start("s", [MSHTA, "-Embedding"]), twin_inbound("n")],
    ),
    Row(
        "layout: a byte-order mark on each line of a json_lines record is ignored",
        [BOM + orjson.dumps(raw_start("s", f"{MSHTA} -Embedding")) + b"\n" + BOM + orjson.dumps(raw_inbound("n"))],
        [("s", "n")],
        indexed=[twin_start("s", [MSHTA, "-Embedding"]), twin_inbound("n")],
    ),
]


def names(alert: Alert) -> tuple[str, ...]:
    """The ``labels.name`` of an alert's events, read from its building blocks."""
    return tuple(block["labels"]["name"] for block in alert.documents[:-1])


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_the_engine_gives_elasticsearchs_answer(row: Row) -> None:
    found = detect(row.records, [RULE], DetectionOptions(**row.options))
    assert [names(alert) for alert in found.alerts] == row.expected
    assert found.reasons() == row.rejected
    assert not found.suppressed


@pytest.mark.parametrize("row", [row for row in ROWS if row.indexed is not None], ids=lambda row: row.name)
def test_the_oracle_gives_the_same_answer(row: Row) -> None:
    indexed = row.records if row.indexed is True else row.indexed
    assert isinstance(indexed, list) and all(isinstance(doc, dict) for doc in indexed)
    label = {oracle.identity(doc): doc["labels"]["name"] for doc in indexed}
    sequences = oracle.es_sequences(RULE, indexed)
    assert [tuple(label[eid] for eid in sequence.event_ids) for sequence in sequences] == row.expected
    if row.indexed is True:  # the same documents: the product names the alerts as the oracle does
        found = detect(row.records, [RULE], DetectionOptions(**row.options))
        assert found.ids() == [oracle.alert_id(RULE, sequence) for sequence in sequences]


def test_the_table_covers_every_kind_of_edge() -> None:
    kinds = {row.name.split(":")[0] for row in ROWS}
    assert kinds == {"date", "long", "keyword", "ids", "args", "layout"}
    assert sum(1 for row in ROWS if row.expected) >= 15 and sum(1 for row in ROWS if not row.expected) >= 15
