"""scripts/install-tools.sh: a run on a machine that has the tools is quiet and changes nothing
(`make test` runs it every time), and it installs the pinned versions."""

from __future__ import annotations

import os

from tests.deploy.helpers import REPO, TOOLS, run, tool


def test_a_second_run_is_quiet_and_changes_nothing() -> None:
    entry_points = [
        tool(name) for name in ("helm", "hadolint", "yamllint", "kubernetes-validate", "promtool", "stunnel")
    ]
    stamps = {path: os.stat(path).st_mtime_ns for path in [*entry_points, TOOLS / "venv" / ".pins"]}
    result = run(["env", f"TOOLS_DIR={TOOLS}", "bash", str(REPO / "scripts" / "install-tools.sh")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert {path: os.stat(path).st_mtime_ns for path in stamps} == stamps


def test_pinned_versions_are_installed() -> None:
    assert run([tool("helm"), "version", "--short"]).stdout.startswith("v3.19.0+")
    assert "2.15.1" in run([tool("hadolint"), "--version"]).stdout
    assert run([tool("yamllint"), "--version"]).stdout.strip() == "yamllint 1.38.0"
