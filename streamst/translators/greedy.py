"""The greedy decoding loop every translator backend shares, over a small `DecoderBackend`.

A backend (llama.cpp, transformers) only evaluates tokens into its KV cache and hands back the
last logits; prompt planning, canonical prefill, stream prefix reuse, argmax with log-probs,
stop tokens, the loop guard and the UTF-8 hold-back all live here, once.

Prefill is canonical, so a request's output never depends on what other requests left in the
KV cache: the prompt head (fixed per language pair) is always evaluated as its own batch and kept
across requests; the rest is evaluated after it. A request that continues the previous request of
the same stream (same `stream_key`) also reuses the source tokens they share, so a growing source
costs only its new tokens (reported as `n_prefill_tokens`), and its last answer is the draft that
the new answer is checked against in one batch (reported as `n_draft_tokens`)."""

from __future__ import annotations

import codecs
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamst.languages import Language
from streamst.profiling import locked, span
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

    def evaluate_all(self, token_ids: Sequence[int]) -> np.ndarray:
        """Like `evaluate`, but returns the logits after every token: (len(token_ids), n_vocab).
        A backend that can evaluate a batch with all its logits overrides this."""
        rows = []
        for token_id in token_ids:
            self.evaluate([token_id])
            rows.append(self.last_logits().copy())
        return np.stack(rows)

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
    n_draft_tokens: int = 0  # steps taken from the draft (checked in one batch, not one by one)


@dataclass(frozen=True)
class _Answer:
    """A stream's last answer: where its next request's draft comes from."""

    committed: str
    steps: tuple[TokenStep, ...]


MAX_REMEMBERED_STREAMS = 256  # streams whose last answer is kept for drafts (oldest forgotten first)


class GreedyTranslator(Translator):
    """Greedy translation over one backend, shared by all sessions; requests are serialised.

    A stream's next request usually re-translates a source that grew by a word, and its greedy
    answer mostly repeats the last one. So the last answer of each stream (`stream_key`, an int
    or str) is the draft of its next request: the draft is checked against the model in one batch
    and kept up to the first token greedy decoding would not have chosen (speculative decoding
    with the previous answer as the draft model). The output is greedy decoding's either way."""

    def __init__(self, backend: DecoderBackend, options: DecodingOptions) -> None:
        self.backend = backend
        self.options = options
        self._lock = threading.Lock()
        self._last_stream_key = hold_key(None)
        self._answers: OrderedDict[int | str, _Answer] = OrderedDict()

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
        with locked(self._lock, "translator.wait"):
            tokenize = self.backend.tokenize
            prompt = plan_prompt(
                tokenize, parts, max_new_tokens, o.min_new_tokens_cap, o.new_tokens_per_source_token, o.n_ctx
            )
            reuse_source = stream_key is not None and stream_key == self._last_stream_key()
            with span("translator.prefill"):
                n_prefill = prefill(self.backend, prompt, reuse_source)
            self._last_stream_key = hold_key(stream_key)
            draft = self._draft(stream_key, committed)
            with span("translator.decode"):
                decoded = decode(self.backend, prompt.max_new_tokens, draft)
            self._remember(stream_key, committed, decoded.steps)
        return Translation(
            text="".join(s.text for s in decoded.steps),
            tokens=decoded.steps,
            n_prompt_tokens=len(prompt.tokens),
            n_prefill_tokens=n_prefill,
            finished=decoded.finished,
            n_draft_tokens=decoded.n_draft_tokens,
        )

    def _draft(self, stream_key: object | None, committed: str) -> list[int]:
        """The stream's last answer after `committed`, as token ids; [] if it does not continue it."""
        answer = self._answers.get(stream_key) if isinstance(stream_key, int | str) else None
        if answer is None:
            return []
        full = answer.committed + "".join(s.text for s in answer.steps)
        if not full.startswith(committed) or len(full) == len(committed):
            return []
        length = len(answer.committed)
        for i, step in enumerate(answer.steps):
            if length == len(committed):
                return [s.token_id for s in answer.steps[i:]]
            length += len(step.text)
        # `committed` ends inside a token: the rest as the tokenizer splits it.
        return self.backend.tokenize(full[len(committed) :], False)

    def _remember(self, stream_key: object | None, committed: str, steps: tuple[TokenStep, ...]) -> None:
        if not isinstance(stream_key, int | str):
            return
        self._answers[stream_key] = _Answer(committed, steps)
        self._answers.move_to_end(stream_key)
        while len(self._answers) > MAX_REMEMBERED_STREAMS:
            self._answers.popitem(last=False)


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


def decode(backend: DecoderBackend, max_new_tokens: int, draft: Sequence[int] = ()) -> Decoded:
    """Greedy decoding after `prefill`; each step's text holds back bytes of a character split
    across tokens, and whatever is still held at the end goes to the last step.

    `draft`: the tokens greedy decoding is expected to choose. Once the first chosen token equals
    the draft's first, the whole draft is evaluated in one batch; its logits choose the next
    tokens for as long as the choices equal the draft, and at the first difference the draft's
    rest is dropped from the cache and decoding goes on one token at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    steps: list[TokenStep] = []
    ids: list[int] = []
    finished = False
    n_base = len(backend.cached_tokens())
    draft = list(draft[:max_new_tokens])
    draft_logits: np.ndarray | None = None  # after each draft token, once the draft is evaluated
    n_draft = 0
    logits = backend.last_logits()
    while len(steps) < max_new_tokens:
        token_id = int(np.argmax(logits))
        if token_id in backend.stop_ids:
            finished = True
            break
        logprob = float(logits[token_id] - logsumexp(logits))
        text = decoder.decode(backend.token_bytes(token_id))
        position = len(steps)
        steps.append(TokenStep(token_id, text, logprob))
        ids.append(token_id)
        if is_looping(ids):
            log.info("translation fell into a loop after %d tokens; cut", len(ids))
            break
        if len(steps) == max_new_tokens:
            break
        if position == 0 and len(draft) > 1 and draft[0] == token_id:
            with span("translator.verify"):
                draft_logits = backend.evaluate_all(draft)
        if draft_logits is not None:
            if position < len(draft) and draft[position] == token_id:
                logits = draft_logits[position]  # the cache already holds this token
                n_draft += 1
                continue
            backend.keep(n_base + position)  # the draft's rest was not chosen
            draft_logits = None
        backend.evaluate([token_id])
        logits = backend.last_logits()
    return Decoded(tuple(flush_pending(steps, decoder)), finished, n_draft)
