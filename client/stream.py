"""Stream recorded audio over the native protocol once, at real-time pace, and keep every reply.

The load benchmark and the end-to-end tests use it, and it is a worked example of the protocol:

    pcm = float32_to_pcm16(decode_audio("talk.wav"))          # streamst.audio
    result = await stream_pcm("ws://127.0.0.1:8765/v1/stream", wire.Start("en", "zh"), pcm)
    print(result.final_text(separator=""))

Unlike `CaptionStream` (the microphone client) it never reconnects: a test or a benchmark wants to
see a dropped connection, not to hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from streamst import wire
from streamst.client.connection import open_connection
from streamst.types import Event, FinalEvent, PartialEvent

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


def caption_event(caption: wire.Caption, emitted_ms: float = 0.0) -> Event:
    """The library's record of a caption (what `streamst.subtitles` and the benchmarks' scoring take);
    `emitted_ms` is when it arrived, on whatever clock the caller keeps."""
    fields = dict(
        segment_id=caption.segment_id,
        source_text=caption.source_text,
        committed_text=caption.committed_text,
        committed_delta=caption.committed_delta,
        tentative_text=caption.tentative_text,
        start_ms=caption.start_ms,
        end_ms=caption.end_ms,
        mode=caption.mode,
        audio_ms=caption.audio_ms,
        emitted_ms=emitted_ms,
    )
    if caption.type == "final":
        return FinalEvent(**fields, fallback_reason=caption.fallback_reason)
    return PartialEvent(**fields)


def pcm_frames(pcm: bytes, start: wire.Start, frame_ms: float) -> list[bytes]:
    """Audio in `start`'s sample rate and format → binary frames of `frame_ms` each (the last may be shorter)."""
    n_bytes_per_sample = wire.BYTES_PER_SAMPLE[start.sample_format]
    n_frame_bytes = max(1, round(frame_ms * start.sample_rate_hz / MS_PER_S)) * n_bytes_per_sample
    return [pcm[i : i + n_frame_bytes] for i in range(0, len(pcm), n_frame_bytes)]


async def stream_pcm(
    url: str,
    start: wire.Start,
    pcm: bytes,
    *,
    frame_ms: float = DEFAULT_FRAME_MS,
    realtime: bool = True,
    speed: float = 1.0,
    token: str | None = None,
    open_timeout_s: float = 120.0,
) -> StreamResult:
    """Sends `start`, then `pcm` (mono, in `start`'s sample rate and format) in frames, then `stop`;
    returns every message the server sent. Raises a ClientError if the handshake fails.

    With `realtime`, frame i leaves at i · frame_ms / speed after the first (wall clock): as a
    microphone's would at speed 1, `speed` times faster than real time above it.
    `open_timeout_s` bounds the handshake and, apart, the wait for `ready` (a new server may still be loading).
    """
    frames = pcm_frames(pcm, start, frame_ms)
    async with await open_connection(url, token, open_timeout_s=open_timeout_s) as ws:
        await ws.send(wire.encode(start))
        ready = await _await_ready(ws, open_timeout_s)
        if not isinstance(ready, wire.Ready):
            first = [Received(ready, 0.0)] if ready is not None else []
            messages = first + [Received(m, 0.0) async for m in _rest(ws)]
            return StreamResult(tuple(messages), ws.close_code, 0.0, 0.0)
        t0 = time.monotonic()
        received: list[Received] = [Received(ready, 0.0)]
        reader = asyncio.create_task(_read_all(ws, received, t0))
        await _send_frames(ws, frames, frame_ms / speed, realtime, t0)
        sent_s = time.monotonic() - t0
        with contextlib.suppress(ConnectionClosed):
            await ws.send(wire.encode(wire.Stop()))
        await reader
    n_samples = len(pcm) // wire.BYTES_PER_SAMPLE[start.sample_format]
    return StreamResult(tuple(received), ws.close_code, n_samples / start.sample_rate_hz, sent_s)


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


async def _rest(ws: ClientConnection) -> AsyncIterator[wire.ServerMessage]:
    try:
        async for text in ws:
            yield wire.parse_server_message(text)
    except ConnectionClosed:
        return


async def _send_frames(
    ws: ClientConnection, frames: list[bytes], interval_ms: float, realtime: bool, t0: float
) -> None:
    try:
        for i, frame in enumerate(frames):
            if realtime:
                delay_s = t0 + i * interval_ms / MS_PER_S - time.monotonic()
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
