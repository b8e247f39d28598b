"""Faults the service must survive with nothing missed: kill -9, a broker outage, scaling, a broken disk.

Each test streams a synthetic fleet's events (noise, near misses, attacks) at a steady rate
through ``python -m app run`` child processes, injects its fault while the events flow, and then
compares the alert ids on the alerts topic with the offline engine's answer on the same events
(``detect``): the same set, nothing missed, nothing invented; repeats only as the same
document under the same id. ``EQLSTREAM_RELIABILITY_FULL=1`` runs the long versions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eqlstream_dev import synthetic

from app.settings import ServiceSettings
from tests.support.broker import committed, prepare_topics, wait_for_state
from tests.support.detection import Detection, attack, detect, options
from tests.support.faults import (
    FULL,
    AlertCollector,
    SteadyLoad,
    TansuBroker,
    TcpProxy,
    duplicate_figures,
    poll_until,
    send,
    where_lost,
)
from tests.support.settings import service_settings, with_settings
from tests.support.worker import Worker, free_port, http_get

PARTITIONS = 4
RATE = 100  # events/s, in wall time and in the corpus' event time (so sequences complete as they would live)
ATTACK_RATE = 0.006  # about one attack every 1.7 s
KILLS = 5 if FULL else 2
KILL_INTERVAL_S = 15 if FULL else 10  # steady processing between a recovery and the next kill
OUTAGE_S = 30 if FULL else 10
READY_TIMEOUT_S = 120


def corpus(seed: int, seconds: float) -> list[dict]:
    """``seconds`` of a fleet's events at ``RATE``: noise, near misses and attacks (30% raw Sysmon)."""
    return synthetic.generate_corpus(
        seed,
        int(seconds * RATE),
        attack_rate=ATTACK_RATE,
        near_miss_rate=0.01,
        source_mix=0.4,
        raw_share=0.3,
        rate=RATE,
    )


# No alert cap in these tests, in the service and in the replay: its counts live in the worker's
# memory, so a worker killed and restarted admits up to the cap again (README, Limitations), and
# the longer corpora of the full mode complete more sequences than the rule's max_signals.
UNCAPPED = options(alert_cap=0)


def settings_for(bootstrap: str, tmp_path: Path, **overrides: Any) -> ServiceSettings:
    """A test's own settings against ``bootstrap`` with its topics created, as before any worker starts."""
    settings = service_settings(bootstrap, **({"data_dir": tmp_path / "state", "alert_cap": 0} | overrides))
    prepare_topics(settings, PARTITIONS)
    return settings


@pytest.fixture
def collector() -> Iterator[Callable[[ServiceSettings], AlertCollector]]:
    """Starts alert collectors (reading the alerts topic for the whole test), stopped at the end."""
    started: list[AlertCollector] = []

    def start(settings: ServiceSettings) -> AlertCollector:
        started.append(AlertCollector(settings, PARTITIONS))
        started[-1].start()
        return started[-1]

    yield start
    for one in started:
        one.stop()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Every worker a test starts, stopped at the end whatever happened."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def compare(
    collector: AlertCollector,
    replay: Detection,
    figures: dict[str, Any],
    timeout: float,
    settings: ServiceSettings,
    log_dir: Path,
) -> None:
    """Wait for the replay's alerts, record the counts, and require exactly the replay's answer; a
    failure says where the missed alerts' events got to (``where_lost``)."""
    expected = set(replay.ids())
    collector.wait_for(expected, timeout)
    figures["alerts expected (replay)"] = len(expected)
    figures.update(duplicate_figures(collector))
    got = set(collector.shell_ids())
    figures["alerts missed"] = len(expected - got)
    figures["alerts not in the replay"] = len(got - expected)
    if got != expected:
        missed = [alert for alert in replay.alerts if alert.id not in got]
        evidence = where_lost(settings, missed, sorted(log_dir.glob("*.log")))
        pytest.fail(
            f"{len(expected - got)} missed, {len(got - expected)} not in the replay after {timeout} s\n"
            f"not in the replay: {sorted(got - expected)}\n{evidence}"
        )


@pytest.mark.timeout(900 if FULL else 300)
def test_kill_9_under_steady_load(
    kafka_bootstrap: str,
    collector: Callable[[ServiceSettings], AlertCollector],
    workers: list[Worker],
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """`kill -9` of a worker (`python -m app run`, both stages) while events flow at a steady rate, restarted
    at once with the same state directory and instance id; repeated. After every restart the stream's alerts
    must equal the replay's: no sequence missed, repeats only under the same id."""
    settings = settings_for(kafka_bootstrap, tmp_path)
    events = corpus(7, KILLS * (KILL_INTERVAL_S + 15) + 15)  # ~10 s to recover from each kill
    replay = detect(events, options=UNCAPPED)
    alerts = collector(settings)
    workers.append(Worker(settings, "w1", tmp_path).start())
    workers[-1].wait_ready(READY_TIMEOUT_S)
    load = SteadyLoad(settings, events, RATE, PARTITIONS, seed=1)
    load.start()
    ready_after_restart: list[float] = []
    first_alert_after_kill: list[float] = []
    for _ in range(KILLS):
        time.sleep(KILL_INTERVAL_S)
        assert load.is_alive(), "the load ended before the last kill: make the corpus longer"
        killed_at = time.monotonic()
        workers[-1].kill()
        workers.append(Worker(settings, "w1", tmp_path).start())
        ready_after_restart.append(workers[-1].wait_ready(READY_TIMEOUT_S))
        first_alert_after_kill.append(alerts.wait_first_after(killed_at, 120))
    load.finish(load.duration_s + 120)
    figures["kills"] = KILLS
    figures["events produced"] = len(events)
    figures["seconds from kill -9 to the first alert after the restart (each kill)"] = first_alert_after_kill
    figures["seconds from restart to /readyz 200 (each restart)"] = ready_after_restart
    compare(alerts, replay, figures, 180, settings, tmp_path)


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[TansuBroker, TcpProxy]]:
    """A broker of its own behind a proxy the test can cut; the broker advertises the proxy's port, so
    every client (service, load, collector) reaches it only through the proxy."""
    proxy_port = free_port()
    broker = TansuBroker(proxy_port, tmp_path / "tansu.log")
    proxy = TcpProxy(broker.port, proxy_port)
    broker.start()
    proxy.start()
    yield broker, proxy
    proxy.close()
    broker.stop()


@pytest.mark.parametrize("outage", ["refused", "frozen"] if FULL else ["refused"])
@pytest.mark.timeout(600 if FULL else 300)
def test_broker_outage_then_recovery(
    outage: str,
    proxied_broker: tuple[TansuBroker, TcpProxy],
    collector: Callable[[ServiceSettings], AlertCollector],
    workers: list[Worker],
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """The broker unreachable while events flow, then back; the same worker process must recover by
    itself (no restart) and give the replay's alerts. `refused`: the proxy in front of the broker closes
    its listener and every connection (clients get connection refused); `frozen`: the broker process is
    stopped with SIGSTOP (connections stay open, nothing answers) and resumed with SIGCONT."""
    broker, proxy = proxied_broker
    settings = settings_for(f"127.0.0.1:{proxy.port}", tmp_path)
    before_s, after_s = 15, 30 if FULL else 20
    events = corpus(11, before_s + OUTAGE_S + after_s)
    replay = detect(events, options=UNCAPPED)
    alerts = collector(settings)
    worker = Worker(settings, "w1", tmp_path).start()
    workers.append(worker)
    worker.wait_ready(READY_TIMEOUT_S)
    # The load buffers through the outage like a Beats output would, then delivers.
    load = SteadyLoad(settings, events, RATE, PARTITIONS, seed=2, delivery_timeout_s=OUTAGE_S + 120)
    load.start()
    figures["outage"] = (
        "proxy listener and connections closed (connection refused)"
        if outage == "refused"
        else "broker SIGSTOP/SIGCONT"
    )
    figures["outage seconds"] = OUTAGE_S
    figures["events produced"] = len(events)
    time.sleep(before_s)
    down_at = time.monotonic()
    proxy.cut() if outage == "refused" else broker.pause()
    readiness = set()
    while time.monotonic() - down_at < OUTAGE_S:
        readiness.add(str(worker.readyz()[0]))
        time.sleep(1)
    proxy.restore() if outage == "refused" else broker.resume()
    back_at = time.monotonic()
    connections_before = proxy.accepted
    try:
        back_to_alert = alerts.wait_first_after(back_at, 180)
    except AssertionError:
        figures["/readyz statuses seen during the outage"] = sorted(readiness)
        figures["no alert within 180 s of the broker's return; then /readyz, /livez"] = [
            worker.readyz()[0],
            http_get(worker.web_port, "/livez")[0],
        ]
        raise
    load.finish(load.duration_s + OUTAGE_S + 180)
    figures["/readyz statuses seen during the outage"] = sorted(readiness)
    figures["seconds from broker back to the first alert"] = back_to_alert
    if outage == "refused":
        figures["connections the clients re-opened after the outage"] = proxy.accepted - connections_before
    compare(alerts, replay, figures, 240, settings, tmp_path)
    assert worker.alive(), f"the worker exited instead of recovering:\n{worker.log_tail()}"
    figures["worker restarts"] = 0


@pytest.mark.timeout(900 if FULL else 360)
def test_scale_1_to_3_to_1_while_events_flow(
    kafka_bootstrap: str,
    collector: Callable[[ServiceSettings], AlertCollector],
    workers: list[Worker],
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """Workers 1 → 3 → 1 while events flow: two workers join (both stages rebalance: the ingest group and
    the sequence group with its state), run, then leave with SIGTERM. The alerts must equal the replay's.
    Dynamic group members: the embedded broker never expires static members that left."""
    settings = settings_for(kafka_bootstrap, tmp_path)
    settle_s = 20 if FULL else 10
    events = corpus(13, 3 * settle_s + 50)  # joining takes ~30 s on two shared cores
    replay = detect(events, options=UNCAPPED)
    alerts = collector(settings)

    def start(name: str) -> Worker:
        worker = Worker(with_settings(settings, data_dir=tmp_path / name), name, tmp_path, static=False)
        worker.start()
        workers.append(worker)
        return worker

    first = start("w1")
    first.wait_ready(READY_TIMEOUT_S)
    load = SteadyLoad(settings, events, RATE, PARTITIONS, seed=3)
    load.start()
    time.sleep(settle_s)
    scaled_at = time.monotonic()
    extra = [start("w2"), start("w3")]
    for worker in extra:
        worker.wait_ready(READY_TIMEOUT_S)
    figures["seconds from scale-up to 3 ready workers"] = time.monotonic() - scaled_at
    time.sleep(settle_s)
    for worker in extra:
        assert worker.stop() == 0, worker.log_tail()
    time.sleep(settle_s)
    assert load.is_alive(), "the load ended before scale-down settled: make the corpus longer"
    load.finish(load.duration_s + 120)
    for worker in (first, *extra):
        log = worker.log()
        figures[f"{worker.name}: ingest assignments"] = len(re.findall(r"partitions assigned count=[1-9]", log))
        figures[f"{worker.name}: state keys restored on taking partitions"] = sum(
            int(n) for n in re.findall(r"partition ready partition=\d+ restored_keys=(\d+)", log)
        )
    assert all(figures[f"{worker.name}: ingest assignments"] for worker in extra), "a new worker got no partitions"
    figures["events produced"] = len(events)
    compare(alerts, replay, figures, 180, settings, tmp_path)


def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a small tmpfs at ``path`` (root with CAP_SYS_ADMIN only); False when not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def _fill(path: Path) -> int:
    """Write a ballast file until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with (path / "ballast").open("wb", buffering=0) as ballast:
        try:
            while True:
                written += ballast.write(chunk)
        except OSError:
            pass
    return written


@pytest.fixture
def broken_state_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """(state directory, repair) for the two ways it breaks. Root ignores permission bits, so:

    * `not_a_directory`: the state path lies under a regular file (mkdir fails with ENOTDIR, for root too);
    * `full`: a 1 MiB tmpfs filled with a ballast file after the worker started (needs `mount`).
    """
    kind = request.param
    if kind == "not_a_directory":
        blocker = tmp_path / "blocker"
        blocker.write_bytes(b"a file where the state directory's parent should be")

        def repair() -> None:
            blocker.unlink()

        yield blocker / "state", repair
        return
    mountpoint = tmp_path / "small"
    if not _mount_tmpfs(mountpoint, "1m"):
        pytest.skip("mounting a tmpfs is not permitted here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mountpoint / "state", lambda: (mountpoint / "ballast").unlink()
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.parametrize("broken_state_dir", ["not_a_directory", "full"], indirect=True)
@pytest.mark.timeout(360)
def test_broken_state_directory_is_reported_and_loses_nothing(
    broken_state_dir: tuple[Path, Callable[[], None]],
    kafka_bootstrap: str,
    collector: Callable[[ServiceSettings], AlertCollector],
    workers: list[Worker],
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """The state directory unwritable (a file in the way, from the start) or full (a tmpfs filled while
    sequences are pending): the log names the problem and the service is not ready (/readyz 503 with the
    reason; a worker that exits instead is restarted, as Kubernetes would, and must then answer 503 until
    the disk is repaired); nothing is lost: once the directory is repaired every alert of the events sent
    meanwhile comes out, the replay's answer."""
    state_dir, repair = broken_state_dir
    full = state_dir.parent.name == "small"
    settings = settings_for(kafka_bootstrap, tmp_path, data_dir=state_dir)
    attacks = [attack(i, host=f"h{i % 3}") for i in range(6)]
    replay = detect([event for pair in attacks for event in pair], options=UNCAPPED)
    alerts = collector(settings)
    worker = Worker(settings, "w1", tmp_path).start()
    workers.append(worker)
    # On the full disk, half the sequences are pending in the state before it fills.
    pending = [start for start, _ in attacks[:3]] if full else []
    if full:
        worker.wait_ready(READY_TIMEOUT_S)
        send(settings, pending)
        wait_for_state(settings, len(pending))
        figures["bytes of ballast that filled the state filesystem"] = _fill(state_dir.parent)
    broke_at = time.monotonic()
    send(settings, [event for pair in attacks for event in pair if event not in pending])

    def reported() -> bool:
        status, body = worker.readyz()
        return not worker.alive() or (status == 503 and "state directory" in body)

    figures["seconds to /readyz 503 naming the state directory, or an exit"] = poll_until(reported, 60, "a report")
    if not worker.alive():
        figures["worker exit status"] = worker.returncode
        assert worker.returncode != 0
        worker = Worker(settings, "w1", tmp_path).start()  # restarted while the disk is still broken
        workers.append(worker)
        poll_until(lambda: "state directory" in worker.readyz()[1], 60, "/readyz naming the state directory")
    status, body = worker.readyz()
    figures["/readyz answer while broken"] = f"{status} {body.strip()}"
    assert status == 503 and "state directory" in body
    problems = [line for line in worker.log().splitlines() if "No space left" in line or "Not a directory" in line]
    assert problems, worker.log_tail()
    figures["first log line naming the problem"] = f"`{problems[0].strip()[:240]}`"
    progress = committed(settings, f"{settings.consumer_group}-sequence", settings.candidates_topic, PARTITIONS)
    figures["candidates committed by the sequence stage"] = sum(max(o, 0) for o in progress.values())
    figures["alerts while broken"] = len(alerts.shell_ids())
    repair()
    repaired_at = time.monotonic()
    figures["seconds broken"] = repaired_at - broke_at
    if not worker.alive():
        workers.append(Worker(settings, "w1", tmp_path).start())
    compare(alerts, replay, figures, 180, settings, tmp_path)
    figures["seconds from repair to all alerts"] = time.monotonic() - repaired_at
    assert workers[-1].alive(), workers[-1].log_tail()
