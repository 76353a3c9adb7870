"""`streamst-bench profile`: where one direct step's time goes, with 1, 2, 4 … streams at once.

Each round streams N FLEURS-mini clips of one pair at once (one thread per stream, sharing the
engine's models, each on a simulated clock pushed as fast as it goes) and records every stage's
time: VAD, feature extraction, Whisper encode/decode/alignment, translator prefill/decode, the
agreement and the policy, and the time spent waiting for a model another stream holds. The table
gives milliseconds per step (a stage's total over all streams ÷ all steps), so a stage that
costs the same per step reads the same at every N; `RTF` is each stream's compute ÷ its audio,
and `streams` is how many such streams the machine sustains at 1× (audio ÷ wall time)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from streamst.benchmarks.datasets import SpeechInstance
from streamst.benchmarks.runner import RunSpec, StreamSettings, stream_instance

from streamst.engine import Engine
from streamst.profiling import Profile, SpanTotal

log = logging.getLogger("streamst.benchmarks.profile")

# Stages in the order a step runs them; nested ones are indented in the table.
STAGES: tuple[tuple[str, int], ...] = (
    ("vad", 0),
    ("step", 0),
    ("transcribe", 1),
    ("encoder.wait", 2),
    ("whisper.features", 2),
    ("whisper.encode", 2),
    ("whisper.decode", 2),
    ("whisper.align", 2),
    ("agreement", 1),
    ("translate", 1),
    ("translator.wait", 2),
    ("translator.prefill", 2),
    ("translator.decode", 2),
    ("policy", 1),
    ("close", 0),
)
PROFILE_TXT = "profile.txt"
PROFILE_JSON = "profile.json"


@dataclass(frozen=True)
class Round:
    n_streams: int
    instance_ids: tuple[str, ...]
    audio_s: float  # all streams' audio
    wall_s: float  # from the first push to the last finish
    compute_s: float  # all streams' push/finish time
    n_steps: int
    n_translator_calls: int
    spans: dict[str, SpanTotal]
    errors: tuple[str, ...]

    @property
    def rtf(self) -> float:
        """Each stream's compute per second of its audio (with waits for the shared models)."""
        return self.compute_s / self.audio_s if self.audio_s else 0.0

    @property
    def streams_at_1x(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s else 0.0


def profile_round(engine: Engine, run: RunSpec, instances: list[SpeechInstance]) -> Round:
    """Streams `instances` at once, one thread each, into one profile."""
    profile = Profile()
    outputs: list = [None] * len(instances)
    start = threading.Barrier(len(instances))

    def work(i: int) -> None:
        with profile.recording():
            start.wait()
            outputs[i] = stream_instance(engine, instances[i], run, StreamSettings())

    threads = [threading.Thread(target=work, args=(i,), name=f"profile-stream-{i}") for i in range(len(instances))]
    started_s = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - started_s
    spans = profile.totals()
    return Round(
        n_streams=len(instances),
        instance_ids=tuple(o.instance_id for o in outputs),
        audio_s=sum(o.audio_ms for o in outputs) / 1000,
        wall_s=wall_s,
        compute_s=sum(o.compute_ms for o in outputs) / 1000,
        n_steps=sum(o.steps.n_steps for o in outputs if o.steps),
        n_translator_calls=spans.get("translate", SpanTotal(0, 0.0)).n_calls,
        spans=spans,
        errors=tuple(o.error for o in outputs if o.error),
    )


def render(rounds: list[Round], title: str) -> str:
    """The table: ms per step for each stage, one column per round."""
    header = ["stage (ms per step)", *(f"{r.n_streams} stream{'s' if r.n_streams > 1 else ''}" for r in rounds)]
    rows: list[list[str]] = []
    for name, depth in STAGES:
        cells = []
        for r in rounds:
            total = r.spans.get(name)
            cells.append(f"{total.seconds * 1000 / max(1, r.n_steps):.0f}" if total else "-")
        rows.append(["  " * depth + name, *cells])
    rows.append(["translator calls per step", *(f"{r.n_translator_calls / max(1, r.n_steps):.2f}" for r in rounds)])
    rows.append(["steps", *(str(r.n_steps) for r in rounds)])
    rows.append(["audio per stream (s)", *(f"{r.audio_s / r.n_streams:.1f}" for r in rounds)])
    rows.append(["RTF per stream", *(f"{r.rtf:.2f}" for r in rounds)])
    rows.append(["streams at 1x (audio / wall)", *(f"{r.streams_at_1x:.2f}" for r in rounds)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [title, "", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    errors = [e for r in rounds for e in r.errors]
    if errors:
        out += ["", "errors:", *errors]
    return "\n".join(out) + "\n"


def save(rounds: list[Round], title: str, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    text = render(rounds, title)
    (folder / PROFILE_TXT).write_text(text, encoding="utf-8")
    data = {"title": title, "rounds": [{**asdict(r), "rtf": r.rtf, "streams_at_1x": r.streams_at_1x} for r in rounds]}
    (folder / PROFILE_JSON).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return text
