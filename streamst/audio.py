"""Audio in and out: decoding files, resampling, PCM conversion, framing, test speech.

Shapes and units at every boundary of this module:
    audio: (n_samples,) float32 in [-1, 1], mono, at 16 kHz unless a `sample_rate_hz` says otherwise
    PCM16 bytes: little-endian signed 16-bit samples, 2 bytes each
    float32 PCM bytes: little-endian IEEE float32 samples, 4 bytes each

Files are decoded with PyAV (FFmpeg), so anything FFmpeg reads works: wav, flac, ogg/opus, mp3, m4a, ...
Resampling, for files and for streamed client audio alike, goes through soxr.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import soxr

from streamst.errors import AudioError
from streamst.types import SAMPLE_RATE_HZ

log = logging.getLogger("streamst.audio")

PCM16_FULL_SCALE = 32768
"""int16 value of full scale: PCM16 sample = float sample * PCM16_FULL_SCALE, clipped to int16."""

N_BYTES_PCM16 = 2
N_BYTES_FLOAT32 = 4
MS_PER_S = 1000
RESAMPLE_QUALITY = "HQ"
"""soxr quality recipe: "HQ" (20-bit) is transparent for speech at a fraction of "VHQ"'s cost."""

ESPEAK_WORDS_PER_MINUTE = 160
_FORMATS_HINT = "give a wav, flac, ogg/opus or mp3 file"

PathLike = str | os.PathLike[str]


def decode_audio(path: PathLike, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode any file FFmpeg reads into mono float32 at `sample_rate_hz`.

    Channels are averaged; the first audio stream is used. Damaged packets are skipped with a
    warning, as players do. Returns audio: (n_samples,) float32 in [-1, 1].
    Raises AudioError for a missing path, a directory, an undecodable file, a file without an
    audio stream, or one that decodes to no samples.
    """
    _check_rate(sample_rate_hz)
    file = _existing_file(path)
    if file.stat().st_size == 0:
        raise AudioError(f"{file} holds no audio (the file is empty)")
    _silence_ffmpeg()
    try:
        with av.open(str(file), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{file} has no audio stream; {_FORMATS_HINT}")
            audio = _decode_stream(container, container.streams.audio[0], sample_rate_hz, file)
    except av.FFmpegError as e:
        raise AudioError(f"cannot decode {file} as audio: {_ffmpeg_reason(e)}; {_FORMATS_HINT}") from e
    if audio.size == 0:
        raise AudioError(f"{file} holds no audio")
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def _existing_file(path: PathLike) -> Path:
    file = Path(path)
    if not file.exists():
        raise AudioError(f"audio file not found: {file}; check the path")
    if file.is_dir():
        raise AudioError(f"{file} is a directory, not an audio file; {_FORMATS_HINT}")
    return file


@functools.lru_cache(maxsize=1)
def _silence_ffmpeg() -> None:
    """Keep FFmpeg's log lines off the terminal unless someone routed them to Python logging."""
    if av.logging.get_level() is None:
        av.logging.set_libav_level(av.logging.PANIC)


def _ffmpeg_reason(error: av.FFmpegError) -> str:
    return str(error.strerror or error).rstrip(".")


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, sample_rate_hz: int, file: Path
) -> np.ndarray:
    """Demux, decode, average the channels and resample one audio stream. Returns (n_samples,) float32."""
    to_float = av.AudioResampler(format="fltp")
    resampler: StreamResampler | None = None
    chunks: list[np.ndarray] = []
    n_bad_packets = 0

    def collect(frames: list[av.AudioFrame]) -> None:
        nonlocal resampler
        for frame in frames:
            if resampler is None:
                resampler = StreamResampler(frame.sample_rate, sample_rate_hz)
            channels = frame.to_ndarray()
            chunks.append(resampler.push(channels.mean(axis=0, dtype=np.float32)))

    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.InvalidDataError:
            n_bad_packets += 1
            continue
        for frame in decoded:
            collect(to_float.resample(frame))
    collect(to_float.resample(None))
    if resampler is not None:
        chunks.append(resampler.flush())
    if n_bad_packets:
        log.warning("%s: skipped %d damaged packet(s)", file, n_bad_packets)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample a whole signal with soxr. audio: (n_samples,) → (≈ n_samples · to_hz / from_hz,) float32."""
    audio = _as_mono_float32(audio)
    _check_rate(from_hz)
    _check_rate(to_hz)
    if from_hz == to_hz:
        return audio
    return soxr.resample(audio, from_hz, to_hz, quality=RESAMPLE_QUALITY)


class StreamResampler:
    """Resamples mono audio that arrives in chunks of any size (a client streaming at 44.1 or 48 kHz).

    Chunk boundaries leave no trace: pushing a signal in pieces and then calling `flush` gives the
    same samples as resampling it whole. Output lags input by the filter delay until `flush`.
    """

    def __init__(self, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> None:
        _check_rate(from_hz)
        _check_rate(to_hz)
        self.from_hz = from_hz
        self.to_hz = to_hz
        self._stream = (
            None
            if from_hz == to_hz
            else soxr.ResampleStream(from_hz, to_hz, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next chunk: (n_in,) float32 → (n_out,) float32, possibly empty."""
        chunk = _as_mono_float32(chunk)
        if self._stream is None:
            return chunk
        return self._stream.resample_chunk(chunk, last=False)

    def flush(self) -> np.ndarray:
        """Return the samples still held in the filter and start afresh for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drop any buffered samples and start afresh."""
        if self._stream is not None:
            self._stream.clear()


def pcm16_to_float32(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes → (n_samples,) float32 in [-1, 1)."""
    if len(data) % N_BYTES_PCM16:
        raise AudioError(
            f"PCM16 audio must hold whole 2-byte samples, got {len(data)} bytes; "
            "send 16-bit little-endian mono samples without splitting one across messages"
        )
    samples = np.frombuffer(data, dtype="<i2")
    return samples.astype(np.float32) / np.float32(PCM16_FULL_SCALE)


def float32_to_pcm16(audio: np.ndarray) -> bytes:
    """(n_samples,) float → little-endian signed 16-bit PCM bytes; values outside [-1, 1] are clipped."""
    audio = _as_mono_float32(audio)
    scaled = np.round(audio * np.float32(PCM16_FULL_SCALE))
    return np.clip(scaled, -PCM16_FULL_SCALE, PCM16_FULL_SCALE - 1).astype("<i2").tobytes()


def float32_bytes_to_array(data: bytes) -> np.ndarray:
    """Little-endian float32 PCM bytes → (n_samples,) float32 (a writable copy)."""
    if len(data) % N_BYTES_FLOAT32:
        raise AudioError(
            f"float32 audio must hold whole 4-byte samples, got {len(data)} bytes; "
            "send 32-bit little-endian float samples without splitting one across messages"
        )
    audio = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(audio).all():
        raise AudioError("float32 audio holds NaN or infinite samples; send samples in [-1, 1]")
    return audio


def iter_frames(audio: np.ndarray, frame_ms: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Iterator[np.ndarray]:
    """Cut audio into consecutive frames of `frame_ms`, each (n_frame_samples,); the last may be shorter.

    Frames are views of the float32 audio, not copies.
    """
    audio = _as_mono_float32(audio)
    n_frame_samples = round(frame_ms * sample_rate_hz / MS_PER_S)
    if n_frame_samples < 1:
        raise ValueError(
            f"frame_ms={frame_ms} gives frames of no samples at {sample_rate_hz} Hz; use a larger frame_ms"
        )
    return (audio[start : start + n_frame_samples] for start in range(0, audio.size, n_frame_samples))


def write_wav(path: PathLike, audio: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
    """Write audio: (n_samples,) float32 as a 16-bit PCM mono WAV file (values outside [-1, 1] are clipped)."""
    _check_rate(sample_rate_hz)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(N_BYTES_PCM16)
        file.setframerate(sample_rate_hz)
        file.writeframes(float32_to_pcm16(audio))


def synthesize_speech(
    text: str, path: PathLike, voice: str = "en", words_per_minute: int = ESPEAK_WORDS_PER_MINUTE
) -> np.ndarray:
    """Speak `text` with espeak-ng into a 16 kHz mono WAV at `path`; returns the audio: (n_samples,) float32.

    `voice` is an espeak-ng voice such as "en", "de", "fr", "cmn" (Mandarin) or "ja".
    """
    if not text.strip():
        raise AudioError("no text to synthesize; give a sentence to speak")
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise AudioError(
            "espeak-ng is not installed; install it with `apt-get install espeak-ng` or give an audio file"
        )
    with tempfile.TemporaryDirectory(prefix="streamst-tts-") as tmp:
        raw_wav = Path(tmp) / "espeak.wav"
        command = [espeak, "-v", voice, "-s", str(words_per_minute), "-b", "1", "-w", str(raw_wav), "--stdin"]
        result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
        if result.returncode != 0 or not raw_wav.exists():
            said = (result.stderr or result.stdout).decode("utf-8", "replace").strip().rstrip(".")
            raise AudioError(
                f"espeak-ng could not speak with voice {voice!r}: {said or f'exit status {result.returncode}'}; "
                "list voices with `espeak-ng --voices`"
            )
        audio = decode_audio(raw_wav, SAMPLE_RATE_HZ)
    write_wav(path, audio, SAMPLE_RATE_HZ)
    return audio


def peak_dbfs(audio: np.ndarray) -> float:
    """Peak level in dB relative to full scale (0 dBFS = 1.0); -inf for silence or no samples."""
    audio = _as_mono_float32(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0.0 else -math.inf


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS); -inf for silence."""
    audio = _as_mono_float32(audio)
    mean_square = float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0
    return 10.0 * math.log10(mean_square) if mean_square > 0.0 else -math.inf


def _as_mono_float32(audio: np.ndarray) -> np.ndarray:
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"audio must have shape (n_samples,) (mono), got shape {array.shape}; downmix it first")
    return array


def _check_rate(sample_rate_hz: int) -> None:
    if not (isinstance(sample_rate_hz, int | np.integer) and sample_rate_hz > 0):
        raise ValueError(f"sample rate must be a positive whole number of Hz, got {sample_rate_hz!r}")
