"""The endpointer state machine on hand-made probability sequences (no model)."""

import numpy as np
import pytest

from streamst.errors import OptionsError
from streamst.vad import FRAME_MS, Endpointer, SegmentClosed, SegmentOpened, VADOptions


def frames(*runs: tuple[float, int]) -> np.ndarray:
    """runs of (probability, duration_ms) → one probability per frame."""
    return np.concatenate([np.full(ms // FRAME_MS, p, dtype=np.float32) for p, ms in runs])


def test_silence_opens_nothing():
    ep = Endpointer(VADOptions())
    assert ep.feed(frames((0.01, 5000))) == []
    assert ep.flush() == []


def test_speech_then_silence_gives_one_padded_segment():
    o = VADOptions(min_silence_ms=480, speech_pad_ms=192)
    ep = Endpointer(o)
    changes = ep.feed(frames((0.0, 960), (0.9, 1920), (0.0, 960)))
    assert changes[0] == SegmentOpened(960 - 192)
    closed = changes[1]
    assert isinstance(closed, SegmentClosed) and not closed.forced
    assert closed.span.start_ms == 960 - 192
    assert closed.span.end_ms == 960 + 1920 + 192
    assert closed.speech_ms == 1920


def test_short_pause_keeps_segment_open():
    ep = Endpointer(VADOptions(min_silence_ms=512))
    changes = ep.feed(frames((0.9, 960), (0.1, 320), (0.9, 960)))
    assert [type(c) for c in changes] == [SegmentOpened]
    (closed,) = ep.flush()
    assert closed.speech_ms == 1920


def test_long_speech_is_cut_at_quietest_recent_frame():
    o = VADOptions(max_segment_ms=8000, cut_search_ms=3008)
    ep = Endpointer(o)
    # 6 s of speech, a dip at 6.4 s (still above neg_threshold, so not silence), then speech.
    probs = frames((0.95, 6400), (0.4, 64), (0.95, 4000))
    changes = ep.feed(probs)
    closed = [c for c in changes if isinstance(c, SegmentClosed)]
    assert len(closed) == 1 and closed[0].forced
    assert closed[0].span.end_ms == 6400
    assert changes[-1] == SegmentOpened(6400)
    (rest,) = ep.flush()
    assert rest.span.start_ms == 6400


def test_segments_are_in_time_order():
    ep = Endpointer(VADOptions())
    probs = frames(*[(0.9, 640), (0.0, 1280)] * 5)
    spans = [c.span for c in ep.feed(probs) + ep.flush() if isinstance(c, SegmentClosed)]
    assert len(spans) == 5
    ends = [0] + [s.end_ms for s in spans]
    assert all(s.start_ms >= e for s, e in zip(spans, ends))
    assert all(s.end_ms > s.start_ms for s in spans)


@pytest.mark.parametrize(
    "kwargs", [dict(threshold=1.5), dict(neg_threshold=0.9), dict(min_silence_ms=5), dict(max_segment_ms=40_000)]
)
def test_bad_options_name_the_value(kwargs):
    with pytest.raises(OptionsError) as e:
        VADOptions(**kwargs)
    assert str(next(iter(kwargs.values()))) in str(e.value)
