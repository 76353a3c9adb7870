"""Where the audio comes from: a microphone (PortAudio through sounddevice) or a file played at real time.

Both sources yield `Chunk`s at their own rate from `chunks()`; everything after that (resampling to
16 kHz, the level meter, buffering, sending) is one code path.

The microphone's audio callback runs on PortAudio's thread. It copies the block and hands it to the
event loop with `loop.call_soon_threadsafe`, never waiting on anything; the loop puts it on a bounded
queue. A block that finds the queue full (the loop stalled for `MIC_QUEUE_S`) is dropped and counted,
and so is every overflow PortAudio reports: `n_overruns` is what the status line shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamst.audio import decode_audio, iter_frames, rms_dbfs
from streamst.client.devices import InputDevice, sounddevice
from streamst.client.errors import ClientError, DeviceError
from streamst.errors import AudioError
from streamst.types import SAMPLE_RATE_HZ

log = logging.getLogger("streamst.client.capture")

MS_PER_S = 1000.0
MIC_BLOCK_MS = 50  # audio per PortAudio callback
MIC_QUEUE_S = 4.0  # audio the queue holds while the event loop is busy; beyond it blocks are dropped
N_MIC_QUEUE_BLOCKS = int(MIC_QUEUE_S * MS_PER_S / MIC_BLOCK_MS)
FILE_FRAME_MS = 100  # audio per chunk read from a file


@dataclass(frozen=True)
class Chunk:
    """A stretch of captured audio."""

    audio: np.ndarray  # (n_samples,) float32 in [-1, 1] at the source's `sample_rate_hz`
    captured_s: float  # time.monotonic() when its last sample was captured (or released, for a file)


class Source(Protocol):
    """An audio source. `open` before `chunks`; `stop` (on the event loop) ends `chunks`."""

    description: str  # for the status line: "mic: USB Mic (48000 Hz)", "file: talk.wav"
    sample_rate_hz: int  # rate of the chunks' audio

    async def open(self) -> None: ...

    def chunks(self) -> AsyncIterator[Chunk]: ...

    def stop(self) -> None: ...

    @property
    def n_overruns(self) -> int: ...


class MicrophoneSource:
    """Captures one channel of an input device at its native rate."""

    def __init__(self, device: InputDevice, block_ms: int = MIC_BLOCK_MS, n_queue_blocks: int = N_MIC_QUEUE_BLOCKS):
        self.device = device
        self.sample_rate_hz = device.default_rate_hz
        self.description = f"mic: {device.name} ({device.default_rate_hz} Hz)"
        self._n_block_samples = max(1, round(block_ms * self.sample_rate_hz / MS_PER_S))
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=n_queue_blocks)  # None: stopped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._n_overflows = 0  # PortAudio input overflows (counted on its thread)
        self._n_dropped = 0  # blocks that found the queue full
        self._stopped = False

    @property
    def n_overruns(self) -> int:
        return self._n_overflows + self._n_dropped

    async def open(self) -> None:
        sd = sounddevice()
        self._loop = asyncio.get_running_loop()
        # Mono where the device offers it; some hardware only opens in stereo, then the channels are averaged.
        channel_counts = sorted({1, min(2, self.device.n_input_channels)})
        for n_channels in channel_counts:
            try:
                self._stream = sd.InputStream(
                    device=self.device.index,
                    channels=n_channels,
                    samplerate=self.sample_rate_hz,
                    dtype="float32",
                    blocksize=self._n_block_samples,
                    callback=self._callback,
                )
                break
            except (sd.PortAudioError, ValueError) as e:
                if n_channels == channel_counts[-1]:
                    raise DeviceError(
                        f"cannot open input device {self.device.index} {self.device.name!r} at "
                        f"{self.sample_rate_hz} Hz: {e}; pick another with --device "
                        "(`streamst-mic --list-devices` lists them)"
                    ) from e
                log.info("input device %s refused %d channel(s): %s", self.device.index, n_channels, e)
        try:
            await asyncio.to_thread(self._stream.start)
        except sd.PortAudioError as e:
            raise DeviceError(
                f"cannot start input device {self.device.index} {self.device.name!r}: {e}; "
                "is another program holding it? Pick another with --device"
            ) from e
        log.info("capturing from %s", self.description)

    def _callback(self, indata: np.ndarray, n_frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: copy the block and hand it to the loop; never block, never raise."""
        if status.input_overflow:
            self._n_overflows += 1
        audio = indata[:, 0].copy() if indata.shape[1] == 1 else indata.mean(axis=1, dtype=np.float32)
        chunk = Chunk(audio, time.monotonic())
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._put, chunk)

    def _put(self, chunk: Chunk) -> None:
        try:
            self._queue.put_nowait(chunk)
        except asyncio.QueueFull:
            self._n_dropped += 1
            if self._n_dropped == 1:
                log.info("audio overrun: the capture queue is full and blocks are being dropped")

    async def chunks(self) -> AsyncIterator[Chunk]:
        while not (self._stopped and self._queue.empty()):
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    def stop(self) -> None:
        """Stops capturing; `chunks` ends after the blocks already captured. Call it on the loop."""
        if self._stopped:
            return
        self._stopped = True
        if self._stream is not None:
            stream, self._stream = self._stream, None
            asyncio.get_running_loop().run_in_executor(None, _close_stream, stream)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wakes `chunks`; when full, it finds the queue drained instead


def _close_stream(stream: Any) -> None:
    try:
        stream.stop()
        stream.close()
    except Exception as e:  # noqa: BLE001 - a device that vanished while closing is no reason to fail
        log.warning("closing the input device failed: %s", e)


class FileSource:
    """Plays an audio file (anything FFmpeg reads) as if it were spoken now: chunk i is released
    i · frame_ms after the first, on the wall clock."""

    def __init__(self, path: str | Path, frame_ms: int = FILE_FRAME_MS, realtime: bool = True) -> None:
        self.path = Path(path)
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.description = f"file: {self.path.name}"
        self.frame_ms = frame_ms
        self.realtime = realtime
        self._audio: np.ndarray | None = None
        self._stopped = asyncio.Event()

    n_overruns = 0

    @property
    def duration_s(self) -> float:
        return 0.0 if self._audio is None else self._audio.size / self.sample_rate_hz

    async def open(self) -> None:
        try:
            self._audio = await asyncio.to_thread(decode_audio, self.path, self.sample_rate_hz)
        except AudioError as e:
            raise ClientError(str(e)) from e

    async def chunks(self) -> AsyncIterator[Chunk]:
        if self._audio is None:
            raise RuntimeError("open the file source before reading chunks")
        t0_s = time.monotonic()
        for i, frame in enumerate(iter_frames(self._audio, self.frame_ms, self.sample_rate_hz)):
            due_s = t0_s + (i + 1) * self.frame_ms / MS_PER_S
            if self.realtime and not await self._sleep_until(due_s):
                return
            if self._stopped.is_set():
                return
            yield Chunk(frame.copy(), time.monotonic())

    async def _sleep_until(self, due_s: float) -> bool:
        """Waits until `due_s` (monotonic); False if stopped meanwhile."""
        delay_s = due_s - time.monotonic()
        if delay_s > 0:
            try:
                await asyncio.wait_for(self._stopped.wait(), delay_s)
            except TimeoutError:
                return True
        return not self._stopped.is_set()

    def stop(self) -> None:
        self._stopped.set()


class LevelMeter:
    """Input level for the status line: the RMS of each chunk, falling back slowly (as meters do)."""

    FLOOR_DBFS = -60.0  # shown as an empty meter
    FALL_DB_PER_S = 20.0

    def __init__(self) -> None:
        self.level_dbfs = -math.inf
        self._at_s = time.monotonic()

    def update(self, chunk: Chunk) -> None:
        level = rms_dbfs(chunk.audio)
        fallen = self.level_dbfs - self.FALL_DB_PER_S * max(0.0, chunk.captured_s - self._at_s)
        self.level_dbfs = max(level, fallen)
        self._at_s = chunk.captured_s

    @property
    def fraction(self) -> float:
        """The level as 0 (at or below FLOOR_DBFS) … 1 (full scale)."""
        if not math.isfinite(self.level_dbfs):
            return 0.0
        return min(1.0, max(0.0, 1.0 - self.level_dbfs / self.FLOOR_DBFS))
