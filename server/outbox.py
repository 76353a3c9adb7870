"""What a connection still has to send, bounded, with stale tentative updates dropped.

Engine events wait here until the connection's send task takes them. A client that reads slowly
makes them pile up; then a waiting `partial` is replaced by the next event of its segment, and the
replacement carries both committed deltas, so committed text is never lost, only stale tentative
text. If even then more than `max_pending` items wait, the client is too slow and `on_overflow` runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable

from streamst.types import Event, PartialEvent

Item = Event | str
"""An engine event (rendered when sent) or a text frame already rendered."""


def merge(waiting: PartialEvent, newer: Event) -> Event:
    """`newer` standing in for a waiting partial of the same segment: its committed delta is both."""
    return dataclasses.replace(newer, committed_delta=waiting.committed_delta + newer.committed_delta)


class Outbox:
    def __init__(self, max_pending: int, on_overflow: Callable[[], None]) -> None:
        self.max_pending = max_pending
        self._on_overflow = on_overflow
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._overflowed = False
        self.n_dropped = 0  # stale partials replaced before they were sent

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_event(self, event: Event) -> None:
        if self._closed:
            return
        last = self._items[-1] if self._items else None
        if isinstance(last, PartialEvent) and last.segment_id == event.segment_id:
            self._items[-1] = merge(last, event)
            self.n_dropped += 1
        else:
            self._items.append(event)
        self._check_bound()
        self._ready.set()

    def put_text(self, text: str) -> None:
        """A control message (ready, error, end): always kept."""
        if self._closed:
            return
        self._items.append(text)
        self._ready.set()

    def close(self) -> None:
        """No more items; `get` returns None once the waiting ones are taken."""
        self._closed = True
        self._ready.set()

    async def get(self) -> Item | None:
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def _check_bound(self) -> None:
        if len(self._items) > self.max_pending and not self._overflowed:
            self._overflowed = True
            self._on_overflow()
