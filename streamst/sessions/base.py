"""The loop every session shares: audio → VAD frames → segments → steps → sentence finals.

Audio is consumed in whole VAD frames, so a session behaves the same whatever chunk sizes the
caller pushes; decisions are made at the audio position `heard_ms`. While a segment is open the
session steps every `step_ms` of new audio (or skips a step that is already stale, live); each
step's compute is metered on the session's clock against the segment's budget. A subclass says
only what a step commits (`step`) and which words close a segment (`close_words`); finishing a
sentence (`close_sentence`) and a segment (`on_close`) is common to both modes.

The compute budget: once a sentence has spent more than `max_compute_ratio` × its audio on
steps, its segment takes no more steps; at the segment's end the rest is translated sentence by
sentence, as the cascade closes a segment (continuing any target text already committed), and
its finals say mode="cascade" with the reason. A step that raises is handed on the same way when
`step_failed` says so. On a simulated clock no time passes during a step, so the budget never
trips there and results do not depend on the machine's speed."""

from __future__ import annotations

import collections
import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamst.clock import Clock, WallClock
from streamst.encoders.base import SpeechEncoder
from streamst.errors import OptionsError
from streamst.languages import Language
from streamst.profiling import span
from streamst.punctuation import Punctuator, join_words, split_sentences
from streamst.sessions.buffer import AudioBuffer
from streamst.translators.base import Translator
from streamst.types import Event, FinalEvent, Mode, PartialEvent, Translation, Word
from streamst.vad import FRAME_MS, FRAME_SAMPLES, Endpointer, SegmentClosed, SegmentOpened, SileroVAD, VADOptions

log = logging.getLogger("streamst.sessions")

KEEP_BEFORE_MS = 1_000  # audio kept before the open segment (speech padding reaches into it)
PROMPT_CHARS = 200  # committed source text given to the recogniser as context
MIN_STEP_MS = 100  # the shortest step: a step re-transcribes the whole open window
MAX_STEP_MS = 10_000  # the longest step: longer ones would leave a segment without partials
MIN_BUDGET_AUDIO_MS = 3_000  # the compute budget is checked once a sentence has this much audio

_stream_ids = itertools.count(1)


def new_stream_id() -> int:
    """A number no other stream of this process has: names a stream to the translator (its KV slot)."""
    return next(_stream_ids)


@dataclass(frozen=True)
class SessionOptions:
    """What every session shares: its pace, its live behaviour, its budget and its VAD."""

    step_ms: int = 1_000  # step (re-transcribe, decide) after this much new audio
    skip_stale_steps: bool = False  # when audio arrives faster than steps run, do only the latest
    context_prompt: bool = True  # give the recogniser the last committed source text
    translation_context: int = 0  # earlier sentences (source and translation) shown to the translator
    max_compute_ratio: float = math.inf  # compute per audio of a sentence before its segment stops stepping
    vad: VADOptions = field(default_factory=VADOptions)

    def __post_init__(self) -> None:
        if not MIN_STEP_MS <= self.step_ms <= MAX_STEP_MS:
            raise OptionsError(f"step_ms must be between {MIN_STEP_MS} and {MAX_STEP_MS} ms, got {self.step_ms}")
        if self.translation_context < 0:
            raise OptionsError(f"translation_context must be 0 or more sentences, got {self.translation_context}")
        if not self.max_compute_ratio > 0:
            raise OptionsError(f"max_compute_ratio must be positive, got {self.max_compute_ratio}")


@dataclass(frozen=True)
class Components:
    """The shared models a session uses; loaded once by the engine."""

    vad: SileroVAD
    encoder: SpeechEncoder
    punctuator: Punctuator
    translator: Translator  # proposes while a sentence is spoken (the direct mode's steps)
    finisher: Translator | None = None  # finishes each sentence heard whole (its final); None: `translator`

    @property
    def final_translator(self) -> Translator:
        """The decoder that writes finals: the direct mode's last words, the cascade's sentences."""
        return self.finisher or self.translator


@dataclass(frozen=True)
class SessionStats:
    n_steps: int  # steps run (re-transcribe, decide)
    n_skipped_steps: int  # steps skipped as stale because the session was behind the audio
    n_prefill_tokens: int  # translator prompt tokens evaluated, over all requests
    n_prompt_tokens: int  # translator prompt tokens in all, cached or not
    n_fallbacks: int  # segments handed to the sentence-by-sentence finish


@dataclass
class _Counts:
    """Mutable counters inside the session; read through `SegmentedSession.stats`."""

    n_steps: int = 0
    n_skipped_steps: int = 0
    n_prefill_tokens: int = 0
    n_prompt_tokens: int = 0
    n_fallbacks: int = 0


@dataclass
class OpenSentence:
    """The sentence being worked on: mutable bookkeeping inside the session only."""

    start_ms: int
    committed_target: str = ""  # target text committed for it (the direct path only)
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (source, full target) proposals
    compute_ms: float = 0.0  # session-clock time its steps took
    fallback_reason: str = ""  # why its segment stopped stepping; "" while it steps
    shown: bool = False  # a partial was emitted for it


class SegmentedSession(ABC):
    """One stream. `push` and `finish` return the events they caused, in time order."""

    mode: Mode
    commits_while_open: bool  # commits target text before a sentence ends, so its final continues it

    def __init__(
        self,
        components: Components,
        source: Language,
        target: Language,
        options: SessionOptions,
        clock: Clock | None = None,
    ) -> None:
        self.components = components
        self.source = source
        self.target = target
        self.options = options
        self.clock = clock or WallClock()
        self.stream_id = new_stream_id()  # names this stream to the translator (its KV cache)
        self._vad = components.vad.stream()
        self._endpointer = Endpointer(options.vad)
        self._buffer = AudioBuffer()
        self._pending = np.zeros(0, dtype=np.float32)
        self._heard_samples = 0
        self._frames_left = 0  # frames of the current push still to be consumed
        self._finished = False
        self._next_segment_id = 0
        self._window_start_ms = 0  # where the audio the next step transcribes starts
        self._last_step_ms = 0
        self._context = ""  # committed source text, the recogniser's prompt
        # The last sentences finished (source, translation): the translator's earlier exchanges.
        self._earlier: collections.deque[tuple[str, str]] = collections.deque(maxlen=options.translation_context)
        self._sentence = OpenSentence(0)
        self._counts = _Counts()

    @property
    def heard_ms(self) -> int:
        """Source audio consumed so far, in whole VAD frames."""
        return self._heard_samples * FRAME_MS // FRAME_SAMPLES

    @property
    def frames_left_ms(self) -> int:
        """Audio already pushed but not yet consumed: a step due now is stale if this is long."""
        return self._frames_left * FRAME_MS

    @property
    def segment_open(self) -> bool:
        return self._endpointer.open_start_ms is not None

    @property
    def stats(self) -> SessionStats:
        c = self._counts
        return SessionStats(c.n_steps, c.n_skipped_steps, c.n_prefill_tokens, c.n_prompt_tokens, c.n_fallbacks)

    def push(self, audio: np.ndarray) -> list[Event]:
        """audio: (n_samples,) float32 at 16 kHz, any length."""
        if self._finished:
            raise RuntimeError("push() after finish(); start a new session")
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (n_samples,), got shape {audio.shape}")
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        events: list[Event] = []
        n_frames = len(self._pending) // FRAME_SAMPLES
        for i in range(n_frames):
            self._frames_left = n_frames - i - 1
            events.extend(self._consume_frame(self._pending[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]))
        self._frames_left = 0
        self._pending = self._pending[n_frames * FRAME_SAMPLES :]
        return events

    def finish(self) -> list[Event]:
        """End of stream: the rest of the audio is heard and every open segment is closed."""
        if self._finished:
            return []
        events: list[Event] = []
        if len(self._pending):
            tail = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            tail[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            events.extend(self._consume_frame(tail))
        for closed in self._endpointer.flush():
            events.extend(self._on_close(closed))
        self._finished = True
        return events

    # what a mode decides --------------------------------------------------------------------------

    @abstractmethod
    def step(self) -> list[Event]:
        """Work on the open window (from `window_start_ms` to `heard_ms`): partials, and finals of
        sentences done before the segment ends (`close_sentence`)."""

    @abstractmethod
    def close_words(self, words: tuple[Word, ...]) -> tuple[Word, ...]:
        """The words of the open sentence(s) at segment end, given the last hypothesis of the window."""

    def on_segment_open(self) -> None:
        """A segment starts; reset per-segment state."""

    def wants_step(self) -> bool:
        """Whether a step due now should run (the budget and failures already stop steps)."""
        return True

    def step_failed(self, error: Exception) -> list[Event]:
        """A step raised. Default: the caller sees the error."""
        raise error

    # the frame loop -------------------------------------------------------------------------------

    def _consume_frame(self, frame: np.ndarray) -> list[Event]:
        self._buffer.append(frame)
        self._heard_samples += len(frame)
        with span("vad"):
            probabilities = self._vad.probabilities(frame)
        changes = self._endpointer.feed(probabilities)
        events: list[Event] = []
        for change in changes:
            events.extend(self._on_open(change.start_ms) if isinstance(change, SegmentOpened) else self._on_close(change))
        if self.segment_open:
            events.extend(self._on_frame())
        else:
            self._buffer.discard_before(self.heard_ms - KEEP_BEFORE_MS)
        return events

    def _on_open(self, start_ms: int) -> list[Event]:
        self._window_start_ms = start_ms
        self._last_step_ms = self.heard_ms
        self._sentence = OpenSentence(start_ms)
        self.on_segment_open()
        return []

    def _on_frame(self) -> list[Event]:
        if self.heard_ms - self._last_step_ms < self.options.step_ms:
            return []
        self._last_step_ms = self.heard_ms
        if self._sentence.fallback_reason or not self.wants_step():
            return []
        if self.options.skip_stale_steps and self.frames_left_ms >= self.options.step_ms:
            self._counts.n_skipped_steps += 1
            return []
        self._counts.n_steps += 1
        started_ms = self.clock.now_ms()
        try:
            with span("step"):
                return self.step()
        except Exception as e:  # noqa: BLE001 - `step_failed` decides: hand the segment on, or raise
            return self.step_failed(e)
        finally:
            self._charge(self.clock.now_ms() - started_ms)

    def _on_close(self, closed: SegmentClosed) -> list[Event]:
        """The open segment ended: the rest of its window is transcribed and translated sentence
        by sentence (the first one continuing what was committed for it)."""
        with span("close"):
            return self._close_segment(closed)

    def _close_segment(self, closed: SegmentClosed) -> list[Event]:
        end_ms = closed.span.end_ms
        words: tuple[Word, ...] = ()
        min_speech_ms = self.options.vad.min_speech_ms
        if closed.speech_ms >= min_speech_ms and end_ms - self._window_start_ms >= min_speech_ms:
            words = self.close_words(self.transcribe(self._window_start_ms, end_ms, final=True))
        events: list[Event] = [
            self._sentence_final(sentence.words, first=i == 0) for i, sentence in enumerate(split_sentences(words))
        ]
        sentence = self._sentence
        if not events and sentence.shown:
            # The segment showed text that came to nothing more: close what was shown.
            events.append(self.final("", sentence.committed_target, sentence.start_ms, end_ms, ""))
        self.discard_audio_before(end_ms)
        self._sentence = OpenSentence(end_ms)
        return events

    # helpers for modes ----------------------------------------------------------------------------

    def transcribe(self, start_ms: int, end_ms: int, final: bool = False) -> tuple[Word, ...]:
        """The recogniser's punctuated words for the audio between two stream times; `final`: the
        last transcription of a closed segment (Whisper searches it with a beam)."""
        audio = self._buffer.slice_ms(start_ms, end_ms)
        prompt = self._context if self.options.context_prompt else ""
        with span("transcribe"):
            transcript = self.components.encoder.transcribe(audio, self.source.whisper_code, start_ms, prompt, final)
            return self.components.punctuator.punctuate(transcript.words, self.source.code)

    def translate(
        self,
        source_text: str,
        committed: str = "",
        max_new_tokens: int | None = None,
        reuse: bool = True,
        final: bool = False,
    ) -> Translation:
        """The translator's continuation of `committed` for `source_text`; `reuse` lets it start
        from this stream's previous request (its KV cache), which a growing source mostly shares;
        `final`: the sentence is heard whole, and the finals' decoder finishes it."""
        translator = self.components.final_translator if final else self.components.translator
        with span("translate"):
            translation = translator.translate(
                source_text,
                self.source,
                self.target,
                committed=committed,
                max_new_tokens=max_new_tokens,
                stream_key=self.stream_id if reuse else None,
                earlier=tuple(self._earlier),
            )
        self._counts.n_prefill_tokens += translation.n_prefill_tokens
        self._counts.n_prompt_tokens += translation.n_prompt_tokens
        return translation

    def close_sentence(
        self, words: Sequence[Word], next_start_ms: int | None, next_sentence_start_ms: int | None = None
    ) -> FinalEvent:
        """A sentence done before its segment ends: its final; the window moves past it to the next
        word (at `next_start_ms`, if heard), and a new sentence opens at `next_sentence_start_ms`
        (default: the new window start)."""
        event = self._sentence_final(words, first=True)
        self._window_start_ms = cut_between(words[-1].end_ms, next_start_ms)
        self.discard_audio_before(self._window_start_ms)
        start_ms = self._window_start_ms if next_sentence_start_ms is None else next_sentence_start_ms
        self._sentence = OpenSentence(start_ms)
        return event

    def sentence_translation(self, text: str, committed: str) -> str:
        """The target text that completes a closed source sentence after `committed` (what its final
        adds). A source-only session (`streamst.sessions.source`) translates nothing here."""
        translation = self.translate(text, committed=committed, reuse=self.commits_while_open, final=True)
        return translation.text.rstrip() if committed else translation.text.strip()

    def discard_audio_before(self, ms: int) -> None:
        self._buffer.discard_before(ms - KEEP_BEFORE_MS)

    def fall_back(self, reason: str) -> None:
        """The open segment takes no more steps; its close translates the rest sentence by sentence."""
        if not self._sentence.fallback_reason:
            log.info("stream %d: %s; the segment is finished sentence by sentence", self.stream_id, reason)
            self._sentence.fallback_reason = reason
            self._counts.n_fallbacks += 1

    def partial(
        self, source_text: str, start_ms: int, end_ms: int, committed: str = "", delta: str = "", tentative: str = ""
    ) -> PartialEvent:
        self._sentence.shown = True
        return PartialEvent(
            segment_id=self._next_segment_id,
            source_text=source_text,
            committed_text=committed,
            committed_delta=delta,
            tentative_text=tentative,
            start_ms=start_ms,
            end_ms=end_ms,
            mode=self.mode,
            audio_ms=self.heard_ms,
            emitted_ms=self.clock.now_ms(),
        )

    def final(
        self,
        source_text: str,
        translation: str,
        start_ms: int,
        end_ms: int,
        delta: str,
        mode: Mode | None = None,
        fallback_reason: str = "",
    ) -> FinalEvent:
        event = FinalEvent(
            segment_id=self._next_segment_id,
            source_text=source_text,
            committed_text=translation,
            committed_delta=delta,
            tentative_text="",
            start_ms=start_ms,
            end_ms=end_ms,
            mode=mode or self.mode,
            audio_ms=self.heard_ms,
            emitted_ms=self.clock.now_ms(),
            fallback_reason=fallback_reason,
        )
        self._next_segment_id += 1
        return event

    # internals --------------------------------------------------------------------------------------

    def _sentence_final(self, words: Sequence[Word], first: bool) -> FinalEvent:
        """Translates a sentence to its end. The first sentence of what is open continues the target
        text committed for it (a mode that commits while open); the others start afresh."""
        open_sentence = self._sentence
        continues = first and self.commits_while_open
        committed = open_sentence.committed_target if continues else ""
        text = join_words(words)
        delta = self.sentence_translation(text, committed)
        self._context = f"{self._context} {text}".strip()[-PROMPT_CHARS:]
        if (committed + delta).strip():
            self._earlier.append((text, (committed + delta).strip()))
        start_ms = min(open_sentence.start_ms, words[0].start_ms) if continues else words[0].start_ms
        reason = open_sentence.fallback_reason
        return self.final(text, committed + delta, start_ms, words[-1].end_ms, delta,
                          "cascade" if reason else self.mode, reason)  # fmt: skip

    def _charge(self, spent_ms: float) -> None:
        sentence = self._sentence
        sentence.compute_ms += spent_ms
        audio_ms = self.heard_ms - sentence.start_ms
        if audio_ms >= MIN_BUDGET_AUDIO_MS and sentence.compute_ms > self.options.max_compute_ratio * audio_ms:
            self.fall_back(
                f"{self.mode} path used {sentence.compute_ms / 1000:.1f} s of compute for {audio_ms / 1000:.1f} s "
                f"of audio (budget {self.options.max_compute_ratio:g}x)"
            )


def cut_between(end_ms: int, next_start_ms: int | None) -> int:
    """A window start between a finished word (ending at `end_ms`) and the next one, if heard."""
    if next_start_ms is None or next_start_ms <= end_ms:
        return end_ms
    return (end_ms + next_start_ms) // 2
