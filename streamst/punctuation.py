"""Punctuation and sentence segmentation of recognised words, for the MT stage.

Whisper already punctuates, so the default `Punctuator` passes words through; a model that
emits bare words (CTC encoders) plugs in a real punctuator behind the same interface."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from streamst.types import Sentence, Word

SENTENCE_END = frozenset(".!?。！？…")
CLOSERS = "\"'”’)]}」』）》"
# Words after which a full stop does not end a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e u.s u.k a.m p.m no fig ca approx "
    "bzw usw z.b d.h nr ca mme mlle sra sr srta dra ee.uu".split()
)
_DECIMAL_END = re.compile(r"\d\.$")


class Punctuator(ABC):
    """Adds punctuation and casing to recognised words."""

    @abstractmethod
    def punctuate(self, words: Sequence[Word], language: str) -> tuple[Word, ...]:
        """Returns the same words (same times) with punctuation attached."""


class PassThroughPunctuator(Punctuator):
    """For recognisers that punctuate themselves (Whisper)."""

    def punctuate(self, words: Sequence[Word], language: str) -> tuple[Word, ...]:
        return tuple(words)


def ends_sentence(word_text: str) -> bool:
    """Whether a word closes a sentence: final punctuation, not an abbreviation or a number."""
    text = word_text.strip().rstrip(CLOSERS)
    if not text or text[-1] not in SENTENCE_END:
        return False
    if text[-1] == "." and (text[:-1].lower().lstrip("(\"'¿¡") in ABBREVIATIONS or _DECIMAL_END.search(text[-2:])):
        return False
    if text[-1] == "." and len(text) == 2 and text[0].isupper():
        return False  # an initial: "J."
    return True


def split_sentences(words: Sequence[Word]) -> list[Sentence]:
    """Groups words into sentences; the last one is `complete=False` unless it ends one."""
    sentences: list[Sentence] = []
    current: list[Word] = []
    for word in words:
        current.append(word)
        if ends_sentence(word.text):
            sentences.append(_sentence(current, complete=True))
            current = []
    if current:
        sentences.append(_sentence(current, complete=False))
    return sentences


def join_words(words: Sequence[Word]) -> str:
    return "".join(w.text for w in words).strip()


def _sentence(words: list[Word], complete: bool) -> Sentence:
    return Sentence(join_words(words), words[0].start_ms, words[-1].end_ms, complete, tuple(words))
