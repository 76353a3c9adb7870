"""The client's run: capture → 16 kHz PCM16 frames → replay buffer → server; captions → display and files.

    client = Client(options, source, writers)
    display = TtyDisplay(sys.stdout, client.snapshot)   # or PlainDisplay(...)
    code = await client.run(display)

Four tasks: the capture pump (the source's chunks, resampled, metered and buffered), the caption
stream (connection, reconnection, sending, receiving), a refresh tick for the status line, and this
one, which waits for the end. The first Ctrl-C (or SIGTERM) stops the capture: what is buffered is
sent, then `stop`, and the last finals are awaited for at most `stop_timeout_s`. A second Ctrl-C
quits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import numpy as np

from streamst import wire
from streamst.audio import StreamResampler, float32_to_pcm16
from streamst.client.buffer import ReplayBuffer, Timeline
from streamst.client.capture import FileSource, LevelMeter, Source
from streamst.client.connection import CaptionStream, ConnectionOptions, Status
from streamst.client.display import Display, Snapshot
from streamst.client.errors import ClientError
from streamst.client.listen import viewer_link
from streamst.client.save import CaptionWriter
from streamst.types import SAMPLE_RATE_HZ

log = logging.getLogger("streamst.client.app")

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_FORCED = 130


@dataclass(frozen=True)
class ClientOptions:
    connection: ConnectionOptions
    max_buffer_ms: int = 15_000  # audio kept for sending while disconnected and for replay; oldest dropped
    stop_timeout_s: float = 60.0  # once the audio ends, how long to wait for the last finals
    refresh_interval_s: float = 0.1  # status line and meter refresh period

    def __post_init__(self) -> None:
        if self.max_buffer_ms < 1000:
            raise ClientError(f"the audio buffer must hold at least 1 s, got {self.max_buffer_ms / 1000:g} s")
        if not self.stop_timeout_s > 0:
            raise ClientError(f"the stop timeout must be positive, got {self.stop_timeout_s:g} s")


class Client:
    """One run of the client: its buffer, meter and caption stream; the stream's listener."""

    def __init__(self, options: ClientOptions, source: Source, writers: Sequence[CaptionWriter] = ()) -> None:
        self.options = options
        self.source = source
        self.writers = tuple(writers)
        self.buffer = ReplayBuffer(options.max_buffer_ms)
        self.timeline = Timeline()
        self.meter = LevelMeter()
        self.stream = CaptionStream(options.connection, self.buffer, self.timeline, self)
        self.display: Display | None = None
        self.n_finals = 0
        self.stopping = asyncio.Event()  # the person asked to stop
        self._room_told: str | None = None  # the room whose link was shown
        self.forced = asyncio.Event()  # … twice

    # the stream's listener: files first (nothing is lost if the display fails), then the display

    def on_caption(self, caption: wire.Caption) -> None:
        if caption.type == "final" and caption.committed_text:
            self.n_finals += 1
        for writer in self.writers:
            writer.write(caption)
        if self.display is not None:
            self.display.on_caption(caption)

    def on_status(self, status: Status) -> None:
        if self.display is not None:
            self.display.on_status(status)
            self._tell_room()

    def _tell_room(self) -> None:
        """Speaking into a room: its link, once per room (a reconnection with room "new" opens another)."""
        ready = self.stream.ready
        if self.display is None or ready is None or ready.room_id is None or ready.room_id == self._room_told:
            return
        self._room_told = ready.room_id
        link = viewer_link(self.options.connection.url, ready.room_id, ready.read_key or "")
        self.display.note(f"room {ready.room_id}: listeners open {link} (or streamst-mic --listen LINK --target LANG)")

    def snapshot(self) -> Snapshot:
        start = self.options.connection.start
        return Snapshot(
            status=self.stream.status,
            languages=f"{start.source}→{start.target}",
            level_dbfs=self.meter.level_dbfs,
            level_fraction=self.meter.fraction,
            n_overruns=self.source.n_overruns,
            stopping=self.stopping.is_set(),
        )

    def request_stop(self) -> None:
        """First call: stop capturing and finish. Second call: quit at once."""
        if self.stopping.is_set():
            self.forced.set()
            return
        self.stopping.set()
        self.source.stop()
        if self.display is not None:
            self.display.refresh()

    async def run(self, display: Display) -> int:
        """Streams the source to the server and shows and saves the captions; returns the exit status.

        Raises ClientError (bad device, file, server address, refused stream) and StreamFailed."""
        self.display = display
        loop = asyncio.get_running_loop()
        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)
                handled.append(signum)
        summary = ""
        try:
            await self.source.open()
            code = await self._until_done(display)
            saved = f" · saved to {', '.join(str(w.path) for w in self.writers)}" if self.writers else ""
            summary = f"stopped · {self.n_finals} caption{'s' if self.n_finals != 1 else ''}{saved}"
            return code
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            display.close(summary)

    async def _pump(self) -> None:
        """Source chunks → 16 kHz PCM16 frames in the buffer. A file starts once the server is ready."""
        if isinstance(self.source, FileSource):
            await _first(self.stream.first_ready.wait(), self.stopping.wait())
        resampler = StreamResampler(self.source.sample_rate_hz, SAMPLE_RATE_HZ)
        async for chunk in self.source.chunks():
            self.meter.update(chunk)
            self._append(resampler.push(chunk.audio), chunk.captured_s)
        self._append(resampler.flush(), time.monotonic())
        self.stream.finish_audio()

    def _append(self, audio: np.ndarray, captured_s: float) -> None:
        if audio.size:
            frame = self.buffer.append(float32_to_pcm16(audio))
            self.timeline.add(frame.end, captured_s)
            self.stream.audio_added()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh_interval_s)
            if self.display is not None:
                self.display.refresh()

    async def _until_done(self, display: Display) -> int:
        stream = asyncio.create_task(self.stream.run(), name="caption-stream")
        pump = asyncio.create_task(self._pump(), name="capture-pump")
        tick = asyncio.create_task(self._tick(), name="status-tick")
        forced = asyncio.create_task(self.forced.wait(), name="forced-quit")
        try:
            await asyncio.wait({stream, pump, forced}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and not stream.done():
                pump.result()
                timeout_s = self.options.stop_timeout_s
                await asyncio.wait({stream, forced}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if forced.done():
                return EXIT_FORCED
            if not stream.done():
                display.note(
                    f"gave up waiting for the last captions after {self.options.stop_timeout_s:g} s "
                    "(--stop-timeout-s sets how long)"
                )
                return EXIT_OK if self.stopping.is_set() else EXIT_INCOMPLETE
            stream.result()
            return EXIT_OK
        finally:
            for task in (stream, pump, tick, forced):
                task.cancel()
            await asyncio.gather(stream, pump, tick, forced, return_exceptions=True)
            self.source.stop()


async def _first(*waits: Awaitable[object]) -> None:
    """Waits until the first of `waits` is done; cancels the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
