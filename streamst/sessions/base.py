"""The frame loop every session shares: audio → VAD frames → segment boundaries → hooks.

Audio is consumed in whole VAD frames, so a session behaves the same whatever chunk sizes the
caller pushes; the hooks see the audio position (`heard_ms`) at which each decision is made."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from streamst.clock import Clock
from streamst.encoders.base import SpeechEncoder
from streamst.languages import Language
from streamst.punctuation import Punctuator
from streamst.sessions.buffer import AudioBuffer
from streamst.translators.base import Translator
from streamst.types import Event, FinalEvent, Mode, PartialEvent
from streamst.vad import FRAME_MS, FRAME_SAMPLES, Endpointer, SegmentClosed, SegmentOpened, SileroVAD, VADOptions

log = logging.getLogger("streamst.sessions")

KEEP_BEFORE_MS = 1_000  # audio kept before the open segment (speech padding reaches into it)


@dataclass(frozen=True)
class Components:
    """The shared models a session uses; loaded once by the engine."""

    vad: SileroVAD
    encoder: SpeechEncoder
    punctuator: Punctuator
    translator: Translator


class SegmentedSession(ABC):
    """One stream. `push` and `finish` return the events they caused, in time order."""

    mode: Mode

    def __init__(
        self, components: Components, source: Language, target: Language, vad_options: VADOptions, clock: Clock
    ) -> None:
        self.components = components
        self.source = source
        self.target = target
        self.clock = clock
        self._vad = components.vad.stream()
        self._endpointer = Endpointer(vad_options)
        self._buffer = AudioBuffer()
        self._pending = np.zeros(0, dtype=np.float32)
        self._heard_samples = 0
        self._frames_left = 0  # frames of the current push still to be consumed
        self._finished = False
        self._next_segment_id = 0

    @property
    def heard_ms(self) -> int:
        """Source audio consumed so far, in whole VAD frames."""
        return self._heard_samples * FRAME_MS // FRAME_SAMPLES

    @property
    def frames_left_ms(self) -> int:
        """Audio already pushed but not yet consumed: a step due now is stale if this is long."""
        return self._frames_left * FRAME_MS

    @property
    def segment_open(self) -> bool:
        return self._endpointer.open_start_ms is not None

    def push(self, audio: np.ndarray) -> list[Event]:
        """audio: (n_samples,) float32 at 16 kHz, any length."""
        if self._finished:
            raise RuntimeError("push() after finish(); start a new session")
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (n_samples,), got shape {audio.shape}")
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        events: list[Event] = []
        n_frames = len(self._pending) // FRAME_SAMPLES
        for i in range(n_frames):
            self._frames_left = n_frames - i - 1
            events.extend(self._consume_frame(self._pending[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]))
        self._frames_left = 0
        self._pending = self._pending[n_frames * FRAME_SAMPLES :]
        return events

    def finish(self) -> list[Event]:
        """End of stream: the rest of the audio is heard and every open segment is closed."""
        if self._finished:
            return []
        events: list[Event] = []
        if len(self._pending):
            tail = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            tail[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            events.extend(self._consume_frame(tail))
        for closed in self._endpointer.flush():
            events.extend(self._handle(closed))
        self._finished = True
        return events

    def _consume_frame(self, frame: np.ndarray) -> list[Event]:
        self._buffer.append(frame)
        self._heard_samples += len(frame)
        changes = self._endpointer.feed(self._vad.probabilities(frame))
        events: list[Event] = []
        for change in changes:
            events.extend(self._handle(change))
        if self.segment_open:
            events.extend(self.on_frame())
        else:
            self._buffer.discard_before(self.heard_ms - KEEP_BEFORE_MS)
        return events

    def _handle(self, change: SegmentOpened | SegmentClosed) -> list[Event]:
        if isinstance(change, SegmentOpened):
            return self.on_open(change.start_ms)
        return self.on_close(change)

    # hooks ------------------------------------------------------------------------------------

    @abstractmethod
    def on_open(self, start_ms: int) -> list[Event]:
        """A segment starts at `start_ms` (speech padding included)."""

    @abstractmethod
    def on_frame(self) -> list[Event]:
        """Called after every frame while a segment is open; decides whether to work now."""

    @abstractmethod
    def on_close(self, closed: SegmentClosed) -> list[Event]:
        """The open segment ended; emit its finals."""

    # helpers for subclasses --------------------------------------------------------------------

    def audio_between(self, start_ms: int, end_ms: int) -> np.ndarray:
        return self._buffer.slice_ms(start_ms, end_ms)

    def discard_audio_before(self, ms: int) -> None:
        self._buffer.discard_before(ms - KEEP_BEFORE_MS)

    def partial(
        self, source_text: str, start_ms: int, end_ms: int, committed: str = "", delta: str = "", tentative: str = ""
    ) -> PartialEvent:
        return PartialEvent(
            segment_id=self._next_segment_id,
            source_text=source_text,
            committed_text=committed,
            committed_delta=delta,
            tentative_text=tentative,
            start_ms=start_ms,
            end_ms=end_ms,
            mode=self.mode,
            audio_ms=self.heard_ms,
            emitted_ms=self.clock.now_ms(),
        )

    def final(
        self,
        source_text: str,
        translation: str,
        start_ms: int,
        end_ms: int,
        delta: str,
        mode: Mode | None = None,
        fallback_reason: str = "",
    ) -> FinalEvent:
        event = FinalEvent(
            segment_id=self._next_segment_id,
            source_text=source_text,
            committed_text=translation,
            committed_delta=delta,
            tentative_text="",
            start_ms=start_ms,
            end_ms=end_ms,
            mode=mode or self.mode,
            audio_ms=self.heard_ms,
            emitted_ms=self.clock.now_ms(),
            fallback_reason=fallback_reason,
        )
        self._next_segment_id += 1
        return event
