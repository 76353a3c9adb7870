"""Policies and source agreement on hand-made states (pure: no models)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamst.agreement import LocalAgreement
from streamst.errors import OptionsError
from streamst.policies import (
    Confidence,
    PolicyState,
    Proposal,
    Read,
    TargetAgreement,
    WaitK,
    Write,
    split_units,
)
from streamst.options import MODES, session_options
from streamst.types import TokenStep, Word


def proposal(*pieces: str, logprob: float = -0.01, finished: bool = False) -> Proposal:
    return Proposal(tuple(TokenStep(i, p, logprob) for i, p in enumerate(pieces)), finished)


def state(proposal_: Proposal, n_stable: int = 6, committed: str = "", history=(),
          unit="word", stable="one two three four five six") -> PolicyState:
    return PolicyState(n_stable, stable, "seven", committed, proposal_, tuple(history), unit)


# wait-k ------------------------------------------------------------------------------------------

def test_wait_k_reads_until_k_words_are_stable():
    p = proposal("Eins", " zwei", " drei")
    assert WaitK(k=3).decide(state(p, n_stable=3)) == Read()
    assert WaitK(k=3).decide(state(p, n_stable=2)) == Read()


def test_wait_k_trails_the_stable_source_by_k_words():
    p = proposal("Eins", " zwei", " drei", " vier", " fünf", " sechs")
    # 6 stable words, k=2: (6 - 2) · 1.0 = 4 target words.
    assert WaitK(k=2).decide(state(p, n_stable=6)) == Write("Eins zwei drei vier")
    # Two already committed: only the next two.
    p2 = proposal(" drei", " vier", " fünf", " sechs")
    assert WaitK(k=2).decide(state(p2, n_stable=6, committed="Eins zwei")) == Write(" drei vier")


def test_wait_k_asks_the_decoder_only_for_what_it_can_commit():
    # 6 stable, k=2 → 4 words allowed; 1 committed → 3 wanted, plus 1 to see the last end: 4 · 2 tokens.
    assert WaitK(k=2).request(6, 1, "word").max_new_tokens == 8
    assert WaitK(k=2).request(6, 4, "word").max_new_tokens == 0  # nothing to commit: no decoding
    assert WaitK(k=3).request(2, 0, "char").max_new_tokens == 0


def test_wait_k_in_characters_for_chinese():
    p = proposal("我们", "今天", "讨论", "天气")
    # 4 stable words, k=2 → floor(2 · 1.5) = 3 characters.
    assert WaitK(k=2).decide(state(p, n_stable=4, unit="char")) == Write("我们今")


def test_a_capped_proposal_never_commits_its_possibly_unfinished_last_unit():
    p = proposal("Eins", " zwei", " dr")  # cut by the token cap inside a word
    assert WaitK(k=0).decide(state(p, n_stable=10)) == Write("Eins zwei")


def test_no_sentence_end_before_the_source_ends_one():
    p = proposal("Eins", " zwei", ".", finished=True)
    s = state(p, n_stable=10)
    assert WaitK(k=0).decide(s) == Write("Eins zwei")
    ended = state(p, n_stable=10, stable="one two.")
    assert WaitK(k=0).decide(ended) == Write("Eins zwei.")


# target agreement --------------------------------------------------------------------------------

def test_target_agreement_commits_the_agreed_prefix():
    p = proposal("Das", " Haus", " ist", " rot")
    assert TargetAgreement(2).decide(state(p)) == Read()  # nothing to agree with yet
    s = state(p, history=["Das Haus war blau"])
    assert TargetAgreement(2).decide(s) == Write("Das Haus")
    s3 = state(p, history=["Das Haus ist grün", "Das Auto ist rot"])
    assert TargetAgreement(3).decide(s3) == Write("Das")


def test_target_agreement_skips_what_is_committed():
    p = proposal(" Haus", " ist", " rot")
    s = state(p, committed="Das", history=["Das Haus ist blau"])
    assert TargetAgreement(2).decide(s) == Write(" Haus ist")


# confidence --------------------------------------------------------------------------------------

def test_confidence_stops_at_the_first_unsure_token():
    tokens = (TokenStep(1, "Das", -0.01), TokenStep(2, " Haus", -0.1), TokenStep(3, " ist", -3.0),
              TokenStep(4, " rot", -0.01))
    p = Proposal(tokens, False)
    assert Confidence(tau=0.5).decide(state(p)) == Write("Das Haus")
    assert Confidence(tau=0.95).decide(state(p)) == Write("Das")
    assert Confidence(tau=0.999).decide(state(p)) == Read()


def test_confidence_waits_for_a_word_split_across_tokens():
    tokens = (TokenStep(1, "Das", -0.01), TokenStep(2, " Ha", -0.01), TokenStep(3, "us", -5.0))
    assert Confidence(tau=0.5).decide(state(Proposal(tokens, False))) == Write("Das")


# options -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, knob", [("wait-k", -1), ("la", 1), ("la", 2.5), ("confidence", 1.5), ("nope", None)])
def test_bad_policy_options_are_refused(name, knob):
    with pytest.raises(OptionsError):
        session_options("direct", name, knob)


@pytest.mark.parametrize("policy", [WaitK, TargetAgreement, Confidence])
def test_a_policy_checks_its_own_knob_when_built_directly(policy):
    with pytest.raises(OptionsError, match=policy.knob.name):
        policy(**{policy.knob.name: -1})


def test_the_knob_reaches_the_policy():
    assert session_options("direct", "wait-k", 4).policy == WaitK(4)
    assert session_options("direct", "la", 3).policy == TargetAgreement(3)
    assert session_options("direct", "confidence", 0.7).policy == Confidence(0.7)
    assert session_options("direct").policy == TargetAgreement(2)


def test_every_spec_default_and_sweep_value_builds_a_session():
    for mode in MODES.values():
        for spec in mode.policies:
            for value in (spec.knob.default, *spec.knob.sweep):
                assert isinstance(session_options(mode.name, spec.name, value), mode.options_type)


# properties --------------------------------------------------------------------------------------

target_words = st.lists(st.sampled_from(["Das", "Haus", "ist", "rot", "und", "groß", ".", ","]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(target_words, st.integers(0, 12), st.floats(-4, 0)), min_size=1, max_size=8),
    policy=st.sampled_from([WaitK(1), WaitK(3), TargetAgreement(2), TargetAgreement(3), Confidence(0.5)]),
)
def test_committed_text_only_grows_and_is_a_prefix_of_a_proposal(steps, policy):
    committed, history = "", []
    for words, n_stable, logprob in steps:
        pieces = [(" " if committed or i else "") + w for i, w in enumerate(words)]
        p = Proposal(tuple(TokenStep(i, t, logprob) for i, t in enumerate(pieces)), False)
        action = policy.decide(state(p, n_stable=n_stable, committed=committed, history=history))
        history.append(committed + p.text)
        before = committed
        if isinstance(action, Write):
            assert p.text.startswith(action.text)
            assert action.text.strip()
            committed += action.text
        assert committed.startswith(before)
        assert history[-1].startswith(committed)


@given(st.text(alphabet="ab 中文。. ", max_size=30), st.sampled_from(["word", "char"]))
def test_units_concatenate_back(text, unit):
    assert "".join(split_units(text, unit)) == (text if text.strip() else "")


# source agreement --------------------------------------------------------------------------------

def w(text: str, start_ms: int) -> Word:
    return Word(text, start_ms, start_ms + 200)


def test_local_agreement_commits_what_two_hypotheses_share():
    la = LocalAgreement(2)
    first = la.update([w(" The", 0), w(" cat", 300)])
    assert first.new == () and [x.text for x in first.tentative] == [" The", " cat"]
    second = la.update([w(" The", 0), w(" cat", 300), w(" sat", 600)])
    assert [x.text for x in second.new] == [" The", " cat"]
    assert [x.text for x in second.tentative] == [" sat"]
    third = la.update([w(" The", 0), w(" cat", 300), w(" sat.", 600), w(" It", 900)])
    assert [x.text for x in third.new] == [" sat"]  # the earlier hypothesis had no full stop
    assert [x.text for x in la.committed] == [" The", " cat", " sat"]


def test_local_agreement_never_changes_committed_words():
    la = LocalAgreement(2)
    la.update([w(" a", 0), w(" b", 300)])
    la.update([w(" a", 0), w(" b", 300)])
    before = la.committed
    state_ = la.update([w(" x", 0), w(" y", 300), w(" c", 600)])
    assert la.committed[: len(before)] == before
    assert [x.text for x in state_.tentative] == [" c"]


def test_local_agreement_drops_a_repeat_of_the_committed_tail():
    la = LocalAgreement(1)
    la.update([w(" hello", 0), w(" world", 300)])
    # The window still holds the last word, recognised with slightly earlier times.
    state_ = la.update([w(" world", 280), w(" again", 600)])
    assert [x.text for x in state_.new] == [" again"]


def test_a_full_stop_that_ends_the_hypothesis_waits_for_the_speaker_to_go_on():
    la = LocalAgreement(2)
    la.update([w(" The", 0), w(" cat.", 300)])
    held = la.update([w(" The", 0), w(" cat.", 300)])
    assert [x.text for x in held.new] == [" The"]  # the recogniser ends every hypothesis with "."
    assert [x.text for x in held.tentative] == [" cat."]
    went_on = la.update([w(" The", 0), w(" cat", 300), w(" sat", 600)])
    assert [x.text for x in went_on.new] == [" cat"]  # committed as spoken on: no sentence end
    assert [x.text for x in la.commit_all([w(" cat", 300), w(" sat.", 600)]).new] == [" sat."]


def test_a_sentence_end_only_one_hypothesis_has_is_dropped():
    la = LocalAgreement(2)
    la.update([w(" made", 0), w(" famous", 300), w(" after", 600)])
    state_ = la.update([w(" made", 0), w(" famous.", 300), w(" After", 600), w(" a", 900)])
    assert [x.text for x in state_.new] == [" made", " famous", " After"]
