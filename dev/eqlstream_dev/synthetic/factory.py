"""One entry point for writing any model event on any host, in the shape of the source that host runs."""

from __future__ import annotations

import random
from typing import Protocol

from eqlstream_dev.synthetic.defend import DefendRenderer
from eqlstream_dev.synthetic.ecs import Shipped
from eqlstream_dev.synthetic.fleet import DEFEND, WINLOGBEAT, WINLOGBEAT8, Connection, FleetBuilder, Host, Process, User
from eqlstream_dev.synthetic.winlogbeat7 import Winlogbeat7Renderer
from eqlstream_dev.synthetic.winlogbeat8 import Winlogbeat8Renderer


class Renderer(Protocol):
    """A source's way of writing each kind of model event (with its twin)."""

    def process_start(self, host: Host, proc: Process, ts_ns: int) -> Shipped: ...

    def network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped: ...

    def file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped: ...

    def registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, data: str) -> Shipped: ...

    def dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped: ...

    def logon(self, host: Host, ts_ns: int, user: User, source_ip: str, logon_id: str) -> Shipped: ...


class EventFactory(FleetBuilder):
    """Writes a fleet's events in Elastic Defend, Winlogbeat 7 (Sysmon module) or raw Winlogbeat 8 shape.

    The renderers share the factory's random generator, so a corpus depends only on its seed.
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._renderers: dict[str, Renderer] = {
            DEFEND: DefendRenderer(rng),
            WINLOGBEAT: Winlogbeat7Renderer(rng),
            WINLOGBEAT8: Winlogbeat8Renderer(rng),
        }

    def process_start(self, host: Host, proc: Process, ts_ns: int) -> Shipped:
        """A process start (Defend ``start`` / Sysmon event 1)."""
        return self._renderers[host.shape].process_start(host, proc, ts_ns)

    def network(self, host: Host, proc: Process, ts_ns: int, conn: Connection) -> Shipped:
        """A network connection (Defend ``connection_*`` / Sysmon event 3)."""
        return self._renderers[host.shape].network(host, proc, ts_ns, conn)

    def file(self, host: Host, proc: Process, ts_ns: int, path: str) -> Shipped:
        """A file creation (Defend file event / Sysmon event 11)."""
        return self._renderers[host.shape].file(host, proc, ts_ns, path)

    def registry(self, host: Host, proc: Process, ts_ns: int, key: str, value: str, data: str) -> Shipped:
        """A registry value set (Defend ``modification`` / Sysmon event 13)."""
        return self._renderers[host.shape].registry(host, proc, ts_ns, key, value, data)

    def dns(self, host: Host, proc: Process, ts_ns: int, name: str, answers: list[str]) -> Shipped:
        """A DNS lookup (Defend ``lookup_result`` / Sysmon event 22)."""
        return self._renderers[host.shape].dns(host, proc, ts_ns, name, answers)

    def logon(self, host: Host, ts_ns: int, user: User, source_ip: str) -> Shipped:
        """A successful network logon (Defend security event / Security 4624 through Winlogbeat).

        The logon session id is part of the event whichever source reports it (Defend does not).
        """
        logon_id = f"0x{self.rng.getrandbits(28):x}"
        return self._renderers[host.shape].logon(host, ts_ns, user, source_ip, logon_id)
