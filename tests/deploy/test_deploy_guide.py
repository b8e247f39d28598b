"""docs/deploy.md says what an operator types, so its commands are checked as commands.

- The topic table and the ``kafka-topics.sh`` commands give exactly the topics, partition counts and
  settings ``app.service.topics.owned_topics`` creates, with the service's replication factor: an
  administrator who creates them by hand gets topics the service accepts.
- The ``kafka-acls.sh`` commands grant each stage what it uses, and nothing more.
- Every ``helm install`` / ``helm upgrade --install`` renders as written, after the guide's own
  ``kubectl create secret`` and values-file commands, and refers only to Secret keys those create:
  a pod would otherwise wait forever in CreateContainerConfigError. The image it installs is the
  one the guide builds.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.service.topics import changelog_topic, leader_topic, owned_topics, sequence_app_id
from app.settings import ServiceSettings
from tests.deploy.helpers import CHART, REPO, Rendered, load_yaml, render

GUIDE = (REPO / "docs" / "deploy.md").read_text()
SETTINGS = ServiceSettings.model_construct()  # the defaults, which the guide's names and values are
TOPICS = {topic.name: topic for topic in owned_topics(SETTINGS)}
INGEST, SEQUENCE = "User:eqlstream-ingest", "User:eqlstream-sequence"


def section(title: str) -> str:
    """The text of one ``##`` section of the guide (its ``###`` subsections included)."""
    start = GUIDE.index(f"\n## {title}\n")
    end = GUIDE.find("\n## ", start + 1)
    return GUIDE[start : end if end > 0 else None]


@dataclass
class HereDoc:
    path: str
    text: str


def commands(text: str) -> Iterator[list[str] | HereDoc]:
    """Every command of the fenced code blocks, in order: argv lists (continuation lines joined,
    comments dropped) and the files ``cat > FILE <<'EOF'`` writes."""
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S):
        lines = iter(block.splitlines())
        for line in lines:
            heredoc = re.fullmatch(r"cat > (\S+) <<'(\w+)'", line.strip())
            if heredoc:
                body = []
                for inner in lines:
                    if inner == heredoc[2]:
                        break
                    body.append(inner)
                yield HereDoc(heredoc[1], "\n".join(body) + "\n")
                continue
            while line.endswith("\\"):
                line = line[:-1] + next(lines)
            argv = shlex.split(line, comments=True)
            if argv:
                yield argv


def options(argv: list[str], *names: str) -> dict[str, list[str]]:
    """The values of ``--name VALUE`` options (repeatable) of a command line."""
    found: dict[str, list[str]] = {name: [] for name in names}
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag.lstrip("-") in found and flag.startswith("--"):
            found[flag.lstrip("-")].append(value)
    return found


# -- topics ----------------------------------------------------------------------------------


def test_the_topic_commands_create_exactly_what_the_service_would() -> None:
    created = {}
    for argv in commands(section("Topics, consumer groups and ACLs")):
        if isinstance(argv, list) and argv[0] == "kafka-topics.sh":
            assert "--create" in argv
            given = options(argv, "topic", "partitions", "replication-factor", "config")
            (name,) = given["topic"]
            created[name] = (
                int(given["partitions"][0]),
                int(given["replication-factor"][0]),
                dict(item.split("=", 1) for item in given["config"]),
            )
    assert created == {
        name: (topic.partitions, SETTINGS.topic_replication_factor, topic.config) for name, topic in TOPICS.items()
    }


def test_the_topic_table_lists_every_topic_and_setting() -> None:
    text = section("Topics, consumer groups and ACLs")
    header = next(line for line in text.splitlines() if line.startswith("| topic |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            rows[re.match(r"`([^`]+)`", cells["topic"])[1]] = cells
    assert rows.keys() == TOPICS.keys()
    for name, topic in TOPICS.items():
        cell = rows[name]
        assert re.match(r"`(\d+)`", cell["partitions"])[1] == str(topic.partitions), name
        for key in ("cleanup.policy", "retention.ms", "min.insync.replicas", "max.message.bytes"):
            shown = re.match(r"`([^`]+)`", cell[key])
            if key in topic.config:
                assert shown and shown[1] == topic.config[key], f"{name} {key}: {cell[key]}"
            else:
                assert not shown, f"{name} {key}: the service does not set it, the table says {cell[key]}"
        if topic.required:
            assert "(required)" in cell["cleanup.policy"], name
        if topic.forbidden:
            assert "refused" in cell["cleanup.policy"], name
    said = re.sub(r"\s+", " ", text)
    assert f"replication factor `{SETTINGS.topic_replication_factor}` (`EQLSTREAM_TOPIC_REPLICATION_FACTOR`)" in said
    assert f"`{SETTINGS.consumer_group}` (`EQLSTREAM_CONSUMER_GROUP`)" in said
    assert f"`{sequence_app_id(SETTINGS)}` (`<group>-sequence`" in said


# -- ACLs ------------------------------------------------------------------------------------


def granted() -> tuple[set[tuple[str, str, str, str]], set[tuple[str, str]]]:
    """(principal, resource kind, name, operation) of every documented ACL, with what Kafka
    implies (Read and Write imply Describe), and the (principal, topic) pairs of the Create ones."""
    grants: set[tuple[str, str, str, str]] = set()
    creates: set[tuple[str, str]] = set()
    for argv in commands(section("Topics, consumer groups and ACLs")):
        if not (isinstance(argv, list) and argv[0] == "kafka-acls.sh"):
            continue
        assert "--add" in argv
        given = options(argv, "allow-principal", "operation", "topic", "group", "resource-pattern-type")
        assert not given["resource-pattern-type"], "the owned topics are granted by their literal names"
        resources = [("topic", name) for name in given["topic"]] + [("group", name) for name in given["group"]]
        for principal in given["allow-principal"]:
            for operation in given["operation"]:
                for kind, name in resources:
                    if operation == "Create":
                        creates.add((principal, name))
                        continue
                    grants.add((principal, kind, name, operation))
                    if operation in ("Read", "Write"):
                        grants.add((principal, kind, name, "Describe"))
    return grants, creates


def needed() -> set[tuple[str, str, str, str]]:
    """What each stage does: it reads and writes the topics of its part of the pipeline, and at
    start describes every owned topic and the settings of those it checks (a required or
    refused cleanup.policy)."""
    candidates, changelog, leader = SETTINGS.candidates_topic, changelog_topic(SETTINGS), leader_topic(SETTINGS)
    alerts, dead_letters = SETTINGS.alerts_topic, SETTINGS.dead_letter_topic
    uses: dict[str, dict[str, Any]] = {
        INGEST: {
            "Read": set(SETTINGS.input_topics),
            "Write": {candidates, dead_letters},
            "group": SETTINGS.consumer_group,
        },
        SEQUENCE: {
            "Read": {candidates, changelog, leader},
            "Write": {changelog, alerts, dead_letters},
            "group": sequence_app_id(SETTINGS),
        },
    }
    checked = {name for name, topic in TOPICS.items() if topic.required or topic.forbidden}
    grants = set()
    for principal, use in uses.items():
        for operation in ("Read", "Write"):
            grants |= {(principal, "topic", name, operation) for name in use[operation]}
        read_or_written = use["Read"] | use["Write"]
        grants |= {(principal, "topic", name, "Describe") for name in TOPICS.keys() | read_or_written}
        grants |= {(principal, "topic", name, "DescribeConfigs") for name in checked}
        grants |= {(principal, "group", use["group"], operation) for operation in ("Read", "Describe")}
    return grants


def test_each_stage_is_granted_what_it_uses_and_nothing_more() -> None:
    grants, _ = granted()
    assert grants - needed() == set(), "granted but never used"
    assert needed() - grants == set(), "used but not granted"


def test_create_is_granted_on_the_owned_topics_only_and_only_for_topic_creation() -> None:
    _, creates = granted()
    assert creates == {(principal, name) for principal in (INGEST, SEQUENCE) for name in TOPICS}
    before = section("Topics, consumer groups and ACLs").split("--operation Create")[0]
    comment = [line for line in before.splitlines() if line.startswith("# ")][-1]
    assert "only with EQLSTREAM_CREATE_TOPICS=true" in comment  # an operator who creates the topics skips it


# -- installs ----------------------------------------------------------------------------------


@dataclass
class Walk:
    """What the guide's commands have done so far: files written, Secrets and image made."""

    files: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, set[str]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)


def secret_keys(argv: list[str]) -> tuple[str, set[str]]:
    """The name and keys of ``kubectl create secret generic NAME --from-literal/--from-file``."""
    name = argv[argv.index("generic") + 1]
    keys = set()
    for arg in argv:
        if arg.startswith("--from-literal="):
            keys.add(arg.removeprefix("--from-literal=").split("=", 1)[0])
        elif arg.startswith("--from-file="):
            source = arg.removeprefix("--from-file=")
            keys.add(source.split("=", 1)[0] if "=" in source else Path(source).name)
    return name, keys


def helm_arguments(argv: list[str], walk: Walk, tmp_path: Path) -> list[str]:
    """``helm template`` arguments for a documented ``helm install`` / ``upgrade --install``."""
    rest = argv[2:] if argv[1] == "install" else argv[3:]
    assert argv[1] == "install" or argv[1:3] == ["upgrade", "--install"], argv
    release, chart, *flags = rest
    assert (release, REPO / chart) == ("eqlstream", CHART)
    arguments = []
    flags_iter = iter(flags)
    for flag in flags_iter:
        value = next(flags_iter)
        if flag in ("-n", "--namespace"):
            arguments += ["--namespace", value]
        elif flag in ("--set", "--set-string"):
            arguments += [flag, value]
        elif flag in ("-f", "--values"):
            path = tmp_path / value
            if value in walk.files:
                path.write_text(walk.files[value])
            else:
                path = REPO / value
            assert path.is_file(), f"{value}: the guide never writes it"
            arguments += ["--values", str(path)]
        else:
            pytest.fail(f"the test does not know the helm option {flag} of {argv}")
    return arguments


def secret_references(manifests: Rendered) -> Iterator[tuple[str, str]]:
    """(Secret, key) of every secretKeyRef and secret volume item the pods would need."""
    pods = [sts["spec"]["template"]["spec"] for sts in manifests.of_kind("StatefulSet")]
    for spec in pods:
        for box in spec["containers"]:
            for item in box.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    yield ref["name"], ref["key"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    yield volume["secret"]["secretName"], item["key"]


def test_every_documented_install_works_as_written(tmp_path: Path) -> None:
    walk = Walk()
    installs = 0
    for command in commands(GUIDE):
        if isinstance(command, HereDoc):
            walk.files[command.path] = command.text
        elif command[:2] == ["docker", "buildx"]:
            walk.images += options(command, "tag")["tag"]
        elif command[0] == "kubectl" and "secret" in command and "generic" in command:
            name, keys = secret_keys(command)
            assert name not in walk.secrets, f"the guide creates Secret {name} twice: the second one fails"
            walk.secrets[name] = keys
        elif command[0] == "helm" and command[1] in ("install", "upgrade"):
            manifests = render(*helm_arguments(command, walk, tmp_path), image=False)
            for name, key in secret_references(manifests):
                assert key in walk.secrets.get(name, set()), f"{command}: needs key {key} of Secret {name}"
            images = {
                box["image"]
                for sts in manifests.of_kind("StatefulSet")
                for box in sts["spec"]["template"]["spec"]["containers"]
            }
            assert images == set(walk.images), f"{command} installs {images}, the guide builds {walk.images}"
            installs += 1
    assert installs >= 3, "the plain, the SASL/TLS and the mutual TLS install"


def test_the_documented_build_is_the_image_the_chart_runs_by_default() -> None:
    (build,) = [c for c in commands(section("Build the image")) if isinstance(c, list) and c[0] == "docker"]
    assert options(build, "platform")["platform"] == ["linux/amd64"]  # the one platform built and tested
    (tag,) = options(build, "tag")["tag"]
    (chart,) = load_yaml((CHART / "Chart.yaml").read_text())
    assert tag.rsplit(":", 1)[1] == chart["appVersion"]
