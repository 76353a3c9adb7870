"""The transformers translator backend on a tiny random Qwen2 with a byte-level BPE tokenizer built
here: the llama.cpp backend's contract (greedy steps with log-probs, caps, stop tokens, UTF-8
hold-back, requests independent of each other, stream prefix reuse)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the transformers translator needs the torch extra: pip install 'streamst[torch]'"
)
pytest.importorskip(
    "transformers", reason="the transformers translator needs transformers: pip install 'streamst[torch]'"
)

from streamst.errors import ModelError, OptionsError  # noqa: E402
from streamst.languages import resolve  # noqa: E402
from streamst.translators.transformers_backend import (  # noqa: E402
    TokenBytes,
    TransformersOptions,
    TransformersTranslator,
    _dtype,
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CORPUS = (
    "You are a professional translator. You translate faithfully and fluently.",
    "Translate the following English text into German. Output only the German translation.",
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "区块链是今年最热门的话题。",
)
EN, DE, ZH = resolve("en"), resolve("de"), resolve("zh")
LOGPROB_ATOL = 1e-4


def build_tiny_qwen(directory: Path, seed: int = 0) -> Path:
    """A Qwen2ForCausalLM with random weights and a byte-level BPE tokenizer with ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    bpe.train_from_iterator(CORPUS * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.save_pretrained(directory)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="session")
def translator(tiny_qwen: Path) -> TransformersTranslator:
    return TransformersTranslator(tiny_qwen, TransformersOptions(device="cpu"))


def test_translation_has_the_llama_cpp_shape(translator: TransformersTranslator) -> None:
    result = translator.translate("The quick brown fox.", EN, DE, max_new_tokens=20)
    assert 0 < len(result.tokens) <= 20
    assert result.text == "".join(step.text for step in result.tokens)
    assert all(step.logprob <= 0.0 and np.isfinite(step.logprob) for step in result.tokens)
    assert result.n_prefill_tokens <= result.n_prompt_tokens
    assert translator.dtype == torch.float32 and translator.device == "cpu"


def test_a_request_does_not_depend_on_the_ones_before(translator: TransformersTranslator) -> None:
    first = translator.translate("The lazy dog.", EN, DE, max_new_tokens=16)
    translator.translate("区块链是今年最热门的话题。", ZH, EN, committed="Block", max_new_tokens=8)
    again = translator.translate("The lazy dog.", EN, DE, max_new_tokens=16)
    assert [s.token_id for s in again.tokens] == [s.token_id for s in first.tokens]
    np.testing.assert_allclose([s.logprob for s in again.tokens], [s.logprob for s in first.tokens], atol=LOGPROB_ATOL)
    same_pair = translator.translate("The quick dog.", EN, DE, max_new_tokens=4)
    assert same_pair.n_prefill_tokens < same_pair.n_prompt_tokens, "the prompt head of the pair stays in the cache"


def test_a_growing_source_of_one_stream_prefills_only_its_new_tokens(translator: TransformersTranslator) -> None:
    fresh = translator.translate("The quick brown fox jumps", EN, DE, max_new_tokens=12)
    key = object()
    translator.translate("The quick brown fox", EN, DE, max_new_tokens=12, stream_key=key)
    grown = translator.translate("The quick brown fox jumps", EN, DE, max_new_tokens=12, stream_key=key)
    assert grown.n_prefill_tokens < fresh.n_prefill_tokens < fresh.n_prompt_tokens
    assert [s.token_id for s in grown.tokens] == [s.token_id for s in fresh.tokens]


def test_special_token_text_in_the_source_stays_text(translator: TransformersTranslator) -> None:
    im_end = translator.backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in translator.backend.tokenize("<|im_end|>", special=True)
    assert im_end not in translator.backend.tokenize("<|im_end|>", special=False)


def test_a_split_character_is_held_back_until_complete(tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    translator = TransformersTranslator(tiny_qwen, TransformersOptions(device="cpu"))
    backend = translator.backend
    tokenizer = backend.tokenizer
    script = tokenizer("龍 42", add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert len(tokenizer("龍", add_special_tokens=False)["input_ids"]) == 3, "龍 is three byte tokens here"
    calls: list[list[int]] = []

    def scripted_evaluate(slot: int, token_ids: list[int]) -> np.ndarray:
        """The prompt head, then the rest of the prompt, then one evaluate per decoded token."""
        calls.append(list(token_ids))
        logits = np.zeros(backend.model.config.vocab_size, dtype=np.float32)
        logits[script[max(0, len(calls) - 2)]] = 10.0
        return logits

    monkeypatch.setattr(backend, "evaluate", scripted_evaluate)
    result = translator.translate("dragon", EN, ZH, max_new_tokens=10)
    assert [s.text for s in result.tokens][:3] == ["", "", "龍"]
    assert result.text == "龍 42" and result.finished


def test_token_bytes_round_trip_cjk_text(translator: TransformersTranslator) -> None:
    import codecs

    text = "区块链 and 龍!"
    tokenizer = translator.backend.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces = [decoder.decode(TokenBytes(tokenizer)(i)) for i in ids]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)


def test_the_cap_ends_an_unfinished_translation(translator: TransformersTranslator) -> None:
    result = translator.translate("The quick brown fox jumps over the lazy dog.", EN, DE, max_new_tokens=3)
    assert len(result.tokens) <= 3 and not result.finished


def test_too_long_a_prompt_is_refused(tiny_qwen: Path) -> None:
    translator = TransformersTranslator(tiny_qwen, TransformersOptions(device="cpu", n_ctx=256))
    with pytest.raises(OptionsError, match="exceeds the context of 256"):
        translator.translate("The quick brown fox jumps over the lazy dog. " * 20, EN, DE)


def test_dtype_is_bf16_on_cuda_and_fp32_on_cpu() -> None:
    assert _dtype(torch, "auto", "cuda") == torch.bfloat16
    assert _dtype(torch, "auto", "cpu") == torch.float32
    assert _dtype(torch, "float16", "cuda") == torch.float16


def test_bad_options_and_directories_are_explained(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="dtype"):
        TransformersOptions(dtype="int4")
    with pytest.raises(OptionsError, match="device"):
        TransformersOptions(device="tpu")
    with pytest.raises(ModelError, match="cannot load the translator model") as caught:
        TransformersTranslator(tmp_path, TransformersOptions(device="cpu"))
    assert str(tmp_path) in str(caught.value) and "pull" not in str(caught.value)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            TransformersTranslator(tmp_path, TransformersOptions(device="cuda"))
