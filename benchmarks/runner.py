"""Stream one instance through an engine session, on a simulated clock or the wall clock at 1×.

Simulated clock: the audio is pushed in ``chunk_ms`` pieces as fast as the session takes
it (the session decides when to work); the session's clock advances by each chunk's
duration, so events and decisions are exact and repeatable, and the compute time of every
push()/finish() call is measured separately with ``time.perf_counter``.

Wall clock at 1×: the audio is released as a live microphone would release it; every push
takes all audio that has "arrived" by then, so a slow engine falls behind as it would live,
and the session runs with its live options (stale steps skipped, compute budget on).

Which session options a (mode, policy, knob) triple means is decided in one place,
:mod:`streamst.options`; so is the compute budget's meter (the session's clock: no compute is
charged on the simulated clock, so results do not depend on the machine).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from streamst.benchmarks.datasets import Pair, SpeechInstance
from streamst.benchmarks.scoring import CallRecord, CommitTracker, StreamOutput

from streamst.clock import SimulatedClock, WallClock
from streamst.engine import Engine
from streamst.errors import OptionsError
from streamst.options import PolicySpec, policy_spec, session_options
from streamst.sessions.base import SessionOptions, SessionStats
from streamst.types import SAMPLES_PER_MS

log = logging.getLogger("streamst.benchmarks.runner")

MS_PER_S = 1000
ClockKind = Literal["simulated", "wall"]
CLOCKS: tuple[ClockKind, ...] = ("simulated", "wall")
DEFAULT_CHUNK_MS = 20
MIN_CHUNK_MS = 10
WALL_POLL_S = 0.005  # how long the 1× feeder sleeps while no new audio has arrived


def live_options(options: SessionOptions) -> SessionOptions:
    """The options as a live stream runs them: stale steps are skipped when the engine falls behind."""
    return replace(options, skip_stale_steps=True)


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
    def options(self) -> SessionOptions:
        return session_options(self.mode, self.policy, self.knob)

    @property
    def name(self) -> str:
        """A folder name: ``cascade-sentence-step_ms=1000``."""
        return f"{self.mode}-{self.policy}-{self.spec.knob.name}={self.knob:g}"


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
    options = run.options
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
    return timed.output(instance.id, audio_ms, error, session.stats)


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

    def output(self, instance_id: str, audio_ms: float, error: str, steps: SessionStats | None) -> StreamOutput:
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
