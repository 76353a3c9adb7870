"""Qwen (or any ChatML decoder) in GGUF through llama-cpp-python: greedy, with token log-probs.

One model is loaded once and shared; `GreedyTranslator` drives it (canonical prefill, stream
prefix reuse, requests serialised by a lock). This module only evaluates tokens in llama.cpp."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamst.errors import ModelError, OptionsError
from streamst.translators.greedy import DecoderBackend, GreedyTranslator
from streamst.translators.prompt import IM_END, PromptStyle

INSTALL = "pip install llama-cpp-python==0.3.36"


@dataclass(frozen=True)
class LlamaOptions:
    n_ctx: int = 2048  # context window in tokens (prompt + translation)
    n_batch: int = 256  # prompt tokens evaluated per batch
    min_new_tokens_cap: int = 32  # the cap on new tokens is at least this ...
    new_tokens_per_source_token: float = 2.5  # ... or this many per source token
    style: PromptStyle = field(default_factory=PromptStyle)

    def __post_init__(self) -> None:
        if self.n_ctx < 256:
            raise OptionsError(f"n_ctx must be at least 256 tokens, got {self.n_ctx}")


class LlamaCppTranslator(GreedyTranslator):
    """A GGUF file; `n_threads` decode threads (the engine passes its own count)."""

    name = "llama.cpp"

    def __init__(self, model_path: Path, options: LlamaOptions = LlamaOptions(), *, n_threads: int = 1) -> None:
        super().__init__(LlamaCppBackend(model_path, options, n_threads), options)


class LlamaCppBackend(DecoderBackend):
    """llama.cpp's context: its KV cache holds `input_ids[:n_tokens]`."""

    def __init__(self, model_path: Path, options: LlamaOptions, n_threads: int) -> None:
        if n_threads < 1:
            raise OptionsError(f"n_threads must be at least 1, got {n_threads}")
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError(f"the llama.cpp translator needs llama-cpp-python: {INSTALL}") from e
        try:
            self._llm = Llama(
                model_path=str(model_path),
                n_ctx=options.n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=options.n_batch,
                logits_all=False,
                seed=0,
                verbose=False,
            )
        except Exception as e:
            raise ModelError(f"cannot load the translator model {model_path} with llama.cpp: {e}") from e
        self._n_vocab = self._llm.n_vocab()
        self._stop_ids = frozenset({self._llm.token_eos(), *self.tokenize(IM_END, special=True)})

    @property
    def stop_ids(self) -> frozenset[int]:
        return self._stop_ids

    def tokenize(self, text: str, special: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []

    def cached_tokens(self) -> Sequence[int]:
        return self._llm.input_ids[: self._llm.n_tokens]

    def keep(self, n_tokens: int) -> None:
        self._llm.n_tokens = n_tokens  # the next eval drops the rest from the KV cache

    def evaluate(self, token_ids: Sequence[int]) -> None:
        self._llm.eval(token_ids)  # in batches of n_batch tokens

    def evaluate_all(self, token_ids: Sequence[int]) -> np.ndarray:
        """`evaluate` with every token's logits: llama.cpp's batch marks each token as an output."""
        llm = self._llm
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        rows = np.empty((len(token_ids), self._n_vocab), dtype=np.float32)
        for start in range(0, len(token_ids), llm.n_batch):
            batch = list(token_ids[start : start + llm.n_batch])
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            for i in range(len(batch)):
                rows[start + i] = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(self._n_vocab,))
        return rows

    def last_logits(self) -> np.ndarray:
        return np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,))

    def token_bytes(self, token_id: int) -> bytes:
        return self._llm.detokenize([token_id], special=False)
