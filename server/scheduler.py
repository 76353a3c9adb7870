"""Model calls off the event loop: a thread pool behind a bounded, first-come-first-served gate.

Every session has at most one call waiting at a time, and waiters are served in arrival order,
so sessions take turns: a busy session cannot starve the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("streamst.server.scheduler")

T = TypeVar("T")


class ModelScheduler:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="streamst-model")
        self._slots: asyncio.Semaphore | None = None
        self._n_waiting = 0

    @property
    def n_waiting(self) -> int:
        """Calls waiting for a slot right now."""
        return self._n_waiting

    async def run(self, call: Callable[[], T]) -> T:
        """Runs `call()` in the pool once a slot is free. If the caller is cancelled while the call
        runs, the slot stays taken until the thread is done, so the bound always holds."""
        slots = self._get_slots()
        self._n_waiting += 1
        try:
            await slots.acquire()
        finally:
            self._n_waiting -= 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, call)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                await asyncio.wait([future])
                raise
        finally:
            slots.release()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _get_slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots
