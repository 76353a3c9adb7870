"""Qwen (or any ChatML decoder) in GGUF through llama-cpp-python: greedy, with token log-probs.

One model is loaded once and shared; `GreedyTranslator` drives it (canonical prefill, stream
prefix reuse, requests serialised). This module only evaluates tokens in llama.cpp: one context
whose `n_streams` sequences are the slots, each with `n_ctx` KV cells of its own."""

from __future__ import annotations

import contextlib
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
    n_ctx: int = 2048  # context window in tokens per stream (prompt + translation)
    n_batch: int = 256  # tokens evaluated per llama.cpp batch
    n_streams: int = 8  # streams whose prompts stay cached (KV cache: n_ctx tokens each)
    min_new_tokens_cap: int = 32  # the cap on new tokens is at least this ...
    new_tokens_per_source_token: float = 2.5  # ... or this many per source token
    style: PromptStyle = field(default_factory=PromptStyle)
    target_fidelity: bool = True  # mask other scripts' tokens, retry a copy of the source, cut a comment (streamst.writing)

    def __post_init__(self) -> None:
        if self.n_ctx < 256:
            raise OptionsError(f"n_ctx must be at least 256 tokens, got {self.n_ctx}")
        if self.n_streams < 1:
            raise OptionsError(f"n_streams must be at least 1, got {self.n_streams}")


class LlamaCppTranslator(GreedyTranslator):
    """A GGUF file; `n_threads` decode threads (the engine passes its own count)."""

    name = "llama.cpp"

    def __init__(self, model_path: Path, options: LlamaOptions = LlamaOptions(), *, n_threads: int = 1) -> None:
        super().__init__(LlamaCppBackend(model_path, options, n_threads), options)


class LlamaCppBackend(DecoderBackend):
    """llama.cpp's model with a context of `n_streams` sequences: slot i is sequence i."""

    def __init__(self, model_path: Path, options: LlamaOptions, n_threads: int) -> None:
        if n_threads < 1:
            raise OptionsError(f"n_threads must be at least 1, got {n_threads}")
        try:
            import llama_cpp
            from llama_cpp import Llama
            from llama_cpp._internals import LlamaBatch, LlamaContext
        except ImportError as e:
            raise ModelError(f"the llama.cpp translator needs llama-cpp-python: {INSTALL}") from e
        try:
            # The Llama object holds the model and the tokenizer; its own context stays small.
            self._llm = Llama(
                model_path=str(model_path),
                n_ctx=256,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=options.n_batch,
                seed=0,
                verbose=False,
            )
            params = type(self._llm.context_params).from_buffer_copy(self._llm.context_params)
            params.n_ctx = options.n_ctx * options.n_streams
            params.n_batch = params.n_ubatch = options.n_batch
            params.n_seq_max = options.n_streams
            params.kv_unified = False  # each sequence its own n_ctx cells, as one context of its own would have
            stack = self._llm._stack
            context = LlamaContext(model=self._llm._model, params=params, verbose=False)
            self._ctx = stack.enter_context(contextlib.closing(context))
            self._batch = stack.enter_context(
                contextlib.closing(LlamaBatch(n_tokens=options.n_batch, embd=0, n_seq_max=1, verbose=False))
            )
        except Exception as e:
            raise ModelError(f"cannot load the translator model {model_path} with llama.cpp: {e}") from e
        self._get_logits_ith = llama_cpp.llama_get_logits_ith
        self._n_batch = options.n_batch
        self._n_ctx = options.n_ctx
        self._n_streams = options.n_streams
        self._n_vocab = self._llm.n_vocab()
        self._cached: list[list[int]] = [[] for _ in range(options.n_streams)]
        self._stop_ids = frozenset({self._llm.token_eos(), *self.tokenize(IM_END, special=True)})

    @property
    def n_slots(self) -> int:
        return self._n_streams

    @property
    def stop_ids(self) -> frozenset[int]:
        return self._stop_ids

    def tokenize(self, text: str, special: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []

    def cached_tokens(self, slot: int) -> Sequence[int]:
        return self._cached[slot]

    def keep(self, slot: int, n_tokens: int) -> None:
        del self._cached[slot][n_tokens:]
        self._ctx.kv_cache_seq_rm(slot, n_tokens, -1)

    def evaluate(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        """The tokens in llama.cpp batches of `n_batch`, at positions after the slot's cache."""
        cached = self._cached[slot]
        if len(cached) + len(token_ids) > self._n_ctx:
            raise OptionsError(f"a translator stream holds at most {self._n_ctx} tokens; raise n_ctx")
        batch = self._batch.batch
        for start in range(0, len(token_ids), self._n_batch):
            chunk = token_ids[start : start + self._n_batch]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = len(cached) + i
                batch.seq_id[i][0] = slot
                batch.n_seq_id[i] = 1
                batch.logits[i] = i == len(chunk) - 1
            self._ctx.decode(self._batch)
            cached.extend(chunk)
        return np.ctypeslib.as_array(self._get_logits_ith(self._ctx.ctx, -1), shape=(self._n_vocab,))

    def token_bytes(self, token_id: int) -> bytes:
        return self._llm.detokenize([token_id], special=False)
