"""Runs the real deployment checkers (helm, kubernetes-validate, hadolint, promtool, yamllint and
the @kubernetes-models CRD schemas) that ``scripts/install-tools.sh`` puts in ``.tools/``.

A missing tool fails the test with the command that installs it: a silently skipped check is
how a broken chart reaches a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("TOOLS_DIR", REPO / ".tools"))
CHART = REPO / "helm" / "eqlstream"
CI_VALUES = sorted((REPO / "helm" / "ci").glob("*.yaml"))
CRD_VALIDATOR = Path(__file__).with_name("validate-crds.mjs")
# A real rule file for the values that mount rules from a ConfigMap (helm --set-file).
RULE_FILE = REPO / "app" / "core" / "rule" / "files" / "incoming_dcom_lateral_movement_via_mshta_current.toml"
EXTRA_ARGS = {"mode-all.yaml": ["--set-file", f"rules.files.mshta\\.toml={RULE_FILE}"]}
# The image the CI values files name: the chart has no default (nobody publishes one).
IMAGE_REPOSITORY = "registry.example.com/security/eqlstream"


def tool(name: str) -> str:
    """The path of a checker in .tools/bin, or a failure that says how to get it."""
    path = TOOLS / "bin" / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make tools` (bash scripts/install-tools.sh)", pytrace=False)
    return str(path)


def node() -> str:
    """Node.js, which runs the CRD validators."""
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is missing: the CRD validators need Node.js 20 or later", pytrace=False)
    if not (TOOLS / "npm" / "node_modules" / "@kubernetes-models").is_dir():
        pytest.fail(f"{TOOLS / 'npm'} is missing: run `make tools` (bash scripts/install-tools.sh)", pytrace=False)
    return path


def run(command: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a checker and capture what it says (never raises on a non-zero exit)."""
    return subprocess.run(list(command), input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO)


def load_yaml(text: str) -> list[Any]:
    """Every document of a YAML text, parsed by the tools' own Python (PyYAML comes with
    kubernetes-validate there; the project's environment does not need it)."""
    result = run(
        [
            str(TOOLS / "venv" / "bin" / "python"),
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ],
        stdin=text,
    )
    if result.returncode != 0:
        if not (TOOLS / "venv" / "bin" / "python").exists():
            pytest.fail(f"{TOOLS / 'venv'} is missing: run `make tools` (bash scripts/install-tools.sh)", pytrace=False)
        raise AssertionError(f"YAML does not parse:\n{result.stderr}")
    return json.loads(result.stdout)


def values_args(values_file: Path | None) -> list[str]:
    """helm arguments that apply one CI values file (and what that file needs besides)."""
    if values_file is None:
        return []
    return ["--values", str(values_file), *EXTRA_ARGS.get(values_file.name, [])]


@dataclass
class Rendered:
    """A rendered chart: the YAML helm wrote and its documents, parsed."""

    text: str
    documents: list[dict[str, Any]]
    validated_custom_resources: list[str]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        """The single object of a kind whose name ends with ``name_suffix``."""
        found = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, (
            f"expected one {kind} named *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
        )
        return found[0]


def helm_template(*args: str, image: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template eqlstream <chart> ARGS`` (release name ``eqlstream``, namespace ``detection``).

    ``image``: without a values file, set the one value the chart has no default for, as every CI
    values file does (``--set`` would override a values file's, so it is not added to those).
    """
    extra = ["--set", f"image.repository={IMAGE_REPOSITORY}"] if image and "--values" not in args else []
    return run([tool("helm"), "template", "eqlstream", str(CHART), "--namespace", "detection", *extra, *args])


def render(*args: str, image: bool = True) -> Rendered:
    """Render the chart, fail on any error, and parse it through the CRD validator (which checks
    every custom resource against its schema on the way). ``image`` as for ``helm_template``."""
    result = helm_template(*args, image=image)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    parsed = run([node(), str(CRD_VALIDATOR), str(TOOLS / "npm")], stdin=result.stdout)
    assert parsed.returncode == 0, f"custom resources do not match their CRD schemas:\n{parsed.stderr}"
    data = json.loads(parsed.stdout)
    return Rendered(result.stdout, data["documents"], data["validated"])
