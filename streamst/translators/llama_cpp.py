"""Qwen (or any ChatML decoder) in GGUF through llama-cpp-python: greedy, with token log-probs.

One model is loaded once and shared; requests are serialised by a lock. Prefill is canonical so
that a request's output never depends on what other requests left in the KV cache: the prompt
head (fixed per language pair) is always evaluated as its own batch and kept across requests;
the rest is evaluated after it. A request that continues the previous request of the same
stream (same `stream_key`) also reuses the source tokens they share, so a growing source costs
only its new tokens (reported as `n_prefill_tokens`)."""

from __future__ import annotations

import codecs
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamst.errors import ModelError, OptionsError
from streamst.languages import Language
from streamst.translators.base import Translator
from streamst.translators.decoding import common_prefix_length, flush_pending, is_looping, logsumexp, plan_prompt
from streamst.translators.prompt import PromptStyle, chat_prompt
from streamst.types import TokenStep, Translation

log = logging.getLogger("streamst.translators.llama_cpp")


@dataclass(frozen=True)
class LlamaOptions:
    n_ctx: int = 2048  # context window in tokens (prompt + translation)
    n_threads: int = 2  # decode threads
    n_batch: int = 256  # prompt tokens evaluated per batch
    min_new_tokens_cap: int = 32  # the cap on new tokens is at least this ...
    new_tokens_per_source_token: float = 2.5  # ... or this many per source token
    style: PromptStyle = field(default_factory=PromptStyle)

    def __post_init__(self) -> None:
        if self.n_ctx < 256:
            raise OptionsError(f"n_ctx must be at least 256 tokens, got {self.n_ctx}")
        if self.n_threads < 1:
            raise OptionsError(f"n_threads must be at least 1, got {self.n_threads}")


class LlamaCppTranslator(Translator):
    name = "llama.cpp"

    def __init__(self, model_path: Path, options: LlamaOptions = LlamaOptions()) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError(
                "the Qwen translator needs llama-cpp-python: pip install llama-cpp-python==0.3.36"
            ) from e
        self.options = options
        try:
            self._llm = Llama(
                model_path=str(model_path),
                n_ctx=options.n_ctx,
                n_threads=options.n_threads,
                n_threads_batch=options.n_threads,
                n_batch=options.n_batch,
                logits_all=False,
                seed=0,
                verbose=False,
            )
        except Exception as e:
            raise ModelError(
                f"cannot load the translator model {model_path}: {e}; "
                "run: streamst models pull qwen2.5-coder-0.5b-instruct-q4km"
            ) from e
        self._n_vocab = self._llm.n_vocab()
        self._stop_ids = frozenset(
            {self._llm.token_eos(), *self._llm.tokenize(b"<|im_end|>", add_bos=False, special=True)}
        )
        self._lock = threading.Lock()
        self._last_stream_key: object | None = None

    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
    ) -> Translation:
        parts = chat_prompt(source_text, source, target, committed, self.options.style)
        o = self.options
        with self._lock:
            plan = plan_prompt(
                self._tokenize, parts, max_new_tokens, o.min_new_tokens_cap, o.new_tokens_per_source_token, o.n_ctx
            )
            reuse_source = stream_key is not None and stream_key == self._last_stream_key
            n_prefill = self._prefill(plan.tokens, plan.n_head, reuse_source)
            self._last_stream_key = stream_key
            steps, finished = self._decode(plan.max_new_tokens)
        return Translation(
            text="".join(s.text for s in steps),
            tokens=tuple(steps),
            n_prompt_tokens=len(plan.tokens),
            n_prefill_tokens=n_prefill,
            finished=finished,
        )

    def _tokenize(self, text: str, special: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special) if text else []

    def _prefill(self, tokens: list[int], n_head: int, reuse_source: bool) -> int:
        """Evaluates what the KV cache does not already hold; returns how many tokens that was.
        At least the last token is evaluated, for its logits."""
        n_common = common_prefix_length(self._llm.input_ids[: self._llm.n_tokens], tokens)
        if n_common < n_head:
            self._llm.n_tokens = 0
            self._llm.eval(tokens[:n_head])
            n_keep = n_head
        else:
            n_keep = n_common if reuse_source else n_head
        n_keep = min(n_keep, len(tokens) - 1)
        self._llm.n_tokens = n_keep
        self._llm.eval(tokens[n_keep:])
        return len(tokens) - n_keep + (n_head if n_common < n_head else 0)

    def _decode(self, max_new_tokens: int) -> tuple[list[TokenStep], bool]:
        """Greedy decoding; each step's text holds back bytes of a character split across tokens."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        steps: list[TokenStep] = []
        ids: list[int] = []
        for _ in range(max_new_tokens):
            logits = np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,))
            token_id = int(np.argmax(logits))
            if token_id in self._stop_ids:
                return flush_pending(steps, decoder), True
            logprob = float(logits[token_id] - logsumexp(logits))
            text = decoder.decode(self._llm.detokenize([token_id], special=False))
            steps.append(TokenStep(token_id, text, logprob))
            ids.append(token_id)
            if is_looping(ids):
                log.info("translation fell into a loop after %d tokens; cut", len(ids))
                return flush_pending(steps, decoder), False
            self._llm.eval([token_id])
        return flush_pending(steps, decoder), False
