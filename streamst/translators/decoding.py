"""Pieces of greedy decoding shared by the translator backends."""

from __future__ import annotations

import codecs
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streamst.errors import OptionsError
from streamst.languages import Language
from streamst.translators.prompt import PromptParts
from streamst.types import TokenStep
from streamst.writing import commentary_start

log = logging.getLogger("streamst.translators")

LOOP_MIN_REPEATS = 3  # an n-gram of tokens repeated back to back this often ends decoding ...
LOOP_MIN_SPAN_TOKENS = 12  # ... once the repeats cover this many tokens (digits are single tokens)
LOOP_MAX_NGRAM = 8
LOOP_MAX_PHRASE_TOKENS = 48  # a longer n-gram (a phrase, up to this long) repeated twice is a loop too
LOOP_CONTEXT_TOKENS = 2 * LOOP_MAX_PHRASE_TOKENS  # prompt tokens (the committed target) a loop may start in


@dataclass(frozen=True)
class PromptTokens:
    tokens: list[int]  # head + source + tail
    n_head: int  # the head's tokens come first and are fixed while a sentence is translated
    max_new_tokens: int


def plan_prompt(
    tokenize: Callable[[str, bool], list[int]],
    parts: PromptParts,
    max_new_tokens: int | None,
    min_new_tokens_cap: int,
    new_tokens_per_source_token: float,
    n_ctx: int,
) -> PromptTokens:
    """Tokenises the prompt parts (`tokenize(text, special)`; the source never parses special
    tokens) and chooses the cap on new tokens; refuses a prompt the context cannot hold."""
    head = [token for piece in parts.head for token in tokenize(piece.text, piece.special)]
    source = tokenize(parts.source, False)
    tokens = head + source + tokenize(parts.tail, True)
    max_new_tokens = new_tokens_cap(len(source), max_new_tokens, min_new_tokens_cap, new_tokens_per_source_token)
    if len(tokens) + max_new_tokens > n_ctx:
        raise OptionsError(
            f"prompt of {len(tokens)} tokens plus {max_new_tokens} new tokens exceeds the context of "
            f"{n_ctx}; shorten the segment (max_segment_ms) or raise n_ctx"
        )
    return PromptTokens(tokens, len(head), max_new_tokens)


def new_tokens_cap(
    n_source_tokens: int, max_new_tokens: int | None, min_new_tokens_cap: int, new_tokens_per_source_token: float
) -> int:
    """The cap on a translation's new tokens: `max_new_tokens` when the caller gives one, else
    `new_tokens_per_source_token` per source token but at least `min_new_tokens_cap`."""
    if max_new_tokens is not None:
        return max_new_tokens
    return max(min_new_tokens_cap, int(n_source_tokens * new_tokens_per_source_token))


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def flush_pending(steps: list[TokenStep], decoder: codecs.IncrementalDecoder) -> list[TokenStep]:
    """Appends bytes the UTF-8 decoder still holds (an incomplete character) to the last step."""
    rest = decoder.decode(b"", final=True)
    if rest and steps:
        last = steps[-1]
        steps[-1] = TokenStep(last.token_id, last.text + rest, last.logprob)
    return steps


def logsumexp(logits: np.ndarray) -> float:
    peak = float(logits.max())
    return peak + float(np.log(np.exp(logits - peak).sum()))


def repeated_tail(ids: Sequence[int]) -> int:
    """How many tokens at the end of `ids` only repeat the n-gram before them back to back (a
    decoding loop; 0: none): a short n-gram repeated `LOOP_MIN_REPEATS` times over at least
    `LOOP_MIN_SPAN_TOKENS`, or a phrase of up to `LOOP_MAX_PHRASE_TOKENS` repeated twice. The
    first copy is not counted: it may be the translation."""
    for n in range(1, LOOP_MAX_PHRASE_TOKENS + 1):
        repeats = max(LOOP_MIN_REPEATS, -(-LOOP_MIN_SPAN_TOKENS // n)) if n <= LOOP_MAX_NGRAM else 2
        span = n * repeats
        if len(ids) < span:
            continue
        tail = ids[len(ids) - span :]
        if all(tail[k * n : (k + 1) * n] == tail[:n] for k in range(1, repeats)):
            return span - n
    return 0


def cut_commentary(
    steps: Sequence[TokenStep], source_text: str, source: Language, target: Language
) -> tuple[TokenStep, ...] | None:
    """The steps before the sentence in which a translation stops translating and talks about
    the translation (`streamst.writing.commentary_start`: "The German text "…" translates to
    English as: …"), whole steps only; None when it does not. Committed, such a comment would
    stay in the captions, and the decoder continuing it would comment again."""
    text = "".join(step.text for step in steps)
    start = commentary_start(text, source_text, source, target)
    if start is None:
        return None
    limit = len(text[:start].rstrip())  # the space before the comment goes with it
    ends = itertools.accumulate(len(step.text) for step in steps)
    log.info("translation comments on itself from character %d: %r", start, text[start : start + 80])
    return tuple(step for step, end in zip(steps, ends) if end <= limit)
