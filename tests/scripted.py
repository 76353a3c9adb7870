"""Scripted stand-ins for the models, so sessions can be tested in milliseconds without weights.

- `EnergyVAD`: a frame is speech when its RMS is above a threshold (the test audio is tones and
  silence, so this is exact).
- `ScriptedEncoder`: replays a spoken script: a window's hypothesis is the script's words that lie
  inside it, a word still being spoken cut off with "-" (so it does not agree with the next
  hypothesis), every hypothesis ending with a full stop as Whisper's do.
- `ScriptedTranslator`: a deterministic "translation" (each source word upper-cased, one token per
  word) that continues the committed target, can fail on given calls, and can spend time on a
  simulated clock, or real time, as a slow model would.
- `ScriptedEngine`: the real Engine over these, for servers in tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamst.clock import SimulatedClock
from streamst.encoders.base import SpeechEncoder
from streamst.engine import Engine
from streamst.languages import Language
from streamst.punctuation import PassThroughPunctuator, ends_sentence
from streamst.sessions.base import Components
from streamst.translators.base import Translator
from streamst.types import SAMPLES_PER_MS, TokenStep, Transcript, Translation, Word
from streamst.vad import FRAME_SAMPLES

SPEECH_AMPLITUDE = 0.1
TONE_HZ = 220.0


def spoken(text: str, start_ms: int, word_ms: int = 300, gap_ms: int = 50) -> tuple[Word, ...]:
    """Words of `text` one after another from `start_ms`, each `word_ms` long."""
    words, at_ms = [], start_ms
    for i, token in enumerate(text.split()):
        words.append(Word((" " if i else "") + token, at_ms, at_ms + word_ms))
        at_ms += word_ms + gap_ms
    return tuple(words)


def audio_for(words: Sequence[Word], total_ms: int) -> np.ndarray:
    """(n_samples,) float32: a tone under every word, silence elsewhere."""
    audio = np.zeros(total_ms * SAMPLES_PER_MS, dtype=np.float32)
    t = np.arange(len(audio)) / (SAMPLES_PER_MS * 1000)
    tone = (SPEECH_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    for word in words:
        lo, hi = word.start_ms * SAMPLES_PER_MS, word.end_ms * SAMPLES_PER_MS
        audio[lo:hi] = tone[lo:hi]
    return audio


class _EnergyVADStream:
    def __init__(self, threshold_rms: float) -> None:
        self._threshold_rms = threshold_rms
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        self._pending = np.concatenate([self._pending, audio])
        n_frames = len(self._pending) // FRAME_SAMPLES
        frames = self._pending[: n_frames * FRAME_SAMPLES].reshape(n_frames, FRAME_SAMPLES)
        self._pending = self._pending[n_frames * FRAME_SAMPLES :]
        rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) if n_frames else np.zeros(0)
        return (rms > self._threshold_rms).astype(np.float32)


class EnergyVAD:
    def __init__(self, threshold_rms: float = SPEECH_AMPLITUDE / 4) -> None:
        self.threshold_rms = threshold_rms

    def stream(self) -> _EnergyVADStream:
        return _EnergyVADStream(self.threshold_rms)


@dataclass
class EncoderCall:
    window_start_ms: int
    window_end_ms: int
    prompt: str


class ScriptedEncoder(SpeechEncoder):
    name = "scripted"

    def __init__(self, script: Sequence[Word]) -> None:
        self.script = tuple(script)
        self.calls: list[EncoderCall] = []

    def supports(self, language: str) -> bool:
        return True

    def transcribe(
        self, audio: np.ndarray, language: str, window_start_ms: int, prompt: str = "", final: bool = False
    ) -> Transcript:
        end_ms = window_start_ms + len(audio) // SAMPLES_PER_MS
        self.calls.append(EncoderCall(window_start_ms, end_ms, prompt))
        words = [w for w in self.script if w.start_ms >= window_start_ms and w.start_ms < end_ms]
        if words and words[-1].end_ms > end_ms:  # still being spoken: a guess that will change
            last = words[-1]
            words[-1] = Word(last.text.rstrip(".?!") + "-", last.start_ms, end_ms)
        elif words and not ends_sentence(words[-1].text):  # Whisper ends every hypothesis with a stop
            last = words[-1]
            words[-1] = Word(last.text + ".", last.start_ms, last.end_ms)
        return Transcript(tuple(words), language, window_start_ms, end_ms)


@dataclass
class TranslatorCall:
    source_text: str
    committed: str
    max_new_tokens: int | None
    stream_key: object | None
    earlier: tuple[tuple[str, str], ...] = ()


@dataclass
class ScriptedTranslator(Translator):
    """Upper-cases the source, one token per word; continues `committed` where it agrees."""

    fail_calls: frozenset[int] = frozenset()  # 0-based indices of calls that raise
    clock: SimulatedClock | None = None  # advanced by `compute_ms_per_word` per source word
    compute_ms_per_word: float = 0.0
    sleep_s: float = 0.0  # real time each call takes (a model under load), for servers in tests
    calls: list[TranslatorCall] = field(default_factory=list)
    name = "scripted"

    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
        earlier: Sequence[tuple[str, str]] = (),
    ) -> Translation:
        index = len(self.calls)
        self.calls.append(TranslatorCall(source_text, committed, max_new_tokens, stream_key, tuple(earlier)))
        if self.clock is not None:
            self.clock.advance(self.compute_ms_per_word * len(source_text.split()))
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if index in self.fail_calls:
            raise RuntimeError(f"scripted failure of call {index}")
        full = " ".join(word.upper() for word in source_text.split())
        rest = full[len(committed) :] if full.startswith(committed) else (" " if committed else "") + full
        pieces = [p for p in _word_pieces(rest)]
        cap = len(pieces) if max_new_tokens is None else max_new_tokens
        tokens = tuple(TokenStep(i, piece, -0.01) for i, piece in enumerate(pieces[:cap]))
        return Translation(
            text="".join(t.text for t in tokens),
            tokens=tokens,
            n_prompt_tokens=len(source_text.split()) + len(committed.split()),
            n_prefill_tokens=len(source_text.split()),
            finished=cap >= len(pieces),
        )


def _word_pieces(text: str) -> list[str]:
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        if word:
            pieces.append(word if i == 0 and not text.startswith(" ") else " " + word)
    return pieces


def components(
    script: Sequence[Word], translator: ScriptedTranslator | None = None, finisher: ScriptedTranslator | None = None
) -> Components:
    return Components(
        vad=EnergyVAD(),  # type: ignore[arg-type]  # the VAD interface: stream().probabilities()
        encoder=ScriptedEncoder(script),
        punctuator=PassThroughPunctuator(),
        translator=translator or ScriptedTranslator(),
        finisher=finisher,
    )


class ScriptedEngine(Engine):
    """The real Engine (sessions, languages, options) over the scripted models."""

    def __init__(self, script: Sequence[Word], translator: ScriptedTranslator | None = None) -> None:
        super().__init__()
        self.scripted = components(script, translator)

    def load(self) -> Components:
        with self._lock:
            self._components = self.scripted
            return self._components
