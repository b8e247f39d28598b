"""Fault tests' figures: each test records what it measured, a full run writes them to docs/RELIABILITY.md.

``EQLSTREAM_RELIABILITY_FULL=1`` (``make reliability``) runs the long versions (more kills, the
30 s outage) and rewrites the section between the figures markers of docs/RELIABILITY.md; the
quick mode CI runs only prints the figures at the end of the session, so that a partial or
shortened run never overwrites the documented ones.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.faults import FULL
from tests.support.paths import ROOT

DOC = ROOT / "docs" / "RELIABILITY.md"
BEGIN = "<!-- figures:begin (written by `make reliability`; edits here are overwritten) -->"
END = "<!-- figures:end -->"
_RESULTS = pytest.StashKey[list[dict[str, Any]]]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; kept with the test's outcome for the report."""
    values: dict[str, Any] = {}
    yield values
    reports = request.node.stash.get(_REPORTS, {})
    call = reports.get("call")
    outcome = "skipped" if call is None else ("passed" if call.passed else "skipped" if call.skipped else "FAILED")
    doc = (request.function.__doc__ or "").strip().split("\n\n")[0]
    request.config.stash[_RESULTS].append(
        {"name": request.node.name, "summary": " ".join(doc.split()), "outcome": outcome, "figures": values}
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if results:
        terminalreporter.write_sep("-", f"reliability figures ({'full' if FULL else 'quick'} mode)")
        terminalreporter.write_line(render(results))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    results = session.config.stash.get(_RESULTS, [])
    if FULL and results and DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(f"{head}{BEGIN}\n{render(results)}\n{END}{tail}")


def render(results: list[dict[str, Any]]) -> str:
    """The figures as Markdown: one table per test, with the run's date and machine."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{'Full' if FULL else 'Quick'} run: {when}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, embedded broker (Tansu) on loopback.",
    ]
    for result in results:
        lines += ["", f"#### `{result['name']}`: {result['outcome']}", ""]
        if result["summary"]:
            lines += [result["summary"], ""]
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in result["figures"].items()]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A value as a Markdown table cell (a pipe inside would end the cell)."""
    return _format(value).replace("|", "\\|")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list | tuple):
        return ", ".join(_format(v) for v in value)
    return str(value)
