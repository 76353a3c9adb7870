"""From events to delays: deltas → units → delays, elapsed accumulation, reference segments."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from streamst.benchmarks import runner
from streamst.benchmarks.datasets import ReferenceSegment, SpeechInstance, parse_pairs
from streamst.benchmarks.runner import RunSpec, StreamSettings, live_options, stream_instance
from streamst.benchmarks.scoring import (
    quality_scores,
    CallRecord,
    CommitTracker,
    OutputSegment,
    StreamOutput,
    TimedUnit,
    assign_segments,
    scored_segments,
    source_wer,
)

from streamst import metrics
from streamst.errors import OptionsError
from streamst.languages import resolve
from streamst.options import session_options
from streamst.policies import WaitK
from streamst.sessions.base import SessionStats
from streamst.sessions.cascade import CascadeOptions
from streamst.sessions.direct import DirectOptions
from streamst.types import SAMPLES_PER_MS, FinalEvent, PartialEvent

DE = resolve("de")
ZH = resolve("zh")
EN = resolve("en")


def partial(segment_id: int, committed: str, delta: str, audio_ms: int, tentative: str = "") -> PartialEvent:
    return PartialEvent(segment_id, "src", committed, delta, tentative, 0, audio_ms, "cascade", audio_ms, audio_ms)


def final(segment_id: int, committed: str, delta: str, audio_ms: int, start_ms: int = 0, end_ms: int = 0) -> FinalEvent:
    return FinalEvent(segment_id, "src", committed, delta, "", start_ms, end_ms, "cascade", audio_ms, audio_ms)


# ---------------------------------------------------------------------------------------
# Events → units


def test_deltas_become_units_with_the_delay_of_their_event() -> None:
    tracker = CommitTracker(DE)
    tracker.observe([partial(0, "Guten", "Guten", 1000)], compute_ms=50)
    tracker.observe([partial(0, "Guten Tag, wie", " Tag, wie", 1600)], compute_ms=120)
    # "wie" + "der": the word is only complete (and readable) at 2000 ms.
    tracker.observe([partial(0, "Guten Tag, wieder", "der", 2000)], compute_ms=200)
    tracker.observe([final(0, "Guten Tag, wieder da?", " da?", 2500, 300, 2400)], compute_ms=900)
    tracker.observe([final(1, "Gut.", "Gut.", 4000, 2600, 3900)], compute_ms=1500)
    first, second = tracker.output_segments()
    assert [(u.text, u.delay_ms, u.elapsed_ms) for u in first.units] == [
        ("Guten", 1000, 1050),
        ("Tag,", 1600, 1720),
        ("wieder", 2000, 2200),
        ("da?", 2500, 3400),
    ]
    assert (first.start_ms, first.end_ms) == (300, 2400)
    assert [(u.text, u.delay_ms, u.elapsed_ms) for u in second.units] == [("Gut.", 4000, 5500)]


def test_character_units_for_chinese() -> None:
    tracker = CommitTracker(ZH)
    tracker.observe([partial(0, "你好", "你好", 800)])
    tracker.observe([final(0, "你好， 世界。", "， 世界。", 1800)])
    (segment,) = tracker.output_segments()
    assert [u.text for u in segment.units] == ["你", "好", "，", "世", "界", "。"]
    assert [u.delay_ms for u in segment.units] == [800, 800, 1800, 1800, 1800, 1800]


def test_wall_clock_elapsed_is_the_receive_time() -> None:
    tracker = CommitTracker(DE)
    tracker.observe([final(0, "Ja.", "Ja.", 1000)], wall_ms=1730.5)
    (segment,) = tracker.output_segments()
    assert segment.units == (TimedUnit("Ja.", 1000, 1730.5),)


def test_times_are_non_decreasing_along_the_output() -> None:
    tracker = CommitTracker(DE)
    tracker.observe([final(0, "Eins.", "Eins.", 3000)], compute_ms=100)
    tracker.observe([final(1, "Zwei.", "Zwei.", 2000)], compute_ms=50)
    _, second = tracker.output_segments()
    assert second.units == (TimedUnit("Zwei.", 3000, 3100),)


def test_displayed_text_tracks_flicker() -> None:
    tracker = CommitTracker(DE)
    tracker.observe([partial(0, "", "", 500, tentative="ein roter")])
    tracker.observe([partial(0, "ein", "ein", 1000, tentative=" blauer Hund")])
    tracker.observe([final(0, "ein blauer Hund.", " blauer Hund.", 1500)])
    displayed = tracker.displayed
    assert displayed == (("ein", "roter"), ("ein", "blauer", "Hund"), ("ein", "blauer", "Hund."))
    erasure = metrics.erasure(displayed)
    assert (erasure.n_erased_units, erasure.n_final_units) == (2, 3)
    # The flicker was all in the tentative tail: the committed text only grew.
    assert ["".join(c) for c in tracker.committed] == ["", "ein", "ein blauer Hund."]
    assert metrics.erasure(tracker.committed).normalized == 0


def test_committed_text_that_shrinks_counts_as_erasure() -> None:
    tracker = CommitTracker(DE)
    tracker.observe([partial(0, "ein roter", "ein roter", 1000)])
    tracker.observe([final(0, "ein blauer", "", 1500)])  # a session that broke its contract
    assert metrics.erasure(tracker.committed).n_erased_units == len("roter")


# ---------------------------------------------------------------------------------------
# Reference segments


def test_assign_by_overlap_then_nearest_midpoint() -> None:
    refs = [ReferenceSegment(0, 5000, "a", {}), ReferenceSegment(6000, 10000, "b", {})]
    unit = (TimedUnit("x", 1, 1),)
    outputs = [
        OutputSegment(unit, 100, 4800),
        OutputSegment(unit, 4500, 7000),  # 500 ms in a, 1000 ms in b
        OutputSegment(unit, 10500, 11000),  # past the end: nearest is b
    ]
    a, b = assign_segments(outputs, refs)
    assert a == [outputs[0]] and b == [outputs[1], outputs[2]]


def long_form(duration_ms: float = 10_000) -> SpeechInstance:
    segments = (
        ReferenceSegment(0, 4000, "One.", {"de": "Eins ."}),
        ReferenceSegment(5000, 9000, "Two.", {"de": "Zwei ."}),
    )
    return SpeechInstance("long", "en", duration_ms, "One. Two.", {"de": "Eins . Zwei ."}, segments, audio_path=None)


def test_traces_are_relative_to_their_reference_segment() -> None:
    output = StreamOutput(
        "long",
        segments=(
            OutputSegment((TimedUnit("Eins", 3000, 3100), TimedUnit(".", 4100, 4300)), 200, 3900),
            OutputSegment((TimedUnit("Zwei", 7000, 7600), TimedUnit(".", 9500, 10200)), 5100, 8900),
        ),
        displayed=(),
        compute_ms=700,
        audio_ms=10_000,
        calls=(CallRecord(2000, 100), CallRecord(5000, 250), CallRecord(8000, 600), CallRecord(10_000, 700)),
    )
    first, second = scored_segments(output, long_form(), DE, first_index=3)
    assert first.trace.index == 3 and second.trace.index == 4
    assert first.trace.delays_ms == (3000, 4100) and first.trace.elapsed_ms == (3100, 4300)
    assert first.trace.source_length_ms == 4000
    assert first.speech_start_ms == 200
    # Offset 5000 ms: the call that fed it started after 100 ms of compute.
    assert second.trace.delays_ms == (2000, 4500)
    assert second.trace.elapsed_ms == (7600 - 5100, 10200 - 5100)
    assert second.trace.reference == "Zwei ."
    assert second.speech_start_ms == 100
    assert metrics.instance_latency(second.trace).laal_ms == pytest.approx((2000 + 4500 - 2000) / 2)


def test_a_segment_is_scored_against_what_the_engine_heard_in_it_for_the_wrong_script() -> None:
    heard = OutputSegment((TimedUnit("Eins", 3000, 3100),), 200, 3900, source_text="Won.")
    unheard = OutputSegment((TimedUnit("Zwei", 7000, 7600),), 5100, 8900)
    output = StreamOutput("long", (heard, unheard), (), 700, 10_000, (CallRecord(10_000, 700),))
    first, second = scored_segments(output, long_form(), DE, first_index=0)
    assert first.source_text == "Won." and second.source_text == "Two.", "else the reference transcript"
    assert (first.heard_text, second.heard_text) == ("Won.", "")
    assert (first.transcript, second.transcript) == ("One.", "Two.")


def test_source_wer_counts_what_the_engine_heard_against_the_transcripts() -> None:
    heard = OutputSegment((TimedUnit("Eins", 3000, 3100),), 200, 3900, source_text="Won.")
    unheard = OutputSegment((TimedUnit("Zwei", 7000, 7600),), 5100, 8900)
    output = StreamOutput("long", (heard, unheard), (), 700, 10_000, (CallRecord(10_000, 700),))
    segments = scored_segments(output, long_form(), DE, first_index=0)
    # "Won." for "One." is one substitution; the unheard "Two." is one deletion, not a match.
    assert source_wer(segments, EN) == pytest.approx(100.0)
    assert source_wer([], EN) is None


def test_elapsed_origin_on_the_wall_clock_is_the_offset() -> None:
    output = StreamOutput("x", (), (), 1, 1, (CallRecord(6000, 900),), wall_clock=True)
    assert output.elapsed_origin_ms(5000) == 5000
    assert output.elapsed_origin_ms(0) == 0


# ---------------------------------------------------------------------------------------
# The simulated-clock runner, with a scripted session and a scripted perf_counter


class FakeTime:
    def __init__(self) -> None:
        self.now_s = 100.0

    def perf_counter(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


class ScriptedSession:
    """Commits one word at 96 ms and 'works' 40 ms there, then the rest at finish (120 ms)."""

    stats = SessionStats(n_steps=1, n_skipped_steps=0, n_prefill_tokens=0, n_prompt_tokens=0, n_fallbacks=0)

    def __init__(self, fake_time: FakeTime, clock) -> None:
        self.time = fake_time
        self.clock = clock
        self.heard_ms = 0

    def push(self, audio: np.ndarray):
        before = self.heard_ms
        self.heard_ms += len(audio) // SAMPLES_PER_MS
        self.time.now_s += 0.001
        if before < 96 <= self.heard_ms:
            self.time.now_s += 0.040
            return [partial(0, "Hallo", "Hallo", self.heard_ms)]
        return []

    def finish(self):
        self.time.now_s += 0.120
        return [final(0, "Hallo Welt.", " Welt.", self.heard_ms, 0, self.heard_ms)]


def test_simulated_clock_elapsed_accumulates_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_time = FakeTime()
    monkeypatch.setattr(
        runner, "time", types.SimpleNamespace(perf_counter=fake_time.perf_counter, sleep=fake_time.sleep)
    )
    engine = types.SimpleNamespace(session=lambda *a, clock, **k: ScriptedSession(fake_time, clock))
    audio = np.zeros(200 * SAMPLES_PER_MS, dtype=np.float32)
    references = {"de": "Hallo Welt."}
    segments = (ReferenceSegment(0, 200, "Hello world.", references),)
    instance = SpeechInstance("c", "en", 200, "Hello world.", references, segments, audio=audio)
    run = RunSpec("cascade", "sentence", 1000, parse_pairs("en-de")[0])
    output = stream_instance(engine, instance, run, StreamSettings(chunk_ms=20))
    (segment,) = output.segments
    # 5 pushes of 1 ms each, the fifth (audio 100 ms) also 40 ms of work: elapsed 100 + 45.
    assert segment.units[0] == TimedUnit("Hallo", 100, pytest.approx(145))
    # 10 pushes (10 ms) + 40 ms + finish 120 ms.
    assert segment.units[1] == TimedUnit("Welt.", 200, pytest.approx(370))
    assert output.compute_ms == pytest.approx(170)
    assert output.audio_ms == 200
    assert len(output.calls) == 11
    assert output.steps == ScriptedSession.stats


# ---------------------------------------------------------------------------------------
# Mode, policy, knob → options


def test_session_options_map_knobs() -> None:
    assert RunSpec("cascade", "sentence", 500, parse_pairs("en-de")[0]).options == CascadeOptions(step_ms=500)
    assert session_options("cascade", "sentence", 500) == CascadeOptions(step_ms=500, early_sentences=True)
    segment = session_options("cascade", "segment", 300)
    assert segment.early_sentences is False and segment.vad.min_silence_ms == 300
    with pytest.raises(OptionsError, match="no policy 'wait-k'"):
        session_options("cascade", "wait-k", 3)
    with pytest.raises(OptionsError, match="unknown mode"):
        session_options("telepathy", "sentence", 1)
    with pytest.raises(OptionsError, match="step_ms"):
        session_options("cascade", "sentence", 50)


def test_wall_clock_runs_use_the_live_options() -> None:
    simulated = session_options("direct", "wait-k", 2)
    assert simulated.skip_stale_steps is False
    live = live_options(simulated)
    assert live.skip_stale_steps is True and live.max_compute_ratio == DirectOptions.max_compute_ratio
    assert live.policy == WaitK(2) and live_options(session_options("cascade", "sentence", 500)).skip_stale_steps is True


def test_stream_settings_are_checked() -> None:
    with pytest.raises(OptionsError, match="unknown clock"):
        StreamSettings(clock="sundial")
    with pytest.raises(OptionsError, match="chunk_ms"):
        StreamSettings(chunk_ms=1)


class FailingSession(ScriptedSession):
    def push(self, audio: np.ndarray):
        events = super().push(audio)
        if self.heard_ms >= 140:
            raise ValueError("The maximum decoding length must be > 0")
        return events


def test_a_failing_engine_call_ends_only_that_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_time = FakeTime()
    monkeypatch.setattr(
        runner, "time", types.SimpleNamespace(perf_counter=fake_time.perf_counter, sleep=fake_time.sleep)
    )
    engine = types.SimpleNamespace(session=lambda *a, clock, **k: FailingSession(fake_time, clock))
    audio = np.zeros(200 * SAMPLES_PER_MS, dtype=np.float32)
    references = {"de": "Hallo Welt."}
    instance = SpeechInstance("c", "en", 200, "Hello world.", references, (ReferenceSegment(0, 200, "", references),))
    instance = dataclasses.replace(instance, audio=audio)
    run = RunSpec("cascade", "sentence", 1000, parse_pairs("en-de")[0])
    output = stream_instance(engine, instance, run, StreamSettings(chunk_ms=20))
    assert output.error == "ValueError: The maximum decoding length must be > 0"
    assert [u.text for s in output.segments for u in s.units] == ["Hallo"]


def test_wrong_script_is_pooled_over_letters_and_only_for_scripts_it_applies_to() -> None:
    zh = quality_scores(["早上 everyone！", "Bob来了"], ["早上好，大家！", "鲍勃来了"], resolve("zh"),
                        ["Good morning everyone!", "Here is Bob"])  # fmt: skip
    assert zh.wrong_script == pytest.approx(8 / (10 + 5))
    assert quality_scores(["Привет"], ["Привет"], resolve("ru"), ["hello"]).wrong_script is None
    assert quality_scores(["早上好"], ["早上好"], resolve("zh")).wrong_script is None, "no sources, not measured"
