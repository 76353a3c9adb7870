"""One stream's audio path on the server: client samples → 16 kHz → backlog → engine session → events.

The receive task `feed`s audio as it arrives (never waiting for the models); a worker task takes
what has piled up, up to `max_batch_ms` at a time, and pushes it through the engine session in the
model scheduler, which shares compute fairly between streams (this pipeline is its stream). The
session object is only ever touched by one model call at a time."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from streamst.audio import StreamResampler
from streamst.server.scheduler import ModelScheduler
from streamst.types import SAMPLE_RATE_HZ, Event, FinalEvent, ms_to_samples, samples_to_ms

log = logging.getLogger("streamst.server.pipeline")


class BacklogFull(Exception):
    """The models fell more than `max_backlog_ms` behind this stream's audio."""


class StreamPipeline:
    def __init__(
        self,
        session,
        scheduler: ModelScheduler,
        sample_rate_hz: int,
        max_backlog_ms: int,
        max_batch_ms: int,
        on_events: Callable[[list[Event]], None],
        meter: Callable[[float], None] | None = None,
    ) -> None:
        self.session = session
        self._meter = meter  # told the seconds of each model call (a room counts its compute)
        self._scheduler = scheduler
        self._resampler = StreamResampler(sample_rate_hz, SAMPLE_RATE_HZ) if sample_rate_hz != SAMPLE_RATE_HZ else None
        self._max_backlog_samples = ms_to_samples(max_backlog_ms)
        self._max_batch_samples = ms_to_samples(max_batch_ms)
        self._on_events = on_events
        self._backlog: deque[np.ndarray] = deque()
        self._n_backlog_samples = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.n_fed_samples = 0  # 16 kHz samples received
        self.n_pushed_samples = 0  # 16 kHz samples the engine has consumed
        self.n_finals = 0
        self.finished_until_ms = 0  # end of the last final sent, on the stream's timeline
        self.max_backlog_ms = 0

    @property
    def fed_ms(self) -> int:
        return samples_to_ms(self.n_fed_samples)

    @property
    def pushed_ms(self) -> int:
        return samples_to_ms(self.n_pushed_samples)

    @property
    def backlog_ms(self) -> int:
        return samples_to_ms(self._n_backlog_samples)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._work(), name="streamst-pipeline")
        return self._task

    def feed(self, audio: np.ndarray) -> None:
        """audio: (n_samples,) float32 at the client's rate. Raises BacklogFull when the models lag."""
        if self._closing:
            return
        if self._resampler is not None:
            audio = self._resampler.push(audio)
        self._append(audio)
        if self._n_backlog_samples > self._max_backlog_samples:
            raise BacklogFull(
                f"the server is {self.backlog_ms / 1000:.1f} s behind this stream's audio "
                f"(limit {samples_to_ms(self._max_backlog_samples) / 1000:.0f} s); it is overloaded: "
                "try again later, or ask the operator for fewer sessions per server"
            )

    async def finish(self) -> None:
        """Processes the backlog, then closes every open segment; their finals go to `on_events`."""
        self._closing = True
        if self._resampler is not None:
            self._append(self._resampler.flush())
        self._wakeup.set()
        if self._task is not None:
            await self._task
        try:
            self._emit(await self._scheduler.run(self.session.finish, stream=self, meter=self._meter))
        finally:
            self._scheduler.forget(self)

    def cancel(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        self._scheduler.forget(self)

    def _append(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        self._backlog.append(audio)
        self._n_backlog_samples += audio.size
        self.n_fed_samples += audio.size
        self.max_backlog_ms = max(self.max_backlog_ms, self.backlog_ms)
        self._wakeup.set()

    def _take_batch(self) -> np.ndarray:
        pieces: list[np.ndarray] = []
        n_samples = 0
        while self._backlog and n_samples < self._max_batch_samples:
            piece = self._backlog.popleft()
            room = self._max_batch_samples - n_samples
            if piece.size > room:
                self._backlog.appendleft(piece[room:])
                piece = piece[:room]
            pieces.append(piece)
            n_samples += piece.size
        self._n_backlog_samples -= n_samples
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    async def _work(self) -> None:
        while True:
            if not self._backlog:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take_batch()
            events = await self._scheduler.run(
                lambda batch=batch: self.session.push(batch), stream=self, meter=self._meter
            )
            self.n_pushed_samples += batch.size
            self._emit(events)

    def _emit(self, events: list[Event]) -> None:
        if events:
            finals = [e for e in events if isinstance(e, FinalEvent)]
            self.n_finals += len(finals)
            self.finished_until_ms = max([self.finished_until_ms, *(e.end_ms for e in finals)])
            self._on_events(events)
