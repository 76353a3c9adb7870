"""Guards against the ways autoregressive recognisers invent text: loops and runaway output."""

from __future__ import annotations

from collections.abc import Sequence

from streamst.types import Word


def _norm(word: Word) -> str:
    return word.text.strip().lower().strip(".,!?;:，。！？、")


def cut_repeats(words: Sequence[Word], max_ngram: int = 4, max_repeats: int = 3) -> tuple[Word, ...]:
    """Keep words up to the point where an n-gram (n ≤ max_ngram) repeats back to back more than
    `max_repeats` times; the loop's first `max_repeats` occurrences are kept."""
    keys = [_norm(w) for w in words]
    for end in range(len(keys)):
        for n in range(1, max_ngram + 1):
            span = n * (max_repeats + 1)
            start = end + 1 - span
            if start < 0:
                continue
            gram = keys[start : start + n]
            if all(keys[start + k * n : start + (k + 1) * n] == gram for k in range(1, max_repeats + 1)):
                return tuple(words[: start + n * max_repeats])
    return tuple(words)


def cut_repeated_tail(words: Sequence[Word], min_words: int = 5) -> tuple[Word, ...]:
    """Drop a tail of at least `min_words` words that recites the words before it once or more
    (a decoder that loops back to the start of its sentence): the tail equals the transcript
    shifted back by some period of at least `min_words` words. Its last word may be the start of
    the word it recites: the decoder's token cap stops a loop mid-word ('T-Rex' as 'T-')."""
    keys = [_norm(w) for w in words]
    n = len(keys)
    for start in range(min_words, n - min_words + 1):
        for period in range(min_words, start + 1):
            if keys[start : n - 1] == keys[start - period : n - 1 - period] and _starts(keys[n - 1 - period], keys[n - 1]):
                return tuple(words[:start])
    return tuple(words)


def _starts(word: str, beginning: str) -> bool:
    """Whether `beginning` (a normalised word, maybe cut short) is `word` or begins it; an empty
    one (punctuation alone) only matches another."""
    return beginning == word or (bool(beginning) and word.startswith(beginning))


def cap_rate(words: Sequence[Word], audio_ms: int, max_units_per_s: float) -> tuple[Word, ...]:
    """Drop words beyond what `audio_ms` of speech can hold at `max_units_per_s` (a word, or a
    CJK character, is one unit)."""
    budget = max(1.0, max_units_per_s * audio_ms / 1000.0)
    kept: list[Word] = []
    used = 0.0
    for w in words:
        used += _units(w.text)
        if used > budget:
            break
        kept.append(w)
    return tuple(kept)


def _units(text: str) -> int:
    stripped = text.strip()
    cjk = sum(1 for ch in stripped if _is_cjk(ch))
    return max(1, cjk) if cjk else 1


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xF900 <= code <= 0xFAFF
    )
