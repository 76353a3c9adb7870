"""The direct simultaneous path: target text is committed while the sentence is still spoken.

Every `step_ms` of new audio the open window is re-transcribed; source agreement turns the
hypotheses into stable source words; the translator proposes a continuation of the committed
target for that source (reusing its KV cache, so a step costs about the same all along); the
policy commits part of the proposal or waits. When a sentence end becomes stable, that sentence
is flushed (translated to its end) as a `final` and the window moves past it. When the segment
closes, the rest is flushed the same way.

If the direct path raises or spends more compute than `max_compute_ratio` × the segment's audio,
the segment is finished the cascade's way (its translation continues the committed text; the
final says mode="cascade" and why); the next segment starts in direct mode again."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from streamst.agreement import LocalAgreement, SourceState
from streamst.clock import Clock, WallClock
from streamst.errors import OptionsError
from streamst.languages import Language
from streamst.policies import Policy, PolicyState, Proposal, Write, count_units, make_policy
from streamst.punctuation import ends_sentence, join_words, split_sentences
from streamst.sessions.base import Components, SegmentedSession
from streamst.types import Event, Word
from streamst.vad import SegmentClosed, VADOptions

log = logging.getLogger("streamst.sessions.direct")

PROMPT_CHARS = 200  # earlier source text given to the recogniser as context
MIN_BUDGET_AUDIO_MS = 3_000  # the compute budget is checked once a segment has this much audio


@dataclass(frozen=True)
class DirectOptions:
    policy: str = "la"  # la | wait-k | confidence
    knob: float | None = None  # k, n or tau; None takes the policy's default
    step_ms: int = 500  # re-transcribe and decide after this much new audio
    agreement_n: int = 2  # hypotheses that must agree before a source word is stable
    max_compute_ratio: float = 1.5  # compute per audio in a segment before the cascade takes over
    skip_stale_steps: bool = False  # when audio arrives faster than steps run, do only the latest
    vad: VADOptions = field(default_factory=VADOptions)

    def __post_init__(self) -> None:
        make_policy(self.policy, self.knob)  # validates name and knob
        if self.step_ms < 100:
            raise OptionsError(f"step_ms must be at least 100 ms, got {self.step_ms}")
        if self.agreement_n < 1:
            raise OptionsError(f"agreement_n must be at least 1, got {self.agreement_n}")
        if self.max_compute_ratio <= 0:
            raise OptionsError(f"max_compute_ratio must be positive, got {self.max_compute_ratio}")


@dataclass
class _Unit:
    """The sentence being translated: mutable bookkeeping inside the session only."""

    start_ms: int
    committed_target: str = ""
    history: list[str] = field(default_factory=list)
    compute_s: float = 0.0
    fallback_reason: str = ""
    shown: bool = False  # a partial was emitted for it


@dataclass(frozen=True)
class DirectStats:
    n_steps: int  # steps run (re-transcribe, propose, decide)
    n_skipped_steps: int  # steps skipped as stale because the session was behind the audio
    n_prefill_tokens: int  # translator prompt tokens evaluated, over all steps
    n_prompt_tokens: int  # translator prompt tokens in all, cached or not
    n_fallbacks: int


class DirectSession(SegmentedSession):
    mode = "direct"

    def __init__(
        self,
        components: Components,
        source: Language,
        target: Language,
        options: DirectOptions = DirectOptions(),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(components, source, target, options.vad, clock or WallClock())
        self.options = options
        self.policy: Policy = make_policy(options.policy, options.knob)
        self._agreement = LocalAgreement(options.agreement_n)
        self._unit = _Unit(0)
        self._window_start_ms = 0
        self._last_step_ms = 0
        self._context = ""  # source text of earlier sentences
        self._counts = {"steps": 0, "skipped": 0, "prefill": 0, "prompt": 0, "fallbacks": 0}

    @property
    def stats(self) -> DirectStats:
        c = self._counts
        return DirectStats(c["steps"], c["skipped"], c["prefill"], c["prompt"], c["fallbacks"])

    # hooks ------------------------------------------------------------------------------------

    def on_open(self, start_ms: int) -> list[Event]:
        self._window_start_ms = start_ms
        self._last_step_ms = self.heard_ms
        self._agreement.reset()
        self._unit = _Unit(start_ms)
        return []

    def on_frame(self) -> list[Event]:
        if self.heard_ms - self._last_step_ms < self.options.step_ms or self._unit.fallback_reason:
            return []
        self._last_step_ms = self.heard_ms
        if self.options.skip_stale_steps and self.frames_left_ms >= self.options.step_ms:
            self._counts["skipped"] += 1
            return []
        started_s = time.perf_counter()
        try:
            return self._step()
        except Exception as e:  # the cascade finishes this segment
            log.warning("direct step failed (%s); the cascade finishes this segment", e, exc_info=True)
            self._fall_back(f"direct step failed: {e}")
            return []
        finally:
            self._charge(time.perf_counter() - started_s)

    def on_close(self, closed: SegmentClosed) -> list[Event]:
        end_ms = closed.span.end_ms
        events: list[Event] = []
        words: tuple[Word, ...] = ()
        min_speech_ms = self.options.vad.min_speech_ms
        if closed.speech_ms >= min_speech_ms and end_ms - self._window_start_ms >= min_speech_ms:
            words = self._agreement.commit_all(self._transcribe(self._window_start_ms, end_ms)).committed
        for i, sentence in enumerate(split_sentences(words)):
            events.append(self._flush(sentence.words, continue_committed=i == 0))
        if not events and self._unit.shown:
            events.append(self.final("", self._unit.committed_target, self._unit.start_ms, end_ms, ""))
        self.discard_audio_before(end_ms)
        self._unit = _Unit(end_ms)
        return events

    # steps ------------------------------------------------------------------------------------

    def _step(self) -> list[Event]:
        self._counts["steps"] += 1
        state = self._agreement.update(self._transcribe(self._window_start_ms, self.heard_ms))
        events = self._close_stable_sentences(state)
        state = SourceState(self._agreement.committed, state.tentative, ())
        if not state.committed and not state.tentative:
            return events
        events.append(self._decide(state))
        return events

    def _close_stable_sentences(self, state: SourceState) -> list[Event]:
        """A sentence end that became stable closes the unit: flush it as a final."""
        events: list[Event] = []
        committed = list(state.committed)
        while True:
            end = next((i for i, w in enumerate(committed) if ends_sentence(w.text)), None)
            if end is None:
                break
            done, committed = committed[: end + 1], committed[end + 1 :]
            events.append(self._flush(tuple(done), continue_committed=True))
            following = committed[0].start_ms if committed else (state.tentative[0].start_ms if state.tentative else None)
            self._window_start_ms = _cut_between(done[-1].end_ms, following)
            self.discard_audio_before(self._window_start_ms)
            self._unit = _Unit(committed[0].start_ms if committed else self._window_start_ms)
            self._agreement.restart(committed)
        return events

    def _decide(self, state: SourceState) -> Event:
        unit = self._unit
        stable = join_words(state.committed)
        tentative = join_words(state.tentative)
        request = self.policy.request(
            len(state.committed), count_units(unit.committed_target, self.target.latency_unit), self.target.latency_unit
        )
        source_text = stable if request.source == "stable" else f"{stable} {tentative}".strip()
        if not source_text or request.max_new_tokens == 0:
            unit.shown = True
            return self.partial(
                f"{stable} {tentative}".strip(), unit.start_ms, self.heard_ms, unit.committed_target, "", ""
            )
        translation = self.components.translator.translate(
            source_text,
            self.source,
            self.target,
            committed=unit.committed_target,
            max_new_tokens=request.max_new_tokens,
            stream_key=self,
        )
        self._counts["prefill"] += translation.n_prefill_tokens
        self._counts["prompt"] += translation.n_prompt_tokens
        proposal = Proposal(translation.tokens, translation.finished)
        action = self.policy.decide(
            PolicyState(
                n_stable_words=len(state.committed),
                stable_source=stable,
                tentative_source=tentative,
                committed_target=unit.committed_target,
                proposal=proposal,
                history=tuple(unit.history),
                segment_finished=False,
                target_unit=self.target.latency_unit,
            )
        )
        unit.history.append(unit.committed_target + proposal.text)
        delta = action.text if isinstance(action, Write) else ""
        unit.committed_target += delta
        unit.shown = True
        return self.partial(
            f"{stable} {tentative}".strip(),
            unit.start_ms,
            self.heard_ms,
            unit.committed_target,
            delta,
            proposal.text[len(delta) :],
        )

    def _flush(self, words: tuple[Word, ...], continue_committed: bool) -> Event:
        """Translate a sentence to its end, continuing what was committed for it."""
        unit = self._unit if continue_committed else _Unit(words[0].start_ms)
        text = join_words(words)
        translation = self.components.translator.translate(
            text, self.source, self.target, committed=unit.committed_target, stream_key=self
        )
        self._counts["prefill"] += translation.n_prefill_tokens
        self._counts["prompt"] += translation.n_prompt_tokens
        self._context = f"{self._context} {text}".strip()[-PROMPT_CHARS:]
        delta = translation.text.rstrip() if unit.committed_target else translation.text.strip()
        full = unit.committed_target + delta
        mode = "cascade" if unit.fallback_reason else "direct"
        start_ms = min(unit.start_ms, words[0].start_ms) if continue_committed else words[0].start_ms
        return self.final(text, full, start_ms, words[-1].end_ms, delta, mode, unit.fallback_reason)

    def _transcribe(self, start_ms: int, end_ms: int) -> tuple[Word, ...]:
        audio = self.audio_between(start_ms, end_ms)
        transcript = self.components.encoder.transcribe(audio, self.source.whisper_code, start_ms, self._context)
        return self.components.punctuator.punctuate(transcript.words, self.source.code)

    def _charge(self, spent_s: float) -> None:
        unit = self._unit
        unit.compute_s += spent_s
        audio_ms = self.heard_ms - unit.start_ms
        if (
            not unit.fallback_reason
            and audio_ms >= MIN_BUDGET_AUDIO_MS
            and unit.compute_s * 1000 > self.options.max_compute_ratio * audio_ms
        ):
            self._fall_back(
                f"direct path used {unit.compute_s:.1f} s of compute for {audio_ms / 1000:.1f} s of audio "
                f"(budget {self.options.max_compute_ratio:g}x)"
            )

    def _fall_back(self, reason: str) -> None:
        self._unit.fallback_reason = reason
        self._counts["fallbacks"] += 1


def _cut_between(end_ms: int, next_start_ms: int | None) -> int:
    if next_start_ms is None or next_start_ms <= end_ms:
        return end_ms
    return (end_ms + next_start_ms) // 2
