"""Sentence segmentation, recogniser guards, the audio buffer and subtitle cues (no models)."""

import numpy as np

from streamst.encoders.guards import cap_rate, cut_repeats
from streamst.punctuation import ends_sentence, split_sentences
from streamst.sessions.buffer import AudioBuffer
from streamst.subtitles import srt_cue, vtt_cue
from streamst.types import FinalEvent, Word


def words(text: str, step_ms: int = 300) -> list[Word]:
    return [Word((" " if i else "") + w, i * step_ms, i * step_ms + step_ms - 50) for i, w in enumerate(text.split())]


def test_split_sentences_keeps_times_and_marks_the_unfinished_tail():
    sentences = split_sentences(words("Hello there. Dr. Smith paid 3.5 dollars! And then"))
    assert [s.text for s in sentences] == ["Hello there.", "Dr. Smith paid 3.5 dollars!", "And then"]
    assert [s.complete for s in sentences] == [True, True, False]
    assert sentences[1].start_ms == 2 * 300 and sentences[1].end_ms == 6 * 300 + 250


def test_cjk_sentence_ends():
    assert ends_sentence("通车。") and ends_sentence("吗？") and ends_sentence('said."')
    assert not ends_sentence("etc.") and not ends_sentence("J.") and not ends_sentence("however,")


def test_cut_repeats_stops_a_loop_but_keeps_normal_text():
    looped = words("thank you " * 10)
    assert len(cut_repeats(looped, max_repeats=3)) == 6
    normal = words("the cat and the dog and the bird")
    assert len(cut_repeats(normal)) == len(normal)


def test_cap_rate_drops_runaway_output():
    many = words("a " * 100)
    assert len(cap_rate(many, audio_ms=2000, max_units_per_s=6.0)) == 12
    cjk = [Word("你好世界", 0, 500)] * 10
    assert len(cap_rate(cjk, audio_ms=1000, max_units_per_s=12.0)) == 3


def test_audio_buffer_is_indexed_on_the_absolute_timeline():
    buf = AudioBuffer()
    ramp = np.arange(16_000 * 3, dtype=np.float32)
    for chunk in np.array_split(ramp, 7):
        buf.append(chunk)
    assert buf.end_ms == 3000
    np.testing.assert_array_equal(buf.slice_ms(1000, 1001), ramp[16_000:16_016])
    buf.discard_before(2000)
    np.testing.assert_array_equal(buf.slice_ms(2000, 2001), ramp[32_000:32_016])
    assert len(buf.slice_ms(0, 2000)) == 0
    assert buf.end_ms == 3000


def test_subtitle_cues():
    event = FinalEvent(
        segment_id=0, source_text="Hi.", committed_text="你好。", committed_delta="你好。", tentative_text="",
        start_ms=3_723_004, end_ms=3_725_500, mode="cascade", audio_ms=3_726_000, emitted_ms=0.0,
    )
    assert srt_cue(1, event) == "1\n01:02:03,004 --> 01:02:05,500\n你好。\n\n"
    assert vtt_cue(event) == "01:02:03.004 --> 01:02:05.500\n你好。\n\n"


def test_a_transcript_that_recites_the_prompt_is_dropped():
    from streamst.encoders.whisper import _repeats_prompt

    prompt = "Farmers in the north expect a dry summer this year."
    assert _repeats_prompt(tuple(words("Farmers in the north expect")), prompt)
    assert not _repeats_prompt(tuple(words("Farmers in the south")), prompt)
    assert not _repeats_prompt(tuple(words("this year")), prompt)  # too short to tell


def test_a_tail_that_recites_the_sentence_again_is_cut():
    from streamst.encoders.guards import cut_repeated_tail

    looped = words("Farmers in the north expect a dry summer this year. Farmers in the north expect a dry")
    assert [w.text.strip() for w in cut_repeated_tail(looped)][-1] == "year."
    normal = words("I think that I think so but the cat sat on the mat and the dog sat on the rug")
    assert len(cut_repeated_tail(normal)) == len(normal)


def test_a_recital_cut_mid_word_by_the_token_cap_is_cut():
    from streamst.encoders.guards import cut_repeated_tail

    # fleurs-de-001: Whisper recited the sentence until its token cap stopped it inside '-Rex'.
    sentence = "Selbst ein großer Dinosaurier wie T -Rex wäre ihm nicht gewachsen."
    looped = words(f"{sentence} {sentence} Selbst ein großer Dinosaurier wie T -")
    assert " ".join(w.text.strip() for w in cut_repeated_tail(looped)) == sentence
    # A last word that merely differs is not a recital: the speaker went on.
    went_on = words(f"{sentence} Selbst ein großer Dinosaurier wie T -Rex wäre klein")
    assert len(cut_repeated_tail(went_on)) == len(went_on)


def test_a_sentence_recited_several_times_is_cut_to_one():
    from streamst.encoders.guards import cut_repeated_tail

    sentence = "Farmers in the north expect a dry summer this year."
    looped = words(f"{sentence} {sentence} Farmers in the north expect")
    assert " ".join(w.text.strip() for w in cut_repeated_tail(looped)) == sentence
