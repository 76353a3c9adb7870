"""A rolling audio buffer indexed on the stream's absolute timeline."""

from __future__ import annotations

import numpy as np

from streamst.types import ms_to_samples, samples_to_ms


class AudioBuffer:
    """Keeps the stream's audio from `start_ms` on; older audio is dropped with `discard_before`."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._audio = np.zeros(0, dtype=np.float32)
        self._start_sample = 0  # absolute index of self._audio[0]

    @property
    def end_ms(self) -> int:
        return samples_to_ms(self._start_sample + len(self._audio) + sum(len(c) for c in self._chunks))

    def append(self, audio: np.ndarray) -> None:
        self._chunks.append(audio.astype(np.float32, copy=False))

    def slice_ms(self, start_ms: int, end_ms: int) -> np.ndarray:
        """audio: (n_samples,) between two absolute times, clipped to what is held."""
        self._consolidate()
        lo = max(0, ms_to_samples(start_ms) - self._start_sample)
        hi = max(lo, ms_to_samples(end_ms) - self._start_sample)
        return self._audio[lo:hi]

    def discard_before(self, ms: int) -> None:
        self._consolidate()
        drop = min(len(self._audio), max(0, ms_to_samples(ms) - self._start_sample))
        if drop:
            self._audio = self._audio[drop:].copy()
            self._start_sample += drop

    def _consolidate(self) -> None:
        if self._chunks:
            self._audio = np.concatenate([self._audio, *self._chunks])
            self._chunks = []
