"""Audio I/O on real speech: decoding every common format, resampling, PCM, framing, synthesis."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from streamst import audio as audio_module
from streamst.audio import (
    StreamResampler,
    decode_audio,
    float32_bytes_to_array,
    float32_to_pcm16,
    iter_frames,
    pcm16_to_float32,
    peak_dbfs,
    resample,
    rms_dbfs,
    synthesize_speech,
    write_wav,
)
from streamst.errors import AudioError
from streamst.types import SAMPLE_RATE_HZ

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLEURS_MINI = SHARED_DATA / "fleurs-mini"
FLEURS_CLIP_ID = "fleurs-en-000"
MAX_LAG_SAMPLES = 160  # 10 ms at 16 kHz: codec delay left after decoding, if any
MIN_CORRELATION = 0.9
DURATION_TOLERANCE_S = 0.05

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg executable is not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def fleurs_wav() -> Path:
    path = FLEURS_MINI / "audio" / f"{FLEURS_CLIP_ID}.wav"
    if not path.is_file():
        pytest.skip(f"evaluation audio not found at {path} (../shared/data is absent)")
    return path


@pytest.fixture(scope="module")
def fleurs_duration_s(fleurs_wav: Path) -> float:
    with open(FLEURS_MINI / "manifest.jsonl", encoding="utf-8") as manifest:
        for line in manifest:
            record = json.loads(line)
            if record["id"] == FLEURS_CLIP_ID:
                return float(record["duration_s"])
    raise AssertionError(f"{FLEURS_CLIP_ID} is not in the manifest")


@pytest.fixture(scope="module")
def fleurs_audio(fleurs_wav: Path) -> np.ndarray:
    return decode_audio(fleurs_wav)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 kHz mono speech WAV: the FLEURS clip, or espeak-ng speech where ../shared/data is absent."""
    path = FLEURS_MINI / "audio" / f"{FLEURS_CLIP_ID}.wav"
    if path.is_file():
        return path
    if shutil.which("espeak-ng") is None:
        pytest.skip("neither ../shared/data nor espeak-ng is available to provide speech")
    synthesized = tmp_path_factory.mktemp("speech") / "speech.wav"
    synthesize_speech("However, due to the slow communication channels, styles could lag behind.", synthesized)
    return synthesized


@pytest.fixture(scope="module")
def speech_audio(speech_wav: Path) -> np.ndarray:
    return decode_audio(speech_wav)


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = MAX_LAG_SAMPLES) -> float:
    """Highest normalised correlation of two signals over lags in [-max_lag, max_lag]."""
    n = min(a.size, b.size) - 2 * max_lag
    reference = a[max_lag : max_lag + n].astype(np.float64)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        shifted = b[max_lag + lag : max_lag + lag + n].astype(np.float64)
        denominator = np.linalg.norm(reference) * np.linalg.norm(shifted)
        if denominator > 0:
            best = max(best, float(reference @ shifted) / denominator)
    return best


def transcode(source: Path, target: Path, ffmpeg_args: list[str]) -> Path:
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *ffmpeg_args, str(target)]
    subprocess.run(command, check=True, capture_output=True)
    return target


def test_decode_real_wav_matches_manifest_duration(fleurs_audio: np.ndarray, fleurs_duration_s: float) -> None:
    assert fleurs_audio.dtype == np.float32
    assert fleurs_audio.ndim == 1
    assert fleurs_audio.size / SAMPLE_RATE_HZ == pytest.approx(fleurs_duration_s, abs=1e-3)
    assert np.abs(fleurs_audio).max() <= 1.0


def test_decode_16k_wav_is_sample_exact(speech_wav: Path, speech_audio: np.ndarray) -> None:
    expected, rate_hz = soundfile.read(speech_wav, dtype="float32")
    assert rate_hz == SAMPLE_RATE_HZ
    np.testing.assert_array_equal(speech_audio, expected)


def test_decode_resamples_to_requested_rate(speech_wav: Path, speech_audio: np.ndarray) -> None:
    audio_8k = decode_audio(speech_wav, sample_rate_hz=8000)
    assert audio_8k.size == pytest.approx(speech_audio.size / 2, abs=2)


@needs_ffmpeg
@pytest.mark.parametrize(
    ("suffix", "ffmpeg_args"),
    [
        ("flac", ["-c:a", "flac"]),
        ("ogg", ["-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "64k"]),
        ("mp3", ["-c:a", "libmp3lame", "-q:a", "2"]),
        ("m4a", ["-ar", "44100", "-ac", "2", "-c:a", "aac", "-b:a", "128k"]),
    ],
)
def test_transcoded_files_decode_to_the_same_speech(
    tmp_path: Path, speech_wav: Path, speech_audio: np.ndarray, suffix: str, ffmpeg_args: list[str]
) -> None:
    path = transcode(speech_wav, tmp_path / f"clip.{suffix}", ffmpeg_args)
    decoded = decode_audio(path)
    assert decoded.dtype == np.float32
    assert decoded.ndim == 1
    assert abs(decoded.size - speech_audio.size) / SAMPLE_RATE_HZ < DURATION_TOLERANCE_S
    assert best_correlation(speech_audio, decoded) > MIN_CORRELATION


@needs_ffmpeg
def test_flac_is_lossless(tmp_path: Path, speech_wav: Path, speech_audio: np.ndarray) -> None:
    decoded = decode_audio(transcode(speech_wav, tmp_path / "clip.flac", ["-c:a", "flac"]))
    np.testing.assert_array_equal(decoded, speech_audio)


def test_stereo_is_averaged_not_summed(tmp_path: Path) -> None:
    time_s = np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    tone = (0.8 * np.sin(2 * np.pi * 440 * time_s)).astype(np.float32)
    soundfile.write(tmp_path / "stereo.wav", np.stack([tone, -tone / 2], axis=1), SAMPLE_RATE_HZ, subtype="FLOAT")
    decoded = decode_audio(tmp_path / "stereo.wav")
    np.testing.assert_allclose(decoded, tone / 4, atol=1e-5)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=re.escape(f"audio file not found: {missing}")):
        decode_audio(missing)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a directory"):
        decode_audio(tmp_path)


def test_garbage_bytes_name_the_file_and_the_formats(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match=r"cannot decode .*garbage\.wav as audio: .*give a wav, flac") as excinfo:
        decode_audio(garbage)
    assert excinfo.value.__cause__ is not None
    assert "\n" not in str(excinfo.value)


def test_empty_wav_holds_no_audio(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), SAMPLE_RATE_HZ, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"empty\.wav holds no audio"):
        decode_audio(empty)


def test_zero_byte_file_holds_no_audio(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp3"
    empty.touch()
    with pytest.raises(AudioError, match="holds no audio"):
        decode_audio(empty)


@needs_ffmpeg
def test_file_without_audio_stream(tmp_path: Path) -> None:
    image = tmp_path / "picture.png"
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=8x8", "-frames:v", "1"]
    subprocess.run([*command, str(image)], check=True, capture_output=True)
    with pytest.raises(AudioError, match="has no audio stream"):
        decode_audio(image)


@needs_ffmpeg
def test_damaged_mp3_decodes_what_it_can_without_ffmpeg_noise(
    tmp_path: Path, speech_wav: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    mp3 = transcode(speech_wav, tmp_path / "clip.mp3", ["-c:a", "libmp3lame"]).read_bytes()
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(mp3[: len(mp3) // 2] + np.random.default_rng(1).bytes(3000) + mp3[len(mp3) // 2 :])
    capfd.readouterr()
    decoded = decode_audio(damaged)
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"OggS" + np.random.default_rng(2).bytes(2000))
    with pytest.raises(AudioError):
        decode_audio(garbage)
    assert decoded.size > SAMPLE_RATE_HZ
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_resample_lengths() -> None:
    signal = np.random.default_rng(3).uniform(-0.5, 0.5, 48_000).astype(np.float32)
    assert resample(signal, 48_000, 16_000).size == 16_000
    assert resample(signal, 48_000, 44_100).size == 44_100
    assert resample(signal, 16_000, 16_000) is signal
    with pytest.raises(ValueError, match="positive"):
        resample(signal, 0, 16_000)


def test_resample_rejects_stereo_arrays() -> None:
    with pytest.raises(ValueError, match=r"\(n_samples,\)"):
        resample(np.zeros((2, 100), dtype=np.float32), 48_000, 16_000)


@pytest.mark.parametrize("from_hz", [48_000, 44_100, 22_050])
def test_stream_resampler_matches_whole_signal_in_uneven_chunks(from_hz: int) -> None:
    rng = np.random.default_rng(4)
    time_s = np.arange(2 * from_hz) / from_hz
    signal = (0.5 * np.sin(2 * np.pi * 300 * time_s) + 0.05 * rng.standard_normal(time_s.size)).astype(np.float32)
    resampler = StreamResampler(from_hz, SAMPLE_RATE_HZ)
    pieces: list[np.ndarray] = []
    start = 0
    for size in rng.integers(1, 5000, size=10_000):
        if start >= signal.size:
            break
        pieces.append(resampler.push(signal[start : start + size]))
        start += int(size)
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    expected_n_samples = signal.size * SAMPLE_RATE_HZ / from_hz
    assert streamed.dtype == np.float32
    assert abs(streamed.size - expected_n_samples) <= 2
    whole = resample(signal, from_hz, SAMPLE_RATE_HZ)
    n = min(streamed.size, whole.size)
    np.testing.assert_allclose(streamed[:n], whole[:n], atol=1e-4)


def test_stream_resampler_starts_afresh_after_flush() -> None:
    resampler = StreamResampler(48_000)
    chunk = np.full(4800, 0.25, dtype=np.float32)
    first = np.concatenate([resampler.push(chunk), resampler.flush()])
    second = np.concatenate([resampler.push(chunk), resampler.flush()])
    np.testing.assert_array_equal(first, second)
    assert first.size == 1600


def test_stream_resampler_passes_through_at_equal_rates() -> None:
    resampler = StreamResampler(SAMPLE_RATE_HZ, SAMPLE_RATE_HZ)
    chunk = np.linspace(-1, 1, 321, dtype=np.float32)
    np.testing.assert_array_equal(resampler.push(chunk), chunk)
    assert resampler.flush().size == 0


def test_pcm16_round_trip_is_exact() -> None:
    samples = np.random.default_rng(5).integers(-32768, 32768, 1000, dtype=np.int16)
    samples[:2] = [-32768, 32767]
    data = samples.astype("<i2").tobytes()
    audio = pcm16_to_float32(data)
    assert audio.dtype == np.float32
    assert audio.shape == (1000,)
    assert audio.min() >= -1.0 and audio.max() < 1.0
    assert float32_to_pcm16(audio) == data


def test_pcm16_odd_byte_count() -> None:
    with pytest.raises(AudioError, match="3 bytes"):
        pcm16_to_float32(b"\x00\x01\x02")


def test_pcm16_empty() -> None:
    assert pcm16_to_float32(b"").shape == (0,)
    assert float32_to_pcm16(np.zeros(0, dtype=np.float32)) == b""


def test_float32_to_pcm16_clips() -> None:
    data = float32_to_pcm16(np.array([2.0, -2.0, 1.0, -1.0, 0.0], dtype=np.float32))
    assert np.frombuffer(data, dtype="<i2").tolist() == [32767, -32768, 32767, -32768, 0]


def test_float32_bytes_round_trip_and_errors() -> None:
    audio = np.linspace(-1, 1, 99, dtype=np.float32)
    decoded = float32_bytes_to_array(audio.astype("<f4").tobytes())
    np.testing.assert_array_equal(decoded, audio)
    decoded[0] = 0.5
    with pytest.raises(AudioError, match="6 bytes"):
        float32_bytes_to_array(b"\x00" * 6)
    with pytest.raises(AudioError, match="NaN"):
        float32_bytes_to_array(np.array([0.0, np.nan], dtype="<f4").tobytes())


def test_iter_frames() -> None:
    audio = np.arange(1000, dtype=np.float32)
    frames = list(iter_frames(audio, frame_ms=20))
    assert [frame.size for frame in frames] == [320, 320, 320, 40]
    np.testing.assert_array_equal(np.concatenate(frames), audio)
    assert list(iter_frames(np.zeros(0, dtype=np.float32), frame_ms=20)) == []
    with pytest.raises(ValueError, match="frame_ms"):
        iter_frames(audio, frame_ms=0)


def test_write_wav_round_trip(tmp_path: Path) -> None:
    audio = np.random.default_rng(6).uniform(-0.9, 0.9, 8000).astype(np.float32)
    write_wav(tmp_path / "out.wav", audio)
    info = soundfile.info(tmp_path / "out.wav")
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE_HZ, 1, "PCM_16")
    np.testing.assert_allclose(decode_audio(tmp_path / "out.wav"), audio, atol=1 / 32768)


def test_levels() -> None:
    time_s = np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    tone = (0.5 * np.sin(2 * np.pi * 1000 * time_s)).astype(np.float32)
    assert peak_dbfs(tone) == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert rms_dbfs(tone) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert peak_dbfs(np.zeros(10, dtype=np.float32)) == -math.inf
    assert rms_dbfs(np.zeros(0, dtype=np.float32)) == -math.inf


def test_quiet_real_clip_levels(fleurs_audio: np.ndarray) -> None:
    assert -60 < peak_dbfs(fleurs_audio) < 0
    assert rms_dbfs(fleurs_audio) < peak_dbfs(fleurs_audio)


@needs_espeak
def test_synthesize_speech_writes_16k_mono_speech(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    audio = synthesize_speech("The quick brown fox jumps over the lazy dog.", path, voice="en")
    info = soundfile.info(path)
    assert (info.samplerate, info.channels) == (SAMPLE_RATE_HZ, 1)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < audio.size / SAMPLE_RATE_HZ < 10.0
    assert peak_dbfs(audio) > -20
    np.testing.assert_allclose(decode_audio(path), audio, atol=1 / 32768)


@needs_espeak
def test_synthesize_speech_unknown_voice(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="voice 'zz'"):
        synthesize_speech("hello", tmp_path / "x.wav", voice="zz")


def test_synthesize_speech_without_espeak_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_module.shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="apt-get install espeak-ng"):
        synthesize_speech("hello", tmp_path / "x.wav")


def test_synthesize_speech_rejects_empty_text(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no text"):
        synthesize_speech("  ", tmp_path / "x.wav")
