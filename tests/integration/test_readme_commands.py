"""Every command the README shows works on a fresh clone: each is run here, or by the test named for it.

A README line that breaks is the worst bug a newcomer can meet, so the commands are read from the
README itself (its fenced blocks), not copied into the tests: editing a command without keeping it
working fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.support.broker import read_topic
from tests.support.worker import free_port
from tests.unit.test_rule_files import upstream_folder

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
HELM = ROOT / ".tools" / "bin" / "helm"

# Commands run by another test (the one named), or by CI itself.
ELSEWHERE = {
    "make demo": "tests/integration/test_first_contact.py::test_the_demo_detects_both_attacks_and_prints_plain_text",
    "make test": ".ci/run (CI runs exactly this)",
    ".venv/bin/python -m app broker": "tests/integration/test_first_contact.py::test_the_broker_command_says_how_to_use_it_and_stops_on_ctrl_c",
    "docker build": "tests/deploy/test_dockerfile.py (hadolint: no Docker engine here)",
    "docker push": "tests/deploy/test_dockerfile.py (no registry here)",
    "helm test": "tests/deploy/test_chart.py (the chart's test pod is rendered and validated; no cluster here)",
}
# Commands run below.
HERE = {
    ".venv/bin/python -m app replay --format summary": "test_the_replay_command",
    ".venv/bin/python -m app coverage": "test_the_coverage_command",
    "EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS=": "test_by_hand_against_the_development_broker",
    ".venv/bin/python -m eqlstream_dev.produce": "test_by_hand_against_the_development_broker",
    "helm install": "test_the_helm_install_renders_as_written",
}


def commands() -> list[str]:
    """The shell commands of the README's fenced blocks: continuation lines joined, comments and synopses left out."""
    found = []
    for block in re.findall(r"^```\n(.*?)^```", README, re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = line.split("  #")[0].strip()
            if not command or command.startswith(
                (
                    "#",
                    "ALERT",
                    "events read",
                    "rejected",
                    "candidates:",
                    "parsed",
                    "sequences:",
                    "alerts:",
                    "rate:",
                    "broker ",
                    "producing",
                    "service",
                    "2 of 2",
                    "NDJSON",
                    "│",
                    "▼",
                    "app/core",
                    "[service",
                    "rejected",
                )
            ):
                continue
            if "[" in command and "]" in command and "--" in command:  # a synopsis: `replay [--rule PATH] ...`
                continue
            found.append(command)
    return found


def test_every_command_in_the_readme_is_exercised() -> None:
    listed = commands()
    assert len(listed) >= 8, listed
    for command in listed:
        covered = [prefix for prefix in [*ELSEWHERE, *HERE] if command.startswith(prefix)]
        assert covered, f"the README shows `{command}`, which no test runs: add it here"
    for test in ELSEWHERE.values():
        if "::" in test:
            path, name = test.split("::")
            assert f"def {name}(" in (ROOT / path).read_text(), test


def _command(prefix: str) -> str:
    (found,) = [command for command in commands() if command.startswith(prefix)]
    return found


def test_the_replay_command() -> None:
    command = _command(".venv/bin/python -m app replay --format summary")
    args = shlex.split(command)
    result = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 2
    # The README's sample summary is what it prints (the rate aside).
    sample = re.search(r"```\n(events read: .*?)\nrate: ", README, re.DOTALL)
    assert sample is not None
    assert result.stderr.decode().startswith(sample.group(1))


def test_the_coverage_command(tmp_path: Path) -> None:
    """The README's coverage command on a folder in detection-rules' layout (the user's copy stands
    in for ``~/detection-rules/rules/windows``, which the project does not ship)."""
    *args, folder = shlex.split(_command(".venv/bin/python -m app coverage"))
    assert folder.endswith("/rules/windows")
    rules = upstream_folder(tmp_path)
    result = subprocess.run([sys.executable, *args[1:], str(rules)], cwd=ROOT, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert [line.split()[0] for line in result.stdout.decode().splitlines()] == ["supported", "unsupported"]
    assert result.stderr.decode().startswith("1 of 2 EQL sequence rules supported")


@pytest.mark.timeout(180)
def test_by_hand_against_the_development_broker(tmp_path: Path) -> None:
    """The README's "Try it by hand": the broker command, the service with the settings shown, the file produced."""
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "app", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    service = None
    try:
        assert broker.stdout is not None and "listening" in broker.stdout.readline().decode()
        run_line = _command("EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS=").replace("127.0.0.1:9092", f"127.0.0.1:{port}")
        words = shlex.split(run_line)
        environment = dict(word.split("=", 1) for word in words if re.match(r"EQLSTREAM_\w+=", word))
        program = [word for word in words if not re.match(r"EQLSTREAM_\w+=", word)]
        assert program[:3] == [".venv/bin/python", "-m", "app"]
        environment |= {"EQLSTREAM_WEB_PORT": "0", "EQLSTREAM_DATA_DIR": str(tmp_path / "state")}
        with (tmp_path / "service.log").open("wb") as log:
            service = subprocess.Popen(
                [sys.executable, *program[1:]], cwd=tmp_path, env={**os.environ, **environment}, stdout=log, stderr=log
            )
        time.sleep(10)  # the groups form; what is produced meanwhile waits in the topic anyway
        produce_line = _command(".venv/bin/python -m eqlstream_dev.produce").replace(
            "127.0.0.1:9092", f"127.0.0.1:{port}"
        )
        produced = subprocess.run(
            [sys.executable, *shlex.split(produce_line)[1:]], cwd=ROOT, capture_output=True, check=False, timeout=60
        )
        assert produced.returncode == 0, produced.stderr.decode()
        messages = read_topic(f"127.0.0.1:{port}", "eqlstream-alerts", 8, 6, timeout=90)
        shells = [orjson.loads(m.value()) for m in messages if orjson.loads(m.value())["kibana.alert.depth"] == 2]
        assert len(shells) == 2, (tmp_path / "service.log").read_text()[-3000:]
    finally:
        for process in (service, broker):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)


def test_the_helm_install_renders_as_written() -> None:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make tools`", pytrace=False)
    args = shlex.split(_command("helm install"))
    assert args[:2] == ["helm", "install"]
    release, chart, *options = args[2:]
    template = [str(HELM), "template", release, str(ROOT / chart), *options]
    result = subprocess.run(template, capture_output=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert b"registry.example.com/eqlstream" in result.stdout
    assert b"broker-1:9092,broker-2:9092" in result.stdout
