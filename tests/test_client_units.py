"""The desktop client's parts, without a server: addresses, the replay buffer, devices, capture,
caption files, the terminal and plain displays, and command-line mistakes."""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from streamst import wire
from streamst.audio import write_wav
from streamst.client import capture, devices, mic
from streamst.client.buffer import ReplayBuffer, Timeline
from streamst.client.capture import Chunk, FileSource, LevelMeter, MicrophoneSource
from streamst.client.connection import State, Status, stream_url
from streamst.client.devices import InputDevice, resolve_device
from streamst.client.display import (
    BOLD,
    DIM,
    PlainDisplay,
    Snapshot,
    TtyDisplay,
    cell_width,
    status_text,
    wrap_spans,
)
from streamst.client.errors import ClientError, DeviceError
from streamst.client.save import open_writer
from streamst.types import SAMPLE_RATE_HZ, SAMPLES_PER_MS


def _caption(kind="final", segment_id=0, committed="", delta="", tentative="", source="", start_ms=0, end_ms=1000):
    return wire.Caption(
        type=kind,
        segment_id=segment_id,
        committed_text=committed,
        committed_delta=delta or committed,
        tentative_text=tentative,
        source_text=source,
        start_ms=start_ms,
        end_ms=end_ms,
        mode="cascade",
        audio_ms=end_ms,
    )


# server addresses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("127.0.0.1:8765", "ws://127.0.0.1:8765/v1/stream"),
        ("ws://host:1234", "ws://host:1234/v1/stream"),
        ("ws://host:1234/", "ws://host:1234/v1/stream"),
        ("https://captions.example.org", "wss://captions.example.org/v1/stream"),
        ("wss://h/v1/stream?token=abc", "wss://h/v1/stream?token=abc"),
        ("ws://h:1/custom/path", "ws://h:1/custom/path"),
    ],
)
def test_stream_url_completes_what_people_type(typed, url):
    assert stream_url(typed) == url


@pytest.mark.parametrize("typed", ["ftp://host", "ws://", "://"])
def test_stream_url_refuses_what_is_not_a_server(typed):
    with pytest.raises(ClientError, match="not a server address"):
        stream_url(typed)


# the replay buffer --------------------------------------------------------------------------------------


def _pcm(ms: int, value: int = 1) -> bytes:
    return np.full(ms * SAMPLES_PER_MS, value, dtype="<i2").tobytes()


def _send_all(buffer: ReplayBuffer) -> list:
    sent = []
    while (frame := buffer.next_unsent()) is not None:
        buffer.mark_sent(frame)
        sent.append(frame)
    return sent


def test_replay_buffer_places_frames_and_forgets_what_the_server_finished():
    buffer = ReplayBuffer(max_ms=10_000)
    frames = [buffer.append(_pcm(100, i)) for i in range(5)]
    assert [f.position for f in frames] == [i * 100 * SAMPLES_PER_MS for i in range(5)]
    assert _send_all(buffer) == frames and buffer.unsent_samples == 0
    buffer.ack(250 * SAMPLES_PER_MS)  # frames ending by 250 ms are done: the first two
    assert buffer.start_position == 200 * SAMPLES_PER_MS
    assert buffer.rewind() == 200 * SAMPLES_PER_MS
    assert _send_all(buffer) == frames[2:], "a new connection hears everything after the last final"
    assert buffer.dropped_samples == 0


def test_replay_buffer_is_bounded_and_counts_audio_lost_before_it_was_sent():
    buffer = ReplayBuffer(max_ms=1_000)
    for i in range(5):
        buffer.append(_pcm(100, i))
    _send_all(buffer)
    for i in range(10):  # disconnected: 1 s more arrives; the 500 ms already sent make room first
        buffer.append(_pcm(100, 10 + i))
    assert buffer.n_samples == 1_000 * SAMPLES_PER_MS
    assert buffer.dropped_samples == 0
    for i in range(3):
        buffer.append(_pcm(100, 20 + i))
    assert buffer.dropped_samples == 300 * SAMPLES_PER_MS, "unsent audio pushed out of the buffer is lost"
    assert buffer.n_samples == 1_000 * SAMPLES_PER_MS
    assert buffer.end_position == 1_800 * SAMPLES_PER_MS
    assert buffer.rewind() == 800 * SAMPLES_PER_MS


def test_replay_buffer_discard_sent_skips_the_replay():
    buffer = ReplayBuffer(max_ms=5_000)
    for i in range(3):
        buffer.append(_pcm(100, i))
    _send_all(buffer)
    buffer.append(_pcm(100, 9))
    buffer.discard_sent()
    assert buffer.rewind() == 300 * SAMPLES_PER_MS
    assert buffer.unsent_samples == 100 * SAMPLES_PER_MS


def test_replay_buffer_refuses_split_samples():
    with pytest.raises(ValueError, match="whole 2-byte samples"):
        ReplayBuffer(1000).append(b"\x00\x01\x02")


def test_timeline_tells_when_audio_was_captured():
    timeline = Timeline()
    for i in range(1, 11):
        timeline.add(i * 1600, 100.0 + i * 0.1)
    assert timeline.captured_at(1600) == pytest.approx(100.1)
    assert timeline.captured_at(1601) == pytest.approx(100.2)
    assert timeline.captured_at(16_000) == pytest.approx(101.0)
    assert timeline.captured_at(16_001) is None, "not captured yet"


# devices ----------------------------------------------------------------------------------------------------

DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", "ALSA", 2, 44_100),
    InputDevice(3, "USB Audio Device: Mic (hw:1,0)", "ALSA", 1, 48_000),
    InputDevice(5, "pulse", "ALSA", 32, 44_100),
    InputDevice(6, "default", "ALSA", 32, 44_100, is_default=True),
]


@pytest.mark.parametrize(("spec", "index"), [(None, 6), ("3", 3), ("usb", 3), ("PULSE", 5), ("default", 6), (" 0 ", 0)])
def test_resolve_device_by_index_name_or_part_of_it(spec, index):
    assert resolve_device(spec, DEVICES).index == index


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("4", "no input device has index 4; run `streamst-mic --list-devices`"),
        ("webcam", "no input device matches 'webcam'; run `streamst-mic --list-devices`"),
        ("hw:", "matches several input devices (0 'HDA Intel PCH: ALC257 Analog (hw:0,0)', 3 'USB"),
    ],
)
def test_resolve_device_says_what_to_do_when_none_or_several_match(spec, message):
    with pytest.raises(DeviceError) as error:
        resolve_device(spec, DEVICES)
    assert message in str(error.value)


def test_resolve_device_without_devices_or_default():
    with pytest.raises(DeviceError, match="no input device found"):
        resolve_device(None, [])
    with pytest.raises(DeviceError, match="no default input device"):
        resolve_device(None, DEVICES[:2])
    assert devices.describe(DEVICES[3]) == "*  6  default (ALSA), 32 in, 44100 Hz"


# capture ----------------------------------------------------------------------------------------------------


class _FakeInputStream:
    """Calls back from its own thread, as PortAudio does: `n_blocks` blocks, then stays quiet."""

    def __init__(self, n_blocks: int, overflow_every: int, **kwargs) -> None:
        self.kwargs = kwargs
        self.n_blocks = n_blocks
        self.overflow_every = overflow_every
        self.closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        n = self.kwargs["blocksize"]
        for i in range(self.n_blocks):
            block = np.full((n, 1), i / 1000, dtype=np.float32)
            status = SimpleNamespace(input_overflow=i % self.overflow_every == self.overflow_every - 1)
            self.kwargs["callback"](block, n, None, status)

    def stop(self) -> None:
        self.closed.set()

    def close(self) -> None:
        pass


def _fake_sounddevice(monkeypatch, n_blocks: int, overflow_every: int = 1000) -> list[_FakeInputStream]:
    streams: list[_FakeInputStream] = []

    def input_stream(**kwargs):
        streams.append(_FakeInputStream(n_blocks, overflow_every, **kwargs))
        return streams[-1]

    module = SimpleNamespace(InputStream=input_stream, PortAudioError=type("PortAudioError", (Exception,), {}))
    monkeypatch.setattr(capture, "sounddevice", lambda: module)
    return streams


def test_microphone_blocks_reach_the_loop_in_order_at_the_device_rate(monkeypatch):
    streams = _fake_sounddevice(monkeypatch, n_blocks=40, overflow_every=10)
    source = MicrophoneSource(DEVICES[1])

    async def main():
        await source.open()
        chunks = []
        async for chunk in source.chunks():
            chunks.append(chunk)
            if len(chunks) == 40:
                source.stop()
        return chunks

    chunks = asyncio.run(main())
    assert streams[0].kwargs | {"callback": None} == {
        "device": 3,
        "channels": 1,
        "samplerate": 48_000,
        "dtype": "float32",
        "blocksize": 2_400,
        "callback": None,
    }
    assert [round(float(c.audio[0]) * 1000) for c in chunks] == list(range(40))
    assert all(c.audio.shape == (2_400,) for c in chunks)
    assert source.n_overruns == 4, "PortAudio's overflows are reported"
    assert streams[0].closed.wait(5)


def test_microphone_counts_blocks_dropped_when_the_loop_falls_behind(monkeypatch):
    _fake_sounddevice(monkeypatch, n_blocks=30)
    source = MicrophoneSource(DEVICES[1], n_queue_blocks=8)

    async def main():
        await source.open()
        await asyncio.sleep(0.5)  # nobody reads: the queue fills, later blocks are dropped
        source.stop()
        return [chunk async for chunk in source.chunks()]

    chunks = asyncio.run(main())
    assert source.n_overruns == 30 - 8
    assert [round(float(c.audio[0]) * 1000) for c in chunks] == list(range(8)), "the oldest blocks are kept"


def test_microphone_that_only_opens_in_stereo_is_averaged_to_mono(monkeypatch):
    streams = _fake_sounddevice(monkeypatch, n_blocks=3)
    opened = []

    def stereo_only(**kwargs):
        opened.append(kwargs["channels"])
        if kwargs["channels"] != 2:
            raise module.PortAudioError("Invalid number of channels [PaErrorCode -9998]")
        stream = _FakeInputStream(3, 1000, **kwargs)
        block = np.array([[0.2, 0.4]] * 480, dtype=np.float32)
        no_overflow = SimpleNamespace(input_overflow=False)
        stream._run = lambda: [kwargs["callback"](block, 480, None, no_overflow) for _ in range(3)]
        streams.append(stream)
        return stream

    module = capture.sounddevice()
    module.InputStream = stereo_only
    source = MicrophoneSource(DEVICES[0])

    async def main():
        await source.open()
        chunks = []
        async for chunk in source.chunks():
            chunks.append(chunk)
            if len(chunks) == 3:
                source.stop()
        return chunks

    chunks = asyncio.run(main())
    assert opened == [1, 2]
    assert all(c.audio.shape == (480,) and c.audio == pytest.approx(0.3) for c in chunks)


def test_microphone_that_cannot_open_says_how_to_pick_another(monkeypatch):
    module = SimpleNamespace(PortAudioError=type("PortAudioError", (Exception,), {}))

    def refuse(**kwargs):
        raise module.PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    module.InputStream = refuse
    monkeypatch.setattr(capture, "sounddevice", lambda: module)
    with pytest.raises(DeviceError, match=r"cannot open input device 3 'USB Audio Device.*--device"):
        asyncio.run(MicrophoneSource(DEVICES[1]).open())


def test_file_source_plays_at_real_time_and_stops_early(tmp_path):
    path = tmp_path / "tone.wav"
    audio = (0.1 * np.sin(np.arange(SAMPLE_RATE_HZ) * 0.05)).astype(np.float32)
    write_wav(path, audio)

    async def play(stop_after: int | None):
        source = FileSource(path, frame_ms=100)
        await source.open()
        t0 = time.monotonic()
        chunks = []
        async for chunk in source.chunks():
            chunks.append(chunk)
            if stop_after is not None and len(chunks) == stop_after:
                source.stop()
        return chunks, time.monotonic() - t0

    chunks, took_s = asyncio.run(play(None))
    assert len(chunks) == 10 and 0.95 <= took_s < 2.0
    assert np.concatenate([c.audio for c in chunks]) == pytest.approx(audio, abs=1e-4)
    chunks, took_s = asyncio.run(play(3))
    assert len(chunks) == 3 and took_s < 0.6


def test_file_source_reports_a_missing_file_as_bad_input(tmp_path):
    with pytest.raises(ClientError, match="audio file not found"):
        asyncio.run(FileSource(tmp_path / "nope.wav").open())


def test_level_meter_follows_the_input_and_falls_back_slowly():
    meter = LevelMeter()
    assert meter.fraction == 0.0
    meter.update(Chunk(np.full(800, 0.5, dtype=np.float32), captured_s=10.0))
    assert meter.level_dbfs == pytest.approx(20 * math.log10(0.5))
    meter.update(Chunk(np.zeros(800, dtype=np.float32), captured_s=10.5))
    assert meter.level_dbfs == pytest.approx(20 * math.log10(0.5) - 10)
    assert 0 < meter.fraction < 1


# caption files ------------------------------------------------------------------------------------------------


def test_writers_flush_every_final_as_it_arrives(tmp_path):
    paths = {ext: tmp_path / f"out.{ext}" for ext in ("srt", "vtt", "jsonl")}
    writers = {ext: open_writer(path, "en", "zh") for ext, path in paths.items()}
    first = _caption(committed="你好。", source="Hello.", start_ms=1_200, end_ms=2_500)
    for writer in writers.values():
        writer.write(_caption(kind="partial", committed="你", tentative="好"))
        writer.write(first)
        writer.write(_caption(segment_id=1, committed=""))  # a segment that came to nothing
    # still open: what was written must already be on disk
    assert paths["srt"].read_text() == "1\n00:00:01,200 --> 00:00:02,500\n你好。\n\n"
    assert paths["vtt"].read_text() == "WEBVTT\n\n00:00:01.200 --> 00:00:02.500\n你好。\n\n"
    record = json.loads(paths["jsonl"].read_text())
    assert record == {
        "index": 1,
        "segment_id": 0,
        "start_ms": 1200,
        "end_ms": 2500,
        "text": "你好。",
        "source_text": "Hello.",
        "source": "en",
        "target": "zh",
        "mode": "cascade",
        "fallback_reason": "",
    }
    for writer in writers.values():
        writer.write(_caption(segment_id=2, committed="再见。", start_ms=3_000, end_ms=3_900))
        writer.close()
    assert "2\n00:00:03,000 --> 00:00:03,900\n再见。\n" in paths["srt"].read_text()
    assert len(paths["jsonl"].read_text().splitlines()) == 2


def test_writer_refuses_an_unknown_format_or_folder(tmp_path):
    with pytest.raises(ClientError, match=r"must end in \.srt, \.vtt, \.jsonl"):
        open_writer(tmp_path / "out.txt")
    with pytest.raises(ClientError, match="cannot write"):
        open_writer(tmp_path / "missing" / "out.srt")


# displays -------------------------------------------------------------------------------------------------


def test_wrapping_counts_wide_characters_twice():
    assert cell_width("你好ab") == 6
    lines = wrap_spans([("", "一二三四五六七八九十")], 8)
    assert ["".join(t for _, t in line) for line in lines] == ["一二三四", "五六七八", "九十"]
    lines = wrap_spans([("A", "the quick brown "), ("B", "fox jumps")], 10)
    assert [[t.strip() for _, t in line] for line in lines] == [["the", "quick"], ["brown", "fox"], ["jumps"]]
    assert all(sum(cell_width(t.rstrip()) for _, t in line) <= 10 for line in lines)


def _snapshot(state=State.CONNECTED, **status_fields) -> Snapshot:
    status = Status(state, "127.0.0.1:8765", mode="cascade", **status_fields)
    return Snapshot(status, "en→zh", level_dbfs=-20.0, level_fraction=2 / 3, n_overruns=0)


def test_tty_display_colours_committed_text_dims_the_tentative_tail_and_keeps_a_status_line():
    out = io.StringIO()
    display = TtyDisplay(out, lambda: _snapshot(commit_lag_s=1.25), show_source=True, columns=lambda: 120)
    display.on_caption(_caption("partial", committed="然而，", tentative="由于", source="However, due to"))
    live = out.getvalue()
    assert f"{BOLD}然而，" in live and f"{DIM}由于" in live
    assert "However, due to" in live
    status_line = live.rsplit("\n", 1)[-1]
    assert "connected" in status_line and "en→zh cascade" in status_line
    assert "last commit 1.2 s behind" in status_line and "█" in status_line and "-20 dB" in status_line
    display.on_caption(_caption("final", committed="然而，由于通信缓慢，", source="However, due to the slow"))
    display.close("stopped · 1 caption")
    text = out.getvalue()
    assert text.count("\x1b[2A") >= 1, "the live area is redrawn in place"
    assert text.endswith("stopped · 1 caption\n\x1b[?25h")


def test_tty_status_line_fits_the_terminal_and_says_when_reconnecting():
    out = io.StringIO()
    retry_at_s = time.monotonic() + 2
    snapshot = _snapshot(
        State.RECONNECTING, detail="the connection dropped", attempt=3, retry_at_s=retry_at_s, buffered_ms=4200
    )
    display = TtyDisplay(out, lambda: snapshot, columns=lambda: 200)
    display.refresh()
    line = out.getvalue().rsplit("\r", 1)[-1]
    assert "reconnecting" in line and "attempt 3, next try in 2 s" in line and "4.2 s of audio buffered" in line
    display = TtyDisplay(out := io.StringIO(), lambda: snapshot, columns=lambda: 30)
    display.refresh()
    visible = out.getvalue().rsplit("\r", 1)[-1]
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", visible)
    assert cell_width(visible) <= 29 and visible.endswith("…")


def test_status_text_in_every_state():
    assert status_text(_snapshot(State.CONNECTING)) == ("connecting", "127.0.0.1:8765")
    word, rest = status_text(Snapshot(_snapshot().status, "en→zh", -math.inf, 0.0, 2, stopping=True))
    assert word == "stopping" and "2 overruns" in rest
    word, rest = status_text(_snapshot(dropped_ms=2500))
    assert "2.5 s of audio lost" in rest


def test_plain_display_prints_finals_as_lines_and_connection_changes_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    snapshot = _snapshot()
    display = PlainDisplay(out, err, lambda: snapshot, show_source=True)
    display.on_status(snapshot.status)
    display.on_status(snapshot.status)  # unchanged: said once
    display.on_caption(_caption("partial", committed="然而", tentative="由于"))
    display.on_caption(_caption("final", committed="然而，由于通信缓慢，", source="However, due to the slow"))
    display.on_caption(_caption("final", segment_id=1, committed=""))
    display.refresh()
    display.close("stopped · 1 caption")
    assert out.getvalue() == "  [However, due to the slow]\n然而，由于通信缓慢，\n"
    assert err.getvalue() == (
        "streamst-mic: connected: en→zh cascade · 127.0.0.1:8765\nstreamst-mic: stopped · 1 caption\n"
    )
    assert "\x1b" not in out.getvalue() + err.getvalue()


# command line ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "zh"], "give the spoken and the caption language"),
        (["-s", "en", "-t", "zh", "--file", "a.wav", "--device", "1"], "give --device or --file, not both"),
        (["-s", "en", "-t", "zh", "--save", "out.txt", "--file", "x.wav"], "must end in .srt, .vtt, .jsonl"),
        (["-s", "en", "-t", "zh", "--file", "missing.wav"], "audio file not found"),
        (["-s", "en", "-t", "zh", "--server", "ftp://x", "--file", "x.wav"], "is not a server address"),
        (["-s", "en", "-t", "zh", "--mode", "fast"], "invalid choice: 'fast'"),
        (["-s", "en", "-t", "zh", "--max-buffer-s", "0.1", "--file", "x.wav"], "must hold at least 1 s"),
    ],
)
def test_command_line_mistakes_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _exit_status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamst-mic: error: ") and message in err, err


def _exit_status(argv: list[str]) -> int:
    try:
        return mic.main(argv)
    except SystemExit as e:  # argparse's own checks
        return e.code


def test_unknown_device_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr(devices, "list_input_devices", lambda: DEVICES)
    assert mic.main(["-s", "en", "-t", "zh", "--device", "webcam"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "streamst-mic: error: no input device matches 'webcam'; run `streamst-mic --list-devices` to see them\n"
    )


def test_list_devices(monkeypatch, capsys):
    monkeypatch.setattr(devices, "list_input_devices", lambda: DEVICES)
    assert mic.main(["--list-devices"]) == 0
    assert capsys.readouterr().out.splitlines() == [devices.describe(d) for d in DEVICES]
