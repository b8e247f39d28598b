"""The container image recipe: hadolint finds nothing, and the properties the chart relies on
hold (no Docker engine runs here, so the image itself is not built in CI)."""

from __future__ import annotations

import json
import re

from app.settings import ServiceSettings
from tests.deploy.helpers import REPO, run, tool

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_hadolint_finds_nothing() -> None:
    result = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_every_stage_starts_from_the_digest_pinned_base() -> None:
    steps = instructions()
    (base,) = [rest for keyword, rest in steps if keyword == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base)
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) == 2
    assert all(rest.split()[0] == "${PYTHON_IMAGE}" for rest in froms)


def test_wheels_are_built_with_the_constraints() -> None:
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    assert any("pip wheel" in rest and "--constraint constraints.txt" in rest for rest in runs)
    assert any("pip install --no-index" in rest for rest in runs), "the runtime stage installs only the built wheels"


def test_runs_as_uid_10001_under_tini_with_the_service_port() -> None:
    steps = instructions()
    final = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    args = dict(rest.split("=", 1) for keyword, rest in final if keyword == "ARG" and "=" in rest)
    (user,) = [rest for keyword, rest in final if keyword == "USER"]
    assert user == "${UID}:${GID}" and args["UID"] == args["GID"] == "10001"
    (entrypoint,) = [json.loads(rest) for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoint == ["/usr/bin/tini", "--"]
    (command,) = [json.loads(rest) for keyword, rest in final if keyword == "CMD"]
    assert command == ["eqlstream", "run"]
    (port,) = [rest for keyword, rest in final if keyword == "EXPOSE"]
    assert int(port) == ServiceSettings.model_fields["web_port"].default


def test_build_context_holds_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: secrets, .venv, .tools and state stay out of the context"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied = set()
    for keyword, rest in instructions():
        if keyword == "COPY" and "--from" not in rest:
            copied |= {source.rstrip("/").removeprefix("./") for source in rest.split()[:-1]}
    assert copied == allowed
