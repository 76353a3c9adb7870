"""Whisper through CTranslate2 (faster-whisper): words with times for one audio window."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamst.encoders.base import SpeechEncoder
from streamst.encoders.guards import cap_rate, cut_repeats
from streamst.errors import ModelError, OptionsError
from streamst.types import SAMPLE_RATE_HZ, Transcript, Word

log = logging.getLogger("streamst.encoders.whisper")

MAX_WINDOW_S = 30  # Whisper's encoder sees at most 30 s
MIN_CHUNK_S = 10  # shorter encoder windows than this lose accuracy


@dataclass(frozen=True)
class WhisperOptions:
    compute_type: str = "int8"  # CTranslate2 quantisation on CPU
    n_threads: int = 2  # intra-op threads
    beam_size: int = 1  # 1 = greedy; larger is slower and a little more accurate
    no_speech_threshold: float = 0.6  # with a low log-prob, a window this likely silent gives no text
    log_prob_threshold: float = -1.0  # average token log-prob below which no-speech may apply
    max_repeats: int = 3  # an n-gram may repeat back to back this often before the loop is cut
    max_words_per_s: float = 6.0  # cap on words per second of audio (space-separated languages)
    max_chars_per_s: float = 12.0  # cap on characters per second of audio (zh, ja, ko, yue)
    fit_window: bool = True  # encode windows padded to the next 10 s, not always 30 s

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise OptionsError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.n_threads < 1:
            raise OptionsError(f"n_threads must be at least 1, got {self.n_threads}")


CHAR_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})


class WhisperEncoder(SpeechEncoder):
    """A faster-whisper model directory (model.bin, config.json, tokenizer.json, vocabulary.json)."""

    name = "whisper"

    def __init__(self, model_dir: Path, options: WhisperOptions = WhisperOptions()) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ModelError("the Whisper backend needs faster-whisper: pip install faster-whisper") from e
        self.options = options
        try:
            self._model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type=options.compute_type,
                cpu_threads=options.n_threads,
                num_workers=1,
            )
        except Exception as e:
            raise ModelError(f"cannot load the Whisper model in {model_dir}: {e}") from e
        self._languages = frozenset(self._model.supported_languages)
        self._lock = threading.Lock()

    def supports(self, language: str) -> bool:
        return language in self._languages

    def transcribe(self, audio: np.ndarray, language: str, window_start_ms: int, prompt: str = "") -> Transcript:
        if not self.supports(language):
            raise OptionsError(f"Whisper cannot transcribe language {language!r}")
        audio_ms = int(len(audio) * 1000 / SAMPLE_RATE_HZ)
        if audio_ms > MAX_WINDOW_S * 1000:
            raise OptionsError(f"a Whisper window holds at most {MAX_WINDOW_S} s, got {audio_ms} ms")
        words = self._decode(audio.astype(np.float32, copy=False), language, prompt)
        words = cut_repeats(words, max_repeats=self.options.max_repeats)
        rate = self.options.max_chars_per_s if language in CHAR_LANGUAGES else self.options.max_words_per_s
        words = cap_rate(words, audio_ms, rate)
        shifted = tuple(
            Word(w.text, w.start_ms + window_start_ms, w.end_ms + window_start_ms, w.probability) for w in words
        )
        return Transcript(shifted, language, window_start_ms, window_start_ms + audio_ms)

    def _decode(self, audio: np.ndarray, language: str, prompt: str) -> tuple[Word, ...]:
        o = self.options
        chunk_s = MAX_WINDOW_S
        if o.fit_window:
            chunk_s = min(MAX_WINDOW_S, MIN_CHUNK_S * math.ceil(len(audio) / SAMPLE_RATE_HZ / MIN_CHUNK_S + 1e-9))
        with self._lock:
            segments, _info = self._model.transcribe(
                audio,
                language=language,
                task="transcribe",
                beam_size=o.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                initial_prompt=prompt or None,
                word_timestamps=True,
                without_timestamps=True,
                vad_filter=False,
                no_speech_threshold=o.no_speech_threshold,
                log_prob_threshold=o.log_prob_threshold,
                chunk_length=chunk_s,
            )
            words = [
                Word(w.word, int(w.start * 1000), int(w.end * 1000), float(w.probability))
                for segment in segments
                for w in (segment.words or ())
            ]
        return tuple(_monotonic(words))


def _monotonic(words: list[Word]) -> list[Word]:
    """Clamp word times so starts never decrease and every end is at or after its start."""
    out: list[Word] = []
    last_ms = 0
    for w in words:
        start_ms = max(w.start_ms, last_ms)
        end_ms = max(w.end_ms, start_ms)
        out.append(Word(w.text, start_ms, end_ms, w.probability))
        last_ms = start_ms
    return out
