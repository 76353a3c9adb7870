"""Model calls off the event loop: a thread pool behind a bounded gate that shares compute fairly.

Every call names the stream it serves. When a slot frees, the waiting call of the stream that has
used the least compute so far goes next (start-time fair queuing; a new stream starts level with
the least served one), so a stream that sends audio faster than real time cannot take the share
of one that speaks at 1x: it only gets what the others leave. Calls without a stream are served
first come, first served among themselves at the level of the least served stream.

The scheduler also measures how busy the models are (`utilisation`), for admission control."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("streamst.server.scheduler")

T = TypeVar("T")

UTILISATION_WINDOW_S = 10.0  # how far back `utilisation` looks


class ModelScheduler:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="streamst-model")
        self._n_free = concurrency
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []  # (compute used, arrival, wake-up)
        self._arrivals = itertools.count()
        self._used_s: dict[Hashable, float] = {}  # compute used per stream
        self._busy: deque[tuple[float, float]] = deque()  # (start, end) of recent calls, monotonic seconds

    @property
    def n_waiting(self) -> int:
        """Calls waiting for a slot right now."""
        return sum(1 for *_, wake in self._waiting if not wake.done())

    def utilisation(self, now_s: float | None = None) -> float:
        """The share of the last UTILISATION_WINDOW_S that the slots spent on calls (0..1)."""
        now_s = time.monotonic() if now_s is None else now_s
        since_s = now_s - UTILISATION_WINDOW_S
        while self._busy and self._busy[0][1] < since_s:
            self._busy.popleft()
        busy_s = sum(min(end, now_s) - max(start, since_s) for start, end in self._busy if end > since_s)
        return min(1.0, busy_s / (UTILISATION_WINDOW_S * self.concurrency))

    async def run(
        self, call: Callable[[], T], stream: Hashable | None = None, meter: Callable[[float], None] | None = None
    ) -> T:
        """Runs `call()` in the pool once a slot is free and it is this stream's turn. If the caller
        is cancelled while the call runs, the slot stays taken until the thread is done, so the
        bound always holds. `meter`, if given, is told the seconds the call took (on the loop)."""
        if stream is not None:
            self._used_s.setdefault(stream, self._level())
        await self._acquire(stream)
        started_s = time.monotonic()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, call)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                await asyncio.wait([future])
                raise
        finally:
            ended_s = time.monotonic()
            self._busy.append((started_s, ended_s))
            if stream in self._used_s:  # not forgotten meanwhile
                self._used_s[stream] += ended_s - started_s
            if meter is not None:
                meter(ended_s - started_s)
            self._release()

    def forget(self, stream: Hashable) -> None:
        """The stream has ended: its account is closed."""
        self._used_s.pop(stream, None)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _level(self) -> float:
        """Where a new stream starts: level with the least served one."""
        return min(self._used_s.values(), default=0.0)

    async def _acquire(self, stream: Hashable | None) -> None:
        if self._n_free > 0 and not self.n_waiting:
            self._n_free -= 1
            return
        used_s = self._used_s.get(stream, self._level()) if stream is not None else self._level()
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (used_s, next(self._arrivals), wake))
        try:
            await wake
        except asyncio.CancelledError:
            if wake.done() and not wake.cancelled():
                self._release()  # the slot was handed over just as the caller gave up: pass it on
            raise

    def _release(self) -> None:
        while self._waiting:
            *_, wake = heapq.heappop(self._waiting)
            if not wake.done():
                wake.set_result(None)
                return
        self._n_free += 1
