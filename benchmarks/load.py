"""Load: N clients stream real speech to one server at real-time pace, all at once.

    streamst-bench load --clients 1,2,4,8 --duration-s 60 -o out/load

It starts `streamst-server` on a free port (or uses a running one), and for each N runs N clients,
each streaming a programme of FLEURS clips (GAP_MS of silence after each, each client starting at a
different clip). Per client it reports, over the clips it streamed (SimulEval instances, scored by
`streamst.benchmarks.scoring` on the wall clock): LAAL (on the audio the server had consumed when a
unit was committed) and CA LAAL (on the wall clock when the client received it), the first-commit
latency (clip start to the first committed unit, wall clock), the lag behind real time (the worst
`arrival − audio position` of any caption, and how long after its last frame the session ended),
and whether it kept up: it ended within KEPT_UP_END_LAG_S of its audio. Not a test: a report for
the documentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from streamst import metrics, wire
from streamst.audio import float32_to_pcm16
from streamst.benchmarks import datasets, scoring
from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.client.stream import StreamResult, caption_event, stream_pcm
from streamst.errors import StreamstError
from streamst.server import process as server_process
from streamst.types import SAMPLE_RATE_HZ, SAMPLES_PER_MS

log = logging.getLogger("streamst.benchmarks.load")

GAP_MS = 1_000  # silence after each clip, long enough for the VAD to close a segment
FRAME_MS = 100.0  # audio per binary frame
CLIP_STRIDE = 3  # client i starts its programme at clip i · CLIP_STRIDE
KEPT_UP_END_LAG_S = 5.0  # a client kept up if its session ended this soon after its last frame
SERVER_START_TIMEOUT_S = 300.0
MS_PER_S = 1000.0


class LoadError(StreamstError):
    """The server to load could not be started."""


@dataclass(frozen=True)
class ServerSettings:
    """How the server started here is sized (`streamst-server` options), so that no limit cuts the
    benchmark short; `streamst-bench load --help` gives the defaults."""

    model_concurrency: int  # model calls at once
    n_threads: int  # threads per model call
    max_backlog_ms: int  # audio a session may fall behind before it is ended
    log_path: Path  # the server's output


@dataclass(frozen=True)
class LoadPlan:
    pair: Pair  # what every client speaks and asks for
    levels: tuple[int, ...]  # numbers of concurrent clients, run in turn
    duration_s: float  # speech (and pauses) each client streams
    server: ServerSettings  # for the server started here when `url` is None
    mode: str | None = None  # the mode each client asks for; None takes the server's default
    url: str | None = None  # a running server's /v1/stream; None starts one
    token: str | None = None  # for `url`


@dataclass(frozen=True)
class ClientReport:
    n_clients: int  # clients streaming at once
    client: int  # this client's index, from 0
    n_instances: int  # clips with committed text
    laal_ms: float | None  # mean over those clips; None when no clip had any
    laal_ca_ms: float | None
    first_commit_ca_ms: float | None  # clip start → first committed unit, wall clock
    max_lag_s: float  # worst arrival − audio position of a caption
    end_lag_s: float  # last frame → `end`; inf without one
    kept_up: bool
    errors: str  # the server's error codes, comma-separated; "-" for none
    chrf: float | None


@dataclass(frozen=True)
class LoadResult:
    reports: tuple[ClientReport, ...]
    n_clips: int  # distinct clips the programmes draw from
    wall_s: float  # the whole benchmark
    load_before: float  # 1-minute load average before it started
    load_after: tuple[float, float]  # 1- and 5-minute load averages when it ended


# ---------------------------------------------------------------------------------------
# Programmes


def load_clips(pair: Pair, root: str | Path | None = None) -> list[SpeechInstance]:
    """FLEURS-mini clips spoken in the pair's source with a reference in its target, audio decoded."""
    clips = datasets.load_speech(datasets.FLEURS_MINI, [pair], root=root)[pair.name]
    return [replace(clip, audio=clip.load_audio()) for clip in clips]


def programme(clips: Sequence[SpeechInstance], first: int, duration_s: float) -> SpeechInstance:
    """Clips from index `first` on (cycling), each followed by GAP_MS of silence, until `duration_s`
    is reached: one long-form instance with a reference segment per clip."""
    gap = np.zeros(GAP_MS * SAMPLES_PER_MS, dtype=np.float32)
    pieces: list[np.ndarray] = []
    segments: list[datasets.ReferenceSegment] = []
    n_samples = 0
    for i in itertools.count(first):
        if n_samples >= duration_s * SAMPLE_RATE_HZ:
            break
        clip = clips[i % len(clips)]
        audio = clip.load_audio()
        offset_ms = n_samples / SAMPLES_PER_MS
        segments += [replace(s, start_ms=offset_ms + s.start_ms, end_ms=offset_ms + s.end_ms) for s in clip.segments]
        pieces += [audio, gap]
        n_samples += audio.size + gap.size
    audio = np.concatenate(pieces)
    return SpeechInstance(
        id=f"programme-{first}",
        source_lang=clips[0].source_lang,
        duration_ms=audio.size / SAMPLES_PER_MS,
        source_text="",
        references={},
        segments=tuple(segments),
        audio=audio,
    )


# ---------------------------------------------------------------------------------------
# Scoring


def score_client(n_clients: int, index: int, result: StreamResult, stream: SpeechInstance, pair: Pair) -> ClientReport:
    """One client's figures: its captions scored against the clips of its programme."""
    tracker = scoring.CommitTracker(pair.target)
    for received in result.captions:
        arrived_ms = received.at_s * MS_PER_S
        tracker.observe([caption_event(received.message, arrived_ms)], wall_ms=arrived_ms)
    output = scoring.StreamOutput(
        instance_id=stream.id,
        segments=tracker.output_segments(),
        displayed=tracker.displayed,
        compute_ms=0.0,
        audio_ms=result.audio_s * MS_PER_S,
        wall_clock=True,
    )
    segments = scoring.scored_segments(output, stream, pair.target, first_index=0)
    traces = [s.trace for s in segments]
    latency = metrics.corpus_latency(traces)
    first_commits = [metrics.first_commit_latency_ms(t, computation_aware=True) for t in traces]
    end = next((r for r in result.messages if isinstance(r.message, wire.End)), None)
    end_lag_s = (end.at_s - result.audio_s) if end else float("inf")
    errors = ",".join(str(e.code) for e in result.errors)
    return ClientReport(
        n_clients=n_clients,
        client=index,
        n_instances=latency.n_instances,
        laal_ms=latency.laal_ms,
        laal_ca_ms=metrics.corpus_latency(traces, computation_aware=True).laal_ms,
        first_commit_ca_ms=_mean(first_commits),
        max_lag_s=max((r.at_s - r.message.audio_ms / MS_PER_S for r in result.captions), default=0.0),
        end_lag_s=end_lag_s,
        kept_up=end is not None and not errors and end_lag_s <= KEPT_UP_END_LAG_S,
        errors=errors or "-",
        chrf=metrics.chrf(scoring.hypotheses_of(segments), scoring.references_of(segments)).score,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


# ---------------------------------------------------------------------------------------
# Running


def run_load(
    plan: LoadPlan, clips: Sequence[SpeechInstance], on_level: Callable[[int], None] | None = None
) -> LoadResult:
    """Every level of `plan` in turn against one server; `on_level(n)` is called as level n starts."""
    started_s = time.monotonic()
    load_before = os.getloadavg()[0]
    if plan.url:
        reports = asyncio.run(_run_levels(plan, plan.url, clips, on_level))
    else:
        with local_server(plan.server, max(plan.levels)) as server:
            reports = asyncio.run(_run_levels(plan, server.url, clips, on_level))
    load_1m, load_5m, _ = os.getloadavg()
    return LoadResult(tuple(reports), len(clips), time.monotonic() - started_s, load_before, (load_1m, load_5m))


async def _run_levels(
    plan: LoadPlan, url: str, clips: Sequence[SpeechInstance], on_level: Callable[[int], None] | None
) -> list[ClientReport]:
    reports = []
    for n_clients in plan.levels:
        if on_level is not None:
            on_level(n_clients)
        reports += await run_level(plan, url, n_clients, clips)
    return reports


async def run_level(plan: LoadPlan, url: str, n_clients: int, clips: Sequence[SpeechInstance]) -> list[ClientReport]:
    """`n_clients` clients at once, each streaming its own programme; one report per client."""
    start = wire.Start(plan.pair.source.code, plan.pair.target.code, mode=plan.mode)
    streams = programmes(clips, n_clients, plan.duration_s)
    results = await stream_programmes(url, start, streams, token=plan.token)
    return [
        score_client(n_clients, i, result, stream, plan.pair)
        for i, (result, stream) in enumerate(zip(results, streams, strict=True))
    ]


def programmes(clips: Sequence[SpeechInstance], n_clients: int, duration_s: float) -> list[SpeechInstance]:
    """One programme per client, client i starting at clip i · CLIP_STRIDE."""
    return [programme(clips, first=i * CLIP_STRIDE, duration_s=duration_s) for i in range(n_clients)]


async def stream_programmes(
    url: str, start: wire.Start, streams: Sequence[SpeechInstance], token: str | None = None
) -> list[StreamResult]:
    """Every programme at once, each by its own client at real-time pace; their results in order."""
    return await asyncio.gather(
        *(
            stream_pcm(url, start, float32_to_pcm16(stream.load_audio()), frame_ms=FRAME_MS, token=token)
            for stream in streams
        )
    )


@dataclass(frozen=True)
class LocalServer:
    port: int  # on 127.0.0.1
    process: subprocess.Popen  # the `streamst-server` child

    @property
    def url(self) -> str:
        """Its /v1/stream."""
        return f"ws://127.0.0.1:{self.port}{wire.STREAM_PATH}"


@contextlib.contextmanager
def local_server(settings: ServerSettings, max_clients: int, *more_options: str) -> Iterator[LocalServer]:
    """`streamst-server` on a free port for the block, sized so that no limit cuts a benchmark
    short; `more_options` come last (and win over these)."""
    port = server_process.free_port()
    options = (
        "--max-sessions", str(max_clients), "--max-backlog-ms", str(settings.max_backlog_ms),
        "--model-concurrency", str(settings.model_concurrency), "--threads", str(settings.n_threads),
        "--idle-timeout-s", "600", "--finish-timeout-s", "3600", "--log-json", *more_options,
    )  # fmt: skip
    try:
        with server_process.running(
            port, settings.log_path, *options, ready_timeout_s=SERVER_START_TIMEOUT_S
        ) as process:
            yield LocalServer(port, process)
    except server_process.ServerStartError as e:
        raise LoadError(f"{e}\n(the whole log is in {settings.log_path})") from e


# ---------------------------------------------------------------------------------------
# Report


def format_report(plan: LoadPlan, result: LoadResult) -> str:
    """The per-client table, the largest level every client kept up with, and the conditions."""
    header = (
        f"{'N':>2} {'client':>6} {'clips':>5} {'LAAL ms':>8} {'CA LAAL ms':>10} {'1st commit CA ms':>16} "
        f"{'max lag s':>9} {'end lag s':>9} {'chrF':>5} {'kept up':>7} errors"
    )
    lines = [header, "-" * len(header)]
    for r in result.reports:
        lines.append(
            f"{r.n_clients:>2} {r.client:>6} {r.n_instances:>5} {_fmt(r.laal_ms):>8} {_fmt(r.laal_ca_ms):>10} "
            f"{_fmt(r.first_commit_ca_ms):>16} {r.max_lag_s:>9.1f} {r.end_lag_s:>9.1f} {_fmt(r.chrf, 1):>5} "
            f"{'yes' if r.kept_up else 'no':>7} {r.errors}"
        )
    levels = sorted({r.n_clients for r in result.reports})
    sustained = [n for n in levels if all(r.kept_up for r in result.reports if r.n_clients == n)]
    lines += ["", f"largest N where every client kept up with real time: {max(sustained) if sustained else 'none'}"]
    lines.append(
        f"({plan.pair.source.code}→{plan.pair.target.code}, {plan.mode or 'default'} mode, "
        f"{result.n_clips} FLEURS clips, {os.cpu_count()} CPU cores, {result.wall_s:.0f} s in all; "
        f"load average before {result.load_before:.1f}, "
        f"after {result.load_after[0]:.1f} (1 min) / {result.load_after[1]:.1f} (5 min))"
    )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def save_json(result: LoadResult, path: Path) -> None:
    """The per-client figures, one JSON object per client."""
    path.write_text(json.dumps([asdict(r) for r in result.reports], indent=1), encoding="utf-8")
