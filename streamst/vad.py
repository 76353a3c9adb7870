"""Voice activity detection and endpointing.

`SileroVAD` holds the shared ONNX model; `SileroVADStream` is the per-stream state that turns
audio (16 kHz float32, any chunk size) into one speech probability per 32 ms frame.
`Endpointer` turns those probabilities into speech segments: it opens a segment at speech,
closes it after `min_silence_ms` of silence, and cuts a segment that reaches
`max_segment_ms` at its quietest recent frame.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamst.errors import ModelError, OptionsError
from streamst.types import SAMPLE_RATE_HZ, SAMPLES_PER_MS, SpeechSpan

log = logging.getLogger("streamst.vad")

FRAME_SAMPLES = 512  # Silero's window at 16 kHz
CONTEXT_SAMPLES = 64  # samples of the previous window the model sees before each frame
FRAME_MS = FRAME_SAMPLES // SAMPLES_PER_MS  # 32 ms
STATE_SHAPE = (2, 1, 128)


@dataclass(frozen=True)
class VADOptions:
    threshold: float = 0.5  # speech probability that opens a segment or keeps it open
    neg_threshold: float = 0.35  # probability below which a frame counts as silence
    min_speech_ms: int = 250  # a segment with less speech than this is dropped as noise
    min_silence_ms: int = 500  # this much silence closes the open segment
    speech_pad_ms: int = 200  # audio kept before the first and after the last speech frame
    max_segment_ms: int = 20_000  # an open segment this long is cut at its quietest recent frame
    cut_search_ms: int = 3_000  # how far back from the limit a forced cut looks for a quiet frame

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise OptionsError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.neg_threshold <= self.threshold:
            raise OptionsError(
                f"VAD neg_threshold must be in (0, threshold={self.threshold}], got {self.neg_threshold}"
            )
        if self.min_silence_ms < FRAME_MS:
            raise OptionsError(f"min_silence_ms must be at least {FRAME_MS} ms, got {self.min_silence_ms}")
        if self.max_segment_ms < 2 * self.cut_search_ms or self.max_segment_ms > 30_000:
            raise OptionsError(
                f"max_segment_ms must be between {2 * self.cut_search_ms} and 30000 ms "
                f"(Whisper's window), got {self.max_segment_ms}"
            )
        if self.min_speech_ms < 0 or self.speech_pad_ms < 0:
            raise OptionsError("min_speech_ms and speech_pad_ms must not be negative")


class SileroVAD:
    """Silero VAD v5/v6 ONNX model, shared by all streams (onnxruntime sessions are thread-safe)."""

    def __init__(self, model_path: Path, n_threads: int = 1) -> None:
        try:
            import onnxruntime
        except ImportError as e:
            raise ModelError("Silero VAD needs the onnxruntime package: pip install onnxruntime") from e
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle threads must not spin: the VAD shares two cores with the recogniser and decoder.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise ModelError(
                f"cannot load the VAD model {model_path}: {e}"
            ) from e
        self._sr = np.array(SAMPLE_RATE_HZ, dtype=np.int64)

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self)

    def run_frame(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """window: (1, CONTEXT_SAMPLES + FRAME_SAMPLES) float32; state: STATE_SHAPE float32."""
        output, new_state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(output.reshape(-1)[0]), new_state


class SileroVADStream:
    """Per-stream VAD state: feed audio of any length, get one probability per whole frame."""

    def __init__(self, model: SileroVAD) -> None:
        self._model = model
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """audio: (n_samples,) float32 → (n_frames,) speech probabilities of the frames completed."""
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        n_frames = len(self._pending) // FRAME_SAMPLES
        probs = np.empty(n_frames, dtype=np.float32)
        for i in range(n_frames):
            frame = self._pending[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            window = np.concatenate([self._context, frame])[np.newaxis, :]
            probs[i], self._state = self._model.run_frame(window, self._state)
            self._context = frame[-CONTEXT_SAMPLES:]
        self._pending = self._pending[n_frames * FRAME_SAMPLES :]
        return probs


@dataclass(frozen=True)
class SegmentOpened:
    start_ms: int


@dataclass(frozen=True)
class SegmentClosed:
    span: SpeechSpan
    speech_ms: int  # frames at or above the threshold inside the span
    forced: bool  # cut at max_segment_ms rather than closed by silence


class Endpointer:
    """Turns per-frame speech probabilities into segment boundaries (a pure state machine)."""

    def __init__(self, options: VADOptions) -> None:
        self.options = options
        self._frame_index = 0  # frames seen so far
        self._open_start_ms: int | None = None
        self._last_speech_end_ms = 0
        self._silence_ms = 0
        self._speech_ms = 0
        self._recent: deque[tuple[int, float]] = deque(maxlen=max(1, options.cut_search_ms // FRAME_MS))

    @property
    def open_start_ms(self) -> int | None:
        return self._open_start_ms

    def feed(self, probabilities: np.ndarray) -> list[SegmentOpened | SegmentClosed]:
        out: list[SegmentOpened | SegmentClosed] = []
        for p in probabilities:
            out.extend(self._step(float(p)))
        return out

    def flush(self) -> list[SegmentClosed]:
        """Close the open segment at the end of the stream."""
        if self._open_start_ms is None:
            return []
        end_ms = min(self._frame_index * FRAME_MS, self._last_speech_end_ms + self.options.speech_pad_ms)
        return [self._close(end_ms, forced=False)]

    def _step(self, p: float) -> list[SegmentOpened | SegmentClosed]:
        o = self.options
        frame_start_ms = self._frame_index * FRAME_MS
        frame_end_ms = frame_start_ms + FRAME_MS
        self._frame_index += 1
        self._recent.append((frame_start_ms, p))
        if self._open_start_ms is None:
            if p < o.threshold:
                return []
            self._open_start_ms = max(0, frame_start_ms - o.speech_pad_ms)
            self._speech_ms, self._silence_ms = FRAME_MS, 0
            self._last_speech_end_ms = frame_end_ms
            return [SegmentOpened(self._open_start_ms)]
        if p >= o.threshold:
            self._speech_ms += FRAME_MS
            self._silence_ms = 0
            self._last_speech_end_ms = frame_end_ms
        elif p < o.neg_threshold:
            self._silence_ms += FRAME_MS
        if self._silence_ms >= o.min_silence_ms:
            return [self._close(min(frame_end_ms, self._last_speech_end_ms + o.speech_pad_ms), forced=False)]
        if frame_end_ms - self._open_start_ms >= o.max_segment_ms:
            return self._forced_cut()
        return []

    def _forced_cut(self) -> list[SegmentOpened | SegmentClosed]:
        """Cut at the least speech-like recent frame; the rest continues as a new segment."""
        cut_ms, _ = min(self._recent, key=lambda item: item[1])
        cut_ms = max(cut_ms, self._open_start_ms + FRAME_MS)
        carried_speech_ms = sum(FRAME_MS for start, p in self._recent if start >= cut_ms and p >= self.options.threshold)
        self._speech_ms -= carried_speech_ms
        closed = self._close(cut_ms, forced=True)
        self._open_start_ms = cut_ms
        self._speech_ms = carried_speech_ms
        log.debug("segment reached %d ms; cut at %d ms", self.options.max_segment_ms, cut_ms)
        return [closed, SegmentOpened(cut_ms)]

    def _close(self, end_ms: int, forced: bool) -> SegmentClosed:
        start_ms = self._open_start_ms
        assert start_ms is not None
        closed = SegmentClosed(SpeechSpan(start_ms, max(end_ms, start_ms)), self._speech_ms, forced)
        self._open_start_ms = None
        self._silence_ms = 0
        self._speech_ms = 0
        self._recent.clear()
        return closed

