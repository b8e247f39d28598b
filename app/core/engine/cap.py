"""Kibana's ``max_signals`` on a stream: at most N new alerts per rule per interval of event time.

Kibana runs a rule every ``interval`` and writes at most ``max_signals`` alerts per run. The
stream has no runs, so windows of ``interval`` of **event time** (the completing event's
``@timestamp``) stand in for them: catching up a backlog after downtime then caps the alerts of
each past window, not every alert of the backlog against the current minute's budget. Only new
alerts count: a revision of an alert already written (a late event changed its events) is
written without counting, and a revision of a suppressed alert stays suppressed.
"""

from __future__ import annotations

from collections import OrderedDict

from app.core.model import AlertKind

# Windows remembered per rule: far more than the allowed lateness spans for any real interval; an
# attacker's timestamps spread over years cost at most this many small entries.
MAX_WINDOWS = 256
# Suppressed alert ids remembered per window (so that their revisions stay suppressed).
MAX_SUPPRESSED_IDS = 10_000


class AlertCap:
    """Admits at most ``cap`` new alerts per ``interval_ms`` window of event time (``cap`` 0: all)."""

    def __init__(self, cap: int, interval_ms: int) -> None:
        if cap < 0 or interval_ms <= 0:
            raise ValueError("the cap must be >= 0 and the interval positive")
        self.cap = cap
        self.interval_ms = interval_ms
        self.suppressed = 0
        self._windows: OrderedDict[int, tuple[int, set[str]]] = OrderedDict()  # window -> (admitted, suppressed ids)

    def admit(self, alert_id: str, kind: AlertKind, event_ms: int) -> bool:
        """Whether to write this alert; a refused one is counted in ``suppressed``."""
        if self.cap == 0:
            return True
        if kind is AlertKind.REVISED:
            if any(alert_id in ids for _, ids in self._windows.values()):
                self.suppressed += 1
                return False
            return True
        window = event_ms // self.interval_ms
        admitted, ids = self._windows.get(window, (0, set()))
        if admitted >= self.cap:
            if len(ids) < MAX_SUPPRESSED_IDS:
                ids.add(alert_id)
            self.suppressed += 1
            allowed = False
        else:
            admitted += 1
            allowed = True
        self._windows[window] = (admitted, ids)
        while len(self._windows) > MAX_WINDOWS:
            self._windows.pop(min(self._windows))
        return allowed
