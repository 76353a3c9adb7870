"""Pieces of greedy decoding shared by the translator backends."""

from __future__ import annotations

import codecs

import numpy as np

from streamst.types import TokenStep

LOOP_MIN_REPEATS = 3  # an n-gram of tokens repeated back to back this often ends decoding ...
LOOP_MIN_SPAN_TOKENS = 12  # ... once the repeats cover this many tokens (digits are single tokens)
LOOP_MAX_NGRAM = 8


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


def is_looping(ids: list[int]) -> bool:
    """Whether the token ids end in an n-gram repeated back to back (a decoding loop)."""
    for n in range(1, LOOP_MAX_NGRAM + 1):
        repeats = max(LOOP_MIN_REPEATS, -(-LOOP_MIN_SPAN_TOKENS // n))
        span = n * repeats
        if len(ids) < span:
            continue
        tail = ids[-span:]
        if all(tail[k * n : (k + 1) * n] == tail[:n] for k in range(1, repeats)):
            return True
    return False
