"""The ``Observer`` as Prometheus metrics (app.service.metrics): names, labels, and what each counts.

Dashboards and alert rules are written against these names (docs/metrics.md, examples/grafana,
the Helm chart's rules), so a renamed or missing series breaks them silently: the exposition is
checked here without a service running.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.engine.sequence import EngineStats
from app.service.metrics import PrometheusObserver

RULE = "Incoming DCOM Lateral Movement via MSHTA"


def samples(observer: PrometheusObserver) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(observer.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class _Engines:
    """An ``EngineSource``: what the sequence stage exposes at scrape time."""

    def __init__(self, stats: EngineStats) -> None:
        self.stats = stats

    def engine_stats(self) -> Mapping[str, EngineStats]:
        return {RULE: self.stats}

    def state_figures(self) -> tuple[int, int]:
        return 12, 3456


def test_prepared_series_exist_at_zero_before_anything_happens() -> None:
    """Dashboards show 0, not "no data", for a stage that has done nothing yet."""
    observer = PrometheusObserver()
    observer.prepare("ingest", [RULE], ["winlogbeat"])
    observer.prepare("sequence", [RULE], ["eqlstream-candidates"])
    values = samples(observer)
    assert values[("eqlstream_candidates_total", (("rule", RULE),))] == 0
    assert values[("eqlstream_alerts_emitted_total", (("rule", RULE),))] == 0
    assert values[("eqlstream_alerts_suppressed_total", (("rule", RULE),))] == 0
    assert values[("eqlstream_events_consumed_total", (("topic", "winlogbeat"),))] == 0
    for stage in ("ingest", "sequence"):
        assert values[("eqlstream_ready", (("stage", stage),))] == 0
        assert values[("eqlstream_batch_duration_seconds_count", (("stage", stage),))] == 0


def test_what_the_stages_report_is_counted_under_its_labels() -> None:
    observer = PrometheusObserver()
    observer.consumed("winlogbeat", 500)
    observer.rejected("ingest", "invalid_json", 2)
    observer.rejected("sequence", "invalid_candidate")
    observer.dead_letters("ingest", 2)
    observer.candidates(RULE, 7)
    observer.batch_done("ingest", 0.004)
    observer.batch_done("sequence", 0.02)
    observer.alert(RULE, 0.3)
    observer.suppressed(RULE)
    observer.ready("sequence", True)
    values = samples(observer)
    assert values[("eqlstream_events_consumed_total", (("topic", "winlogbeat"),))] == 500
    assert values[("eqlstream_events_rejected_total", (("reason", "invalid_json"), ("stage", "ingest")))] == 2
    assert values[("eqlstream_events_rejected_total", (("reason", "invalid_candidate"), ("stage", "sequence")))] == 1
    assert values[("eqlstream_dead_letter_records_total", (("stage", "ingest"),))] == 2
    assert values[("eqlstream_candidates_total", (("rule", RULE),))] == 7
    # One histogram of batch processing time, labelled by stage (no per-stage histograms any more).
    assert values[("eqlstream_batch_duration_seconds_count", (("stage", "ingest"),))] == 1
    assert values[("eqlstream_batch_duration_seconds_count", (("stage", "sequence"),))] == 1
    assert not {name for name, _ in values} & {
        "eqlstream_ingest_batch_seconds_count",
        "eqlstream_sequence_event_seconds_count",
    }
    assert values[("eqlstream_alerts_emitted_total", (("rule", RULE),))] == 1
    assert values[("eqlstream_detection_latency_seconds_count", (("rule", RULE),))] == 1
    assert values[("eqlstream_alerts_suppressed_total", (("rule", RULE),))] == 1
    assert values[("eqlstream_ready", (("stage", "sequence"),))] == 1


def test_engine_totals_are_read_at_scrape_time() -> None:
    observer = PrometheusObserver()
    stats = EngineStats(candidates=10, duplicates=2, too_late=1, sequences=3, revised=1, superseded=1, evicted=4)
    stats.expired_keys = 5
    engines = _Engines(stats)
    observer.register(engines)
    values = samples(observer)
    assert values[("eqlstream_sequence_candidates_total", (("outcome", "accepted"), ("rule", RULE)))] == 7
    assert values[("eqlstream_sequence_candidates_total", (("outcome", "duplicate"), ("rule", RULE)))] == 2
    assert values[("eqlstream_sequence_candidates_total", (("outcome", "too_late"), ("rule", RULE)))] == 1
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in values.items()
        if name == "eqlstream_sequences_total"
    }
    assert outcomes == {"new": 3, "revised": 1, "superseded": 1}  # no "repeated": a duplicate never emits
    assert values[("eqlstream_state_expired_keys_total", (("rule", RULE),))] == 5
    assert values[("eqlstream_state_evicted_entries_total", (("rule", RULE),))] == 4
    assert (values[("eqlstream_state_keys", ())], values[("eqlstream_state_size_bytes", ())]) == (12, 3456)
    stats.sequences += 1  # counters follow the engines without anyone pushing
    assert samples(observer)[("eqlstream_sequences_total", (("outcome", "new"), ("rule", RULE)))] == 4


def test_each_observer_has_its_own_registry_with_the_process_figures() -> None:
    """Two services in one process (tests, tools) never share series; each still exposes its process's
    memory and CPU, which the example dashboard's panels read."""
    first, second = PrometheusObserver(), PrometheusObserver()
    first.consumed("t", 1)
    assert samples(first)[("eqlstream_events_consumed_total", (("topic", "t"),))] == 1
    assert ("eqlstream_events_consumed_total", (("topic", "t"),)) not in samples(second)
    names = {name for name, _ in samples(second)}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names
    (build,) = [
        (dict(labels), value) for (name, labels), value in samples(second).items() if name == "eqlstream_build_info"
    ]
    assert build[1] == 1 and build[0]["version"]
