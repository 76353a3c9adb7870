"""Stream one instance through an engine session, on a simulated clock or the wall clock at 1×.

Simulated clock: the audio is pushed in ``chunk_ms`` pieces as fast as the session takes
it (the session decides when to work); the session's clock advances by each chunk's
duration, so events and decisions are exact and repeatable, and the compute time of every
push()/finish() call is measured separately with ``time.perf_counter``.

Wall clock at 1×: the audio is released as a live microphone would release it; every push
takes all audio that has "arrived" by then, so a slow engine falls behind as it would live,
and the session runs with its live options (stale steps skipped, compute budget on).

Which session options a (mode, policy, knob) triple means is decided in one place,
:func:`session_options`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.benchmarks.scoring import CallRecord, CommitTracker, StreamOutput

from streamst.clock import SimulatedClock, WallClock
from streamst.engine import MODES, Engine
from streamst.errors import OptionsError
from streamst.sessions.cascade import CascadeOptions
from streamst.sessions.direct import DirectOptions, DirectStats
from streamst.types import SAMPLES_PER_MS
from streamst.vad import VADOptions

log = logging.getLogger("streamst.benchmarks.runner")

MS_PER_S = 1000
ClockKind = Literal["simulated", "wall"]
CLOCKS: tuple[ClockKind, ...] = ("simulated", "wall")
DEFAULT_CHUNK_MS = 20
MIN_CHUNK_MS = 10
WALL_POLL_S = 0.005  # how long the 1× feeder sleeps while no new audio has arrived


# ---------------------------------------------------------------------------------------
# Mode, policy, knob → session options


@dataclass(frozen=True)
class PolicySpec:
    """A policy of a mode, and the latency knob it exposes."""

    mode: str
    name: str
    knob_name: str  # what the knob sets, with its unit
    default_knobs: tuple[float, ...]  # knob values a run sweeps when none are given
    description: str
    build: Callable[[float], Any]  # knob value → the options engine.session() takes


def _cascade_sentence(step_ms: float) -> CascadeOptions:
    return CascadeOptions(step_ms=int(step_ms), early_sentences=True)


def _cascade_segment(min_silence_ms: float) -> CascadeOptions:
    return CascadeOptions(early_sentences=False, vad=replace(VADOptions(), min_silence_ms=int(min_silence_ms)))


def _direct(policy: str) -> Callable[[float], DirectOptions]:
    # On the simulated clock a machine-speed budget would make runs unrepeatable; the budget
    # guards live streams and shows in wall-clock runs.
    return lambda knob: DirectOptions(policy=policy, knob=knob, max_compute_ratio=math.inf)


POLICIES: dict[str, dict[str, PolicySpec]] = {
    "direct": {
        "la": PolicySpec(
            "direct",
            "la",
            "n",
            (2, 3, 4, 5),
            "commit the prefix the last n translations of the source so far agree on",
            _direct("la"),
        ),
        "wait-k": PolicySpec(
            "direct",
            "wait-k",
            "k",
            (1, 2, 3, 5),
            "commit target words trailing the stable source by k words",
            _direct("wait-k"),
        ),
        "confidence": PolicySpec(
            "direct",
            "confidence",
            "tau",
            (0.3, 0.5, 0.7, 0.9),
            "commit proposal tokens of the stable source while their probability stays >= tau",
            _direct("confidence"),
        ),
    },
    "cascade": {
        "sentence": PolicySpec(
            "cascade",
            "sentence",
            "step_ms",
            (CascadeOptions.step_ms,),
            "translate each complete sentence once two re-transcriptions agree on it; "
            "the knob is the re-transcription interval",
            _cascade_sentence,
        ),
        "segment": PolicySpec(
            "cascade",
            "segment",
            "min_silence_ms",
            (VADOptions.min_silence_ms,),
            "translate only when the VAD closes a segment; the knob is the silence that closes it",
            _cascade_segment,
        ),
    },
}
"""mode → policy name → spec. A new mode or policy is one entry here."""


def default_policy(mode: str) -> str:
    """The policy a run of ``mode`` uses when none is named: the first one listed."""
    return next(iter(POLICIES[mode]))


def policy_spec(mode: str, policy: str) -> PolicySpec:
    """The spec of ``policy`` in ``mode``; raises OptionsError naming the valid choices."""
    if mode not in POLICIES:
        raise OptionsError(f"unknown mode {mode!r}; choose one of: {', '.join(POLICIES)}")
    if mode not in MODES:
        raise OptionsError(f"mode {mode!r} is not available in this engine; it serves: {', '.join(MODES)}")
    if policy not in POLICIES[mode]:
        raise OptionsError(f"unknown policy {policy!r} for mode {mode}; choose one of: {', '.join(POLICIES[mode])}")
    return POLICIES[mode][policy]


def session_options(mode: str, policy: str, knob: float) -> Any:
    """The options ``engine.session(..., mode=mode, options=...)`` takes for this triple."""
    return policy_spec(mode, policy).build(knob)


def live_options(options: Any) -> Any:
    """The options as a live stream runs them: stale steps are skipped when the engine falls
    behind, and the direct path's compute budget applies (the cascade takes over past it)."""
    options = replace(options, skip_stale_steps=True)
    if isinstance(options, DirectOptions):
        options = replace(options, max_compute_ratio=DirectOptions.max_compute_ratio)
    return options


@dataclass(frozen=True)
class RunSpec:
    """One streaming configuration on one pair."""

    mode: str
    policy: str
    knob: float
    pair: Pair

    @property
    def spec(self) -> PolicySpec:
        return policy_spec(self.mode, self.policy)

    @property
    def name(self) -> str:
        """A folder name: ``cascade-sentence-step_ms=1000``."""
        return f"{self.mode}-{self.policy}-{self.spec.knob_name}={self.knob:g}"


# ---------------------------------------------------------------------------------------
# Streaming


@dataclass(frozen=True)
class StreamSettings:
    clock: ClockKind = "simulated"  # simulated (exact, compute measured apart) or wall (1×)
    chunk_ms: int = DEFAULT_CHUNK_MS  # audio per push on the simulated clock; the smallest push at 1×

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise OptionsError(f"unknown clock {self.clock!r}; choose one of: {', '.join(CLOCKS)}")
        if self.chunk_ms < MIN_CHUNK_MS:
            raise OptionsError(f"chunk_ms must be at least {MIN_CHUNK_MS}, got {self.chunk_ms}")


def stream_instance(engine: Engine, instance: SpeechInstance, run: RunSpec, settings: StreamSettings) -> StreamOutput:
    """Stream ``instance`` through a new session for ``run``.

    An engine call that raises ends this instance only: the output keeps what was committed
    before, and ``StreamOutput.error`` says what went wrong.
    """
    audio = instance.load_audio()
    audio_ms = len(audio) / SAMPLES_PER_MS
    wall = settings.clock == "wall"
    options = session_options(run.mode, run.policy, run.knob)
    if wall:
        options = live_options(options)
    clock = WallClock() if wall else SimulatedClock()
    session = engine.session(run.pair.source.code, run.pair.target.code, mode=run.mode, clock=clock, options=options)
    timed = _TimedSession(session, CommitTracker(run.pair.target), wall)
    error = ""
    try:
        if wall:
            _feed_at_real_time(timed, audio, settings.chunk_ms)
        else:
            _feed_simulated(timed, audio, clock, settings.chunk_ms)
        timed.finish(audio_ms)
    except Exception as e:  # noqa: BLE001 - a failing engine call must not end the whole benchmark
        error = f"{type(e).__name__}: {e}"
        log.error("%s %s %s failed at %.0f ms of audio: %s", run.name, run.pair.name, instance.id, timed.fed_ms, error)
    stats = getattr(session, "stats", None)  # only the direct session counts its steps
    return timed.output(instance.id, audio_ms, error, stats if isinstance(stats, DirectStats) else None)


class _TimedSession:
    """A session whose push()/finish() calls are timed and whose events are tracked."""

    def __init__(self, session: Any, tracker: CommitTracker, wall_clock: bool) -> None:
        self.session = session
        self.tracker = tracker
        self.wall_clock = wall_clock
        self.origin_s = time.perf_counter()
        self.compute_ms = 0.0
        self.fed_ms = 0.0
        self.calls: list[CallRecord] = []

    def push(self, audio: np.ndarray) -> None:
        self.fed_ms += len(audio) / SAMPLES_PER_MS
        self._call(lambda: self.session.push(audio))

    def finish(self, audio_ms: float) -> None:
        self.fed_ms = audio_ms
        self._call(self.session.finish)

    def _call(self, call: Callable[[], list]) -> None:
        started_s = time.perf_counter()
        events = call()
        now_s = time.perf_counter()
        self.compute_ms += (now_s - started_s) * MS_PER_S
        self.calls.append(CallRecord(self.fed_ms, self.compute_ms))
        if self.wall_clock:
            self.tracker.observe(events, wall_ms=(now_s - self.origin_s) * MS_PER_S)
        else:
            self.tracker.observe(events, compute_ms=self.compute_ms)

    def output(self, instance_id: str, audio_ms: float, error: str, steps: DirectStats | None) -> StreamOutput:
        return StreamOutput(
            instance_id,
            self.tracker.output_segments(),
            self.tracker.displayed,
            self.compute_ms,
            audio_ms,
            tuple(self.calls),
            wall_clock=self.wall_clock,
            error=error,
            committed=self.tracker.committed,
            steps=steps,
        )


def _feed_simulated(timed: _TimedSession, audio: np.ndarray, clock: SimulatedClock, chunk_ms: int) -> None:
    """Push ``chunk_ms`` pieces back to back; the session clock moves by each piece's duration."""
    chunk_samples = chunk_ms * SAMPLES_PER_MS
    for start in range(0, len(audio), chunk_samples):
        chunk = audio[start : start + chunk_samples]
        clock.advance(len(chunk) / SAMPLES_PER_MS)
        timed.push(chunk)


def _feed_at_real_time(timed: _TimedSession, audio: np.ndarray, chunk_ms: int) -> None:
    """Release the audio at 1× from ``timed.origin_s``; each push takes all that has arrived
    (at least ``chunk_ms`` of it, or the rest)."""
    chunk_samples = chunk_ms * SAMPLES_PER_MS
    n_fed = 0
    while n_fed < len(audio):
        elapsed_ms = int((time.perf_counter() - timed.origin_s) * MS_PER_S)
        arrived = min(len(audio), elapsed_ms * SAMPLES_PER_MS)
        if arrived - n_fed < chunk_samples and arrived < len(audio):
            time.sleep(WALL_POLL_S)
            continue
        timed.push(audio[n_fed:arrived])
        n_fed = arrived
