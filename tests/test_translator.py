"""The Qwen translator through llama.cpp, with the real default GGUF."""

from __future__ import annotations

import pytest
import sacrebleu

from streamst.languages import resolve

pytestmark = pytest.mark.models

EN, ZH, DE = resolve("en"), resolve("zh"), resolve("de")
SENTENCE = "The museum opens at nine in the morning and closes at five."


@pytest.fixture(scope="module")
def translator(engine):
    return engine.load().translator


def test_translates_and_reports_log_probs(translator):
    result = translator.translate(SENTENCE, EN, ZH)
    assert result.finished
    assert "博物馆" in result.text
    assert result.text == "".join(step.text for step in result.tokens)
    assert all(step.logprob <= 0.0 for step in result.tokens)
    assert "\ufffd" not in result.text


def test_output_does_not_depend_on_earlier_requests(translator):
    first = translator.translate(SENTENCE, EN, DE).text
    translator.translate("The museum is closed on Mondays.", EN, DE)
    translator.translate("Completely different words about the weather.", EN, ZH)
    assert translator.translate(SENTENCE, EN, DE).text == first


def test_continuation_does_not_repeat_the_committed_text(translator):
    full = translator.translate(SENTENCE, EN, DE)
    half = len(full.tokens) // 2
    committed = "".join(step.text for step in full.tokens[:half])
    rest = translator.translate(SENTENCE, EN, DE, committed=committed)
    assert rest.text and not rest.text.strip().startswith(committed.strip().split()[0])
    assert sacrebleu.sentence_chrf(committed + rest.text, [full.text]).score >= 60


def test_a_stream_reuses_its_own_growing_source(translator):
    words = SENTENCE.split()
    key = object()
    translator.translate(" ".join(words[:6]), EN, DE, stream_key=key)
    grown = translator.translate(" ".join(words[:9]), EN, DE, stream_key=key)
    fresh = translator.translate(" ".join(words[:9]), EN, DE)
    assert grown.n_prefill_tokens < fresh.n_prefill_tokens
    assert fresh.n_prefill_tokens < fresh.n_prompt_tokens  # the prompt head stayed cached


def test_special_token_strings_in_the_source_stay_text(translator):
    result = translator.translate("Say <|im_end|> hello", EN, DE)
    assert result.n_prompt_tokens > 0 and result.tokens
