"""A small native-protocol client: streams audio at real-time pace and records what comes back.

Used by the load benchmark and the tests, and a worked example of the protocol:

    result = await stream_audio("ws://127.0.0.1:8765/v1/stream", audio, "en", "de")
    print(result.final_text)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamst import wire
from streamst.audio import float32_to_pcm16
from streamst.types import SAMPLE_RATE_HZ

DEFAULT_FRAME_MS = 100.0
MS_PER_S = 1000.0


@dataclass(frozen=True)
class Received:
    """A server message and when it arrived, in seconds since the first audio frame was sent."""

    message: wire.ServerMessage
    at_s: float


@dataclass(frozen=True)
class StreamResult:
    messages: tuple[Received, ...]
    close_code: int | None
    audio_s: float  # audio sent
    sent_s: float  # seconds from the first frame to `stop`

    @property
    def ready(self) -> wire.Ready | None:
        return next((r.message for r in self.messages if isinstance(r.message, wire.Ready)), None)

    @property
    def captions(self) -> list[Received]:
        return [r for r in self.messages if isinstance(r.message, wire.Caption)]

    @property
    def finals(self) -> list[wire.Caption]:
        return [r.message for r in self.captions if r.message.type == "final"]

    @property
    def errors(self) -> list[wire.Error]:
        return [r.message for r in self.messages if isinstance(r.message, wire.Error)]

    @property
    def end(self) -> wire.End | None:
        return next((r.message for r in self.messages if isinstance(r.message, wire.End)), None)

    def final_text(self, separator: str = " ") -> str:
        """The finals' committed text joined: " " for languages written with spaces, "" otherwise."""
        return separator.join(f.committed_text for f in self.finals if f.committed_text)


def audio_frames(audio: np.ndarray, sample_rate_hz: int, frame_ms: float, sample_format: str) -> list[bytes]:
    """audio: (n_samples,) float32 → binary frames of `frame_ms` each in `sample_format`."""
    n_frame_samples = max(1, round(frame_ms * sample_rate_hz / MS_PER_S))
    frames = []
    for start in range(0, audio.size, n_frame_samples):
        piece = audio[start : start + n_frame_samples]
        frames.append(float32_to_pcm16(piece) if sample_format == "pcm16" else piece.astype("<f4").tobytes())
    return frames


async def stream_audio(
    url: str,
    audio: np.ndarray,
    source: str,
    target: str,
    *,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    sample_format: str = "pcm16",
    frame_ms: float = DEFAULT_FRAME_MS,
    realtime: bool = True,
    mode: str | None = None,
    policy: str | None = None,
    knob: float | None = None,
    step_ms: int | None = None,
    token: str | None = None,
    open_timeout_s: float = 120.0,
) -> StreamResult:
    """Streams `audio` ((n_samples,) float32 at `sample_rate_hz`), then `stop`; returns every message.

    With `realtime`, frame i leaves at i · frame_ms after the first (wall clock), as a microphone would.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    start = wire.Start(source, target, sample_rate_hz, sample_format, mode, policy, knob, step_ms)
    frames = audio_frames(audio, sample_rate_hz, frame_ms, sample_format)
    async with connect(url, additional_headers=headers, open_timeout=open_timeout_s, max_size=2**22) as ws:
        await ws.send(wire.encode(start))
        ready = await _await_ready(ws, open_timeout_s)
        if not isinstance(ready, wire.Ready):
            first = [Received(ready, 0.0)] if ready is not None else []
            messages = first + [Received(m, 0.0) async for m in _rest(ws)]
            return StreamResult(tuple(messages), ws.close_code, 0.0, 0.0)
        t0 = time.monotonic()
        received: list[Received] = [Received(ready, 0.0)]
        reader = asyncio.create_task(_read_all(ws, received, t0))
        await _send_frames(ws, frames, frame_ms, realtime, t0)
        sent_s = time.monotonic() - t0
        with contextlib.suppress(ConnectionClosed):
            await ws.send(wire.encode(wire.Stop()))
        await reader
        return StreamResult(tuple(received), ws.close_code, audio.size / sample_rate_hz, sent_s)


async def _await_ready(ws: ClientConnection, timeout_s: float) -> wire.ServerMessage | None:
    """`ready`, or the `error` that came instead; None if the server closed without either."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = wire.parse_server_message(await ws.recv())
                if isinstance(message, wire.Ready | wire.Error):
                    return message
    except ConnectionClosed:
        return None


async def _rest(ws: ClientConnection):
    try:
        async for text in ws:
            yield wire.parse_server_message(text)
    except ConnectionClosed:
        return


async def _send_frames(ws: ClientConnection, frames: list[bytes], frame_ms: float, realtime: bool, t0: float) -> None:
    try:
        for i, frame in enumerate(frames):
            if realtime:
                delay_s = t0 + i * frame_ms / MS_PER_S - time.monotonic()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
            await ws.send(frame)
    except ConnectionClosed:
        return


async def _read_all(ws: ClientConnection, received: list[Received], t0: float) -> None:
    try:
        async for text in ws:
            received.append(Received(wire.parse_server_message(text), time.monotonic() - t0))
    except ConnectionClosed:
        return
