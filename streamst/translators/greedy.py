"""The greedy decoding every translator backend shares, over a small `DecoderBackend`.

A backend (llama.cpp, transformers) only evaluates tokens into its KV caches and hands back the
last logits; prompt planning, canonical prefill, stream prefix reuse, argmax with log-probs,
stop tokens, the loop guard and the UTF-8 hold-back all live here, once.

A backend may hold several KV caches ("slots"; llama.cpp's sequences), one per stream, so a
stream's next request finds its own prompt still cached however many other streams asked in
between. Requests run one at a time (one model call at a time, within the process's thread
budget, `streamst.cores`): on a CPU, decoding two streams' tokens as one batch costs more than
decoding them one after the other (`benchmarks/PROFILE.md`).

Prefill is canonical, so a request's output never depends on what other requests left in its
slot: the prompt head (fixed per language pair) is always evaluated as its own batch and kept
across requests; the rest is evaluated after it. A request of the same stream (same
`stream_key`) also reuses the source tokens its previous request shared, so a growing source
costs only its new tokens (reported as `n_prefill_tokens`)."""

from __future__ import annotations

import codecs
import itertools
import logging
import threading
import weakref
from abc import ABC, abstractmethod
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
    cut_commentary,
    flush_pending,
    LOOP_CONTEXT_TOKENS,
    logsumexp,
    plan_prompt,
    repeated_tail,
)
from streamst.translators.masks import ScriptMask, script_token_ids, word_start_ids
from streamst.translators.prompt import IM_END, IM_START, PromptStyle, chat_prompt
from streamst.types import TokenStep, Translation
from streamst.writing import (
    FOREIGN_SCRIPTS,
    LATIN_LETTER,
    commentary_words,
    copied_words,
    foreign_letters,
    kept_latin_words,
    may_copy,
)

log = logging.getLogger("streamst.translators")


class DecoderBackend(ABC):
    """A causal language model with `n_slots` KV caches, driven one batch of tokens at a time.

    Not thread-safe: `GreedyTranslator` calls it under its lock."""

    @property
    def n_slots(self) -> int:
        """KV caches held at once: streams whose prompts stay cached."""
        return 1

    @property
    @abstractmethod
    def stop_ids(self) -> frozenset[int]:
        """Token ids that end a translation (end of turn, end of text)."""

    @abstractmethod
    def tokenize(self, text: str, special: bool) -> list[int]:
        """`text` → token ids, no BOS; `special`: whether special-token strings in `text` become
        special tokens (else they stay plain text). Empty text gives []."""

    @abstractmethod
    def cached_tokens(self, slot: int) -> Sequence[int]:
        """The token ids whose keys and values the slot's cache holds, in order."""

    @abstractmethod
    def keep(self, slot: int, n_tokens: int) -> None:
        """Keeps only the first `n_tokens` cached tokens of the slot (at most as many as are
        cached); 0 empties it."""

    @abstractmethod
    def evaluate(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        """Runs `token_ids` (at least one) as one batch after the slot's cached tokens, appending
        them to its cache; returns the logits after the last one, (n_vocab,) float32, valid until
        the next call. A backend that must split a batch (a batch size limit) splits it the same
        way every time."""

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

    @property
    def target_fidelity(self) -> bool: ...  # mask other scripts' tokens, retry a copy of the source, cut a comment


@dataclass(frozen=True)
class Decoded:
    steps: tuple[TokenStep, ...]
    finished: bool  # a stop token ended it (not the cap, not the loop guard)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)


class GreedyTranslator(Translator):
    """Greedy translation over one backend, shared by all sessions; requests are serialised."""

    def __init__(self, backend: DecoderBackend, options: DecodingOptions) -> None:
        self.backend = backend
        self.options = options
        self._lock = threading.Lock()
        self._slots = _Slots(backend.n_slots)
        self._script_token_ids: dict[str, np.ndarray] | None = None  # see `_script_ids`

    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
        earlier: Sequence[tuple[str, str]] = (),
    ) -> Translation:
        o = self.options
        parts = chat_prompt(source_text, source, target, committed, o.style, earlier)
        with locked(self._lock, "translator.wait"):
            backend = self.backend
            prompt = plan_prompt(
                backend.tokenize, parts, max_new_tokens, o.min_new_tokens_cap, o.new_tokens_per_source_token, o.n_ctx
            )
            slot, own = self._slots.take(
                stream_key, lambda i: common_prefix_length(backend.cached_tokens(i), prompt.tokens)
            )
            try:
                with span("translator.prefill"):
                    n_prefill, logits = prefill(backend, slot, prompt, reuse_source=own)
                mask = self._mask(source_text, target, len(logits)) if o.target_fidelity else None
                check_copy = o.target_fidelity and may_copy(source, target)
                first_logits = np.array(logits, copy=True) if o.target_fidelity else logits
                with span("translator.decode"):
                    decoded = decode(backend, slot, logits, prompt.max_new_tokens, prompt.tokens, mask)
                    copied = copied_words(decoded.text, source_text) if check_copy else []
                    if copied:
                        decoded = self._retry_copy(slot, prompt, first_logits, mask, copied, source_text)
                    if o.target_fidelity:
                        decoded = self._without_commentary(
                            decoded, slot, prompt, first_logits, mask, source_text, source, target, check_copy
                        )
            except Exception:
                self._slots.forget(slot)
                backend.keep(slot, 0)  # an evaluate that failed may have left the cache half-updated
                raise
        return Translation(
            text=decoded.text,
            tokens=decoded.steps,
            n_prompt_tokens=len(prompt.tokens),
            n_prefill_tokens=n_prefill,
            finished=decoded.finished,
        )

    def _mask(self, source_text: str, target: Language, n_vocab: int) -> ScriptMask | None:
        """The tokens this request may not write: those holding letters of a script the target is
        not written in (`streamst.writing.foreign_letters`), but for a Latin-free target the names
        and acronyms of the source, whole; None for a target of another script."""
        letters = foreign_letters(target)
        if letters is None:
            return None
        backend = self.backend
        ids = self._script_ids(n_vocab)[letters.pattern]
        words = kept_latin_words(source_text) if letters is LATIN_LETTER else ()
        return ScriptMask.keeping(ids, words, backend.tokenize, backend.token_bytes)

    def _script_ids(self, n_vocab: int) -> dict[str, np.ndarray]:
        """The tokens holding letters of each masked script, by its pattern: built at the first
        request, or by `prepare`."""
        if self._script_token_ids is None:
            backend = self.backend
            with span("translator.script_ids"):
                self._script_token_ids = script_token_ids(backend.token_bytes, n_vocab, FOREIGN_SCRIPTS, backend.stop_ids)
            for pattern, ids in self._script_token_ids.items():
                log.info("%d of %d tokens hold letters of %s", len(ids), n_vocab, pattern[:24])
        return self._script_token_ids

    def prepare(self) -> None:
        """Does a first request's one-off work now: one evaluation, which makes the backend read
        its weights in (with llama.cpp the first prompt head of a process took 1.1 s against 0.4 s
        for later ones with the 0.5B decoder, 2.1 s against 1.1 s with the 1.5B), and, with
        target fidelity, the script masks (0.8 s and 1.1 s to build). A live stream's first
        sentence then costs about what later ones do. Runs before any stream asks."""
        with locked(self._lock, "translator.wait"):
            backend = self.backend
            slot, _ = self._slots.take(None, lambda i: 0)
            try:
                with span("translator.prepare"):
                    system = f"{IM_START}system\n{self.options.style.system}{IM_END}\n"  # every prompt's start
                    logits = backend.evaluate(slot, backend.tokenize(system, True))
            finally:
                backend.keep(slot, 0)
                self._slots.forget(slot)
            if self.options.target_fidelity:
                self._script_ids(len(logits))

    def _retry_copy(
        self,
        slot: int,
        prompt: PromptTokens,
        logits: np.ndarray,
        mask: ScriptMask | None,
        copied: Sequence[str],
        source_text: str,
    ) -> Decoded:
        """Decodes again a translation that copied its source through (the `copied` words), with the copied
        words of three letters or more unable to start; a retry that copies again is not
        committed (empty)."""
        words = sorted({w.lower() for w in copied if len(w) >= 3})
        log.info("translation copies its source (%d words); retrying without %s", len(copied), ", ".join(words[:8]))
        decoded = self._decode_without(slot, prompt, logits, mask, words)
        if copied_words(decoded.text, source_text):
            log.warning("translation copies its source again; not committed: %r", decoded.text[:80])
            return Decoded((), False)
        return decoded

    def _without_commentary(
        self,
        decoded: Decoded,
        slot: int,
        prompt: PromptTokens,
        logits: np.ndarray,
        mask: ScriptMask | None,
        source_text: str,
        source: Language,
        target: Language,
        check_copy: bool,
    ) -> Decoded:
        """`decoded`, or where it comments on itself (`streamst.writing.commentary_start`), a
        decoding again with the languages' names and the words for translating unable to start;
        if that comments too, or copies its source, the first decoding cut before the comment.
        Cut at a sentence's end, a translation's last word is whole."""
        kept = cut_commentary(decoded.steps, source_text, source, target)
        if kept is None:
            return decoded
        retried = self._decode_without(slot, prompt, logits, mask, commentary_words(source_text, source, target))
        if cut_commentary(retried.steps, source_text, source, target) is None and not (
            check_copy and copied_words(retried.text, source_text)
        ):
            return retried
        log.info("translation comments on itself again; keeping %d characters", len("".join(s.text for s in kept)))
        return Decoded(kept, bool(kept))

    def _decode_without(
        self, slot: int, prompt: PromptTokens, logits: np.ndarray, mask: ScriptMask | None, words: Sequence[str]
    ) -> Decoded:
        """Decodes the prompt again (from its logits, `logits`) with `words` unable to start
        (`word_start_ids`), on top of the request's `mask`."""
        backend = self.backend
        ban = word_start_ids(backend.tokenize, words)
        backend.keep(slot, len(prompt.tokens))
        retry_mask = mask.banning(ban) if mask is not None else ScriptMask(ban)
        return decode(backend, slot, logits, prompt.max_new_tokens, prompt.tokens, retry_mask)


class _Slots:
    """Which stream's prompt each KV cache holds."""

    def __init__(self, n_slots: int) -> None:
        self._owners: list[Callable[[], object | None]] = [hold_key(None)] * n_slots
        self._last_used = [0] * n_slots
        self._clock = itertools.count(1)

    def take(self, stream_key: object | None, shared: Callable[[int], int]) -> tuple[int, bool]:
        """The slot for a request: the stream's own (True: it holds the stream's last prompt);
        else, among slots no live stream holds, the one sharing most tokens with the prompt
        (`shared(slot)`; the head of the same language pair, say); else the least recently used."""
        slots = range(len(self._owners))
        own = [i for i in slots if stream_key is not None and self._owners[i]() == stream_key]
        unheld = [i for i in slots if self._owners[i]() is None]
        if own:
            slot = own[0]
        elif unheld:
            slot = max(unheld, key=lambda i: (shared(i), -self._last_used[i]))
        else:
            slot = min(slots, key=lambda i: self._last_used[i])
        self._owners[slot] = hold_key(stream_key)
        self._last_used[slot] = next(self._clock)
        return slot, bool(own)

    def forget(self, slot: int) -> None:
        self._owners[slot] = hold_key(None)


def hold_key(key: object | None) -> Callable[[], object | None]:
    """`key` behind a call that returns it, or None once it is gone: a weak reference when `key`
    supports one (a session object must not outlive its session), else the value (an int id)."""
    try:
        return weakref.ref(key)
    except TypeError:
        return lambda: key


def prefill(backend: DecoderBackend, slot: int, prompt: PromptTokens, reuse_source: bool) -> tuple[int, np.ndarray]:
    """Evaluates what the slot does not already hold, the head always as its own batch; returns
    how many tokens were evaluated and the logits after the prompt. At least the last token is
    evaluated, for its logits. `reuse_source`: the slot holds this stream's last prompt, so the
    source tokens they share are kept too."""
    tokens, n_head = prompt.tokens, prompt.n_head
    n_common = common_prefix_length(backend.cached_tokens(slot), tokens)
    n_evaluated = 0
    if n_common < n_head:
        backend.keep(slot, 0)
        backend.evaluate(slot, tokens[:n_head])
        n_evaluated, n_keep = n_head, n_head
    else:
        n_keep = n_common if reuse_source else n_head
    n_keep = min(n_keep, len(tokens) - 1)
    backend.keep(slot, n_keep)
    logits = backend.evaluate(slot, tokens[n_keep:])
    return n_evaluated + len(tokens) - n_keep, logits


def decode(
    backend: DecoderBackend,
    slot: int,
    logits: np.ndarray,
    max_new_tokens: int,
    context: Sequence[int] = (),
    mask: ScriptMask | None = None,
) -> Decoded:
    """Greedy decoding after `prefill` (whose logits come in `logits`); each step's text holds
    back bytes of a character split across tokens, and whatever is still held at the end goes to
    the last step. A loop ends decoding and its repeats are dropped, also where it repeats the
    end of `context` (the prompt's last tokens: the committed target a request continues), so a
    loop is not committed again at every step. Tokens the `mask` bans are never chosen (their
    probability goes to the others)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    steps: list[TokenStep] = []
    recent = list(context[-LOOP_CONTEXT_TOKENS:])  # the prompt's end, then every new token: what a loop repeats
    finished = False
    text = ""
    while len(steps) < max_new_tokens:
        if mask is not None:
            logits = mask.apply(logits, text)
        token_id = int(np.argmax(logits))
        if token_id in backend.stop_ids:
            finished = True
            break
        logprob = float(logits[token_id] - logsumexp(logits))
        steps.append(TokenStep(token_id, decoder.decode(backend.token_bytes(token_id)), logprob))
        text += steps[-1].text
        recent.append(token_id)
        n_repeated = repeated_tail(recent)
        if n_repeated:
            log.info("translation fell into a loop after %d tokens; %d repeated tokens dropped", len(steps), n_repeated)
            steps, decoder = redecode(backend, steps[: max(0, len(steps) - n_repeated)])
            break
        if len(steps) < max_new_tokens:
            logits = backend.evaluate(slot, [token_id])
    return Decoded(tuple(flush_pending(steps, decoder)), finished)


def redecode(backend: DecoderBackend, steps: Sequence[TokenStep]) -> tuple[list[TokenStep], codecs.IncrementalDecoder]:
    """The steps' texts decoded afresh (the bytes of dropped steps no longer pending)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    texts = [decoder.decode(backend.token_bytes(s.token_id)) for s in steps]
    return [TokenStep(s.token_id, text, s.logprob) for s, text in zip(steps, texts)], decoder
