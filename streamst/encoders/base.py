"""The speech-encoder interface every ASR backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from streamst.types import Transcript


class SpeechEncoder(ABC):
    """Transcribes one audio window. Shared by all sessions; must be safe to call from threads."""

    name: str = "encoder"

    @abstractmethod
    def supports(self, language: str) -> bool:
        """Whether this encoder can transcribe `language` (a Whisper-style code such as "en")."""

    @abstractmethod
    def transcribe(
        self, audio: np.ndarray, language: str, window_start_ms: int, prompt: str = "", final: bool = False
    ) -> Transcript:
        """audio: (n_samples,) float32 at 16 kHz, the window starting at `window_start_ms` on the
        source timeline. Returns its words with times on that timeline; no words for silence.
        `final`: the last transcription of a closed segment, worth a slower, more careful search."""
