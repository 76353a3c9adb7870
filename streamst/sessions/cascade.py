"""The cascaded path: VAD segments → ASR on the growing window → punctuation → sentences → MT.

While a segment is open the window is re-transcribed every `step_ms` of new audio (a `partial`
with the tentative source). A complete sentence that two consecutive hypotheses agree on, and
that more speech follows, is translated at once (a `final`), and the window moves past it, so
the cost of a step does not grow with the length of the talk. When the segment closes, what is
left is transcribed once more and translated sentence by sentence."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from streamst.clock import Clock, WallClock
from streamst.errors import OptionsError
from streamst.languages import Language
from streamst.punctuation import split_sentences
from streamst.sessions.base import Components, SegmentedSession
from streamst.types import Event, Sentence, Transcript
from streamst.vad import SegmentClosed, VADOptions

log = logging.getLogger("streamst.sessions.cascade")

PROMPT_CHARS = 200  # committed source text passed to the recogniser as context


@dataclass(frozen=True)
class CascadeOptions:
    step_ms: int = 1_000  # re-transcribe the open segment after this much new audio
    early_sentences: bool = True  # translate agreed complete sentences before the segment ends
    partials: bool = True  # emit tentative source text while a segment is open
    context_prompt: bool = True  # give the recogniser the last committed source text
    skip_stale_steps: bool = False  # when audio arrives faster than steps run, do only the latest
    vad: VADOptions = field(default_factory=VADOptions)

    def __post_init__(self) -> None:
        if self.step_ms < 100:
            raise OptionsError(f"step_ms must be at least 100 ms, got {self.step_ms}")


class CascadeSession(SegmentedSession):
    mode = "cascade"

    def __init__(
        self,
        components: Components,
        source: Language,
        target: Language,
        options: CascadeOptions = CascadeOptions(),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(components, source, target, options.vad, clock or WallClock())
        self.options = options
        self._window_start_ms = 0
        self._segment_start_ms = 0
        self._last_step_ms = 0
        self._previous: list[Sentence] = []
        self._committed_source = ""
        self._partial_shown = False
        self.n_skipped_steps = 0

    # hooks ------------------------------------------------------------------------------------

    def on_open(self, start_ms: int) -> list[Event]:
        self._window_start_ms = self._segment_start_ms = start_ms
        self._last_step_ms = self.heard_ms
        self._previous = []
        return []

    def on_frame(self) -> list[Event]:
        if self.heard_ms - self._last_step_ms < self.options.step_ms:
            return []
        self._last_step_ms = self.heard_ms
        if not (self.options.partials or self.options.early_sentences):
            return []
        if self.options.skip_stale_steps and self.frames_left_ms >= self.options.step_ms:
            self.n_skipped_steps += 1
            return []
        return self._step()

    def on_close(self, closed: SegmentClosed) -> list[Event]:
        end_ms = closed.span.end_ms
        events: list[Event] = []
        min_speech_ms = self.options.vad.min_speech_ms
        if closed.speech_ms >= min_speech_ms and end_ms - self._window_start_ms >= min_speech_ms:
            transcript = self._transcribe(self._window_start_ms, end_ms)
            for sentence in split_sentences(transcript.words):
                events.append(self._translate(sentence))
        if not events and self._partial_shown:
            # The open segment showed tentative text that came to nothing: clear it.
            events.append(self.final("", "", self._segment_start_ms, end_ms, ""))
        self._partial_shown = False
        self._previous = []
        self.discard_audio_before(end_ms)
        return events

    # steps ------------------------------------------------------------------------------------

    def _step(self) -> list[Event]:
        transcript = self._transcribe(self._window_start_ms, self.heard_ms)
        sentences = split_sentences(transcript.words)
        events: list[Event] = []
        if self.options.early_sentences:
            n_stable = self._n_stable(sentences)
            for sentence in sentences[:n_stable]:
                events.append(self._translate(sentence))
            if n_stable:
                self._window_start_ms = _cut_after(sentences[n_stable - 1], sentences[n_stable])
                self.discard_audio_before(self._window_start_ms)
            sentences = sentences[n_stable:]
        self._previous = sentences
        if self.options.partials and sentences:
            text = " ".join(s.text for s in sentences)
            events.append(self.partial(text, sentences[0].start_ms, self.heard_ms))
            self._partial_shown = True
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

    def _transcribe(self, start_ms: int, end_ms: int) -> Transcript:
        audio = self.audio_between(start_ms, end_ms)
        prompt = self._committed_source[-PROMPT_CHARS:] if self.options.context_prompt else ""
        transcript = self.components.encoder.transcribe(audio, self.source.whisper_code, start_ms, prompt)
        words = self.components.punctuator.punctuate(transcript.words, self.source.code)
        return Transcript(words, transcript.language, transcript.window_start_ms, transcript.window_end_ms)

    def _translate(self, sentence: Sentence) -> Event:
        translation = self.components.translator.translate(sentence.text, self.source, self.target)
        self._committed_source = f"{self._committed_source} {sentence.text}".strip()
        self._partial_shown = False
        text = translation.text.strip()
        return self.final(sentence.text, text, sentence.start_ms, sentence.end_ms, text)


def _cut_after(done: Sentence, following: Sentence) -> int:
    """A window start between the last word of `done` and the first word of `following`."""
    end_ms = done.end_ms
    next_start_ms = following.start_ms
    return (end_ms + next_start_ms) // 2 if next_start_ms > end_ms else end_ms

