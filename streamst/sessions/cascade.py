"""The cascaded path: VAD segments → ASR on the growing window → punctuation → sentences → MT.

While a segment is open the window is re-transcribed every `step_ms` of new audio (a `partial`
with the tentative source). A complete sentence that two consecutive hypotheses agree on, and
that more speech follows, is translated at once (a `final`), and the window moves past it, so
the cost of a step does not grow with the length of the talk. When the segment closes, what is
left is transcribed once more and translated sentence by sentence."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streamst.clock import Clock
from streamst.languages import Language
from streamst.punctuation import split_sentences
from streamst.sessions.base import Components, SegmentedSession, SessionOptions
from streamst.types import Event, Sentence, Word

log = logging.getLogger("streamst.sessions.cascade")


@dataclass(frozen=True)
class CascadeOptions(SessionOptions):
    step_ms: int = 1_000  # re-transcribe the open segment after this much new audio
    early_sentences: bool = True  # translate agreed complete sentences before the segment ends
    partials: bool = True  # emit tentative source text while a segment is open


class CascadeSession(SegmentedSession):
    mode = "cascade"
    commits_while_open = False
    options: CascadeOptions

    def __init__(self, components: Components, source: Language, target: Language,
                 options: CascadeOptions = CascadeOptions(), clock: Clock | None = None) -> None:  # fmt: skip
        super().__init__(components, source, target, options, clock)
        self._previous: list[Sentence] = []  # the last step's sentences after the closed ones

    def on_segment_open(self) -> None:
        self._previous = []

    def wants_step(self) -> bool:
        return self.options.partials or self.options.early_sentences

    def close_words(self, words: tuple[Word, ...]) -> tuple[Word, ...]:
        return words

    def step(self) -> list[Event]:
        sentences = split_sentences(self.transcribe(self._window_start_ms, self.heard_ms))
        events: list[Event] = []
        if self.options.early_sentences:
            n_stable = self._n_stable(sentences)
            segment_start_ms = self._sentence.start_ms
            for done, following in zip(sentences[:n_stable], sentences[1 : n_stable + 1]):
                events.append(self.close_sentence(done.words, following.start_ms, segment_start_ms))
            sentences = sentences[n_stable:]
        self._previous = sentences
        if self.options.partials and sentences:
            text = " ".join(s.text for s in sentences)
            events.append(self.partial(text, sentences[0].start_ms, self.heard_ms))
        return events

    def _n_stable(self, sentences: list[Sentence]) -> int:
        """Complete sentences, followed by more speech, that the previous hypothesis agrees on."""
        n = 0
        while (
            n + 1 < len(sentences)
            and sentences[n].complete
            and n < len(self._previous)
            and sentences[n].text == self._previous[n].text
        ):
            n += 1
        return n
