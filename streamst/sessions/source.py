"""The cascade's source side alone, and the sentence translation that completes it per language.

A room (one speaker, many listeners) hears its speaker once: a `SourceSession` runs the VAD, the
recogniser, source agreement and sentence closing exactly as the cascade does, and its finals carry
each closed source sentence with no translation. A `SentenceStream` per target language then turns
every such final into that language's final, on the one shared translator, with a stream id of its
own (its KV slot) and its own earlier sentences. Compute grows with the languages, not the readers.

    source = SourceSession(components, english)
    german = SentenceStream(components.translator, english, german_language)
    for event in source.push(pcm):
        if isinstance(event, FinalEvent):
            caption = german.final(event)
"""

from __future__ import annotations

import collections
import dataclasses
import logging

from streamst.clock import Clock
from streamst.languages import Language
from streamst.sessions.base import Components, new_stream_id
from streamst.sessions.cascade import CascadeOptions, CascadeSession
from streamst.translators.base import Translator
from streamst.types import FinalEvent, PartialEvent

log = logging.getLogger("streamst.sessions.source")


class SourceSession(CascadeSession):
    """A cascade session that stops before translation: its finals' `committed_text` is empty and
    their `source_text` is the closed sentence; partials carry the tentative source as the cascade's
    do. `target` is the source language itself (nothing is translated into it)."""

    def __init__(
        self,
        components: Components,
        source: Language,
        options: CascadeOptions = CascadeOptions(),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(components, source, source, options, clock)

    def sentence_translation(self, text: str, committed: str) -> str:
        return ""


class SentenceStream:
    """One target language of a shared source: each source final becomes a final in `target`.

    Same segment ids and times as the source finals; `committed_text` (and `committed_delta`) is the
    sentence's translation. A target equal to the source gives the transcript and costs no model
    call. Not thread-safe: one call at a time, in source order."""

    def __init__(
        self, translator: Translator, source: Language, target: Language, translation_context: int = 0
    ) -> None:
        self.translator = translator
        self.source = source
        self.target = target
        self.stream_id = new_stream_id()  # its KV slot in the translator
        # The last sentences (source, translation): the translator's earlier exchanges.
        self._earlier: collections.deque[tuple[str, str]] = collections.deque(maxlen=translation_context)
        self.n_translated = 0  # model calls made

    @property
    def is_transcript(self) -> bool:
        """The target is the spoken language: the source text is the caption."""
        return self.target == self.source

    def final(self, source_final: FinalEvent) -> FinalEvent:
        """The final of `source_final`'s sentence in the target language."""
        text = source_final.source_text.strip()
        if self.is_transcript or not text:
            caption = text
        else:
            translation = self.translator.translate(
                text, self.source, self.target, stream_key=self.stream_id, earlier=tuple(self._earlier)
            )
            self.n_translated += 1
            caption = translation.text.strip()
            if caption:
                self._earlier.append((text, caption))
        return dataclasses.replace(source_final, committed_text=caption, committed_delta=caption, tentative_text="")

    def partial(self, source_partial: PartialEvent) -> PartialEvent:
        """A source partial as this language shows it: the transcript shows the tentative source as
        its tentative text; a translation shows nothing tentative (the cascade translates whole
        sentences), only the source text."""
        if self.is_transcript:
            return dataclasses.replace(source_partial, tentative_text=source_partial.source_text)
        return source_partial
