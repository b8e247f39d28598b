"""DCOM/MSHTA attacks, attack variants on the edges of Elasticsearch's semantics, and near misses.

An attack is an mshta.exe COM server (``-Embedding``, started by DcomLaunch) that accepts an
inbound TCP connection between dynamic ports from another host within the rule's maxspan. A near
miss breaks exactly one condition of the rule (or sits on its inclusive maxspan boundary). Their
events carry ``labels.synthetic_case`` (the kind, a key of ``CASE_KINDS``) and
``labels.synthetic_case_id`` so that tests and readers can tell what each one is meant to do.

Elasticsearch keeps milliseconds of ``@timestamp`` (digits past the third are dropped before
ordering and maxspan, and maxspan is inclusive), so the scenarios on the maxspan boundary are
placed by where their events fall within their millisecond, not by their raw difference.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eqlstream_dev.synthetic.clock import NS_PER_MS, NS_PER_S
from eqlstream_dev.synthetic.defend import restamp
from eqlstream_dev.synthetic.ecs import Shipped
from eqlstream_dev.synthetic.factory import EventFactory
from eqlstream_dev.synthetic.fleet import DEFEND, IMAGES, PRECISION_NS, SHAPES, Connection, Host, round_down

CASE_LABEL = "synthetic_case"
CASE_ID_LABEL = "synthetic_case_id"
# On a noise document that reuses the event.id of a ``shared_event_id`` attack's event: its case id.
SHARED_EVENT_ID_LABEL = "synthetic_shares_event_id_with"
ATTACK = "attack"

MAXSPAN_NS = 60 * NS_PER_S

# Attacks built on an edge of Elasticsearch's semantics; every one of them alerts.
ATTACK_VARIANTS = (
    # Raw times more than 60 s apart that are exactly 60,000 ms apart once truncated: .xxx0000
    # then .xxx9999 a minute later (Defend's 7 digits), and the same with 9 digits.
    "maxspan_edge_7_digits",
    "maxspan_edge_9_digits",
    # Each event's event.id is reused by an unrelated noise document on the same host: distinct
    # documents are distinct events, whatever their event.id.
    "shared_event_id",
)
# Near-miss kinds and whether Elasticsearch alerts on them (only the inclusive maxspan boundary does).
NEAR_MISSES: dict[str, bool] = {
    "delay_over_maxspan": False,
    "delay_at_maxspan": True,
    "outbound": False,
    "udp": False,
    "low_port": False,
    "loopback_source": False,
    "no_embedding": False,
    "other_host": False,
    "other_entity": False,
    "network_first": False,
    "network_not_start": False,
}
# Every value of labels.synthetic_case, and whether Elasticsearch alerts on the case.
CASE_KINDS: dict[str, bool] = {ATTACK: True, **dict.fromkeys(ATTACK_VARIANTS, True), **NEAR_MISSES}
# The v4 rule excludes loopback through source.address, which only Elastic Defend sets, and Sysmon
# always reports a network connection as started: these near misses exist only in Defend's shape
# (Winlogbeat 7 and 8 both carry Sysmon's view). Only Defend writes sub-millisecond digits and an
# event.id, which the attack variants are about.
DEFEND_ONLY = frozenset({"loopback_source", "network_not_start", *ATTACK_VARIANTS})


@dataclass(frozen=True)
class Plan:
    """The two events of one DCOM/MSHTA scenario; a near miss changes exactly one condition."""

    delay_ns: int
    local_port: int
    remote_port: int
    remote_ip: str
    inbound: bool = True
    transport: str = "tcp"
    embedding: bool = True
    other_host: bool = False
    other_entity: bool = False
    ended: bool = False
    loopback: bool = False
    phase_ns: int | None = None  # where the first event falls within its millisecond (None: anywhere)
    digits: int | None = None  # fractional digits of both @timestamps, if not the source's own


@dataclass(frozen=True)
class Decoy:
    """The first noise event on ``host_id`` from ``after_ns`` on is to reuse ``event_id`` (see with_decoys)."""

    host_id: str
    event_id: str
    after_ns: int
    case_id: str


class ScenarioWriter:
    """Writes attacks and near misses: an mshta.exe COM server, then an inbound connection to it."""

    def __init__(self, factory: EventFactory, fleet: list[Host]) -> None:
        self.factory = factory
        self.rng: random.Random = factory.rng
        self.fleet = fleet

    def plan(self, delay_s: tuple[float, float], attacker: Host, shape: str) -> Plan:
        """A true attack: delay within ``delay_s`` (seconds), both ports dynamic, peer another host."""
        tick = PRECISION_NS[shape]
        low, high = (int(bound * NS_PER_S) for bound in delay_s)
        delay = max(self.rng.randrange(low, high + 1) // tick * tick, tick)
        return Plan(delay, self.rng.randrange(49152, 65536), self.rng.randrange(49152, 65536), attacker.ip)

    def near_miss(self, kind: str, plan: Plan, shape: str) -> Plan:
        """``plan`` with the one condition of ``kind`` broken (or at its boundary)."""
        tick = PRECISION_NS[shape]
        match kind:
            case "delay_over_maxspan":
                # One step of the source's clock past a minute, from the last step of a millisecond:
                # 60,001 ms once truncated, whether the source writes 3 digits or 7.
                changes: dict[str, Any] = {"delay_ns": MAXSPAN_NS + tick, "phase_ns": NS_PER_MS - tick}
            case "delay_at_maxspan":  # whole milliseconds: 60,000 ms once truncated, wherever it starts
                changes = {"delay_ns": MAXSPAN_NS}
            case "outbound":
                changes = {"inbound": False}
            case "udp":
                changes = {"transport": "udp"}
            case "low_port":
                changes = {"local_port": self.rng.choice((135, 443, 3389, 5985))}
            case "loopback_source":
                changes = {"loopback": True}
            case "no_embedding":
                changes = {"embedding": False}
            case "other_host":
                changes = {"other_host": True}
            case "other_entity":
                changes = {"other_entity": True}
            case "network_first":
                changes = {"delay_ns": -plan.delay_ns}
            case "network_not_start":
                changes = {"ended": True}
            case _:
                raise ValueError(f"unknown near-miss kind {kind!r}")
        return replace(plan, **changes)

    @staticmethod
    def variant(kind: str, plan: Plan) -> Plan:
        """``plan`` (a Defend attack) as the attack variant ``kind``."""
        match kind:
            case "maxspan_edge_7_digits" | "maxspan_edge_9_digits":
                digits = 7 if kind == "maxspan_edge_7_digits" else 9
                # From the first step of a millisecond to the last step of the one a minute later.
                last_step = NS_PER_MS - 10 ** (9 - digits)
                return replace(plan, delay_ns=MAXSPAN_NS + last_step, phase_ns=0, digits=digits)
            case "shared_event_id":  # the attack itself is plain; the noise that shares its ids is not
                return plan
            case _:
                raise ValueError(f"unknown attack variant {kind!r}")

    def write(self, host: Host, start_ns: int, plan: Plan, case: str, case_id: str) -> list[tuple[int, Shipped]]:
        """The process start and the network event of ``plan`` on ``host``, with their timestamps."""
        factory = self.factory
        image = IMAGES["mshta"]
        hta = "C:\\Users\\Public\\Documents\\update.hta"
        args = (image.path, "-Embedding") if plan.embedding else (image.path, hta)
        attacker = factory.domain_user()
        proc = factory.process(host, image, args, attacker, host.services["dcomlaunch"], start_ns)
        started = factory.process_start(host, proc, start_ns)

        net_host = host
        if plan.other_host:
            others = [h for h in self.fleet if h is not host]
            net_host = next((h for h in others if h.shape == host.shape), others[0])
        net_proc = proc
        if plan.other_entity:
            net_proc = factory.process(host, image, args, attacker, host.services["dcomlaunch"], start_ns)
        local_ip, remote_ip = ("127.0.0.1", "127.0.0.1") if plan.loopback else (net_host.ip, plan.remote_ip)
        conn = Connection(
            plan.inbound, plan.transport, local_ip, plan.local_port, remote_ip, plan.remote_port, plan.ended
        )
        net_ts = start_ns + plan.delay_ns
        connected = factory.network(net_host, net_proc, net_ts, conn)

        written = [(start_ns, started), (net_ts, connected)]
        for ts, shipped in written:
            if plan.digits is not None:
                restamp(shipped, ts, plan.digits)
            for event in (shipped.event, shipped.twin):
                event["labels"].update({CASE_LABEL: case, CASE_ID_LABEL: case_id})
        return written

    def write_all(
        self,
        attacks: int,
        attack_kinds: Sequence[str],
        near_misses: int,
        near_miss_kinds: Sequence[str],
        attack_delay_s: tuple[float, float],
        start_ns: int,
        window_ns: int,
    ) -> tuple[list[tuple[int, Shipped]], list[Decoy]]:
        """``attacks`` attacks of ``attack_kinds``, then ``near_misses`` near misses of ``near_miss_kinds``
        in turn, each starting within ``window_ns`` of ``start_ns``: their events with their
        timestamps in time order, and the decoys the noise is to carry.

        Scenarios take the sources present in turn, so small corpora still cover every source. Each
        round of attacks has a plain attack in every source, then each variant if a host runs
        Defend; a near miss no host's source can express is left out.
        """
        rng = self.rng
        by_shape = {shape: [h for h in self.fleet if h.shape == shape] for shape in SHAPES}
        shapes = [shape for shape in SHAPES if by_shape[shape]]
        attack_round = [ATTACK] * len(shapes) if ATTACK in attack_kinds else []
        attack_round += [kind for kind in attack_kinds if kind != ATTACK and DEFEND in shapes]
        if not attack_round:
            attacks = 0
        written: list[tuple[int, Shipped]] = []
        decoys: list[Decoy] = []
        for index in range(attacks + near_misses):
            if index < attacks:
                slot = index % len(attack_round)  # a plain attack's slot in its round picks its source
                kind = attack_round[slot]
            else:
                slot = index
                kind = near_miss_kinds[(index - attacks) % len(near_miss_kinds)]
            if kind not in DEFEND_ONLY:
                shape = shapes[slot % len(shapes)]
            elif DEFEND in shapes:
                shape = DEFEND
            else:
                continue
            host = rng.choice(by_shape[shape])
            attacker = rng.choice([h for h in self.fleet if h is not host])
            plan = self.plan(attack_delay_s, attacker, shape)
            if kind in NEAR_MISSES:
                plan = self.near_miss(kind, plan, shape)
            elif kind != ATTACK:
                plan = self.variant(kind, plan)
            begin = start_ns + rng.randrange(window_ns)
            # A network-first near miss starts a maxspan later, keeping its network event in the window.
            begin += MAXSPAN_NS if plan.delay_ns < 0 else 0
            begin = round_down(begin, shape) if plan.phase_ns is None else begin - begin % NS_PER_MS + plan.phase_ns
            case_id = f"{'attack' if index < attacks else 'near-miss'}-{index:05d}"
            pair = self.write(host, begin, plan, kind, case_id)
            written += pair
            if kind == "shared_event_id":
                (_, started), (_, connected) = pair
                # On a busy host the process start's id turns up before it, the connection's between the two.
                decoys += [
                    Decoy(host.id, started.event["event"]["id"], begin - MAXSPAN_NS, case_id),
                    Decoy(host.id, connected.event["event"]["id"], begin, case_id),
                ]
        written.sort(key=lambda pair: pair[0])
        return written, decoys


def with_decoys(noise: Iterator[tuple[int, Shipped]], decoys: list[Decoy]) -> Iterator[tuple[int, Shipped]]:
    """``noise`` (in time order), where each decoy's event.id is taken over by the first noise event
    on its host from its time on, which is labelled with the decoy's case id.

    Taking over an event the noise writes anyway, instead of writing one more, leaves the rest of
    the corpus as it would be without the decoys. On a busy host the process start's decoy comes
    before the process start, the connection's before the connection: the order that would make
    a detector keyed on event.id drop the attack's own event as a duplicate.
    """
    waiting: dict[str, list[Decoy]] = {}
    for decoy in sorted(decoys, key=lambda decoy: decoy.after_ns):
        waiting.setdefault(decoy.host_id, []).append(decoy)
    for ts, shipped in noise:
        queue = waiting.get(shipped.event["host"]["id"])
        if queue and queue[0].after_ns <= ts:
            decoy = queue.pop(0)
            shipped.event["event"]["id"] = decoy.event_id
            shipped.event["labels"][SHARED_EVENT_ID_LABEL] = decoy.case_id
        yield ts, shipped
