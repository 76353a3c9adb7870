"""Decode-time token masks that keep a translation in its target's script.

A `ScriptMask` bans the tokens holding letters of a script the target is not written in
(`streamst.writing.foreign_letters`: Latin in Chinese, Japanese and Korean; Chinese, Japanese and
Korean in a Latin-script language). Names and acronyms of the source (`kept_latin_words`) may
still be written, but only whole: a piece of a name is allowed only where it continues a prefix
of one, so "Danius" may stay in a Chinese translation but its "us" cannot end a Chinese word, and
a name once begun is finished before anything else is written ("Marianas", not "Marian亚"). A
retry of a translation that copied its source also bans the first tokens of the copied words."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from streamst.writing import LATIN_CHARS, LATIN_LETTER

Tokenize = Callable[[str, bool], list[int]]

# The Latin word being written at the end of a text: letters, hyphens and apostrophes.
_TRAILING_WORD = re.compile(rf"[{LATIN_CHARS}'’\-]*\Z")


def script_token_ids(
    token_bytes: Callable[[int], bytes], n_vocab: int, scripts: Iterable[re.Pattern[str]], keep: Iterable[int]
) -> dict[str, np.ndarray]:
    """For each of `scripts` (by its pattern), the ids of the tokens whose text holds one of its
    letters, except `keep` (the stop tokens); one pass over the vocabulary, whose detokenising is
    most of the cost (0.7 s for Qwen's 151,936 tokens). Tokens that are part of a multi-byte
    character hold no letter."""
    kept = set(keep)
    texts = [(i, token_bytes(i).decode("utf-8", errors="ignore")) for i in range(n_vocab) if i not in kept]
    return {
        letters.pattern: np.array([i for i, text in texts if letters.search(text)], dtype=np.int64)
        for letters in scripts
    }


@dataclass(frozen=True)
class ScriptMask:
    """Tokens a translation may not write: `banned`, except the `pieces` (token id → text) of the
    `words` it may keep, each where it continues writing one of them."""

    banned: np.ndarray
    words: tuple[str, ...] = ()
    pieces: tuple[tuple[int, str], ...] = ()

    @classmethod
    def keeping(
        cls, banned: np.ndarray, words: Iterable[str], tokenize: Tokenize, token_bytes: Callable[[int], bytes]
    ) -> ScriptMask:
        """`banned`, with the tokens that spell `words` (after a space or not) allowed in place."""
        words = tuple(sorted(set(words)))
        ids = {t for word in words for text in (word, " " + word) for t in tokenize(text, False)}
        pieces = tuple((t, token_bytes(t).decode("utf-8", errors="ignore")) for t in sorted(ids))
        return cls(banned, words, pieces)

    def banning(self, more: np.ndarray) -> ScriptMask:
        """This mask with the `more` tokens banned too, also where they would spell a kept word."""
        more_set = set(more.tolist())
        pieces = tuple((t, text) for t, text in self.pieces if t not in more_set)
        return ScriptMask(np.union1d(self.banned, more), self.words, pieces)

    def apply(self, logits: np.ndarray, text: str) -> np.ndarray:
        """The logits for the token after `text` (the translation so far), banned tokens at -inf;
        a copy, so the backend's buffer stays as it was."""
        out = np.array(logits, dtype=np.float32, copy=True)
        out[self.banned] = -np.inf
        if self.pieces:
            fragment = _TRAILING_WORD.search(text).group().lstrip("'’-")
            allowed = self._finishing(fragment)
            if allowed:  # a name begun is finished first: nothing else may come (not even the stop)
                out[:] = -np.inf
            else:
                allowed = [token_id for token_id, piece in self.pieces if self._continues(fragment, piece)]
            out[allowed] = np.asarray(logits)[allowed]
        return out

    def _finishing(self, fragment: str) -> list[int]:
        """Where `fragment` is part of a kept word and not a whole one: the pieces that go on
        writing it; else []."""
        if not fragment or fragment in self.words:
            return []
        return [
            t for t, piece in self.pieces if _goes_on(piece) and any(w.startswith(fragment + piece) for w in self.words)
        ]

    def _continues(self, fragment: str, piece: str) -> bool:
        """Whether `piece` after a text ending in `fragment` writes a prefix of a kept word."""
        if not LATIN_LETTER.search(piece):
            return True
        if _goes_on(piece):
            written = fragment + piece
        else:  # a space or punctuation first: the piece starts a new word
            written = piece.lstrip(" ")
        return any(word.startswith(written) for word in self.words)


def _goes_on(piece: str) -> bool:
    """Whether a token's text continues the word before it (a letter, hyphen or apostrophe first)."""
    return bool(piece) and (LATIN_LETTER.match(piece) is not None or piece[0] in "'’-")


def word_start_ids(tokenize: Tokenize, words: Iterable[str]) -> np.ndarray:
    """The first token of each of `words`, in lower case and capitalised, after a space, and the
    word itself where it is one token (a text's first word has no space before it): banning them
    keeps a retry from starting any of those words again. A word's first piece without the space
    ("Med" of "Medicine") stays allowed, as it may be the middle of another word."""
    spellings = {form for word in words for form in (word.lower(), word.capitalize())}
    firsts = {ids[0] for word in spellings if (ids := tokenize(" " + word, False))}
    firsts |= {ids[0] for word in spellings if len(ids := tokenize(word, False)) == 1}
    return np.array(sorted(firsts), dtype=np.int64)
