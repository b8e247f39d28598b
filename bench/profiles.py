"""Where the time goes: pyinstrument profiles of the ingest stage and of the replay, on the corpus.

Profiled runs are separate from the timed ones (a sampling profiler costs a little). The full
text profiles go to bench/out/profiles/; the results file quotes their top frames.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from pyinstrument import Profiler

from app.detector import Alert
from app.kafka.admin import ensure_topics
from app.kafka.ingest import IngestStage
from app.replay import replay
from app.rule import CompiledRule
from app.settings import Settings
from bench.common import Corpus, Part
from bench.throughput import _timed, bench_settings

INTERVAL_S = 0.001


def profile_ingest(bootstrap: str, topic: str, events: int, rules: list[CompiledRule], out: Path) -> Part:
    """The ingest stage's ``poll_once`` loop over the whole topic, under pyinstrument."""
    settings = bench_settings(bootstrap, topic, f"profile-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.candidates_topic: 8, settings.dead_letter_topic: 8})
    profiler = Profiler(interval=INTERVAL_S)
    with IngestStage(settings, rules) as stage:
        stage.poll_once(0.1)  # not profiled: joins the group (several seconds of waiting)
        profiler.start()
        _timed(lambda: stage.poll_once(0.1), events)
        profiler.stop()
    return _part("profile_ingest", "Profile: ingest stage (`IngestStage.poll_once` loop)", profiler, out / "ingest.txt")


def profile_replay(corpus: Corpus, rules: list[CompiledRule], out: Path) -> Part:
    """``app.replay.replay`` over the corpus file, under pyinstrument."""
    profiler = Profiler(interval=INTERVAL_S)

    def ignore(_: Alert) -> None:
        pass

    profiler.start()
    replay([str(corpus.path)], rules, Settings(), ignore)
    profiler.stop()
    return _part("profile_replay", "Profile: replay (`app.replay.replay`)", profiler, out / "replay.txt")


def _part(key: str, title: str, profiler: Profiler, path: Path) -> Part:
    """The call tree goes to ``path``; the results quote the flat listing (time spent in each function itself)."""
    path.write_text(profiler.output_text(unicode=False, color=False, short_mode=False))
    flat = profiler.output_text(unicode=False, color=False, flat=True, short_mode=True)
    part = Part(key, title)
    part.notes.append(f"Time spent in each function itself (pyinstrument, flat); the call tree: "
                      f"bench/out/profiles/{path.name}.")
    part.rows.append(("profile", flat))
    return part


def py_spy(pid: int, seconds: float, out: Path) -> str | None:
    """Sample another process with py-spy (if installed and allowed) for ``seconds``; returns a summary of
    the functions with the most samples (own time, then with callees), or None when py-spy cannot run."""
    binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if binary is None:
        return None
    raw = out.with_suffix(".raw")
    done = subprocess.run(
        [binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--format", "raw",
         "--output", str(raw), "--nonblocking"],
        capture_output=True, text=True,
    )
    if done.returncode != 0 or not raw.exists():
        return None
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples over {seconds:.0f} s (all threads; idle threads wait in select/poll)", "own time:"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(12)]
    lines.append("with callees (the service's frames and the Kafka clients'):")
    interesting = [(f, c) for f, c in inclusive.most_common() if "app/" in f or "aiokafka" in f or "faust/stores" in f]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in interesting[:14]]
    text = "\n".join(lines)
    out.write_text(text + "\n")
    return text
