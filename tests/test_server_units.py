"""The server's pure parts: the outbox (slow readers), the model scheduler (fairness, bounds), the
FunASR message rules, PCM framing, policies and limits. No sockets, no models."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time

import pytest

from streamst.errors import OptionsError
from streamst.server import funasr_messages as funasr
from streamst.server import policies
from streamst.server.limits import Admission, Limits
from streamst.server.outbox import Outbox
from streamst.server.scheduler import ModelScheduler
from streamst.sessions.cascade import CascadeOptions
from streamst.types import FinalEvent, PartialEvent
from streamst.wire import ErrorCode, ProtocolError


def _partial(
    segment_id: int, committed: str = "", delta: str = "", tentative: str = "", source: str = ""
) -> PartialEvent:
    return PartialEvent(segment_id, source, committed, delta, tentative, 0, 1000, "cascade", 1000, 0.0)


def _final(segment_id: int, committed: str, delta: str | None = None, source: str = "") -> FinalEvent:
    delta = committed if delta is None else delta
    return FinalEvent(segment_id, source, committed, delta, "", 0, 1000, "cascade", 1000, 0.0)


# outbox ------------------------------------------------------------------------------------------------


def _drain(outbox: Outbox) -> list:
    async def take_all():
        outbox.close()
        items = []
        while (item := await outbox.get()) is not None:
            items.append(item)
        return items

    return asyncio.run(take_all())


def test_outbox_replaces_stale_partials_but_keeps_committed_deltas():
    outbox = Outbox(max_pending=10, on_overflow=lambda: None)
    outbox.put_event(_partial(0, "A", "A", "b c"))
    outbox.put_event(_partial(0, "A B", " B", "c"))
    outbox.put_event(_partial(0, "A B", "", "c d"))
    items = _drain(outbox)
    assert len(items) == 1 and outbox.n_dropped == 2
    assert items[0].committed_text == "A B" and items[0].committed_delta == "A B" and items[0].tentative_text == "c d"


def test_outbox_merges_a_waiting_partial_into_the_final_of_its_segment():
    outbox = Outbox(max_pending=10, on_overflow=lambda: None)
    outbox.put_event(_partial(0, "Hello", "Hello", "wor"))
    outbox.put_event(_final(0, "Hello world.", " world."))
    outbox.put_event(_partial(1, "", "", "", source="next"))
    items = _drain(outbox)
    assert [type(i).__name__ for i in items] == ["FinalEvent", "PartialEvent"]
    assert items[0].committed_delta == "Hello world."


def test_outbox_never_drops_finals_or_control_text_and_reports_overflow():
    overflowed = []
    outbox = Outbox(max_pending=3, on_overflow=lambda: overflowed.append(True))
    outbox.put_text("ready")
    for i in range(4):
        outbox.put_event(_final(i, f"s{i}"))
    assert overflowed == [True]
    items = _drain(outbox)
    assert items[0] == "ready" and [i.committed_text for i in items[1:]] == ["s0", "s1", "s2", "s3"]


def test_outbox_ignores_items_after_close():
    outbox = Outbox(max_pending=3, on_overflow=lambda: None)
    outbox.close()
    outbox.put_text("late")
    outbox.put_event(_final(0, "late"))
    assert _drain(outbox) == []


# scheduler --------------------------------------------------------------------------------------------


def test_scheduler_bounds_concurrent_calls_and_serves_in_arrival_order():
    running = []
    peak = []
    order = []
    lock = threading.Lock()

    def call(name):
        with lock:
            running.append(name)
            peak.append(len(running))
        time.sleep(0.02)
        with lock:
            running.remove(name)
            order.append(name)
        return name

    async def main():
        scheduler = ModelScheduler(concurrency=1)
        tasks = []
        for name in "abcdef":
            tasks.append(asyncio.create_task(scheduler.run(lambda name=name: call(name))))
            await asyncio.sleep(0)
        results = await asyncio.gather(*tasks)
        scheduler.shutdown()
        return results

    assert asyncio.run(main()) == list("abcdef")
    assert max(peak) == 1
    assert order == list("abcdef")


def test_scheduler_serves_the_least_served_stream_first():
    order = []
    gate = threading.Event()

    def call(name, hold_s=0.0):
        gate.wait(5)
        time.sleep(hold_s)
        order.append(name)

    async def main():
        scheduler = ModelScheduler(concurrency=1)
        # Both streams are open; the flooder has already used 0.2 s of compute, the speaker almost none.
        await scheduler.run(lambda: None, stream="speaker")
        await scheduler.run(lambda: time.sleep(0.2), stream="flooder")
        blocker = asyncio.create_task(scheduler.run(lambda: call("blocker"), stream="other"))
        await asyncio.sleep(0.05)
        flooder = asyncio.create_task(scheduler.run(lambda: call("flooder"), stream="flooder"))
        await asyncio.sleep(0)
        speaker = asyncio.create_task(scheduler.run(lambda: call("speaker"), stream="speaker"))
        await asyncio.sleep(0)
        assert scheduler.n_waiting == 2
        gate.set()
        await asyncio.gather(blocker, flooder, speaker)
        assert scheduler.utilisation() > 0.0
        scheduler.forget("flooder")
        scheduler.shutdown()

    asyncio.run(main())
    # The speaker arrived last but had used nothing: it goes before the flooder.
    assert order == ["blocker", "speaker", "flooder"]


def test_scheduler_utilisation_is_the_busy_share_of_the_window():
    async def main():
        scheduler = ModelScheduler(concurrency=1)
        await scheduler.run(lambda: time.sleep(0.3))
        now = time.monotonic()
        busy = scheduler.utilisation(now)
        scheduler.shutdown()
        return busy

    assert 0.3 / 10 <= asyncio.run(main()) < 0.2


def test_scheduler_keeps_the_slot_until_a_cancelled_call_is_done():
    started = threading.Event()
    release = threading.Event()
    overlap = []

    def slow():
        started.set()
        release.wait(5)

    def fast():
        overlap.append(not release.is_set())

    async def main():
        scheduler = ModelScheduler(concurrency=1)
        first = asyncio.create_task(scheduler.run(slow))
        await asyncio.to_thread(started.wait, 5)
        second = asyncio.create_task(scheduler.run(fast))
        first.cancel()
        await asyncio.sleep(0.1)
        release.set()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        scheduler.shutdown()

    asyncio.run(main())
    assert overlap == [False]


def test_scheduler_does_not_block_the_event_loop():
    async def main():
        scheduler = ModelScheduler(concurrency=1)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        await scheduler.run(lambda: time.sleep(0.3))
        ticking.cancel()
        scheduler.shutdown()
        return ticks

    assert asyncio.run(main()) >= 10


# FunASR messages ----------------------------------------------------------------------------------------


def test_funasr_config_from_the_python_client_first_message():
    first = {
        "mode": "2pass", "chunk_size": [5, 10, 5], "chunk_interval": 10, "encoder_chunk_look_back": 4,
        "decoder_chunk_look_back": 0, "audio_fs": 16000, "wav_name": "demo", "wav_format": "pcm",
        "is_speaking": True, "hotwords": "", "itn": True,
    }  # fmt: skip
    config = funasr.parse_config(first)
    assert config == funasr.FunasrConfig("2pass", "demo", True, 16000, "pcm", None, None)


def test_funasr_config_languages_and_the_html5_wav_format():
    config = funasr.parse_config({"mode": "offline", "wav_format": "PCM", "svs_lang": "auto", "target_lang": "de"})
    assert (config.wav_format, config.source, config.target) == ("pcm", None, "de")
    assert funasr.parse_config({"svs_lang": "zh", "source_lang": "en"}).source == "en"
    assert funasr.parse_config({"svs_lang": "ja"}).source == "ja"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"mode": "streaming"}, ErrorCode.UNSUPPORTED_MODE),
        ({"audio_fs": "16k"}, ErrorCode.UNSUPPORTED_SAMPLE_RATE),
        ({"wav_format": "mp3"}, ErrorCode.UNSUPPORTED_SAMPLE_FORMAT),
    ],
)
def test_funasr_config_errors(data, code):
    with pytest.raises(ProtocolError) as raised:
        funasr.parse_config(data)
    assert raised.value.code == code


def test_funasr_end_of_speech():
    assert funasr.is_end_of_speech({"is_speaking": False})
    assert funasr.is_end_of_speech({"is_end": True})
    assert not funasr.is_end_of_speech({"is_speaking": True, "mode": "2pass"})


def _render_all(renderer, events):
    messages = [m for e in events for m in renderer.render(e)]
    return messages + renderer.end()


def _client_view(messages) -> str:
    """What funasr_wss_client.py shows in 2pass mode: online appended, replaced by offline."""
    online, offline = "", ""
    for m in messages:
        if m["mode"] == "2pass-online":
            online += m["text"]
        elif m["mode"] == "2pass-offline":
            online = ""
            offline += m["text"]
    return offline + online


def test_funasr_2pass_deltas_then_whole_segments_with_spaces_between_words():
    renderer = funasr.FunasrRenderer("2pass", "demo", space_separated=True)
    events = [
        _partial(0, source="Guten"),
        _partial(0, "Good", "Good", "morn", source="Guten Morgen"),
        _final(0, "Good morning.", " morning.", source="Guten Morgen."),
        _final(1, "How are you?", source="Wie geht's?"),
        _final(2, "", "", source=""),
    ]
    messages = _render_all(renderer, events)
    assert [(m["mode"], m["text"]) for m in messages] == [
        ("2pass-online", ""),
        ("2pass-online", "Good"),
        ("2pass-online", " morning."),
        ("2pass-offline", "Good morning."),
        ("2pass-online", " How are you?"),
        ("2pass-offline", " How are you?"),
        ("2pass-offline", ""),
    ]
    assert messages[-1] == {"mode": "2pass-offline", "text": "", "wav_name": "demo", "is_final": True, "is_end": True}
    assert all("timestamp" not in m for m in messages)
    assert all(m["is_final"] is (m["mode"] == "2pass-offline") for m in messages)
    assert messages[1]["source_text"] == "Guten Morgen"
    assert _client_view(messages) == "Good morning. How are you?"


def test_funasr_chinese_target_gets_no_spaces():
    renderer = funasr.FunasrRenderer("2pass", "demo", space_separated=False)
    messages = _render_all(renderer, [_final(0, "你好。"), _final(1, "再见。")])
    assert _client_view(messages) == "你好。再见。"


def test_funasr_online_mode_sends_only_deltas():
    renderer = funasr.FunasrRenderer("online", "mic", space_separated=True)
    messages = _render_all(renderer, [_partial(0, source="x"), _final(0, "One."), _final(1, "Two.")])
    assert [(m["mode"], m["text"]) for m in messages] == [("online", "One."), ("online", " Two."), ("online", "")]
    assert messages[-1]["is_end"] is True


def test_funasr_offline_mode_sends_the_whole_text_at_the_end():
    renderer = funasr.FunasrRenderer("offline", "file", space_separated=True)
    messages = _render_all(renderer, [_final(0, "One."), _final(1, "Two.")])
    assert messages == [
        {"mode": "offline", "text": "One. Two.", "wav_name": "file", "is_final": False},
        {"mode": "offline", "text": "", "wav_name": "file", "is_final": True, "is_end": True},
    ]


def test_funasr_error_in_the_acknowledgement_shape():
    renderer = funasr.FunasrRenderer("2pass", "demo", space_separated=True)
    (message,) = renderer.error(ProtocolError(ErrorCode.UNSUPPORTED_LANGUAGE, "unknown language 'xx'"))
    assert message["is_end"] is True and message["is_final"] is False and message["text"] == ""
    assert message["error_code"] == "unsupported_language" and "xx" in message["error"]
    json.dumps(message)


def test_funasr_offline_error_keeps_what_was_translated():
    renderer = funasr.FunasrRenderer("offline", "file", space_separated=True)
    _render_all(renderer, [_final(0, "One.")])
    text, ack = renderer.error(ProtocolError(ErrorCode.FINISH_TIMEOUT, "the translation after 1.0 s is missing"))
    assert text == {"mode": "offline", "text": "One.", "wav_name": "file", "is_final": False}
    assert ack["is_end"] is True and ack["error_code"] == "finish_timeout"


def _wav_header(n_data_bytes: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + n_data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", n_data_bytes)
    )


def test_pcm_reader_skips_a_wav_header_split_across_frames():
    pcm = bytes(range(200))
    stream = _wav_header(len(pcm)) + pcm
    reader = funasr.PcmReader()
    out = b"".join(reader.read(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out == pcm


def test_pcm_reader_joins_samples_split_across_frames():
    reader = funasr.PcmReader()
    assert reader.read(b"\x01\x02\x03") == b"\x01\x02"
    assert reader.read(b"\x04\x05") == b"\x03\x04"
    assert reader.read(b"\x06") == b"\x05\x06"


def test_pcm_reader_passes_plain_pcm_that_starts_like_riff_only_briefly():
    reader = funasr.PcmReader()
    assert reader.read(b"RI") == b""
    assert reader.read(b"xy\x00\x00") == b"RIxy\x00\x00"


def test_pcm_reader_rejects_a_riff_without_data():
    reader = funasr.PcmReader()
    with pytest.raises(ProtocolError):
        reader.read(b"RIFF" + b"\x00" * (funasr.WAV_HEADER_MAX_BYTES + 8))


# policies and limits --------------------------------------------------------------------------------------


def test_cascade_choice_takes_its_sentence_policy_and_skips_stale_steps_when_live():
    choice = policies.choose("cascade", None, None, None, realtime=True)
    assert (choice.mode, choice.policy, choice.knob, choice.step_ms) == ("cascade", "sentence", 1000, 1000)
    assert choice.options == CascadeOptions(skip_stale_steps=True)
    assert policies.choose("cascade", None, None, 400, realtime=False).options == CascadeOptions(step_ms=400)
    assert policies.choose("cascade", "sentence", 400, None, realtime=False).options == CascadeOptions(step_ms=400)
    segment = policies.choose("cascade", "segment", 800, None, realtime=False)
    assert (segment.options.early_sentences, segment.options.vad.min_silence_ms) == (False, 800)


def test_direct_choice_fills_in_the_policy_and_its_knob():
    default = policies.choose("direct", None, None, None)
    assert (default.policy, default.knob, default.step_ms) == ("la", 2.0, 500)
    assert policies.choose("direct", "wait-k", None, None).knob == 3.0
    assert policies.choose("direct", "la", 3, None).knob == 3.0
    assert policies.choose("direct", "confidence", None, 500).options.step_ms == 500


@pytest.mark.parametrize(
    ("mode", "policy", "knob", "step_ms", "code"),
    [
        ("telepathy", None, None, None, ErrorCode.UNSUPPORTED_MODE),
        ("cascade", "wait-k", None, None, ErrorCode.UNSUPPORTED_POLICY),
        ("cascade", None, 3, None, ErrorCode.BAD_OPTION),
        ("cascade", "sentence", 600, 700, ErrorCode.BAD_OPTION),
        ("direct", "la", "two", None, ErrorCode.BAD_OPTION),
        ("direct", "wait-q", None, None, ErrorCode.UNSUPPORTED_POLICY),
        ("direct", "la", 1, None, ErrorCode.BAD_OPTION),
        ("direct", "confidence", 1.5, None, ErrorCode.BAD_OPTION),
        ("cascade", None, None, 50, ErrorCode.BAD_OPTION),
        ("direct", None, None, 20_000, ErrorCode.BAD_OPTION),
    ],
)
def test_session_choice_errors(mode, policy, knob, step_ms, code):
    with pytest.raises(ProtocolError) as raised:
        policies.choose(mode, policy, knob, step_ms)
    assert raised.value.code == code


def test_policies_are_described_per_mode():
    described = policies.describe()
    assert {mode: {name: p["knob"]["name"] for name, p in spec["policies"].items()} for mode, spec in described.items()} == {
        "direct": {"la": "n", "wait-k": "k", "confidence": "tau"},
        "cascade": {"sentence": "step_ms", "segment": "min_silence_ms"},
    }
    assert described["direct"]["default_policy"] == "la"
    assert described["direct"]["policies"]["confidence"]["knob"] | {"help": ""} == {
        "name": "tau", "type": "number", "default": 0.6, "minimum": 0.0, "maximum": 1.0, "exclusive": True, "help": ""}


def test_limits_validation():
    with pytest.raises(OptionsError):
        Limits(max_sessions=0)
    with pytest.raises(OptionsError):
        Limits(max_frame_bytes=100)
    assert Limits(max_frame_bytes=8192).socket_max_size == 16384


def test_admission_counts_and_reclaims_slots_of_vanished_handshakes():
    gone = set()
    admission = Admission(2, is_gone=lambda holder: holder in gone)
    assert admission.admit("a") and admission.admit("b")
    assert not admission.admit("c")
    gone.add("a")
    assert admission.admit("c")
    admission.release("b")
    assert admission.n_active == 1
