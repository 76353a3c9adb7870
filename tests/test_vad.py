"""Silero VAD through onnxruntime on real speech and on silence (the real model, no mocks)."""

from __future__ import annotations

import numpy as np
import pytest

from streamst import registry
from streamst.audio import decode_audio
from streamst.vad import FRAME_SAMPLES, Endpointer, SegmentClosed, SileroVAD, VADOptions

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD(registry.model_file("silero-vad", "silero_vad.onnx"))


def segments(vad: SileroVAD, audio: np.ndarray, chunk: int = 1234) -> list[SegmentClosed]:
    stream, endpointer = vad.stream(), Endpointer(VADOptions())
    changes = []
    for start in range(0, len(audio), chunk):
        changes += endpointer.feed(stream.probabilities(audio[start : start + chunk]))
    return [c for c in changes + endpointer.flush() if isinstance(c, SegmentClosed)]


@pytest.mark.parametrize("clip_id", ["fleurs-en-000", "fleurs-en-004", "fleurs-de-003", "fleurs-zh-1883"])
def test_real_speech_is_found(vad, fleurs, clip_id):
    """Also the quietest clip (fleurs-en-004 peaks at -49 dBFS)."""
    clip = fleurs[clip_id]
    found = segments(vad, decode_audio(clip["path"]))
    assert found, f"no speech found in {clip_id}"
    speech_ms = sum(s.speech_ms for s in found)
    assert speech_ms > 0.4 * clip["duration_s"] * 1000
    assert all(s.span.end_ms <= clip["duration_s"] * 1000 + 100 for s in found)


def test_silence_and_low_noise_are_not_speech(vad):
    rng = np.random.default_rng(0)
    for audio in (np.zeros(16_000 * 3, np.float32), (0.003 * rng.standard_normal(16_000 * 3)).astype(np.float32)):
        assert segments(vad, audio) == []


def test_state_carries_across_chunks(vad, fleurs):
    audio = decode_audio(fleurs["fleurs-en-000"]["path"])[: 16_000 * 4]
    whole = vad.stream().probabilities(audio)
    stream = vad.stream()
    pieces = np.concatenate([stream.probabilities(audio[i : i + 700]) for i in range(0, len(audio), 700)])
    assert len(whole) == len(audio) // FRAME_SAMPLES
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
