"""yamllint over the chart's hand-written YAML and over what the chart renders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.helpers import CHART, CI_VALUES, REPO, Rendered, run, tool

CONFIG = Path(__file__).with_name("yamllint.yaml")
SOURCES = [
    CHART / "Chart.yaml",
    CHART / "values.yaml",
    CHART / "files" / "prometheus-rules.yaml",
    Path(__file__).with_name("prometheus-rules.test.yaml"),
    *CI_VALUES,
]


def test_hand_written_yaml_is_clean() -> None:
    result = run([tool("yamllint"), "--strict", "--config-file", str(CONFIG), *map(str, SOURCES)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values_file", CI_VALUES, ids=[path.stem for path in CI_VALUES])
def test_rendered_manifests_are_clean_yaml(rendered: Callable[[Path | None], Rendered], values_file: Path) -> None:
    result = run([tool("yamllint"), "--strict", "--config-file", str(CONFIG), "-"], stdin=rendered(values_file).text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_yaml_file_of_the_chart_is_linted() -> None:
    on_disk = {path for path in (REPO / "helm").rglob("*.yaml") if "templates" not in path.parts}
    assert on_disk <= set(SOURCES)
