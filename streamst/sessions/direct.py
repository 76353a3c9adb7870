"""The direct simultaneous path: target text is committed while the sentence is still spoken.

Every `step_ms` of new audio the open window is re-transcribed; source agreement turns the
hypotheses into stable source words; the translator proposes a continuation of the committed
target for that source (reusing its KV cache, so a step costs about the same all along); the
policy commits part of the proposal or waits. When a sentence end becomes stable, that sentence
is translated to its end (a `final`) and the window moves past it. When the segment closes, the
rest is finished the same way.

If a step raises, or the steps spend more compute than `max_compute_ratio` × the sentence's
audio, the segment takes no more steps and its close translates the rest sentence by sentence
as the cascade does (continuing the committed text; the finals say mode="cascade" and why); the
next segment starts in direct mode again."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from streamst.agreement import LocalAgreement, SourceState
from streamst.clock import Clock
from streamst.errors import OptionsError
from streamst.languages import Language
from streamst.policies import Policy, PolicyState, Proposal, TargetAgreement, Write, count_units
from streamst.profiling import span
from streamst.punctuation import ends_sentence, join_words
from streamst.sessions.base import Components, SegmentedSession, SessionOptions
from streamst.types import Event, Word

log = logging.getLogger("streamst.sessions.direct")


@dataclass(frozen=True)
class DirectOptions(SessionOptions):
    policy: Policy = field(default_factory=TargetAgreement)  # decides what to commit (streamst.options lists them)
    step_ms: int = 500  # re-transcribe and decide after this much new audio
    agreement_n: int = 2  # hypotheses that must agree before a source word is stable
    max_compute_ratio: float = 1.5  # compute per audio of a sentence before the cascade's way takes over

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.policy, Policy):
            raise OptionsError(f"policy must be a Policy (see streamst.options), got {self.policy!r}")
        if self.agreement_n < 1:
            raise OptionsError(f"agreement_n must be at least 1, got {self.agreement_n}")


class DirectSession(SegmentedSession):
    mode = "direct"
    commits_while_open = True
    options: DirectOptions

    @property
    def policy(self) -> Policy:
        return self.options.policy

    def __init__(self, components: Components, source: Language, target: Language,
                 options: DirectOptions = DirectOptions(), clock: Clock | None = None) -> None:  # fmt: skip
        super().__init__(components, source, target, options, clock)
        self._agreement = LocalAgreement(options.agreement_n)

    def on_segment_open(self) -> None:
        self._agreement.reset()

    def close_words(self, words: tuple[Word, ...]) -> tuple[Word, ...]:
        return self._agreement.commit_all(words).committed

    def step_failed(self, error: Exception) -> list[Event]:
        log.warning("direct step failed (%s); the cascade's way finishes this segment", error, exc_info=True)
        self.fall_back(f"direct step failed: {error}")
        return []

    def step(self) -> list[Event]:
        words = self.transcribe(self._window_start_ms, self.heard_ms)
        with span("agreement"):
            state = self._agreement.update(words)
        events: list[Event] = self._close_stable_sentences(state)
        state = SourceState(self._agreement.committed, state.tentative, ())
        if not state.committed and not state.tentative:
            return events
        events.append(self._decide(state))
        return events

    def _close_stable_sentences(self, state: SourceState) -> list[Event]:
        """A sentence end that became stable closes the sentence: its final."""
        events: list[Event] = []
        committed = list(state.committed)
        while True:
            end = next((i for i, w in enumerate(committed) if ends_sentence(w.text)), None)
            if end is None:
                break
            done, committed = committed[: end + 1], committed[end + 1 :]
            following = committed[0].start_ms if committed else (state.tentative[0].start_ms if state.tentative else None)
            events.append(self.close_sentence(done, following, committed[0].start_ms if committed else None))
            self._agreement.restart(committed)
        return events

    def _decide(self, state: SourceState) -> Event:
        sentence = self._sentence
        unit = self.target.latency_unit
        stable = join_words(state.committed)
        tentative = join_words(state.tentative)
        heard = f"{stable} {tentative}".strip()
        request = self.policy.request(len(state.committed), count_units(sentence.committed_target, unit), unit)
        source_text = stable if request.source == "stable" else heard
        if not source_text or request.max_new_tokens == 0:
            return self.partial(heard, sentence.start_ms, self.heard_ms, sentence.committed_target)
        translation = self.translate(source_text, sentence.committed_target, request.max_new_tokens)
        proposal = Proposal(translation.tokens, translation.finished)
        with span("policy"):
            action = self.policy.decide(
                PolicyState(
                    n_stable_words=len(state.committed),
                    stable_source=stable,
                    tentative_source=tentative,
                    committed_target=sentence.committed_target,
                    proposal=proposal,
                    # Another translation of the same source agrees with this one by construction.
                    history=tuple(target for source, target in sentence.history if source != source_text),
                    target_unit=unit,
                )
            )
        sentence.history.append((source_text, sentence.committed_target + proposal.text))
        delta = action.text if isinstance(action, Write) else ""
        sentence.committed_target += delta
        return self.partial(
            heard, sentence.start_ms, self.heard_ms, sentence.committed_target, delta, proposal.text[len(delta) :]
        )
