"""Which letters a target should not hold, which source words may stay in it, how a translation's
wrong-script share is counted, when a translation copies its source; the token masks built from
those rules."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from streamst import writing
from streamst.languages import resolve
from streamst.translators.masks import ScriptMask, script_token_ids, word_start_ids
from streamst.writing import (
    CJK_LETTER,
    LATIN_LETTER,
    commentary_start,
    commentary_words,
    copied_words,
    foreign_letters,
    kept_latin_words,
    may_copy,
    wrong_script_letters,
)


@pytest.mark.parametrize(("code", "letters"), [("zh", LATIN_LETTER), ("ja", LATIN_LETTER), ("ko", LATIN_LETTER),
                                               ("en", CJK_LETTER), ("de", CJK_LETTER), ("ru", None)])  # fmt: skip
def test_each_script_has_the_letters_its_translations_should_not_hold(code: str, letters: object) -> None:
    assert foreign_letters(resolve(code)) is letters


def test_names_and_acronyms_of_the_source_may_stay_but_ordinary_words_not() -> None:
    kept = kept_latin_words("Dr. Ehud Ur, professor of medicine at Dalhousie University, told the BBC in North-Ecks")
    assert {"Ehud", "Ur", "Dalhousie", "University", "BBC", "North-Ecks", "North", "Ecks"} == kept
    assert kept_latin_words("早上好，everyone") == frozenset()


def test_a_capitalised_sentence_start_is_translated_unless_it_is_a_name_again_or_an_acronym() -> None:
    assert kept_latin_words("After a glowing account by Lord Byron") == {"Lord", "Byron"}
    assert kept_latin_words("Siminoff said that Siminoff") == {"Siminoff"}
    assert kept_latin_words("NASA and iPhone") == {"NASA", "iPhone"}
    assert kept_latin_words("iPhone sales") == {"iPhone"}


def test_wrong_script_counts_latin_letters_of_words_the_source_does_not_name() -> None:
    zh = resolve("zh")
    assert wrong_script_letters("农民 in the North-Ecks Bank", "Farmers in the North-Ecks Bank", zh) == (5, 20)
    assert wrong_script_letters("BBC报道了42人", "The BBC reported 42 people", zh) == (0, 7)
    assert wrong_script_letters("", "anything", zh) == (0, 0)


def test_wrong_script_in_a_latin_target_counts_chinese_japanese_and_korean_letters() -> None:
    assert wrong_script_letters("The farmers 晒 wheat in ドイツ", "农民在德国晒小麦", resolve("en")) == (4, 21)
    assert wrong_script_letters("Привет", "hello", resolve("ru")) == (0, 6)


def test_a_copy_is_most_of_a_long_enough_translation_taken_from_its_latin_source() -> None:
    source = "Dr. Ehud Ur, professor of medicine at Dalhousie University in Halifax"
    assert copied_words("Dr. Ehud Ur, professor of medicine at Dalhousie University", source)
    assert not copied_words("Dr. Ehud Ur, Professor für Medizin an der Dalhousie University", source)
    assert not copied_words("professor of medicine", source), "too short to tell"
    assert may_copy(resolve("en"), resolve("de")) and may_copy(resolve("es"), resolve("en"))
    assert not may_copy(resolve("en"), resolve("en")) and not may_copy(resolve("zh"), resolve("en"))


def test_a_translation_that_comments_on_itself_is_cut_where_that_sentence_starts() -> None:
    de, en, es = resolve("de"), resolve("en"), resolve("es")
    six = "They can also help students. The first part of the German text translates to English as: \"The first"
    assert commentary_start(six, "Blogs können auch helfen", de, en) == six.index("The first")
    nine = 'The appropriate use of blogs. The German text "Kanschülerinnen und Schüler" translates to "Do girls'
    assert commentary_start(nine, "Kanschülerinnen und Schüler", de, en) == nine.index("The German")
    assert commentary_start("In English: the weather changes.", "El tiempo cambia.", es, en) == 0
    # What the 0.5B steps and the 1.5B final wrote once the languages' names were cut (de-en clip 6).
    unnamed = 'They help. The first part of the text translates to: "Schoolchildren have their blog."'
    assert commentary_start(unnamed, "Sie helfen.", de, en) == unnamed.index("The first")
    remark = "Pupils write blogs. This translation maintains the meaning of the original German text."
    assert commentary_start(remark, "Schüler schreiben Blogs.", de, en) == remark.index("This")
    assert commentary_start("Das Wetter ändert sich. Auf Englisch heißt das…", "The weather changes.", en, de) is None, (
        "only English comments are recognised"
    )


def test_a_comment_is_decoded_again_without_the_languages_names_and_the_words_for_translating() -> None:
    de, en, zh = resolve("de"), resolve("en"), resolve("zh")
    words = commentary_words("Blogs helfen.", de, en)
    assert {"German", "English", "translates", "translation"} <= set(words)
    assert "Chinese" in commentary_words("早上好", zh, en) and "Simplified" not in commentary_words("早上好", zh, en)
    assert "translation" not in commentary_words("The translation of the Bible", en, de), "the source says it"


def test_naming_a_language_in_a_translation_is_no_comment() -> None:
    de, en, zh = resolve("de"), resolve("en"), resolve("zh")
    # Human translations (WMT22 zh-en, ja-en) that name a language as their sources do.
    assert commentary_start("The Chinese translation of Metaphysics originates from the Book of Changes.",
                            "《形而上学》的中文译名出自《易经》", zh, en) is None  # fmt: skip
    assert commentary_start("It is cheap compared with the Chinese version, and fine.", "和中文版比便宜", zh, en) is None
    assert commentary_start("He spoke German and English at home.", "Er sprach Deutsch und Englisch.", de, en) is None
    # The source names it: "the English text" is then a translation, not a comment.
    assert commentary_start('Der englische Text "Hello" sagt Hallo.', 'The English text "Hello" says hello.', en, de) is None


def test_the_examples_in_the_writing_rules_hold() -> None:
    assert doctest.testmod(writing).failed == 0


def byte_tokens(text: str, special: bool) -> list[int]:
    return list(text.encode("utf-8"))


def byte_text(token_id: int) -> bytes:
    return bytes([token_id]) if token_id < 256 else b"<stop>"


def test_the_latin_tokens_are_those_with_a_latin_letter() -> None:
    latin = script_token_ids(byte_text, 257, [LATIN_LETTER], keep={256})[LATIN_LETTER.pattern]
    assert sorted(latin.tolist()) == sorted(map(ord, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def allowed_after(mask: ScriptMask, text: str) -> str:
    out = mask.apply(np.zeros(257, dtype=np.float32), text)
    return "".join(chr(i) for i in range(256) if chr(i).isalpha() and chr(i).isascii() and out[i] == 0)


def test_the_mask_lets_a_name_of_the_source_be_written_whole_and_nothing_else() -> None:
    latin = script_token_ids(byte_text, 257, [LATIN_LETTER], keep={256})[LATIN_LETTER.pattern]
    mask = ScriptMask.keeping(latin, kept_latin_words("good morning, Bob and Bea"), byte_tokens, byte_text)
    assert allowed_after(mask, "早上好，") == "B", "a name can start"
    assert allowed_after(mask, "早上好，B") == "eo"
    assert allowed_after(mask, "早上好，Bo") == "b"
    assert allowed_after(mask, "早上好，Bob") == "", "a name cannot run on"
    assert allowed_after(mask, "早上好，Bob ") == "B"
    assert allowed_after(ScriptMask.keeping(latin, (), byte_tokens, byte_text), "") == ""


def test_a_name_begun_is_finished_before_anything_else() -> None:
    latin = script_token_ids(byte_text, 257, [LATIN_LETTER], keep={256})[LATIN_LETTER.pattern]
    mask = ScriptMask.keeping(latin, kept_latin_words("the Northern Marianas and Bob"), byte_tokens, byte_text)
    inside = mask.apply(np.zeros(257, dtype=np.float32), "北Marian")
    assert np.flatnonzero(inside == 0).tolist() == [ord("a")], "only the rest of 'Marianas': no stop, no 亚"
    whole = mask.apply(np.zeros(257, dtype=np.float32), "北Marianas")
    assert whole[256] == 0 and whole[0xE4] == 0, "a whole name may be followed by anything"
    unknown = mask.apply(np.zeros(257, dtype=np.float32), "Xy")
    assert unknown[256] == 0, "a fragment of no kept word (written before this mask) is not forced on"


def test_a_cjk_mask_holds_the_tokens_with_a_chinese_japanese_or_korean_character() -> None:
    vocab = ["a", "大", "家", "ド", "한", " the", "\u00e4", "。", "1"]
    by_script = script_token_ids(lambda i: vocab[i].encode("utf-8"), len(vocab), [CJK_LETTER, LATIN_LETTER], keep=())
    ids = by_script[CJK_LETTER.pattern]
    assert ids.tolist() == [1, 2, 3, 4]
    assert by_script[LATIN_LETTER.pattern].tolist() == [0, 5, 6], "one pass, every script"


def test_a_retry_bans_the_first_token_of_each_copied_word_in_both_cases() -> None:
    vocab = {"the": [1], " the": [2], "The": [3], " The": [4], "farmers": [5, 9], " farmers": [6, 9],
             "Farmers": [7, 9], " Farmers": [8, 9]}  # fmt: skip
    ids = word_start_ids(lambda text, special: vocab[text], ["the", "Farmers"]).tolist()
    assert ids == [1, 2, 3, 4, 6, 8], "'farm' without a space may be inside another word"


def test_masking_copies_the_logits_and_leaves_the_backend_buffer_alone() -> None:
    logits = np.arange(5, dtype=np.float32)
    out = ScriptMask(np.array([4])).apply(logits, "")
    assert int(np.argmax(out)) == 3 and out[4] == -np.inf and logits[4] == 4.0
    more = ScriptMask(np.array([4])).banning(np.array([3]))
    assert int(np.argmax(more.apply(logits, ""))) == 2
