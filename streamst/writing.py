"""Scripts in target text: which letters a translation into a language should not hold (Latin
words in Chinese, Japanese and Korean, except the source's names and acronyms; Chinese, Japanese
and Korean characters in a Latin-script language), and whether a translation merely copies its
source, or talks about the translation instead of translating. The translator's decode-time mask and
the benchmark's leakage metric share these rules.

    >>> sorted(kept_latin_words("Good morning everyone, says Dr. Ehud Ur of the WHO"))
    ['Dr', 'Ehud', 'Ur', 'WHO']
    >>> from streamst.languages import resolve
    >>> wrong_script_letters("早上 everyone！", "Good morning everyone", resolve("zh"))
    (8, 10)
    >>> wrong_script_letters("Good morning 大家", "大家早上好", resolve("en"))
    (2, 13)
"""

from __future__ import annotations

import re
import unicodedata

from streamst.languages import Language

# Scripts of FLORES-200 codes whose text is not written in Latin letters except for foreign names.
LATIN_FREE_SCRIPTS = frozenset({"Hans", "Hant", "Jpan", "Kore", "Hang"})

LATIN_CHARS = r"A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F"  # ASCII, Latin-1, Latin Extended-A/B
# A Latin word: Latin letters joined by hyphens or apostrophes ("North-Ecks", "don't").
LATIN_WORD = re.compile(rf"[{LATIN_CHARS}]+(?:['’\-][{LATIN_CHARS}]+)*")
LATIN_LETTER = re.compile(rf"[{LATIN_CHARS}]")
# Han (with extension A and compatibility ideographs), kana, Hangul syllables and jamo.
CJK_LETTER = re.compile(
    "[\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\u3040-\u309F\u30A0-\u30FF\u31F0-\u31FF\uAC00-\uD7AF\u1100-\u11FF\u3130-\u318F]"
)

COPY_MIN_WORDS = 4  # a translation with this many words or more, names aside, ...
COPY_MIN_SHARE = 0.8  # ... whose words are this much the source's copies it through untranslated


def _script(language: Language) -> str:
    return (language.flores_code or "_Latn").rpartition("_")[2]


FOREIGN_SCRIPTS = (LATIN_LETTER, CJK_LETTER)  # every pattern `foreign_letters` gives


def foreign_letters(target: Language) -> re.Pattern[str] | None:
    """The letters a translation into `target` should not hold (but for the source's names, see
    `kept_latin_words`): Latin ones for Chinese, Japanese and Korean, Chinese, Japanese and Korean
    ones for a Latin-script language; None for other scripts."""
    script = _script(target)
    if script in LATIN_FREE_SCRIPTS:
        return LATIN_LETTER
    return CJK_LETTER if script == "Latn" else None


def kept_latin_words(source_text: str) -> frozenset[str]:
    """Latin words of the source a translation into a Latin-free script may keep: those with a
    capital letter (names, acronyms), as written, and the parts of hyphenated ones. Lower-case
    words ("everyone") are to be translated, and so is the capitalised first word of the text (a
    sentence start: "After", "Today"), unless the text capitalises it again later or it is more
    than capitalised ("BBC", "iPhone"): the text a translator gets is one sentence, and a name
    that starts it can be written in the target's script."""
    words = [m.group() for m in LATIN_WORD.finditer(source_text)]
    kept: set[str] = set()
    for i, word in enumerate(words):
        if not any(c.isupper() for c in word):
            continue
        if i == 0 and word[1:] == word[1:].lower() and word not in words[1:]:
            continue
        kept.add(word)
        kept.update(part for part in re.split(r"['’\-]", word) if part)
    return frozenset(kept)


def wrong_script_letters(text: str, source_text: str, target: Language) -> tuple[int, int]:
    """(letters of `text` in a script `target` is not written in, all letters of `text`): their
    ratio is the share of a translation left in the wrong script. Into Chinese, Japanese or Korean
    that is Latin words the source does not name (`kept_latin_words`); into a Latin-script
    language, Chinese, Japanese and Korean characters. Digits, punctuation and spaces count in
    neither; other targets count (0, letters)."""
    letters = sum(1 for c in text if unicodedata.category(c).startswith("L"))
    foreign = foreign_letters(target)
    if foreign is None:
        return 0, letters
    if foreign is CJK_LETTER:
        return len(CJK_LETTER.findall(text)), letters
    kept = {w.casefold() for w in kept_latin_words(source_text)}
    wrong = sum(
        len(LATIN_LETTER.findall(m.group())) for m in LATIN_WORD.finditer(text) if m.group().casefold() not in kept
    )
    return wrong, letters


def may_copy(source: Language, target: Language) -> bool:
    """Whether a translation from `source` into `target` can copy its source through unnoticed by
    the script mask: two different languages, both written in Latin letters."""
    return source.code != target.code and _script(source) == _script(target) == "Latn"


def copied_words(text: str, source_text: str) -> list[str]:
    """The words of a translation into a Latin-script language that it took from its (Latin-script)
    source, names aside (`kept_latin_words`), in the translation's order, when it copies the
    source through untranslated: at least `COPY_MIN_WORDS` such words, `COPY_MIN_SHARE` of them
    the source's; else [].

    >>> copied_words("Dr. Ehud Ur, professor of medicine at Dalhousie", "Dr. Ehud Ur, professor of medicine at Dalhousie University")
    ['Dr', 'professor', 'of', 'medicine', 'at']
    >>> copied_words("Dr. Ehud Ur, Professor für Medizin an der Dalhousie", "Dr. Ehud Ur, professor of medicine at Dalhousie")
    []
    """
    names = {w.casefold() for w in kept_latin_words(source_text)}
    words = [w for w in LATIN_WORD.findall(text) if w.casefold() not in names]
    if len(words) < COPY_MIN_WORDS:
        return []
    source_words = {w.casefold() for w in LATIN_WORD.findall(source_text)}
    shared = [w for w in words if w.casefold() in source_words]
    return shared if len(shared) >= COPY_MIN_SHARE * len(words) else []


# What a decoder writes when it talks about the translation rather than translating: "The German
# text "…" translates to English as: …", "In English: …", "This translation keeps the meaning of the
# original German text". Decoders comment in English, naming the languages by their English names
# (`Language.name`).
COMMENTARY_NOUNS = "text|sentence|sentences|phrase|passage|original|version|translation"
COMMENTARY_PATTERNS = (
    r"\b(?:{names})\s+(?:" + COMMENTARY_NOUNS + r")\s*(?:[:\"“«]|translat|reads|means|says)",  # 'the German text "…"'
    r"\btranslat\w*\s+(?:[\w,]+\s+){{0,3}}?(?:to|into|in)\s+(?:{names})\b",  # "translates to English"
    r"\b(?:in|into)\s+(?:{names})\s*[:：]",  # "In English:"
    r"\b(?:original|source)\s+(?:{names})\s+(?:" + COMMENTARY_NOUNS + r")\b",  # "the original German text"
    r"\btranslat\w*(?:\s+\w+){{0,3}}\s*[:：]",  # "The text translates to:", "Translation:"
    r"\b(?:this|the|my)\s+translation\s+(?:maintains|keeps|preserves|captures|conveys|retains|reflects|adapts)\b",
)
# A sentence ends with one of these (and closing quotes or brackets) before a space.
SENTENCE_END = re.compile("[.!?…。！？][\"'”’)\\]]*\\s+")


# Words a translation that commented on itself is decoded again without (with the languages' names).
COMMENTARY_WORDS = ("translation", "translations", "translate", "translates", "translated", "translating")


def _english_names(language: Language) -> set[str]:
    """A language's English name and, for a qualified one, its last word ("Simplified Chinese",
    "Chinese"); a parenthesised script is left out ("Acehnese (Latin script)" → "Acehnese")."""
    name = language.name.partition("(")[0].strip()
    return {name, name.split()[-1]}


def _names_to_flag(source_text: str, source: Language, target: Language) -> list[str]:
    """The English names of the two languages that the source does not hold, longest first."""
    folded_source = source_text.casefold()
    names = _english_names(source) | _english_names(target)
    return sorted((n for n in names if n.casefold() not in folded_source), key=len, reverse=True)


def commentary_words(source_text: str, source: Language, target: Language) -> list[str]:
    """The words a translation that commented on itself (`commentary_start`) is decoded again
    without: the languages' English names ("Chinese" of "Simplified Chinese") and the words for
    translating, but those the source holds."""
    folded_source = source_text.casefold()
    words = [w for w in COMMENTARY_WORDS if w not in folded_source]
    return sorted({n.split()[-1] for n in _names_to_flag(source_text, source, target)} | set(words))


def commentary_start(text: str, source_text: str, source: Language, target: Language) -> int | None:
    """Where a translation of `source_text` stops translating and talks about the translation,
    as the start of the sentence that does (0: the whole text); None when it does not. A sentence
    is commentary when it speaks of the text or the translation the way a decoder's comment does
    ("The German text "…"", "translates to English", "In English:", "translates to:", "This
    translation keeps…"); a language named so does not count when the source itself holds that
    name. Only English comments are recognised: a Chinese, Japanese or Korean target cannot write
    them (`foreign_letters`), and decoders comment in English. No sentence of the FLORES-200
    devtest or WMT22 references is commentary by these rules.

    >>> from streamst.languages import resolve
    >>> de, en = resolve("de"), resolve("en")
    >>> commentary_start('It helps. The German text "Es hilft" translates to English as: ...', "Es hilft", de, en)
    10
    >>> commentary_start("He spoke German and English at home.", "Er sprach Deutsch und Englisch.", de, en) is None
    True
    """
    names = _names_to_flag(source_text, source, target)
    alternatives = "|".join(re.escape(n) for n in names) or "(?!)"  # (?!) matches nothing
    starts = [
        m.start()
        for pattern in COMMENTARY_PATTERNS
        if (m := re.search(pattern.format(names=alternatives), text, re.IGNORECASE))
    ]
    if not starts:
        return None
    first = min(starts)
    return max((m.end() for m in SENTENCE_END.finditer(text, 0, first)), default=0)
