"""Where the time goes: py-spy on the service's own processes, pyinstrument on the in-process loops.

A missed target is explained by a profile of the process users run: ``py-spy record --nonblocking``
samples a ``python -m app run`` child without pausing it, with one stack per thread, so the
summary can say how much of the wall time the stage's loop thread was busy and in which
functions. The in-process ingest loop and the replay are profiled with pyinstrument, in separate
runs from the timed ones (a sampling profiler costs a little). Raw profiles go to
bench/out/profiles/; the results file quotes their top functions.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pyinstrument import Profiler

from app.core import Alert, CompiledRule, Detector
from app.replay import replay
from bench.common import Corpus, Part
from bench.service import follow, start
from bench.throughput import CONSUMED, ingest_stage, reader_settings, timed

INTERVAL_S = 0.001
SPY_RATE = 200  # samples per second and thread
MIN_SAMPLING_S = 1.0  # py-spy needs a moment to attach: a shorter recording (a quick run's) may write nothing
TOP = 15
# Leaf frames of a thread that is waiting, not running Python, although py-spy sampled it as active
# (a request thread of the metrics endpoint between two scrapes): left out of every share.
_WAITING = ("select (selectors.py:", "wait (threading.py:")
# Frames every sample of a stage passes through (the command line, the loop): they say nothing.
_ENTRY_FRAMES = (
    "<module> (app/__main__.py)",
    "main (app/cli.py)",
    "_run (app/cli.py)",
    "run (app/service/run.py)",
    "_run_ingest (app/service/run.py)",
    "IngestStage.run (app/service/ingest.py)",
    "SequenceApp.run (app/service/faust_app.py)",
    "Worker.execute_from_commandline (mode/worker.py)",
    "Agent._execute_actor (faust/agents/agent.py)",
)
# Frames worth listing with their callees: the service's, and the libraries it spends its time in.
_INTERESTING = ("app/", "faust/", "aiokafka/", "confluent_kafka", "rocksdict", "mode/", "prometheus_client/")


@dataclass
class SpySummary:
    """py-spy's raw stacks, counted per thread, own frame and every frame on the stack."""

    seconds: float
    rate: int
    samples: Counter[str] = field(default_factory=Counter)  # per thread name
    own: dict[str, Counter[str]] = field(default_factory=dict)  # thread -> leaf frame -> samples
    inclusive: dict[str, Counter[str]] = field(default_factory=dict)  # thread -> function -> samples

    @classmethod
    def parse(cls, raw: str, seconds: float, rate: int) -> SpySummary:
        summary = cls(seconds, rate)
        for line in raw.splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            thread, *frames = stack.split(";")
            if frames and any(marker in frames[-1] for marker in _WAITING):
                continue
            name = thread.partition(": ")[2] or thread
            samples = int(count)
            summary.samples[name] += samples
            if frames:
                summary.own.setdefault(name, Counter())[frames[-1]] += samples
                functions = {_function(frame) for frame in frames}
                summary.inclusive.setdefault(name, Counter()).update(dict.fromkeys(functions, samples))
        return summary

    def busy(self, thread: str) -> float:
        """The share of the wall time ``thread`` was running Python (py-spy skips idle threads, and so does
        ``parse`` with the ones it missed)."""
        return self.samples[thread] / (self.seconds * self.rate) if self.seconds else 0.0

    def heaviest(self, thread: str | None = None, count: int = 4) -> list[tuple[str, float]]:
        """The functions with the most own time (all lines of each together), as shares of wall time."""
        wall = self.seconds * self.rate
        by_function: Counter[str] = Counter()
        for name in [thread] if thread else list(self.samples):
            for frame, samples in self.own.get(name, {}).items():
                by_function[_function(frame)] += samples
        return [(function, samples / wall) for function, samples in by_function.most_common(count)]

    def text(self, thread: str | None = None) -> str:
        """The top functions, as shares of one core's wall time; one thread's, or every thread's summed."""
        wall = self.seconds * self.rate
        threads = [thread] if thread else list(self.samples)
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for name in threads:
            own.update(self.own.get(name, {}))
            inclusive.update(self.inclusive.get(name, {}))
        busy = ", ".join(f"{name} {self.samples[name] / wall:.0%}" for name, _ in self.samples.most_common(6))
        lines = [
            f"{sum(self.samples.values()):,} samples over {self.seconds:.1f} s at {self.rate} Hz; busy "
            f"(share of wall time running Python) per thread: {busy}"
        ]
        scope = f"thread {thread}" if thread else "all threads"
        lines.append(f"own time ({scope}, share of wall time):")
        lines += [f"  {count / wall:6.1%}  {frame}" for frame, count in own.most_common(TOP)]
        lines.append(f"with callees ({scope}; the service's frames and its libraries'):")
        listed = [
            (frame, count)
            for frame, count in inclusive.most_common()
            if any(mark in frame for mark in _INTERESTING) and frame not in _ENTRY_FRAMES
        ]
        lines += [f"  {count / wall:6.1%}  {frame}" for frame, count in listed[:TOP]]
        return "\n".join(lines)


def _function(frame: str) -> str:
    """``name (file.py:12)`` -> ``name (file.py)``: a function once, whatever line was running."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if ":" in where else frame


class PySpy:
    """``py-spy record`` on another process between ``start`` and ``stop`` (when py-spy can run at all)."""

    rate = SPY_RATE

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def start(self) -> None:
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if binary is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._started = time.perf_counter()

    def stop(self) -> SpySummary | None:
        """Stop sampling (py-spy writes its output on SIGINT); the summary, or None without a profile."""
        process, self._process = self._process, None
        if process is None:
            return None
        elapsed = time.perf_counter() - self._started
        if elapsed < MIN_SAMPLING_S:
            time.sleep(MIN_SAMPLING_S - elapsed)
        seconds = time.perf_counter() - self._started
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if not self.out.exists():
            return None
        return SpySummary.parse(self.out.read_text(), seconds, self.rate)


def profile_ingest_process(bootstrap: str, topic: str, records: int, out: Path) -> Part:
    """The ingest process over the whole topic again, sampled by py-spy from its first record to its last."""
    part = Part("profile_ingest_process", "Profile: ingest stage as a process (py-spy)")
    settings = reader_settings(bootstrap, topic, "profile-ingest")
    service = start("ingest", settings, settings.consumer_group)
    spy = PySpy(service.pid, out)
    try:
        window = follow(service, lambda s: s.total(CONSUMED), records, on_start=spy.start)
    finally:
        summary = spy.stop()
        service.stop()
    if summary is None:
        raise RuntimeError("py-spy could not sample the ingest process (not installed, or ptrace not permitted)")
    part.figures.update(rate=window.rate, loop_busy=summary.busy("MainThread"))
    part.heaviest["ingest"] = summary.heaviest("MainThread")
    part.notes.append(
        f"`python -m app run --role ingest` over the same topic, sampled by `py-spy record --nonblocking` at "
        f"{spy.rate} Hz from its first record to its last ({window.rate:,.0f} events/s while sampled); raw "
        f"stacks in bench/out/profiles/{out.name}. Shares are of the wall time of the thread that runs the "
        "stage's loop (MainThread): the rest of its time it waited, the GIL released, in librdkafka (consume, "
        "commit, produce)."
    )
    part.rows.append(("profile", summary.text(thread="MainThread")))
    return part


def profile_ingest_inprocess(bootstrap: str, topic: str, records: int, rules: list[CompiledRule], out: Path) -> Part:
    """The in-process ``poll_once`` loop over the whole topic, under pyinstrument."""
    profiler = Profiler(interval=INTERVAL_S)
    with ingest_stage(bootstrap, topic, rules, "profile-inprocess") as stage:
        first = 0
        while not first:  # not profiled: joining the group is seconds of waiting
            first = stage.poll_once(0.1)
        profiler.start()
        try:
            timed(lambda: stage.poll_once(0.1), records - first)
        finally:
            profiler.stop()
    title = "Profile: ingest stage, in-process (`IngestStage.poll_once` loop, pyinstrument)"
    return _pyinstrument_part("profile_ingest", title, profiler, out)


def profile_replay(corpus: Corpus, rules: list[CompiledRule], out: Path) -> Part:
    """``app.replay.replay`` over the corpus file, under pyinstrument."""
    profiler = Profiler(interval=INTERVAL_S)

    def ignore(_: Alert) -> None:
        pass

    profiler.start()
    try:
        replay([str(corpus.path)], Detector(rules), ignore)
    finally:
        profiler.stop()
    return _pyinstrument_part("profile_replay", "Profile: replay (`app.replay.replay`, pyinstrument)", profiler, out)


def _pyinstrument_part(key: str, title: str, profiler: Profiler, path: Path) -> Part:
    """The call tree goes to ``path``; the results quote the flat listing (time spent in each function itself)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profiler.output_text(unicode=False, color=False, short_mode=False))
    flat = profiler.output_text(unicode=False, color=False, flat=True, short_mode=True)
    part = Part(key, title)
    part.notes.append(
        f"Seconds spent in each function itself (pyinstrument, flat); the call tree: bench/out/profiles/{path.name}."
    )
    part.rows.append(("profile", flat))
    return part
