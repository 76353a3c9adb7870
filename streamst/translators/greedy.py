"""The greedy decoding every translator backend shares, over a small `DecoderBackend`.

A backend (llama.cpp, transformers) only evaluates tokens into its KV caches and hands back
logits; prompt planning, canonical prefill, stream prefix reuse, drafts, argmax with log-probs,
stop tokens, the loop guard and the UTF-8 hold-back all live here, once.

All sessions' requests go to one decoding thread, which alone drives the backend (one model call
at a time, within the process's thread budget, `streamst.cores`). A backend may hold several KV
caches ("slots"; llama.cpp's sequences), one per stream: a stream's next request then finds its
own prompt still cached however many other streams asked in between, and the decode steps of
all requests in flight run as one batch (continuous batching: a request joins at the next step
and leaves when it is done). A backend with one slot serves one request at a time.

Prefill is canonical, so a request's output never depends on what other requests left in its
slot: the prompt head (fixed per language pair) is always evaluated as its own batch and kept
across requests; the rest is evaluated after it. A request of the same stream (same
`stream_key`) also reuses the source tokens its previous request shared, so a growing source
costs only its new tokens (`n_prefill_tokens`), and its last answer is the draft the new answer
is checked against in one batch (`n_draft_tokens`): a stream's source usually grew by a word and
its greedy answer mostly repeats the last one, so most tokens cost a share of one batch instead
of a decoding step each (speculative decoding with the last answer as the draft). The output is
greedy decoding's either way."""

from __future__ import annotations

import codecs
import itertools
import logging
import queue
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamst.languages import Language
from streamst.profiling import record
from streamst.translators.base import Translator
from streamst.translators.decoding import (
    PromptTokens,
    common_prefix_length,
    flush_pending,
    is_looping,
    logsumexp,
    plan_prompt,
)
from streamst.translators.prompt import PromptParts, PromptStyle, chat_prompt
from streamst.types import TokenStep, Translation

log = logging.getLogger("streamst.translators")

MAX_REMEMBERED_STREAMS = 256  # streams whose last answer is kept for drafts (oldest forgotten first)


@dataclass(frozen=True)
class Work:
    """Tokens to append to one slot's cache, in a batch with other slots' work."""

    slot: int
    token_ids: Sequence[int]  # at least one
    all_logits: bool = False  # the logits after every token, not only after the last


class DecoderBackend(ABC):
    """A causal language model with `n_slots` KV caches, driven one batch at a time.

    Not thread-safe: `GreedyTranslator`'s decoding thread alone calls it."""

    @property
    def n_slots(self) -> int:
        """KV caches held at once (streams whose prompts stay cached; requests decoded together)."""
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
    def evaluate(self, work: Sequence[Work]) -> list[np.ndarray]:
        """Runs the items (each for another slot) as one batch, appending their tokens to their
        slots' caches. Returns per item the logits after its last token, (n_vocab,) float32, or
        with `all_logits` after each of its tokens, (len(token_ids), n_vocab); the arrays stay
        valid. A backend that must split a batch (a batch size limit) splits it the same way
        every time."""

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
    n_draft_tokens: int = 0  # steps checked in the draft's batch instead of decoded one by one


@dataclass(frozen=True)
class _Answer:
    """A stream's last answer: where its next request's draft comes from."""

    committed: str
    steps: tuple[TokenStep, ...]


@dataclass
class _Request:
    parts: PromptParts
    max_new_tokens: int | None
    committed: str
    stream_key: object | None
    submitted_s: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    translation: Translation | None = None
    error: BaseException | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wait, prefill, decode

    def answer(self, translation: Translation | None = None, error: BaseException | None = None) -> None:
        """Hands the result to the waiting caller. The stream key is let go (it may be a session
        object, which must not outlive its session in the decoding thread's hands)."""
        self.translation, self.error = translation, error
        self.stream_key = None
        self.done.set()


class GreedyTranslator(Translator):
    """Greedy translation over one backend, shared by all sessions (see the module's text)."""

    def __init__(self, backend: DecoderBackend, options: DecodingOptions) -> None:
        self.backend = backend
        self.options = options
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._slots = _Slots(backend.n_slots)
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
        parts = chat_prompt(source_text, source, target, committed, self.options.style)
        request = _Request(parts, max_new_tokens, committed, stream_key)
        self._ensure_thread()
        self._requests.put(request)
        request.done.wait()
        for name, seconds in request.seconds.items():
            record(name, seconds)
        if request.error is not None:
            raise request.error
        assert request.translation is not None
        return request.translation

    # the decoding thread ---------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamst-translator", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        active: list[_Decoding] = []
        waiting: list[_Request] = []
        while True:
            try:
                if not active and not waiting:
                    waiting.append(self._requests.get())
                while True:
                    waiting.append(self._requests.get_nowait())
            except queue.Empty:
                pass
            while waiting and self._slots.n_free:
                decoding = self._start(waiting.pop(0))
                if decoding is not None:
                    active.append(decoding)
            active = self._step(active)

    def _start(self, request: _Request) -> _Decoding | None:
        """Plans, places and prefills a request: its decoding, or None if it failed."""
        started_s = time.perf_counter()
        request.seconds["translator.wait"] = started_s - request.submitted_s
        slot = -1
        try:
            o = self.options
            prompt = plan_prompt(self.backend.tokenize, request.parts, request.max_new_tokens,
                                 o.min_new_tokens_cap, o.new_tokens_per_source_token, o.n_ctx)  # fmt: skip
            slot, own = self._slots.take(
                request.stream_key, lambda i: common_prefix_length(self.backend.cached_tokens(i), prompt.tokens)
            )
            n_prefill, logits = prefill(self.backend, slot, prompt, reuse_source=own)
        except Exception as e:  # noqa: BLE001 - the caller gets it; the thread serves the next
            if slot >= 0:
                self._reset(slot)
            request.answer(error=e)
            return None
        decoding = _Decoding(self.backend, slot, prompt, self._draft(request), logits)
        decoding.request, decoding.n_prefill = request, n_prefill
        request.seconds["translator.prefill"] = time.perf_counter() - started_s
        return decoding

    def _step(self, active: list[_Decoding]) -> list[_Decoding]:
        """One decoding step of every request in flight, as one batch; returns those not done."""
        work: list[Work] = []
        running: list[_Decoding] = []
        for decoding in active:
            item = decoding.next_work()
            if item is None:
                self._finish(decoding)
            else:
                work.append(item)
                running.append(decoding)
        if not work:
            return []
        try:
            results = self.backend.evaluate(work)
        except Exception as e:  # noqa: BLE001 - every request in the batch fails; the thread goes on
            log.warning("translator batch of %d request(s) failed: %s", len(running), e)
            for decoding in running:
                self._reset(decoding.slot)
                decoding.request.answer(error=e)
            return []
        for decoding, logits in zip(running, results, strict=True):
            decoding.take(logits)
        return running

    def _finish(self, decoding: _Decoding) -> None:
        request = decoding.request
        decoded = decoding.decoded()
        self._slots.release(decoding.slot)
        self._remember(request, decoded.steps)
        request.seconds["translator.decode"] = time.perf_counter() - decoding.started_s
        request.answer(
            Translation(
                text="".join(s.text for s in decoded.steps),
                tokens=decoded.steps,
                n_prompt_tokens=len(decoding.prompt.tokens),
                n_prefill_tokens=decoding.n_prefill,
                finished=decoded.finished,
                n_draft_tokens=decoded.n_draft_tokens,
            )
        )

    def _reset(self, slot: int) -> None:
        """A slot whose cache a failed evaluate may have left half-updated starts empty."""
        self._slots.release(slot, forget=True)
        try:
            self.backend.keep(slot, 0)
        except Exception:  # noqa: BLE001 - already failing; the next prefill starts from nothing anyway
            log.debug("could not empty translator slot %d", slot, exc_info=True)

    # drafts ------------------------------------------------------------------------------------

    def _draft(self, request: _Request) -> list[int]:
        """The stream's last answer after `committed`, as token ids; [] if it does not continue it."""
        key, committed = request.stream_key, request.committed
        answer = self._answers.get(key) if isinstance(key, int | str) else None
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

    def _remember(self, request: _Request, steps: tuple[TokenStep, ...]) -> None:
        key = request.stream_key
        if not isinstance(key, int | str):
            return
        self._answers[key] = _Answer(request.committed, steps)
        self._answers.move_to_end(key)
        while len(self._answers) > MAX_REMEMBERED_STREAMS:
            self._answers.popitem(last=False)


class _Slots:
    """Which stream's prompt each KV cache holds, and which caches a request is using."""

    def __init__(self, n_slots: int) -> None:
        self._owners: list[Callable[[], object | None]] = [hold_key(None)] * n_slots
        self._last_used = [0] * n_slots
        self._busy = [False] * n_slots
        self._clock = itertools.count(1)

    @property
    def n_free(self) -> int:
        return self._busy.count(False)

    def take(self, stream_key: object | None, shared: Callable[[int], int]) -> tuple[int, bool]:
        """A free slot for the stream: its own if free (True: it holds the stream's last prompt);
        else, among free slots no live stream holds, the one sharing most tokens with the prompt
        (`shared(slot)`; the head of the same language pair, say); else the least recently used.
        Needs `n_free` > 0."""
        free = [i for i, busy in enumerate(self._busy) if not busy]
        own = [i for i in free if stream_key is not None and self._owners[i]() == stream_key]
        unheld = [i for i in free if self._owners[i]() is None]
        if own:
            slot = own[0]
        elif unheld:
            slot = max(unheld, key=lambda i: (shared(i), -self._last_used[i]))
        else:
            slot = min(free, key=lambda i: self._last_used[i])
        self._owners[slot] = hold_key(stream_key)
        self._busy[slot] = True
        self._last_used[slot] = next(self._clock)
        return slot, bool(own)

    def release(self, slot: int, forget: bool = False) -> None:
        self._busy[slot] = False
        if forget:
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
        backend.evaluate([Work(slot, tokens[:n_head])])
        n_evaluated, n_keep = n_head, n_head
    else:
        n_keep = n_common if reuse_source else n_head
    n_keep = min(n_keep, len(tokens) - 1)
    backend.keep(slot, n_keep)
    logits = backend.evaluate([Work(slot, tokens[n_keep:])])[0]
    return n_evaluated + len(tokens) - n_keep, logits


class _Decoding:
    """One request's greedy decoding, a step at a time: `next_work` chooses a token from the
    current logits and says what the backend must evaluate next (None: done); `take` hands back
    the logits it gave. Each step's text holds back bytes of a character split across tokens,
    and whatever is still held at the end goes to the last step.

    The draft: once the first chosen token equals the draft's first, the whole draft is evaluated
    in one batch; its logits choose the next tokens for as long as the choices equal the draft,
    and at the first difference the draft's rest is dropped from the cache and decoding goes on
    one token at a time."""

    request: _Request
    n_prefill: int = 0

    def __init__(
        self, backend: DecoderBackend, slot: int, prompt: PromptTokens, draft: Sequence[int], logits: np.ndarray
    ) -> None:
        self.backend = backend
        self.slot = slot
        self.prompt = prompt
        self.started_s = time.perf_counter()
        self._max_new_tokens = prompt.max_new_tokens
        self._draft = list(draft[: prompt.max_new_tokens])
        self._draft_logits: np.ndarray | None = None  # after each draft token, once evaluated
        self._awaiting_draft = False
        self._n_base = len(prompt.tokens)
        self._logits = logits
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._steps: list[TokenStep] = []
        self._ids: list[int] = []
        self._finished = False
        self._n_draft = 0

    def next_work(self) -> Work | None:
        while len(self._steps) < self._max_new_tokens:
            logits = self._logits
            token_id = int(np.argmax(logits))
            if token_id in self.backend.stop_ids:
                self._finished = True
                return None
            logprob = float(logits[token_id] - logsumexp(logits))
            self._steps.append(TokenStep(token_id, self._utf8.decode(self.backend.token_bytes(token_id)), logprob))
            self._ids.append(token_id)
            if is_looping(self._ids):
                log.info("translation fell into a loop after %d tokens; cut", len(self._ids))
                return None
            if len(self._steps) == self._max_new_tokens:
                return None
            position = len(self._steps) - 1
            if position == 0 and len(self._draft) > 1 and self._draft[0] == token_id:
                self._awaiting_draft = True
                return Work(self.slot, self._draft, all_logits=True)
            if self._draft_logits is not None:
                if position < len(self._draft) and self._draft[position] == token_id:
                    self._logits = self._draft_logits[position]  # the cache already holds this token
                    self._n_draft += 1
                    continue
                self.backend.keep(self.slot, self._n_base + position)  # the draft's rest was not chosen
                self._draft_logits = None
            return Work(self.slot, [token_id])
        return None

    def take(self, logits: np.ndarray) -> None:
        if self._awaiting_draft:
            self._awaiting_draft = False
            self._draft_logits = logits
            self._logits = logits[0]
            self._n_draft = 1
        else:
            self._logits = logits

    def decoded(self) -> Decoded:
        return Decoded(tuple(flush_pending(self._steps, self._utf8)), self._finished, self._n_draft)
