"""The greedy decoding loop every translator backend shares, over a small `DecoderBackend`.

A backend (llama.cpp, transformers) only evaluates tokens into its KV cache and hands back the
last logits; prompt planning, canonical prefill, stream prefix reuse, argmax with log-probs,
stop tokens, the loop guard and the UTF-8 hold-back all live here, once.

Prefill is canonical, so a request's output never depends on what other requests left in the
KV cache: the prompt head (fixed per language pair) is always evaluated as its own batch and kept
across requests; the rest is evaluated after it. A request that continues the previous request of
the same stream (same `stream_key`) also reuses the source tokens they share, so a growing source
costs only its new tokens (reported as `n_prefill_tokens`)."""

from __future__ import annotations

import codecs
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamst.languages import Language
from streamst.translators.base import Translator
from streamst.translators.decoding import (
    PromptTokens,
    common_prefix_length,
    flush_pending,
    is_looping,
    logsumexp,
    plan_prompt,
)
from streamst.translators.prompt import PromptStyle, chat_prompt
from streamst.types import TokenStep, Translation

log = logging.getLogger("streamst.translators")


class DecoderBackend(ABC):
    """A causal language model with one KV cache, driven one batch of tokens at a time.

    Not thread-safe: `GreedyTranslator` calls it under its lock."""

    @property
    @abstractmethod
    def stop_ids(self) -> frozenset[int]:
        """Token ids that end a translation (end of turn, end of text)."""

    @abstractmethod
    def tokenize(self, text: str, special: bool) -> list[int]:
        """`text` → token ids, no BOS; `special`: whether special-token strings in `text` become
        special tokens (else they stay plain text). Empty text gives []."""

    @abstractmethod
    def cached_tokens(self) -> Sequence[int]:
        """The token ids whose keys and values the KV cache holds, in order."""

    @abstractmethod
    def keep(self, n_tokens: int) -> None:
        """Keeps only the first `n_tokens` cached tokens (at most as many as are cached);
        0 empties the cache."""

    @abstractmethod
    def evaluate(self, token_ids: Sequence[int]) -> None:
        """Runs `token_ids` (at least one) as one batch after the cached tokens, appending them to
        the cache. A backend that must split a batch (a batch size limit) splits it the same way
        every time."""

    @abstractmethod
    def last_logits(self) -> np.ndarray:
        """The logits after the last evaluated token: (n_vocab,) float32, valid until the next
        `evaluate` or `keep`."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for; possibly part of a UTF-8 character."""


class DecodingOptions(Protocol):
    """What the loop reads from a backend's options (`LlamaOptions`, `TransformersOptions`)."""

    @property
    def n_ctx(self) -> int: ...  # context window in tokens (prompt + translation)

    @property
    def min_new_tokens_cap(self) -> int: ...  # the cap on new tokens is at least this ...

    @property
    def new_tokens_per_source_token(self) -> float: ...  # ... or this many per source token

    @property
    def style(self) -> PromptStyle: ...


@dataclass(frozen=True)
class Decoded:
    steps: tuple[TokenStep, ...]
    finished: bool  # a stop token ended it (not the cap, not the loop guard)


class GreedyTranslator(Translator):
    """Greedy translation over one backend, shared by all sessions; requests are serialised."""

    def __init__(self, backend: DecoderBackend, options: DecodingOptions) -> None:
        self.backend = backend
        self.options = options
        self._lock = threading.Lock()
        self._last_stream_key = hold_key(None)

    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
    ) -> Translation:
        o = self.options
        parts = chat_prompt(source_text, source, target, committed, o.style)
        with self._lock:
            tokenize = self.backend.tokenize
            prompt = plan_prompt(
                tokenize, parts, max_new_tokens, o.min_new_tokens_cap, o.new_tokens_per_source_token, o.n_ctx
            )
            reuse_source = stream_key is not None and stream_key == self._last_stream_key()
            n_prefill = prefill(self.backend, prompt, reuse_source)
            self._last_stream_key = hold_key(stream_key)
            decoded = decode(self.backend, prompt.max_new_tokens)
        return Translation(
            text="".join(s.text for s in decoded.steps),
            tokens=decoded.steps,
            n_prompt_tokens=len(prompt.tokens),
            n_prefill_tokens=n_prefill,
            finished=decoded.finished,
        )


def hold_key(key: object | None) -> Callable[[], object | None]:
    """`key` behind a call that returns it, or None once it is gone: a weak reference when `key`
    supports one (a session object must not outlive its session), else the value (an int id)."""
    try:
        return weakref.ref(key)
    except TypeError:
        return lambda: key


def prefill(backend: DecoderBackend, prompt: PromptTokens, reuse_source: bool) -> int:
    """Evaluates what the cache does not already hold, the head always as its own batch; returns
    how many tokens that was. At least the last token is evaluated, for its logits."""
    tokens, n_head = prompt.tokens, prompt.n_head
    n_common = common_prefix_length(backend.cached_tokens(), tokens)
    n_evaluated = 0
    if n_common < n_head:
        backend.keep(0)
        backend.evaluate(tokens[:n_head])
        n_evaluated, n_keep = n_head, n_head
    else:
        n_keep = n_common if reuse_source else n_head
    n_keep = min(n_keep, len(tokens) - 1)
    backend.keep(n_keep)
    backend.evaluate(tokens[n_keep:])
    return n_evaluated + len(tokens) - n_keep


def decode(backend: DecoderBackend, max_new_tokens: int) -> Decoded:
    """Greedy decoding after `prefill`; each step's text holds back bytes of a character split
    across tokens, and whatever is still held at the end goes to the last step."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    steps: list[TokenStep] = []
    ids: list[int] = []
    finished = False
    for _ in range(max_new_tokens):
        logits = backend.last_logits()
        token_id = int(np.argmax(logits))
        if token_id in backend.stop_ids:
            finished = True
            break
        logprob = float(logits[token_id] - logsumexp(logits))
        text = decoder.decode(backend.token_bytes(token_id))
        steps.append(TokenStep(token_id, text, logprob))
        ids.append(token_id)
        if is_looping(ids):
            log.info("translation fell into a loop after %d tokens; cut", len(ids))
            break
        backend.evaluate([token_id])
    return Decoded(tuple(flush_pending(steps, decoder)), finished)
