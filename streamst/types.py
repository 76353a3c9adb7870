"""Frozen records passed between stages. Times are on the source-audio timeline, in ms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SAMPLE_RATE_HZ = 16_000
"""Every stage after decoding works on 16 kHz mono float32 audio."""

SAMPLES_PER_MS = SAMPLE_RATE_HZ // 1000


def samples_to_ms(n_samples: int) -> int:
    return n_samples // SAMPLES_PER_MS


def ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLES_PER_MS))


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch of audio the VAD judged to be speech."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Word:
    """One recognised word (or CJK character run) with its times."""

    text: str  # as the recogniser wrote it, with its leading space if any
    start_ms: int
    end_ms: int
    probability: float = 1.0


@dataclass(frozen=True)
class Transcript:
    """A recogniser's hypothesis for one audio window."""

    words: tuple[Word, ...]
    language: str  # ISO 639-1 code the recogniser was told (or detected)
    window_start_ms: int  # where the transcribed window starts on the source timeline
    window_end_ms: int

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.words).strip()


@dataclass(frozen=True)
class Sentence:
    """A complete source sentence (or the unfinished rest of a segment)."""

    text: str
    start_ms: int
    end_ms: int
    complete: bool  # ends with sentence punctuation
    words: tuple[Word, ...] = ()  # the recognised words it is made of


@dataclass(frozen=True)
class TokenStep:
    """One decoded target token."""

    token_id: int
    text: str  # the UTF-8 text this token completes ("" while a character is split)
    logprob: float


@dataclass(frozen=True)
class Translation:
    """A translator's output for one request."""

    text: str
    tokens: tuple[TokenStep, ...]
    n_prompt_tokens: int  # prompt length in tokens
    n_prefill_tokens: int  # tokens actually evaluated (the rest came from the KV cache)
    finished: bool  # the decoder ended the translation itself (not cut by a cap)


Mode = Literal["cascade", "direct"]


@dataclass(frozen=True)
class SegmentEvent:
    """What a session tells its listener about one segment of the talk."""

    segment_id: int  # increases by one per final
    source_text: str  # source transcript of the segment so far
    committed_text: str  # target text committed so far; only ever grows within a segment
    committed_delta: str  # target text newly committed by this event
    tentative_text: str  # target tail that may still change
    start_ms: int  # segment start on the source timeline
    end_ms: int  # segment end (or audio heard so far) on the source timeline
    mode: Mode  # which path produced this event
    audio_ms: int  # source audio the session had consumed when it emitted this event
    emitted_ms: float  # session clock when the event was emitted


@dataclass(frozen=True)
class PartialEvent(SegmentEvent):
    """An update while a segment is still open."""

    kind: Literal["partial"] = field(default="partial", init=False)


@dataclass(frozen=True)
class FinalEvent(SegmentEvent):
    """Closes a segment: the complete source sentence and its complete translation."""

    kind: Literal["final"] = field(default="final", init=False)
    fallback_reason: str = ""  # why the cascade finished a segment the direct path started


Event = PartialEvent | FinalEvent
