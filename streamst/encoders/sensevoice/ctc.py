"""CTC greedy decoding of SenseVoice output: tags into fields, text tokens into timed words.

The greedy path is the CTC alignment of the greedy hypothesis: a token's frames are its run of
frames on the path, which is what FunASR's forced alignment of the same tokens returns (on the
frames whose best symbol is blank it makes blank free, so it cannot do better than the path).
Times follow FunASR: a run of output frames [start, end) spans
[start * frame_ms - frame_ms / 2, end * frame_ms - frame_ms / 2], clipped to the window.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from streamst.encoders.sensevoice.tokens import BLANK_ID, N_QUERY_FRAMES, Tag, Vocabulary
from streamst.types import Word

WORD_BOUNDARY = "▁"  # SentencePiece's word-start marker


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token and the output frames it occupies on the greedy path."""

    token_id: int
    start_frame: int  # first frame of its run
    end_frame: int  # one past its last frame
    logprob: float  # the best frame's log-probability of the token


@dataclass(frozen=True)
class Decoded:
    """A window's CTC output split into tags and timed words (times relative to the window)."""

    words: tuple[Word, ...]
    tags: tuple[Tag, ...]  # in output order


def greedy_spans(log_probs: np.ndarray, blank_id: int = BLANK_ID) -> tuple[TokenSpan, ...]:
    """log_probs: (n_frames, vocab_size) → the runs of non-blank symbols on the best path."""
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs must be (n_frames, vocab_size), got shape {log_probs.shape}")
    if len(log_probs) == 0:
        return ()
    best = log_probs.argmax(axis=1)
    best_logprob = log_probs[np.arange(len(best)), best]
    starts = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    ends = np.r_[starts[1:], len(best)]
    return tuple(
        TokenSpan(int(best[s]), int(s), int(e), float(best_logprob[s:e].max()))
        for s, e in zip(starts, ends, strict=True)
        if best[s] != blank_id
    )


def decode(log_probs: np.ndarray, vocabulary: Vocabulary, frame_ms: float, audio_ms: int) -> Decoded:
    """log_probs: (N_QUERY_FRAMES + n_speech_frames, vocab_size) for one window of `audio_ms`."""
    spans = greedy_spans(log_probs)
    tags = tuple(vocabulary.tags[s.token_id] for s in spans if s.token_id in vocabulary.tags)
    text = [s for s in spans if s.token_id not in vocabulary.tags]
    n_speech_frames = max(0, len(log_probs) - N_QUERY_FRAMES)
    timer = _FrameTimer(frame_ms, n_speech_frames, audio_ms)
    return Decoded(tuple(_words(text, vocabulary, timer)), tags)


@dataclass(frozen=True)
class _FrameTimer:
    frame_ms: float
    n_speech_frames: int
    audio_ms: int

    def span_ms(self, start_frame: int, end_frame: int) -> tuple[int, int]:
        """Output frames (counted with the query frames) → ms within the window."""
        half = self.frame_ms / 2
        start = max(start_frame - N_QUERY_FRAMES, 0) * self.frame_ms - half
        end = min(
            max(end_frame - N_QUERY_FRAMES, 0) * self.frame_ms - half, self.n_speech_frames * self.frame_ms - half
        )
        start_ms = int(min(max(start, 0.0), self.audio_ms))
        end_ms = int(min(max(end, start_ms), self.audio_ms))
        return start_ms, end_ms


@dataclass
class _WordBuilder:
    spaced: bool  # starts with a space (a SentencePiece word start)
    ids: list[int]
    logprobs: list[float]
    start_frame: int
    end_frame: int
    unspaced: bool  # Han or kana: written without spaces, each piece its own word


def _words(spans: list[TokenSpan], vocabulary: Vocabulary, timer: _FrameTimer) -> list[Word]:
    """Pieces → words: a `▁` piece starts a word (with its space); a Chinese or Japanese piece is
    a word of its own; punctuation and other continuation pieces join the word before them."""
    built: list[_WordBuilder] = []
    pending_space = False
    for span in spans:
        piece = vocabulary.piece(span.token_id)
        if piece == WORD_BOUNDARY:
            pending_space = True
            continue
        spaced = pending_space or piece.startswith(WORD_BOUNDARY)
        pending_space = False
        body = piece.removeprefix(WORD_BOUNDARY)
        unspaced = any(_is_unspaced(ch) for ch in body)
        current = built[-1] if built else None
        joins = current is not None and not spaced and (_is_punctuation(body) or not (unspaced or current.unspaced))
        if joins and current is not None:
            current.ids.append(span.token_id)
            current.logprobs.append(span.logprob)
            current.end_frame = span.end_frame
        else:
            built.append(
                _WordBuilder(spaced, [span.token_id], [span.logprob], span.start_frame, span.end_frame, unspaced)
            )
    words = []
    for b in built:
        text = vocabulary.decode(b.ids)
        if not text.strip():
            continue
        start_ms, end_ms = timer.span_ms(b.start_frame, b.end_frame)
        probability = float(np.exp(np.mean(b.logprobs)))
        words.append(Word((" " if b.spaced else "") + text, start_ms, end_ms, probability))
    return words


def _is_punctuation(text: str) -> bool:
    return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def _is_unspaced(ch: str) -> bool:
    """Han and kana, written without spaces between words (Korean hangul is spaced)."""
    code = ord(ch)
    return 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF
