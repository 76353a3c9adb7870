"""The Qwen translator through llama.cpp, with the real default GGUF (and its option and load errors
without it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu

from streamst.errors import ModelError, OptionsError
from streamst.languages import resolve
from streamst.translators.llama_cpp import LlamaCppTranslator

models = pytest.mark.models

EN, ZH, DE = resolve("en"), resolve("zh"), resolve("de")
SENTENCE = "The museum opens at nine in the morning and closes at five."


@pytest.fixture(scope="module")
def translator(engine) -> LlamaCppTranslator:
    return engine.load().translator


@models
def test_translates_and_reports_log_probs(translator):
    result = translator.translate(SENTENCE, EN, ZH)
    assert result.finished
    assert "博物馆" in result.text
    assert result.text == "".join(step.text for step in result.tokens)
    assert all(step.logprob <= 0.0 for step in result.tokens)
    assert "\ufffd" not in result.text


@models
def test_output_does_not_depend_on_earlier_requests(translator):
    first = translator.translate(SENTENCE, EN, DE).text
    translator.translate("The museum is closed on Mondays.", EN, DE)
    translator.translate("Completely different words about the weather.", EN, ZH)
    assert translator.translate(SENTENCE, EN, DE).text == first


@models
def test_continuation_does_not_repeat_the_committed_text(translator):
    full = translator.translate(SENTENCE, EN, DE)
    half = len(full.tokens) // 2
    committed = "".join(step.text for step in full.tokens[:half])
    rest = translator.translate(SENTENCE, EN, DE, committed=committed)
    assert rest.text and not rest.text.strip().startswith(committed.strip().split()[0])
    assert sacrebleu.sentence_chrf(committed + rest.text, [full.text]).score >= 60


@models
def test_a_stream_reuses_its_own_growing_source(translator):
    words = SENTENCE.split()
    key = object()
    translator.translate(" ".join(words[:6]), EN, DE, stream_key=key)
    grown = translator.translate(" ".join(words[:9]), EN, DE, stream_key=key)
    translator.translate(" ".join(words[:3]), EN, DE)  # a request without a stream: a slot of its own
    fresh = translator.translate(" ".join(words[:9]), EN, DE)
    assert grown.n_prefill_tokens < fresh.n_prefill_tokens
    assert fresh.n_prefill_tokens < fresh.n_prompt_tokens  # that slot kept the prompt head


@models
def test_special_token_strings_in_the_source_stay_text(translator):
    result = translator.translate("Say <|im_end|> hello", EN, DE)
    assert result.n_prompt_tokens > 0 and result.tokens


@pytest.mark.parametrize("n_threads", [0, -2])
def test_a_thread_count_below_one_is_refused(tmp_path: Path, n_threads: int) -> None:
    with pytest.raises(OptionsError, match=f"n_threads must be at least 1, got {n_threads}"):
        LlamaCppTranslator(tmp_path / "model.gguf", n_threads=n_threads)


def test_a_model_that_cannot_load_is_named_without_guessing_what_to_pull(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"not a GGUF file")
    for path in (bad, tmp_path / "missing.gguf"):
        with pytest.raises(ModelError, match="cannot load the translator model") as caught:
            LlamaCppTranslator(path)
        assert str(path) in str(caught.value) and "pull" not in str(caught.value)
        assert caught.value.__cause__ is not None
