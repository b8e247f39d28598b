"""Kibana's ``max_signals`` on a stream (app.core.engine.cap, and the detector applying it).

Kibana writes at most ``max_signals`` alerts per rule run. The stream has no runs, so the cap
counts new alerts per window of ``interval`` of event time (the completing event's time): a backlog
caught up after an outage is capped per past window, not against the current minute's budget, and
only new alerts count, never a revision of one already written.
"""

from __future__ import annotations

from app.core import AlertKind
from app.core.engine.cap import AlertCap
from tests.support.detection import T0, S, attack, detect, event_labels, mshta_inbound, mshta_start, options

MINUTE = 60 * S
INTERVAL = 5 * MINUTE


def test_at_most_cap_new_alerts_per_window_of_event_time() -> None:
    cap = AlertCap(2, INTERVAL)
    times = [0, 1, 2, 299_999, 300_000, 300_001, 600_000]
    admitted = [cap.admit(f"a{t}", AlertKind.NEW, T0 - T0 % INTERVAL + t) for t in times]
    assert admitted == [True, True, False, False, True, True, True]
    assert cap.suppressed == 2


def test_windows_are_event_time_so_a_backlog_over_hours_is_not_suppressed() -> None:
    """Six hours of alerts read in one burst: each five-minute window of event time is under the cap."""
    cap = AlertCap(2, INTERVAL)
    assert all(cap.admit(f"a{i}", AlertKind.NEW, T0 + i * 3 * MINUTE) for i in range(120))
    assert cap.suppressed == 0


def test_late_alerts_of_a_past_window_count_in_that_window() -> None:
    cap = AlertCap(1, INTERVAL)
    start = T0 - T0 % INTERVAL
    assert cap.admit("now", AlertKind.NEW, start + INTERVAL)
    assert cap.admit("late", AlertKind.NEW, start)  # an earlier window, with its own budget
    assert not cap.admit("late-2", AlertKind.NEW, start + 1)


def test_revisions_do_not_count_and_a_suppressed_alert_stays_suppressed() -> None:
    cap = AlertCap(1, INTERVAL)
    assert cap.admit("a", AlertKind.NEW, T0)
    assert cap.admit("a", AlertKind.REVISED, T0)  # a revision of a written alert is written, uncounted
    assert cap.admit("a", AlertKind.REVISED, T0 + 1)
    assert not cap.admit("b", AlertKind.NEW, T0 + 2)
    assert not cap.admit("b", AlertKind.REVISED, T0 + 3)  # ... and of a suppressed one, never
    assert cap.suppressed == 2


def test_a_cap_of_zero_admits_everything() -> None:
    cap = AlertCap(0, INTERVAL)
    assert all(cap.admit(f"a{i}", AlertKind.NEW, T0) for i in range(1000))
    assert cap.suppressed == 0


def test_forged_timestamps_over_years_keep_a_bounded_memory() -> None:
    cap = AlertCap(1, INTERVAL)
    for i in range(10_000):
        cap.admit(f"a{i}", AlertKind.NEW, T0 + i * 365 * 24 * 60 * MINUTE // 100)
    assert len(cap._windows) <= 256  # noqa: SLF001 - the bound is the point


# -- the detector applies it, in replay too -------------------------------------------------


def attacks_within(count: int, spacing_ms: int) -> list[dict]:
    return [event for i in range(count) for event in attack(i * spacing_ms // S)]


def test_replay_caps_at_the_rules_max_signals_by_default() -> None:
    """The default rule's max_signals is 100 per 5m: 103 attacks within 2 minutes give 100 alerts."""
    events = attacks_within(103, S)
    found = detect(events)
    assert (len(found.alerts), len(found.suppressed)) == (100, 3)
    assert set(found.ids()).isdisjoint(alert.id for alert in found.suppressed)
    assert len(detect(events, options=options(alert_cap=0)).alerts) == 103


def test_an_explicit_cap_and_its_windows() -> None:
    """Attacks a minute apart with a cap of 2 per 5 minutes: 2 per window of event time."""
    found = detect(attacks_within(10, MINUTE), options=options(alert_cap=2))
    completed = sorted(alert.last_event_ms // INTERVAL for alert in found.alerts)
    assert all(completed.count(window) <= 2 for window in completed)
    assert len(found.alerts) + len(found.suppressed) == 10 and found.suppressed


def test_a_revision_of_a_suppressed_alert_stays_suppressed() -> None:
    """The second connection, arriving late, is earlier: the alert is revised, and stays held back."""
    start = mshta_start("s", T0, entity="late")
    later, earlier = mshta_inbound("n2", T0 + 20 * S, entity="late"), mshta_inbound("n1", T0 + 10 * S, entity="late")
    first = attack(0)
    found = detect([*first, start, later, earlier], options=options(alert_cap=1))
    assert [alert.kind for alert in found.alerts] == [AlertKind.NEW]
    assert [alert.kind for alert in found.suppressed] == [AlertKind.NEW, AlertKind.REVISED]
    assert found.suppressed[0].id == found.suppressed[1].id


def test_a_revision_of_a_written_alert_is_written_beyond_the_cap() -> None:
    start = mshta_start("s", T0, entity="late")
    later, earlier = mshta_inbound("n2", T0 + 20 * S, entity="late"), mshta_inbound("n1", T0 + 10 * S, entity="late")
    found = detect([start, later, *attack(30), earlier], options=options(alert_cap=1))
    assert [(alert.kind, event_labels(alert)) for alert in found.alerts] == [
        (AlertKind.NEW, ("s", "n2")),
        (AlertKind.REVISED, ("s", "n1")),  # Elasticsearch's pair, under the same id
    ]
    assert found.alerts[0].id == found.alerts[1].id
    assert [event_labels(alert) for alert in found.suppressed] == [("start-30", "inbound-30")]
