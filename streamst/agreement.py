"""Source agreement (LocalAgreement-n): which recognised words are stable enough to translate.

The recogniser re-hypothesises the open window at every step. A word becomes stable (committed
source) once the last `n` hypotheses agree on it and on every word before it; committed words
never change. Words the window still holds from before the committed point are recognised by
time and by matching the committed tail, and are not committed twice.

A recogniser ends every hypothesis with a full stop, so a sentence end that is the last word of
the latest hypothesis is not yet believed: that word waits until the speaker goes on past it
(then it is committed with the punctuation it has there) or the segment closes. A sentence end
is kept only where all n hypotheses put one."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from streamst.punctuation import SENTENCE_END, ends_sentence
from streamst.types import Word

MAX_OVERLAP_WORDS = 5  # how many committed tail words a new hypothesis may repeat
OVERLAP_TOLERANCE_MS = 100  # a word starting this close before the committed end may be a repeat


@dataclass(frozen=True)
class SourceState:
    """The source side at one step."""

    committed: tuple[Word, ...]  # stable words, in order; only ever grows
    tentative: tuple[Word, ...]  # the latest hypothesis after the committed words
    new: tuple[Word, ...]  # committed by this step


def normalise(word: Word) -> str:
    return word.text.strip().lower().strip(".,!?;:\"'“”‘’()[]，。！？、：；")


class LocalAgreement:
    """Commits the longest prefix on which the last `n` hypotheses agree (n ≥ 1)."""

    def __init__(self, n: int = 2) -> None:
        if n < 1:
            raise ValueError(f"LocalAgreement needs n >= 1, got {n}")
        self.n = n
        self._committed: list[Word] = []
        self._history: deque[list[Word]] = deque(maxlen=n)

    @property
    def committed(self) -> tuple[Word, ...]:
        return tuple(self._committed)

    def update(self, hypothesis: Sequence[Word]) -> SourceState:
        """hypothesis: the recogniser's words for the current window (times on the stream)."""
        fresh = self._after_committed(hypothesis)
        self._history.append(fresh)
        new: list[Word] = []
        if len(self._history) == self.n:
            n_agree = _common_prefix_length(list(self._history))
            if n_agree and n_agree == len(fresh) and ends_sentence(fresh[-1].text):
                n_agree -= 1  # a full stop nothing follows yet may be the recogniser's, not the speaker's
            new = [_agreed_punctuation(column) for column in zip(*(h[:n_agree] for h in self._history))]
            self._committed.extend(new)
            self._history = deque((h[n_agree:] for h in self._history), maxlen=self.n)
        return SourceState(tuple(self._committed), tuple(fresh[len(new) :]), tuple(new))

    def commit_all(self, hypothesis: Sequence[Word]) -> SourceState:
        """End of segment: the final hypothesis is taken as it is."""
        fresh = self._after_committed(hypothesis)
        self._committed.extend(fresh)
        self._history.clear()
        return SourceState(tuple(self._committed), (), tuple(fresh))

    def reset(self) -> None:
        """A new segment: nothing committed, no history."""
        self.restart(())

    def restart(self, committed: Sequence[Word]) -> None:
        """A new sentence that already holds `committed` words; earlier hypotheses are dropped."""
        self._committed = list(committed)
        self._history.clear()

    def _after_committed(self, hypothesis: Sequence[Word]) -> list[Word]:
        if not self._committed:
            return list(hypothesis)
        last_end_ms = self._committed[-1].end_ms
        words = [w for w in hypothesis if w.start_ms > last_end_ms - OVERLAP_TOLERANCE_MS]
        tail = [normalise(w) for w in self._committed[-MAX_OVERLAP_WORDS:]]
        for size in range(min(MAX_OVERLAP_WORDS, len(words), len(tail)), 0, -1):
            if [normalise(w) for w in words[:size]] == tail[-size:]:
                return words[size:]
        return words


def _agreed_punctuation(column: Sequence[Word]) -> Word:
    """The newest hypothesis's word, without a sentence end the hypotheses do not all have."""
    newest = column[-1]
    if ends_sentence(newest.text) and not all(ends_sentence(w.text) for w in column):
        return replace(newest, text=newest.text.rstrip("".join(SENTENCE_END)))
    return newest


def _common_prefix_length(hypotheses: list[list[Word]]) -> int:
    n = 0
    for column in zip(*hypotheses):
        if len({normalise(w) for w in column}) != 1:
            break
        n += 1
    return n
