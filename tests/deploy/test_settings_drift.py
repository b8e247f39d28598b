"""The chart and the service agree on their settings: every EQLSTREAM_* variable the chart renders
is a field of ``app.settings.ServiceSettings`` with a value it accepts, every field can be set through
the chart, the chart's defaults are the service's (or a documented Kubernetes choice), and
docs/deploy.md lists them all. A new setting, a renamed one or a changed default fails here
until the chart, its schema and the guide follow.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import app
from app.core.timeparse import parse_duration
from app.settings import ServiceSettings
from tests.deploy.helpers import CHART, CI_VALUES, REPO, Rendered, load_yaml

FIELDS = {f"EQLSTREAM_{name.upper()}": name for name in ServiceSettings.model_fields}
# The fields' defaults as the service writes them (model_construct reads no environment); a
# setting unset by default (None) is absent.
DEFAULTS = ServiceSettings.model_construct().to_environment()
# Where the chart's default deliberately differs from the service's, and why.
KUBERNETES_DEFAULTS = {
    "EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",  # a Kafka Service in the namespace, not localhost
    "EQLSTREAM_SESSION_TIMEOUT": "45s",  # long enough for a restarted pod to return under its static id
    "EQLSTREAM_DATA_DIR": "/var/lib/eqlstream",  # the state volume's mount path
}


def rendered_variables(manifests: Rendered) -> dict[str, Any]:
    """Every EQLSTREAM_* variable a pod gets: the ConfigMap's values and the pod spec's env
    entries (a literal value, or the valueFrom reference)."""
    variables: dict[str, Any] = dict(manifests.one("ConfigMap", "-config")["data"])
    for sts in manifests.of_kind("StatefulSet"):
        for box in sts["spec"]["template"]["spec"]["containers"]:
            for item in box.get("env", []):
                variables[item["name"]] = item.get("value", item.get("valueFrom"))
    return variables


def service_reading(literal: dict[str, str]) -> dict[str, str]:
    """The rendered literal variables as the service reads them, written back the way
    ``ServiceSettings.to_environment()`` writes them (durations in their canonical unit)."""
    settings = ServiceSettings(**{FIELDS[name]: value for name, value in literal.items()})
    return {name: settings.to_environment()[name] for name in literal}


def is_duration(name: str) -> bool:
    """Whether the service writes the setting as a duration (its default reads as one)."""
    if name not in DEFAULTS:  # unset by default (a path), so not a duration
        return False
    try:
        parse_duration(DEFAULTS[name])
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("values_file", CI_VALUES, ids=[path.stem for path in CI_VALUES])
def test_every_rendered_variable_is_a_setting(rendered: Callable[[Path | None], Rendered], values_file: Path) -> None:
    manifests = rendered(values_file)
    names = set(rendered_variables(manifests))
    for workload in manifests.documents:
        names |= set(re.findall(r"\bEQLSTREAM_[A-Z0-9_]+\b", str(workload)))
    assert names - FIELDS.keys() == set(), "rendered by the chart but unknown to app.settings.ServiceSettings"


def test_every_setting_can_be_set_through_the_chart(rendered: Callable[[Path | None], Rendered]) -> None:
    reached = set().union(*(rendered_variables(rendered(path)) for path in CI_VALUES))
    missing = FIELDS.keys() - reached
    assert not missing, (
        f"{sorted(missing)} cannot be set through the chart: add them to values.yaml (config or kafka), "
        "values.schema.json, templates/configmap.yaml and the table in docs/deploy.md"
    )


@pytest.mark.parametrize("values_file", CI_VALUES, ids=[path.stem for path in CI_VALUES])
def test_the_service_accepts_every_rendered_value(
    rendered: Callable[[Path | None], Rendered], values_file: Path
) -> None:
    literal = {
        name: value for name, value in rendered_variables(rendered(values_file)).items() if isinstance(value, str)
    }
    read = service_reading(literal)
    # and reads back what was written: no number turned into 1.6777216e+07, no bool into "True"
    # (a duration may come back in another unit: 0s is 0ms)
    assert {name: value for name, value in read.items() if not is_duration(name)} == {
        name: value for name, value in literal.items() if not is_duration(name)
    }


def test_chart_defaults_are_the_service_defaults(rendered: Callable[[Path | None], Rendered]) -> None:
    literal = {
        name: value
        for name, value in rendered_variables(rendered(None)).items()
        if isinstance(value, str) and name != "EQLSTREAM_ROLE"
    }
    read = service_reading(literal)
    for name, value in read.items():
        if name in KUBERNETES_DEFAULTS:
            assert literal[name] == KUBERNETES_DEFAULTS[name], name
        else:
            assert value == DEFAULTS[name], (
                f"{name}: the chart renders {literal[name]!r}, the default is {DEFAULTS[name]!r}"
            )


def test_every_value_and_setting_is_in_the_deploy_guide() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text()
    (values,) = load_yaml((CHART / "values.yaml").read_text())
    paths = [f"config.{key}" for key in values["config"]]
    paths += [f"kafka.{key}" for key in ("bootstrapServers", "securityProtocol")]
    paths += [f"kafka.sasl.{key}" for key in values["kafka"]["sasl"]]
    paths += [f"kafka.tls.{key}" for key in values["kafka"]["tls"]]
    paths += ["rules.path", "rules.files", "rules.versionLock"]
    assert [path for path in paths if f"`{path}`" not in guide] == []
    assert [name for name in FIELDS if f"`{name}`" not in guide] == []


def test_chart_app_version_is_the_package_version() -> None:
    (chart,) = load_yaml((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == app.__version__


def test_image_command_is_the_packages_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["eqlstream"] == "app.cli:main"
    assert '\nCMD ["eqlstream", "run"]\n' in (REPO / "Dockerfile").read_text()
