"""Both sessions on scripted models (tests/scripted.py): sentence closing, flush, fallback, close,
stale steps, the context prompt and the stream key, in milliseconds and without weights."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, replace

import numpy as np
import pytest
from scripted import ScriptedTranslator, audio_for, components, spoken

from streamst import options as options_module
from streamst.clock import SimulatedClock
from streamst.errors import OptionsError
from streamst.knobs import Knob
from streamst.languages import resolve
from streamst.options import MODES, ModeSpec, PolicySpec, _direct, describe, session_options
from streamst.policies import Policy, PolicyState, ProposalRequest, count_units
from streamst.sessions.base import SegmentedSession
from streamst.sessions.cascade import CascadeOptions, CascadeSession
from streamst.sessions.direct import DirectOptions, DirectSession
from streamst.sessions.source import SentenceStream, SourceSession
from streamst.types import FinalEvent, PartialEvent

TALK = spoken("Hello world this is a test. How are you today?", start_ms=200)
TALK_MS = 5_000  # the talk ends at 3650 ms; the silence after it closes the segment
EN, DE = resolve("en"), resolve("de")


def run(session: SegmentedSession, audio: np.ndarray, chunk_ms: int = 100) -> list:
    events = []
    for start in range(0, len(audio), 16 * chunk_ms):
        session.clock.advance(chunk_ms)
        events += session.push(audio[start : start + 16 * chunk_ms])
    return events + session.finish()


def direct(
    translator: ScriptedTranslator | None = None, script=TALK, clock=None, finisher=None, **overrides
) -> DirectSession:
    options = replace(DirectOptions(), **overrides)
    return DirectSession(components(script, translator, finisher), EN, DE, options, clock or SimulatedClock())


def cascade(script=TALK, finisher=None, **overrides) -> CascadeSession:
    options = replace(CascadeOptions(), **overrides)
    return CascadeSession(components(script, finisher=finisher), EN, DE, options, SimulatedClock())


def finals(events) -> list[FinalEvent]:
    return [e for e in events if isinstance(e, FinalEvent)]


def check_append_only(events) -> None:
    shown: dict[int, str] = {}
    for e in events:
        before = shown.get(e.segment_id, "")
        assert e.committed_text == before + e.committed_delta, (before, e)
        shown[e.segment_id] = e.committed_text


# sentence closing -------------------------------------------------------------------------------------


def test_direct_commits_while_speaking_and_closes_each_sentence_with_its_final():
    events = run(direct(), audio_for(TALK, TALK_MS))
    check_append_only(events)
    done = finals(events)
    assert [(e.source_text, e.committed_text, e.mode) for e in done] == [
        ("Hello world this is a test.", "HELLO WORLD THIS IS A TEST.", "direct"),
        ("How are you today?", "HOW ARE YOU TODAY?", "direct"),
    ]
    early = [e for e in events if isinstance(e, PartialEvent) and e.committed_delta]
    assert early and early[0].audio_ms < done[0].audio_ms, "nothing was committed before its sentence ended"
    # The first sentence ended while the speaker went on: its final came before the segment closed.
    assert done[0].audio_ms < TALK[-1].end_ms
    assert done[0].start_ms <= TALK[0].start_ms and done[1].start_ms >= TALK[5].end_ms


def test_a_second_decoder_writes_the_finals_continuing_what_the_steps_committed():
    steps, finals_decoder = ScriptedTranslator(), ScriptedTranslator()
    events = run(direct(steps, finisher=finals_decoder), audio_for(TALK, TALK_MS))
    check_append_only(events)
    done = finals(events)
    assert [e.committed_text for e in done] == ["HELLO WORLD THIS IS A TEST.", "HOW ARE YOU TODAY?"]
    assert [call.source_text for call in finals_decoder.calls] == ["Hello world this is a test.", "How are you today?"]
    # The steps committed part of each sentence; the finals' decoder continued from there.
    assert all(call.committed for call in finals_decoder.calls)
    one_decoder = ScriptedTranslator()
    run(direct(one_decoder), audio_for(TALK, TALK_MS))
    assert len(steps.calls) == len(one_decoder.calls) - 2, "the steps' decoder still wrote a final"


def test_the_cascade_translates_every_sentence_with_the_finals_decoder():
    finals_decoder = ScriptedTranslator()
    done = finals(run(cascade(finisher=finals_decoder), audio_for(TALK, TALK_MS)))
    assert [e.committed_text for e in done] == ["HELLO WORLD THIS IS A TEST.", "HOW ARE YOU TODAY?"]
    assert len(finals_decoder.calls) == 2


def test_cascade_translates_agreed_sentences_early_and_the_rest_at_close():
    session = cascade()
    events = run(session, audio_for(TALK, TALK_MS))
    done = finals(events)
    assert [(e.source_text, e.committed_text, e.mode) for e in done] == [
        ("Hello world this is a test.", "HELLO WORLD THIS IS A TEST.", "cascade"),
        ("How are you today?", "HOW ARE YOU TODAY?", "cascade"),
    ]
    assert done[0].audio_ms < TALK[-1].end_ms
    assert all(e.committed_text == "" for e in events if isinstance(e, PartialEvent))
    assert [e.start_ms for e in done] == [TALK[0].start_ms, TALK[6].start_ms]
    # After the early final the window starts between the sentences, not at the segment start.
    assert session.components.encoder.calls[-1].window_start_ms > TALK[5].end_ms


def test_the_source_session_is_the_cascade_without_its_translation():
    """A room's source side closes the same sentences at the same moments, and calls no translator;
    a SentenceStream then gives the cascade's finals."""
    translator = ScriptedTranslator()
    source = SourceSession(components(TALK, translator), EN, CascadeOptions(), SimulatedClock())
    heard = run(source, audio_for(TALK, TALK_MS))
    translated = run(cascade(), audio_for(TALK, TALK_MS))
    assert translator.calls == []
    assert [(e.kind, e.segment_id, e.source_text, e.start_ms, e.end_ms, e.audio_ms) for e in heard] == [
        (e.kind, e.segment_id, e.source_text, e.start_ms, e.end_ms, e.audio_ms) for e in translated
    ]
    assert all(e.committed_text == "" for e in heard)
    german = SentenceStream(translator, EN, DE)
    assert [german.final(e).committed_text for e in finals(heard)] == [e.committed_text for e in finals(translated)]


@pytest.mark.parametrize("make", [direct, cascade])
def test_chunk_sizes_do_not_change_the_events(make):
    audio = audio_for(TALK, TALK_MS)
    texts = {
        chunk_ms: [(e.kind, e.committed_text, e.source_text, e.audio_ms) for e in run(make(), audio, chunk_ms)]
        for chunk_ms in (20, 100, 730)
    }
    assert texts[20] == texts[100] == texts[730]


def test_finish_flushes_an_open_segment():
    cut = audio_for(TALK, TALK_MS)[: 16 * 2_000]  # ends mid-sentence, still speaking
    for session in (direct(), cascade()):
        done = finals(run(session, cut))
        assert done and done[-1].source_text.startswith("Hello world") and done[-1].committed_text


def test_silence_and_empty_audio_give_nothing():
    for session in (direct(), cascade()):
        assert run(session, np.zeros(16 * 3_000, dtype=np.float32)) == []
    assert direct().finish() == []


@pytest.mark.parametrize("make", [direct, cascade])
def test_shown_text_that_comes_to_nothing_is_closed_keeping_what_was_committed(make):
    blip = spoken("um", start_ms=100, word_ms=200)  # too little speech to keep: dropped at close
    events = run(make(script=blip, step_ms=200), audio_for(blip, 2_000))
    *partials, last = events
    assert partials and all(isinstance(e, PartialEvent) for e in partials)
    assert isinstance(last, FinalEvent) and last.source_text == "" and last.committed_delta == ""
    assert last.committed_text == partials[-1].committed_text  # never retracted


# fallback --------------------------------------------------------------------------------------------


def test_a_failing_step_hands_the_segment_to_the_cascade_way():
    second = spoken("Good night.", start_ms=TALK_MS + 200)
    script = TALK + second
    session = direct(ScriptedTranslator(fail_calls=frozenset({0})), script=script)
    events = run(session, audio_for(script, TALK_MS + 2_000))
    check_append_only(events)
    done = finals(events)
    assert [e.mode for e in done] == ["cascade", "cascade", "direct"]
    assert all("scripted failure of call 0" in e.fallback_reason for e in done[:2])
    assert [e.committed_text for e in done] == ["HELLO WORLD THIS IS A TEST.", "HOW ARE YOU TODAY?", "GOOD NIGHT."]
    assert session.stats.n_fallbacks == 1


def test_a_sentence_over_its_compute_budget_stops_stepping():
    long = spoken("one two three four five six seven eight nine ten eleven twelve thirteen fourteen", 200)
    clock = SimulatedClock()
    slow = ScriptedTranslator(clock=clock, compute_ms_per_word=300.0)  # slower than speech
    session = direct(slow, script=long, clock=clock)
    events = run(session, audio_for(long, 7_000))
    check_append_only(events)
    (done,) = finals(events)
    assert done.mode == "cascade" and "of compute for" in done.fallback_reason and "budget 1.5x" in done.fallback_reason
    assert done.committed_text == "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN."
    assert session.stats.n_fallbacks == 1
    stepped_until = max(e.audio_ms for e in events if isinstance(e, PartialEvent))
    assert stepped_until < long[-1].end_ms  # no steps after the budget ran out


def test_no_time_passes_on_the_simulated_clock_so_the_budget_never_trips():
    session = direct(max_compute_ratio=1e-9)
    done = finals(run(session, audio_for(TALK, TALK_MS)))
    assert all(e.mode == "direct" for e in done) and session.stats.n_fallbacks == 0


# steps ------------------------------------------------------------------------------------------------


def test_stale_steps_are_skipped_when_audio_arrives_in_bulk():
    session = direct(skip_stale_steps=True)
    events = run(session, audio_for(TALK, TALK_MS), chunk_ms=4_000)
    assert session.stats.n_skipped_steps >= 3
    assert finals(events)[-1].committed_text == "HOW ARE YOU TODAY?"


def test_both_sessions_count_steps_and_tokens_in_one_record():
    for session in (direct(), cascade()):
        run(session, audio_for(TALK, TALK_MS))
        stats = session.stats
        assert stats.n_steps >= 3 and stats.n_skipped_steps == 0 and stats.n_fallbacks == 0
        assert stats.n_prompt_tokens >= stats.n_prefill_tokens > 0


def test_the_recogniser_gets_the_committed_source_as_context():
    for session in (direct(), cascade(context_prompt=True)):
        run(session, audio_for(TALK, TALK_MS))
        later = [c.prompt for c in session.components.encoder.calls if c.window_start_ms > TALK[5].end_ms]
        assert later and all(p == "Hello world this is a test." for p in later)
    session = cascade(context_prompt=False)
    run(session, audio_for(TALK, TALK_MS))
    assert {c.prompt for c in session.components.encoder.calls} == {""}


def test_the_translator_sees_the_sentences_finished_before_when_asked():
    first = ("Hello world this is a test.", "HELLO WORLD THIS IS A TEST.")
    for mode in (DirectSession, CascadeSession):
        options = DirectOptions() if mode is DirectSession else CascadeOptions()
        for n, expected in ((0, ()), (1, (first,))):
            translator = ScriptedTranslator()
            session = mode(components(TALK, translator), EN, DE, replace(options, translation_context=n), SimulatedClock())
            run(session, audio_for(TALK, TALK_MS))
            second = [c for c in translator.calls if c.source_text.startswith("How")]
            assert second and all(c.earlier == expected for c in second), (mode, n)
            assert all(c.earlier == () for c in translator.calls if c.source_text.startswith("Hello"))


def test_translation_context_is_a_count_of_sentences():
    with pytest.raises(OptionsError, match="translation_context"):
        DirectOptions(translation_context=-1)


def test_local_agreement_does_not_count_a_translation_of_an_unchanged_source_as_agreement():
    # "Hello" takes 2 s to say: step after step the recogniser hears the same unfinished guess,
    # whose translations agree only because their source is the same.
    talk = (*spoken("Hello", 200, word_ms=2_000), *spoken("world this is a test.", 2_250))
    translator = ScriptedTranslator()
    events = run(direct(translator, script=talk), audio_for(talk, 5_000))
    sources = [call.source_text for call in translator.calls]
    assert any(a == b for a, b in zip(sources, sources[1:])), "the same source was translated twice in a row"
    early = [e for e in events if isinstance(e, PartialEvent) and e.committed_delta and e.audio_ms <= talk[0].end_ms]
    assert early == [], early
    assert finals(events)[-1].committed_text.endswith("WORLD THIS IS A TEST.")


def test_the_translator_sees_a_stream_id_and_keeps_no_session_alive():
    translator = ScriptedTranslator()
    session = direct(translator)
    run(session, audio_for(TALK, TALK_MS))
    keys = {call.stream_key for call in translator.calls}
    assert keys == {session.stream_id} and isinstance(session.stream_id, int)
    assert direct(translator).stream_id != session.stream_id
    gone = weakref.ref(session)
    del session
    gc.collect()
    assert gone() is None


# a new policy is one decision class and one spec entry ------------------------------------------------


@dataclass(frozen=True)
class EveryOther(Policy):
    """Toy policy: commit every other proposed unit ... of the stable source only."""

    m: int = 2
    name = "every-other"
    knob = Knob("m", int, default=2, sweep=(2, 3), minimum=1, help="commit 1 unit in m")

    def request(self, n_stable_words, n_committed_units, unit) -> ProposalRequest:
        return ProposalRequest("stable", None)

    def choose(self, state: PolicyState) -> int:
        return count_units(state.proposal.text, state.target_unit) // self.m


def test_a_toy_policy_is_one_class_and_one_spec_entry(monkeypatch):
    direct_mode = MODES["direct"]
    toy = replace(direct_mode, policies=(*direct_mode.policies, _direct(EveryOther, "commit every other unit")))
    monkeypatch.setitem(options_module.MODES, "direct", toy)

    options = session_options("direct", "every-other", 3)
    assert options.policy == EveryOther(m=3)
    assert describe()["direct"]["policies"]["every-other"]["knob"]["name"] == "m"
    with pytest.raises(options_module.OptionsError, match="m must be at least 1"):
        session_options("direct", "every-other", 0)

    from streamst.server import policies as server_policies

    assert server_policies.choose("direct", "every-other", None, None).knob == 2
    session = DirectSession(components(TALK), EN, DE, options, SimulatedClock())
    events = run(session, audio_for(TALK, TALK_MS))
    check_append_only(events)
    assert [e.committed_text for e in finals(events)] == ["HELLO WORLD THIS IS A TEST.", "HOW ARE YOU TODAY?"]
    assert isinstance(toy, ModeSpec) and isinstance(toy.policies[-1], PolicySpec)
