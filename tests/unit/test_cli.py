"""The replay CLI: formats, inputs, bad lines and errors."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.cli import main
from tests.support.paths import ROOT
from tests.unit.test_rule_files import upstream_folder

START = {
    "@timestamp": "2024-05-01T10:00:00.1234567Z",
    "event": {"id": "ev-1", "category": ["process"], "type": ["start"]},
    "host": {"id": "h-1", "name": "ws-0012"},
    "process": {"name": "mshta.exe", "entity_id": "ent-1", "args": ["C:\\Windows\\System32\\mshta.exe", "-Embedding"]},
    "labels": {"campaign": "lethal"},
}
CONNECT = {
    "@timestamp": "2024-05-01T10:00:30Z",
    "event": {"id": "ev-2", "category": ["network"], "type": ["start"]},
    "host": {"id": "h-1", "name": "ws-0012"},
    "process": {"name": "mshta.exe", "entity_id": "ent-1"},
    "network": {"direction": "ingress", "transport": "tcp"},
    "source": {"ip": "10.1.2.3", "port": 50123},
    "destination": {"ip": "10.1.2.9", "port": 55683},
}
NOISE = {"@timestamp": "2024-05-01T10:00:10Z", "event": {"category": ["file"]}, "host": {"id": "h-1"}}


def lines(*docs: object) -> bytes:
    return b"".join((d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n" for d in docs)


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_bytes(
        lines(START, NOISE, b"this is not json", b"", b'["mshta.exe"]', b'{"truncated": "mshta.exe', CONNECT)
    )
    return path


def test_kibana_format_writes_three_documents(events_file: Path, capsysbinary: pytest.CaptureFixture) -> None:
    assert main(["replay", str(events_file)]) == 0
    out, err = capsysbinary.readouterr()
    docs = [orjson.loads(line) for line in out.splitlines()]
    assert len(docs) == 3
    assert [d["kibana.alert.depth"] for d in docs] == [1, 1, 2]
    assert docs[0]["labels"] == {"campaign": "lethal"}  # fields the rule does not read are kept
    summary = err.decode()
    assert "events read: 6" in summary
    assert "rejected lines: 3 (invalid_json 2, not_an_object 1)" in summary
    assert "sequences: 1" in summary
    assert "alerts: 1" in summary
    assert "events/s" in summary


def test_summary_format(events_file: Path, capsysbinary: pytest.CaptureFixture) -> None:
    assert main(["replay", "--format", "summary", str(events_file)]) == 0
    out = capsysbinary.readouterr().out.decode().splitlines()
    assert len(out) == 1
    assert "HIGH 'Incoming DCOM Lateral Movement via MSHTA' host=ws-0012 process=mshta.exe" in out[0]
    assert "src=10.1.2.3:50123 dst=10.1.2.9:55683 span=29.877s" in out[0]


def test_gzip_and_several_files_in_order(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    first = tmp_path / "a.ndjson.gz"
    first.write_bytes(gzip.compress(lines(START)))
    second = tmp_path / "b.ndjson"
    second.write_bytes(lines(CONNECT))
    assert main(["replay", "--format", "summary", str(first), str(second)]) == 0
    assert len(capsysbinary.readouterr().out.splitlines()) == 1


def test_stdin_via_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "replay", "--format", "summary", "-"],
        input=lines(START, CONNECT),
        capture_output=True,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.count(b"\n") == 1
    assert b"alerts: 1" in result.stderr


def test_order_tolerance_flag(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    early = {**CONNECT, "@timestamp": "2024-05-01T10:00:00Z"}
    late_start = {**START, "@timestamp": "2024-05-01T10:00:03.975Z"}
    path = tmp_path / "lethalhta.ndjson"
    path.write_bytes(lines(late_start, early))
    assert main(["replay", "--format", "summary", str(path)]) == 0
    assert capsysbinary.readouterr().out == b""
    assert main(["replay", "--format", "summary", "--order-tolerance", "5s", str(path)]) == 0
    assert len(capsysbinary.readouterr().out.splitlines()) == 1


def test_unreadable_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", str(tmp_path / "missing.ndjson")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_corrupt_gzip_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_bytes(gzip.compress(lines(START, CONNECT))[:-12] + b"\x00" * 12)  # gzip, by its magic bytes
    assert main(["replay", str(path)]) == 2
    assert f"cannot read {path}" in capsys.readouterr().err


def test_gzip_is_recognised_by_content_not_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A ``.gz`` name on plain text is plain text: here no line is JSON, which the exit status says."""
    path = tmp_path / "misnamed.ndjson.gz"
    path.write_bytes(b"not gzip at all\n")
    assert main(["replay", str(path)]) == 1
    assert "is this NDJSON" in capsys.readouterr().err


def test_bad_rule_file_names_file_and_position(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rule = tmp_path / "bad.toml"
    rule.write_text('[rule]\nname = "x"\nquery = """\nsequence [process where a = 1] [any where true]\n"""\n')
    assert main(["replay", "--rule", str(rule), "-"]) == 2
    err = capsys.readouterr().err
    assert str(rule) in err


def test_invalid_duration_flag_names_the_flag_and_the_units(capsys: pytest.CaptureFixture) -> None:
    assert main(["replay", "--allowed-lateness", "soon", "-"]) == 2
    err = capsys.readouterr().err
    assert "invalid --allowed-lateness (got 'soon')" in err and "(ms, s, m, h or d)" in err


def test_alert_cap_flag_holds_back_alerts_and_says_so(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    second = [
        {**START, "process": {**START["process"], "entity_id": "ent-2"}},
        {**CONNECT, "process": {**CONNECT["process"], "entity_id": "ent-2"}},
    ]
    path = tmp_path / "two.ndjson"
    path.write_bytes(lines(START, CONNECT, *second))
    assert main(["replay", "--format", "summary", "--alert-cap", "1", str(path)]) == 0
    out, err = capsysbinary.readouterr()
    assert len(out.splitlines()) == 1
    assert b"alerts: 1 (held back by the alert cap: 1)" in err


def test_rule_file_warnings_are_logged_and_the_rule_runs(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    from app.core import DEFAULT_RULE_PATH

    rule = tmp_path / "rule.toml"
    text = DEFAULT_RULE_PATH.read_text().replace("[rule]\n", "[rule]\nseverty = 'low'\n", 1)
    rule.write_text(text)
    line = text.splitlines().index("severty = 'low'") + 1
    path = tmp_path / "pair.ndjson"
    path.write_bytes(lines(START, CONNECT))
    assert main(["replay", "--format", "summary", "--rule", str(rule), str(path)]) == 0
    out, err = capsysbinary.readouterr()
    assert len(out.splitlines()) == 1
    assert f"eqlstream: WARNING: {rule}:{line}: unknown key rule.severty ignored".encode() in err


def test_coverage_lists_each_sequence_rule_as_supported_or_why_not(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["coverage", str(upstream_folder(tmp_path))]) == 0
    out, err = capsys.readouterr()
    supported, unsupported = out.splitlines()
    assert supported.split() == ["supported", "a_supported.toml", "Test:", "WMI", "host", "then", "RPC"]
    assert (
        unsupported.startswith("unsupported  b_match.toml  Uses match: ") and "match() is not supported" in unsupported
    )
    assert err.strip() == "1 of 2 EQL sequence rules supported; 2 other rule files (not EQL sequences) not listed"


def test_coverage_json_lines(tmp_path: Path, capsysbinary: pytest.CaptureFixture) -> None:
    assert main(["coverage", "--format", "json", str(upstream_folder(tmp_path))]) == 0
    rows = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert [(row["name"], row["supported"]) for row in rows] == [
        ("Test: WMI host then RPC", True),
        ("Uses match", False),
    ]
    assert rows[1]["reason"].startswith("unsupported EQL: function match() is not supported")


def test_coverage_of_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["coverage", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"eqlstream: {tmp_path / 'nope'}: no such rule file or directory\n"


def test_a_missing_version_lock_is_one_line_naming_it(events_file: Path, capsys: pytest.CaptureFixture) -> None:
    missing = events_file.parent / "version.lock.json"
    assert main(["replay", "--version-lock", str(missing), str(events_file)]) == 2
    assert capsys.readouterr().err.startswith(f"eqlstream: {missing}: cannot read the version lock")
