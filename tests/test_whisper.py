"""The Whisper encoder with the real default model."""

from __future__ import annotations

import pytest

from streamst.audio import decode_audio

pytestmark = pytest.mark.models


def test_a_short_window_after_a_long_context_prompt(engine, fleurs):
    """The decoding cap counts the prompt: a short window with a long prompt must still decode."""
    audio = decode_audio(fleurs["fleurs-zh-1883"]["path"])[: 16 * 744]
    prompt = "以下是普通话的句子。" * 8
    transcript = engine.load().encoder.transcribe(audio, "zh", 0, prompt)
    assert transcript.window_end_ms == 744


def test_word_times_are_monotonic_and_inside_the_window(engine, fleurs):
    audio = decode_audio(fleurs["fleurs-de-003"]["path"])
    transcript = engine.load().encoder.transcribe(audio, "de", 5_000)
    starts = [w.start_ms for w in transcript.words]
    assert starts == sorted(starts) and transcript.words
    assert all(5_000 <= w.start_ms <= w.end_ms <= transcript.window_end_ms + 1_000 for w in transcript.words)
    assert "Männer" in transcript.text
