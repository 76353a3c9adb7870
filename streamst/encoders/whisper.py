"""Whisper through CTranslate2 (faster-whisper): words with times for one audio window."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamst.cores import SPEECH_CALLS
from streamst.encoders.base import SpeechEncoder
from streamst.encoders.guards import cap_rate, cut_repeated_tail, cut_repeats
from streamst.errors import ModelError, OptionsError
from streamst.profiling import locked, span
from streamst.types import SAMPLE_RATE_HZ, Transcript, Word, ms_to_samples

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer

log = logging.getLogger("streamst.encoders.whisper")

MAX_WINDOW_S = 30  # Whisper's encoder sees at most 30 s
HOP_SAMPLES = 160  # one mel frame every 10 ms
N_FRAMES_MAX = MAX_WINDOW_S * SAMPLE_RATE_HZ // HOP_SAMPLES
TAIL_SILENCE_MS = 1_000  # silence after the window, so the last word is not cut off
MAX_TEXT_TOKENS = 448  # Whisper's decoder context
TOKENS_PER_S_CAP = 15  # more tokens than this per second of audio is a runaway decoder
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
# Context that steers the recogniser to the expected script when there is no earlier text.
DEFAULT_PROMPTS = {"zh": "以下是普通话的句子。"}


@dataclass(frozen=True)
class WhisperOptions:
    compute_type: str = "int8"  # CTranslate2 quantisation on CPU
    beam_size: int = 1  # 1 = greedy; larger is slower and a little more accurate
    final_beam_size: int = 5  # the last transcription of a closed segment: once per segment, so a beam
    no_speech_threshold: float = 0.6  # with a low log-prob, a window this likely silent gives no text
    log_prob_threshold: float = -1.0  # average token log-prob below which no-speech may apply
    max_repeats: int = 3  # an n-gram may repeat back to back this often before the loop is cut
    max_words_per_s: float = 6.0  # cap on words per second of audio (space-separated languages)
    max_chars_per_s: float = 12.0  # cap on characters per second of audio (zh, ja, ko, yue)
    fit_window: bool = True  # encode the window as it is, not padded to 30 s

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.final_beam_size < 1:
            raise OptionsError(f"beam sizes must be at least 1, got {self.beam_size} and {self.final_beam_size}")


CHAR_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})


class WhisperEncoder(SpeechEncoder):
    """A faster-whisper model directory (model.bin, config.json, tokenizer.json, vocabulary.json)."""

    name = "whisper"

    def __init__(self, model_dir: Path, options: WhisperOptions = WhisperOptions(), n_threads: int = 2) -> None:
        """`n_threads`: CTranslate2's intra-op threads for every call (the engine's share)."""
        if n_threads < 1:
            raise OptionsError(f"n_threads must be at least 1, got {n_threads}")
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
                cpu_threads=n_threads,
                num_workers=1,
            )
        except Exception as e:
            raise ModelError(f"cannot load the Whisper model in {model_dir}: {e}") from e
        self._languages = frozenset(self._model.supported_languages)

    def supports(self, language: str) -> bool:
        return language in self._languages

    def transcribe(
        self, audio: np.ndarray, language: str, window_start_ms: int, prompt: str = "", final: bool = False
    ) -> Transcript:
        if not self.supports(language):
            raise OptionsError(f"Whisper cannot transcribe language {language!r}")
        audio_ms = int(len(audio) * 1000 / SAMPLE_RATE_HZ)
        if audio_ms > MAX_WINDOW_S * 1000:
            raise OptionsError(f"a Whisper window holds at most {MAX_WINDOW_S} s, got {audio_ms} ms")
        beam_size = self.options.final_beam_size if final else self.options.beam_size
        words = self._decode(audio.astype(np.float32, copy=False), language, prompt, beam_size)
        if prompt and _repeats_prompt(words, prompt):
            log.debug("dropped a transcript that repeats its context prompt: %r", "".join(w.text for w in words))
            words = ()
        words = cut_repeated_tail(cut_repeats(words, max_repeats=self.options.max_repeats))
        rate = self.options.max_chars_per_s if language in CHAR_LANGUAGES else self.options.max_words_per_s
        words = cap_rate(words, audio_ms, rate)
        shifted = tuple(
            Word(w.text, w.start_ms + window_start_ms, w.end_ms + window_start_ms, w.probability) for w in words
        )
        return Transcript(shifted, language, window_start_ms, window_start_ms + audio_ms)

    def _decode(self, audio: np.ndarray, language: str, prompt: str, beam_size: int) -> tuple[Word, ...]:
        """Encode the window as it is (plus a little silence) rather than padded to 30 s: several
        times cheaper for the short windows of streaming, with the same text and word times."""
        o = self.options
        padded = np.concatenate([audio, np.zeros(ms_to_samples(TAIL_SILENCE_MS), dtype=np.float32)])
        if not o.fit_window:
            padded = np.pad(audio, (0, MAX_WINDOW_S * SAMPLE_RATE_HZ - len(audio)))
        with locked(SPEECH_CALLS, "encoder.wait"):
            tokenizer = self._tokenizer(language)
            with span("whisper.features"):
                features = self._model.feature_extractor(padded)
                features = features[:, : min(N_FRAMES_MAX, features.shape[1] // 2 * 2)]
            with span("whisper.encode"):
                encoder_output = self._model.encode(features)
            prompt_tokens = self._prompt_tokens(tokenizer, prompt or DEFAULT_PROMPTS.get(language, ""))
            with span("whisper.decode"):
                result = self._model.model.generate(
                    encoder_output,
                    [prompt_tokens],
                    beam_size=beam_size,
                    max_length=min(MAX_TEXT_TOKENS, len(prompt_tokens) + self._max_new_tokens(len(audio))),
                    return_scores=True,
                    return_no_speech_prob=True,
                    suppress_blank=True,
                    suppress_tokens=[-1],
                )[0]
            text_tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            avg_logprob = float(result.scores[0])
            if not text_tokens or (
                result.no_speech_prob > o.no_speech_threshold and avg_logprob < o.log_prob_threshold
            ):
                log.debug("no speech (p=%.2f, avg log-prob %.2f)", result.no_speech_prob, avg_logprob)
                return ()
            n_frames = min(features.shape[1], len(audio) // HOP_SAMPLES)
            with span("whisper.align"):
                alignment = self._model.find_alignment(tokenizer, [text_tokens], encoder_output, [n_frames])[0]
        from faster_whisper.transcribe import merge_punctuations

        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
        words = [
            Word(w["word"], int(w["start"] * 1000), int(w["end"] * 1000), float(w["probability"]))
            for w in alignment
            if w["word"].strip()
        ]
        return tuple(_monotonic(words))

    @functools.lru_cache(maxsize=16)
    def _tokenizer(self, language: str) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self._model.hf_tokenizer, True, task="transcribe", language=language)

    def _prompt_tokens(self, tokenizer: Tokenizer, prompt: str) -> list[int]:
        tokens = []
        if prompt:
            previous = tokenizer.encode(" " + prompt.strip())
            tokens = [tokenizer.sot_prev, *previous[-(MAX_TEXT_TOKENS // 2 - 1) :]]
        return [*tokens, *tokenizer.sot_sequence, tokenizer.no_timestamps]

    def _max_new_tokens(self, n_samples: int) -> int:
        """The cap on tokens per second of audio, so a looping decoder stops early. CTranslate2's
        max_length counts the prompt too; the caller adds it."""
        audio_s = n_samples / SAMPLE_RATE_HZ
        return int(TOKENS_PER_S_CAP * audio_s) + 16


MIN_PROMPT_ECHO_WORDS = 3  # shorter echoes of the prompt may be real speech


def _repeats_prompt(words: tuple[Word, ...], prompt: str) -> bool:
    """Whisper given little or no speech after a context prompt tends to recite the prompt."""
    if len(words) < MIN_PROMPT_ECHO_WORDS:
        return False
    text = _letters("".join(w.text for w in words))
    return bool(text) and text in _letters(prompt)


def _letters(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


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
