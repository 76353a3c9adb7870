"""The direct simultaneous mode end to end with the real default models."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamst.audio import decode_audio
from streamst.clock import SimulatedClock
from streamst.options import session_options
from streamst.sessions.direct import DirectOptions, DirectSession
from streamst.languages import resolve
from streamst.types import FinalEvent, PartialEvent

pytestmark = pytest.mark.models

# Compute speed cannot decide what these tests see: on the simulated clock no time passes
# during a step, so the compute budget never trips (tests/test_sessions.py covers it).

def run(session, audio: np.ndarray, chunks_ms):
    clock = session.clock
    events, start = [], 0
    for chunk_ms in chunks_ms:
        clock.advance(chunk_ms)
        events += session.push(audio[start : start + 16 * chunk_ms])
        start += 16 * chunk_ms
        if start >= len(audio):
            break
    return events + session.finish()


def check_append_only(events) -> None:
    """Within a segment, committed text only grows, deltas add up to it, and the final completes it."""
    shown: dict[int, str] = {}
    for e in events:
        before = shown.get(e.segment_id, "")
        assert e.committed_text.startswith(before), (before, e.committed_text)
        assert e.committed_text == before + e.committed_delta
        shown[e.segment_id] = e.committed_text
        if isinstance(e, FinalEvent):
            assert e.tentative_text == ""


@pytest.fixture(scope="module")
def short_clip(fleurs):
    return decode_audio(fleurs["fleurs-en-004"]["path"])


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.integers(10, 900), min_size=30, max_size=30))
def test_committed_text_only_grows_for_any_pushes(engine, short_clip, chunks):
    session = engine.session("en", "de", mode="direct", clock=SimulatedClock(),
                             options=session_options("direct", "la", 2, step_ms=500))
    events = run(session, short_clip, chunks * 10)
    check_append_only(events)
    assert any(isinstance(e, FinalEvent) and e.committed_text for e in events)


@pytest.mark.parametrize("policy, knob", [("wait-k", 2), ("la", 2)])
def test_commits_mid_sentence_and_flushes_a_complete_translation(engine, fleurs, policy, knob):
    clip = fleurs["fleurs-es-002"]
    session = engine.session("es", "en", mode="direct", clock=SimulatedClock(),
                             options=session_options("direct", policy, knob))
    events = run(session, decode_audio(clip["path"]), [100] * 1000)
    check_append_only(events)
    finals = [e for e in events if isinstance(e, FinalEvent) and e.source_text]
    early = [e for e in events if isinstance(e, PartialEvent) and e.committed_delta]
    assert early, "nothing was committed before the segment ended"
    assert early[0].audio_ms < finals[-1].audio_ms
    text = " ".join(e.committed_text for e in finals)
    assert sacrebleu.sentence_chrf(text, [clip["references"]["en"]]).score >= 22.0, text
    assert all(e.mode == "direct" for e in finals)


class FailingTranslator:
    """The real translator, except that the first `n_failures` calls raise."""

    def __init__(self, real, n_failures: int) -> None:
        self.real, self.n_failures = real, n_failures

    def translate(self, *args, **kwargs):
        if self.n_failures > 0:
            self.n_failures -= 1
            raise RuntimeError("decoder exploded")
        return self.real.translate(*args, **kwargs)


def test_a_failing_step_hands_the_segment_to_the_cascade(engine, fleurs):
    components = engine.load()
    broken = replace(components, translator=FailingTranslator(components.translator, n_failures=1))
    session = DirectSession(broken, resolve("en"), resolve("de"), session_options("direct", "wait-k", 1),
                            SimulatedClock())
    events = run(session, decode_audio(fleurs["fleurs-en-000"]["path"]), [100] * 1000)
    finals = [e for e in events if isinstance(e, FinalEvent) and e.source_text]
    assert finals[0].mode == "cascade" and "decoder exploded" in finals[0].fallback_reason
    assert finals[0].committed_text.strip()
    assert finals[-1].mode == "direct" and finals[-1].fallback_reason == ""
    assert session.stats.n_fallbacks == 1


def test_stale_steps_are_skipped_when_audio_arrives_in_bulk(engine, short_clip):
    options = DirectOptions(skip_stale_steps=True, step_ms=500)
    session = engine.session("en", "de", mode="direct", clock=SimulatedClock(), options=options)
    events = run(session, short_clip, [4000, 400])
    assert session.stats.n_skipped_steps >= 3
    assert any(isinstance(e, FinalEvent) and e.committed_text for e in events)
