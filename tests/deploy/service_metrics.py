"""The metrics the service exports, with their labels, read from its own Prometheus registry.

The alerting rules and the Grafana dashboard may only query series and labels that exist: a
renamed metric or label must fail their tests, not show up as a silent "no data" (which reads as
"all quiet") in production. The registry is the one ``app.service.metrics.PrometheusObserver``
builds (what ``/metrics`` serves), driven once through every call the stages make, so that every
labelled series has a sample to read its label names from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from app.core.engine.sequence import EngineStats
from app.service.metrics import PrometheusObserver

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus adds to every series it scrapes (the Kubernetes service discovery's too).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})


@dataclass(frozen=True)
class Exported:
    """One metric as PromQL reads it: counters with ``_total``."""

    kind: str
    labels: frozenset[str]


class _OneRule:
    """A sequence stage with one rule's engine, as the observer reads it at scrape time."""

    def engine_stats(self) -> Mapping[str, EngineStats]:
        return {"rule": EngineStats(candidates=1)}

    def state_figures(self) -> tuple[int, int]:
        return 1, 1


def exported() -> dict[str, Exported]:
    """Every ``eqlstream_*`` metric the service exports -> its type and label names."""
    observer = PrometheusObserver()
    source = _OneRule()  # held weakly by the observer: this name keeps it alive while collecting
    observer.register(source)
    for stage in ("ingest", "sequence"):
        observer.prepare(stage, ["rule"], ["topic"])
        observer.ready(stage, True)
        observer.rejected(stage, "invalid_json")
        observer.event_lag(stage, 1.0)
        observer.batch_done(stage, 0.1)
    observer.alert("rule", 0.1)
    observer.without_join_key(1)
    observer.log_lines_dropped(1)
    metrics = {}
    for family in observer.registry.collect():
        if not family.name.startswith("eqlstream_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        metrics[name] = Exported(family.type, frozenset(labels))
    return metrics


def exported_metrics() -> dict[str, str]:
    """Every ``eqlstream_*`` metric the service exports -> its type."""
    return {name: metric.kind for name, metric in exported().items()}


def series_names(metrics: Mapping[str, str]) -> dict[str, str]:
    """Every series name the metrics expose (a histogram's buckets, sum and count) -> the metric."""
    names = {}
    for name, kind in metrics.items():
        for suffix in HISTOGRAM_SUFFIXES if kind == "histogram" else ("",):
            names[name + suffix] = name
    return names


def unknown_labels(expr: str) -> set[str]:
    """Label names a PromQL expression reads (matchers, ``by``/``on`` lists) that none of its
    ``eqlstream_*`` metrics has and the scrape does not add."""
    metrics = exported()
    names = series_names({name: metric.kind for name, metric in metrics.items()})
    have = set(TARGET_LABELS) | {"le"}
    for series in re.findall(r"\beqlstream_[a-z_]+\b", expr):
        if series in names:
            have |= metrics[names[series]].labels
    used = set()
    for listed in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in listed.split(",") if label.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return used - have
